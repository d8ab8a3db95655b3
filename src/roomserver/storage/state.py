"""State snapshots: deduplicated as deltas on a logarithmic skip chain.

A snapshot written as ``StateDelta(base=P, changes)`` gets position ``n = position(P) + 1``
(a root, written against no base, has position 0). It is *stored* as a delta against its
ancestor at position ``n - lowbit(n)`` (Fenwick-tree style): half of all snapshots are stored
against their parent, a quarter two steps back, and so on. Hence:

* reading a key walks at most log2(n) stored deltas, in one indexed query;
* writing costs the changed entries plus, amortised, O(changed entries * log n) copied rows;
  no snapshot is ever materialised in full after its root;
* ``state_diff`` between two snapshots of one tree looks only at the keys touched on the way
  to a common ancestor (jumping along stored bases, stepping along parents when a jump would
  overshoot), then compares just those keys.

An unchanged state (empty effective delta) reuses its base's ID. See ``docs/storage.md``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet

from roomserver.core.ids import EventId
from roomserver.ports import CorruptData, StateDelta, StorageError
from roomserver.storage.cache import SnapshotMeta, TxCache
from roomserver.storage.engine import Tx
from roomserver.storage.ids import (
    CHUNK,
    StateKey,
    chunks,
    event_nids,
    pack_ints,
    state_key_nids,
    unpack_ints,
)

# A diff walking more snapshots than this (two long-diverged forks) compares whole states.
MAX_DIFF_STEPS = 1024


def _lowbit(n: int) -> int:
    return n & -n


async def snapshot_meta(tx: Tx, cache: TxCache, snapshot_id: int) -> SnapshotMeta:
    meta = cache.snapshot(snapshot_id)
    if meta is not None:
        return meta
    # Load the whole stored chain at once: the next reads will want it.
    rows = await tx.fetch(
        "WITH RECURSIVE chain(id) AS (SELECT CAST(? AS BIGINT) UNION ALL "
        "SELECT s.base FROM state_snapshots s JOIN chain ON s.snapshot_id = chain.id "
        "WHERE s.base IS NOT NULL) "
        "SELECT snapshot_id, room_nid, parent, base, position FROM state_snapshots "
        "WHERE snapshot_id IN (SELECT id FROM chain)",
        snapshot_id,
    )
    for sid, room_nid, parent, base, position in rows:
        cache.snapshots[sid] = SnapshotMeta(sid, room_nid, parent, base, position)
    meta = cache.snapshot(snapshot_id)
    if meta is None:
        raise StorageError(f"unknown state snapshot {snapshot_id}")
    return meta


async def stored_chain(tx: Tx, cache: TxCache, snapshot_id: int) -> list[SnapshotMeta]:
    """``snapshot_id`` and its stored bases, nearest first, down to its root."""
    out = [await snapshot_meta(tx, cache, snapshot_id)]
    while out[-1].base is not None:
        base = out[-1].base
        assert base is not None
        out.append(await snapshot_meta(tx, cache, base))
        if len(out) > 128:
            raise CorruptData(f"state snapshot {snapshot_id}: stored chain does not end")
    return out


async def _entries(
    tx: Tx, chain: list[SnapshotMeta], key_nids: Collection[int] | None
) -> dict[StateKey, EventId]:
    """The state of the snapshot heading ``chain`` (only ``key_nids`` if given), by name."""
    ids = [m.snapshot_id for m in chain]
    rank = {sid: i for i, sid in enumerate(ids)}
    best: dict[int, tuple[int, StateKey, EventId | None]] = {}
    select = (
        "SELECT d.snapshot_id, d.key_nid, k.type, k.state_key, d.event_nid, e.event_id "
        "FROM state_deltas d JOIN state_keys k ON k.key_nid = d.key_nid "
        "LEFT JOIN events e ON e.event_nid = d.event_nid WHERE d.snapshot_id IN @LIST"
    )
    if key_nids is None:
        batches = [await tx.fetch(select, ids)]
    else:
        batches = [
            await tx.fetch(select + " AND d.key_nid IN @LIST", ids, list(part))
            for part in chunks(sorted(key_nids))
        ]
    for rows in batches:
        for sid, key_nid, event_type, state_key, event_nid, event_id in rows:
            if event_nid is not None and event_id is None:
                raise CorruptData(f"state snapshot {sid} names a missing event {event_nid}")
            r = rank[sid]
            seen = best.get(key_nid)
            if seen is None or r < seen[0]:
                best[key_nid] = (r, (event_type, state_key), event_id)
    return {key: eid for _, key, eid in best.values() if eid is not None}


async def state_map(tx: Tx, cache: TxCache, snapshot_id: int | None) -> dict[StateKey, EventId]:
    """A snapshot's whole state. Recently read states are cached; a snapshot whose parent's
    state is cached is derived from it by reading only the keys it changed."""
    if snapshot_id is None:
        return {}
    cached = cache.shared.state_maps.get(snapshot_id)
    if cached is not None:
        return dict(cached)
    meta = await snapshot_meta(tx, cache, snapshot_id)
    parent = None if meta.parent is None else cache.shared.state_maps.get(meta.parent)
    if parent is not None:
        state = dict(parent)
        # The changes against the parent are always among the snapshot's own stored rows.
        for event_type, state_key, event_id in await _own_rows(
            tx, snapshot_id, await _changed_keys(tx, snapshot_id)
        ):
            if event_id is None:
                state.pop((event_type, state_key), None)
            else:
                state[(event_type, state_key)] = event_id
    else:
        state = await _entries(tx, await stored_chain(tx, cache, snapshot_id), None)
    cache.shared.state_maps.put(snapshot_id, state)
    return dict(state)


async def _own_rows(
    tx: Tx, snapshot_id: int, key_nids: Collection[int]
) -> list[tuple[str, str, EventId | None]]:
    out: list[tuple[str, str, EventId | None]] = []
    for part in chunks(sorted(key_nids)):
        for event_type, state_key, event_nid, event_id in await tx.fetch(
            "SELECT k.type, k.state_key, d.event_nid, e.event_id FROM state_deltas d "
            "JOIN state_keys k ON k.key_nid = d.key_nid "
            "LEFT JOIN events e ON e.event_nid = d.event_nid "
            "WHERE d.snapshot_id = ? AND d.key_nid IN @LIST",
            snapshot_id,
            list(part),
        ):
            if event_nid is not None and event_id is None:
                raise CorruptData(f"state snapshot {snapshot_id} names a missing event")
            out.append((event_type, state_key, event_id))
    if len(out) != len(key_nids):
        raise CorruptData(f"state snapshot {snapshot_id}: changed keys without stored rows")
    return out


async def state_entries(
    tx: Tx, cache: TxCache, snapshot_id: int | None, keys: Iterable[StateKey]
) -> dict[StateKey, EventId]:
    wanted = list(keys)
    if snapshot_id is None or not wanted:
        return {}
    nids = await state_key_nids(tx, cache, wanted, create=False)
    if not nids:
        return {}
    chain = await stored_chain(tx, cache, snapshot_id)
    return await _entries(tx, chain, set(nids.values()))


class PendingDeltas:
    """The ``state_deltas`` rows of the snapshots written in one transaction, inserted together
    by ``flush`` (before the transaction ends) instead of one statement per snapshot. Later
    snapshot writes of the transaction read these rows from here."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[int, int | None]] = {}

    def take(self) -> list[tuple[int, int, int | None]]:
        """The rows kept since the last ``flush`` or ``take``, which the caller inserts."""
        rows = [
            (sid, k, v) for sid, entries in self.rows.items() for k, v in sorted(entries.items())
        ]
        self.rows = {}
        return rows

    async def flush(self, tx: Tx) -> None:
        rows = self.take()
        await tx.executemany(
            "INSERT INTO state_deltas (snapshot_id, key_nid, event_nid) VALUES (?, ?, ?)", rows
        )


async def write_snapshot(
    tx: Tx,
    cache: TxCache,
    delta: StateDelta,
    *,
    room_nid: int,
    pending: PendingDeltas | None = None,
) -> int | None:
    """Store ``delta`` and return its snapshot ID (its base's if nothing really changes).
    With ``pending``, its rows wait there for ``pending.flush``."""
    if not delta.changes:
        return delta.base
    key_ids = await state_key_nids(tx, cache, delta.changes.keys(), create=True)
    wanted_events = {v for v in delta.changes.values() if v is not None}
    event_ids = await event_nids(tx, cache, wanted_events)
    unknown = sorted(wanted_events - event_ids.keys())
    if unknown:
        raise StorageError(f"state refers to events that are not stored: {unknown[:5]}")
    changes: dict[int, int | None] = {
        key_ids[k]: (None if v is None else event_ids[v]) for k, v in delta.changes.items()
    }
    if delta.base is None:
        return await _write_root(tx, cache, room_nid, changes, pending)

    parent = await snapshot_meta(tx, cache, delta.base)
    chain = await stored_chain(tx, cache, parent.snapshot_id)
    position = parent.position + 1
    target = position - _lowbit(position)
    skipped = [m for m in chain if m.position > target]  # nearest first
    stored_base = chain[len(skipped)] if len(skipped) < len(chain) else None
    if stored_base is None or stored_base.position != target:
        raise CorruptData(f"state snapshot {parent.snapshot_id}: broken stored chain")
    skipped_ids = {m.snapshot_id for m in skipped}
    rows = await _chain_rows(tx, chain, changes.keys(), skipped_ids, pending)
    rank = {m.snapshot_id: i for i, m in enumerate(chain)}
    best: dict[int, tuple[int, int | None]] = {}
    for sid, key_nid, event_nid in rows:
        if key_nid in changes:
            seen = best.get(key_nid)
            if seen is None or rank[sid] < seen[0]:
                best[key_nid] = (rank[sid], event_nid)
    current = {k: e for k, (_, e) in best.items() if e is not None}
    effective = {k: v for k, v in changes.items() if current.get(k) != v}
    if not effective:
        return parent.snapshot_id

    stored: dict[int, int | None] = {}
    # Oldest first, so nearer snapshots overwrite.
    for _, key_nid, event_nid in sorted(
        (r for r in rows if r[0] in skipped_ids), key=lambda r: -rank[r[0]]
    ):
        stored[key_nid] = event_nid
    stored.update(effective)
    return await _insert_snapshot(
        tx,
        cache,
        SnapshotMeta(0, room_nid, parent.snapshot_id, stored_base.snapshot_id, position),
        changed=sorted(effective),
        rows=stored,
        pending=pending,
    )


async def _chain_rows(
    tx: Tx,
    chain: list[SnapshotMeta],
    key_nids: Collection[int],
    skipped_ids: AbstractSet[int],
    pending: PendingDeltas | None,
) -> list[tuple[int, int, int | None]]:
    """The stored rows of ``chain`` for ``key_nids``, and all rows of ``skipped_ids`` (a part
    of ``chain``): rows written in this transaction from ``pending``, the others in one query
    (two when the keys are many)."""
    written = pending.rows if pending is not None else {}
    out: list[tuple[int, int, int | None]] = []
    ids: list[int] = []
    for m in chain:
        entries = written.get(m.snapshot_id)
        if entries is None:
            ids.append(m.snapshot_id)
        elif m.snapshot_id in skipped_ids:
            out.extend((m.snapshot_id, k, v) for k, v in entries.items())
        else:
            out.extend((m.snapshot_id, k, entries[k]) for k in key_nids if k in entries)
    if not ids:
        return out
    unread = [i for i in ids if i in skipped_ids]
    others = [i for i in ids if i not in skipped_ids]
    if len(key_nids) <= CHUNK:
        # Two indexed reads in one statement: by (snapshot, key) for the keys, whole snapshots
        # for the skipped ones (never a root: a root holds a whole state).
        rows = await tx.fetch(
            "SELECT snapshot_id, key_nid, event_nid FROM state_deltas "
            "WHERE snapshot_id IN @LIST AND key_nid IN @LIST UNION ALL "
            "SELECT snapshot_id, key_nid, event_nid FROM state_deltas WHERE snapshot_id IN @LIST",
            others,
            sorted(key_nids),
            unread,
        )
        out.extend((r[0], r[1], r[2]) for r in rows)
        return out
    for part in chunks(sorted(key_nids)):
        rows = await tx.fetch(
            "SELECT snapshot_id, key_nid, event_nid FROM state_deltas "
            "WHERE snapshot_id IN @LIST AND key_nid IN @LIST",
            others,
            list(part),
        )
        out.extend((r[0], r[1], r[2]) for r in rows)
    if unread:
        rows = await tx.fetch(
            "SELECT snapshot_id, key_nid, event_nid FROM state_deltas WHERE snapshot_id IN @LIST",
            unread,
        )
        out.extend((r[0], r[1], r[2]) for r in rows)
    return out


async def _write_root(
    tx: Tx,
    cache: TxCache,
    room_nid: int,
    changes: Mapping[int, int | None],
    pending: PendingDeltas | None,
) -> int | None:
    entries = {k: v for k, v in changes.items() if v is not None}
    if not entries:
        return None
    return await _insert_snapshot(
        tx,
        cache,
        SnapshotMeta(0, room_nid, None, None, 0),
        changed=sorted(entries),
        rows=entries,
        pending=pending,
    )


async def _insert_snapshot(
    tx: Tx,
    cache: TxCache,
    meta: SnapshotMeta,
    *,
    changed: list[int],
    rows: Mapping[int, int | None],
    pending: PendingDeltas | None,
) -> int:
    row = await tx.fetchrow(
        "INSERT INTO state_snapshots (room_nid, parent, base, position, changed_keys) "
        "VALUES (?, ?, ?, ?, ?) RETURNING snapshot_id",
        meta.room_nid,
        meta.parent,
        meta.base,
        meta.position,
        pack_ints(changed),
    )
    assert row is not None
    sid = int(row[0])
    if pending is not None:
        pending.rows[sid] = dict(rows)
    else:
        await tx.executemany(
            "INSERT INTO state_deltas (snapshot_id, key_nid, event_nid) VALUES (?, ?, ?)",
            [(sid, k, v) for k, v in sorted(rows.items())],
        )
    cache.snapshots[sid] = SnapshotMeta(sid, meta.room_nid, meta.parent, meta.base, meta.position)
    return sid


async def _stored_keys(tx: Tx, snapshot_id: int) -> set[int]:
    rows = await tx.fetch("SELECT key_nid FROM state_deltas WHERE snapshot_id = ?", snapshot_id)
    return {r[0] for r in rows}


async def _changed_keys(tx: Tx, snapshot_id: int) -> set[int]:
    row = await tx.fetchrow(
        "SELECT changed_keys FROM state_snapshots WHERE snapshot_id = ?", snapshot_id
    )
    if row is None:
        raise StorageError(f"unknown state snapshot {snapshot_id}")
    return set(unpack_ints(row[0], f"state snapshot {snapshot_id}"))


async def _keys_touched_between(tx: Tx, cache: TxCache, old: int, new: int) -> set[int] | None:
    """Keys that may differ between two snapshots, or None without a near common ancestor."""
    x = await snapshot_meta(tx, cache, old)
    y = await snapshot_meta(tx, cache, new)
    touched: set[int] = set()
    for _ in range(MAX_DIFF_STEPS):
        if x.snapshot_id == y.snapshot_id:
            return touched
        if x.position < y.position:
            x, y = y, x
        base = None if x.base is None else await snapshot_meta(tx, cache, x.base)
        if x.position > y.position and base is not None and base.position >= y.position:
            touched |= await _stored_keys(tx, x.snapshot_id)
            x = base
        elif x.parent is not None:
            touched |= await _changed_keys(tx, x.snapshot_id)
            x = await snapshot_meta(tx, cache, x.parent)
        else:
            return None  # two different roots
    return None


async def state_diff(
    tx: Tx, cache: TxCache, old: int | None, new: int | None
) -> tuple[dict[StateKey, EventId], dict[StateKey, EventId]]:
    if old == new:
        return {}, {}
    if old is None or new is None:
        old_map = await state_map(tx, cache, old)
        new_map = await state_map(tx, cache, new)
    else:
        touched = await _keys_touched_between(tx, cache, old, new)
        if touched is None:
            old_map = await state_map(tx, cache, old)
            new_map = await state_map(tx, cache, new)
        else:
            old_chain = await stored_chain(tx, cache, old)
            new_chain = await stored_chain(tx, cache, new)
            old_map = await _entries(tx, old_chain, touched)
            new_map = await _entries(tx, new_chain, touched)
    added = {k: v for k, v in new_map.items() if old_map.get(k) != v}
    removed = {k: v for k, v in old_map.items() if new_map.get(k) != v}
    return added, removed
