"""Storing many outliers at once: batched statements and the auth chain index built in bulk.

``store_outliers`` is what ``events.persist`` does for an outlier ``EventWrite`` (no state, no
room update, no redaction, no outbox), for a whole batch in one transaction: one room check,
one read of which events are stored already, multi-row inserts (``executemany``) of the
events, their prev edges and their auth chain positions. The positions are computed in memory
in the batch's order by the same rules as ``authchain.index_event`` (a chain continues when the
auth event of the same state key is its chain's head; an event with an auth event that has no
position stays unindexed), with the positions and chain heads of the stored auth events read
in one query each instead of one query per event.

The caller gives the events in an order where every auth event comes before the events citing
it (``roomserver.input.bulk`` sorts them), as the normal path stores them.
"""

from __future__ import annotations

from collections.abc import Sequence

from roomserver.core.ids import EventId
from roomserver.core.pdu import Event
from roomserver.ports import OutlierRow
from roomserver.storage.authchain import (
    chain_positions,
    reach_of_auth_events,
    same_key_auth_positions,
)
from roomserver.storage.cache import ChainPosition, TxCache
from roomserver.storage.engine import Tx
from roomserver.storage.ids import chunks, event_nids, pack_ints


async def _room_nid(tx: Tx, room_id: str, room_version: str) -> int:
    await tx.execute(
        "INSERT INTO rooms (room_id, room_version) VALUES (?, ?) ON CONFLICT (room_id) DO NOTHING",
        room_id,
        room_version,
    )
    row = await tx.fetchrow("SELECT room_nid FROM rooms WHERE room_id = ?", room_id)
    assert row is not None  # inserted just above, or there already
    return int(row[0])


async def _stored_ids(tx: Tx, event_ids: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for part in chunks(sorted(set(event_ids))):
        rows = await tx.fetch("SELECT event_id FROM events WHERE event_id IN @LIST", part)
        out.update(r[0] for r in rows)
    return out


async def store_outliers(
    tx: Tx, cache: TxCache, room_id: str, room_version: str, rows: Sequence[OutlierRow]
) -> list[EventId]:
    """Store ``rows`` as outliers of ``room_id``, in order; the IDs of those stored now (an
    event stored already is left as it is: the normal path answers it)."""
    if not rows:
        return []
    room_nid = await _room_nid(tx, room_id, room_version)
    tx.checkpoint("room")
    stored = await _stored_ids(tx, [r.event.event_id for r in rows])
    new: list[OutlierRow] = []
    seen: set[str] = set()
    for row in rows:
        eid = row.event.event_id
        if eid not in stored and eid not in seen:
            seen.add(eid)
            new.append(row)
    await tx.executemany(
        "INSERT INTO events (event_id, room_nid, type, state_key, depth, outlier, rejected, "
        "rejection_reason, soft_failed, state_before, json) "
        "VALUES (?, ?, ?, ?, ?, 1, ?, ?, 0, NULL, ?)",
        [
            (
                r.event.event_id,
                room_nid,
                r.event.type,
                r.event.state_key,
                r.event.depth,
                int(r.rejection_reason is not None),
                r.rejection_reason,
                r.event_json,
            )
            for r in new
        ],
    )
    nids = await event_nids(tx, cache, [r.event.event_id for r in new])
    await tx.executemany(
        "INSERT INTO prev_edges (prev_event_id, event_nid) VALUES (?, ?) "
        "ON CONFLICT (prev_event_id, event_nid) DO NOTHING",
        [(p, nids[r.event.event_id]) for r in new for p in r.event.prev_event_ids],
    )
    tx.checkpoint("event")
    await index_in_bulk(tx, cache, [(r.event, nids[r.event.event_id]) for r in new])
    tx.checkpoint("index")
    return [r.event.event_id for r in new]


async def _chain_heads(tx: Tx, chain_ids: Sequence[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in chunks(sorted(set(chain_ids))):
        rows = await tx.fetch(
            "SELECT chain_id, MAX(sequence) FROM auth_chain_positions "
            "WHERE chain_id IN @LIST GROUP BY chain_id",
            part,
        )
        out.update((int(c), int(s)) for c, s in rows)
    return out


async def index_in_bulk(tx: Tx, cache: TxCache, new_events: Sequence[tuple[Event, int]]) -> None:
    """Index newly stored events (state events only), in order, as ``index_event`` would."""
    state_events = [(e, nid) for e, nid in new_events if e.state_key is not None]
    if not state_events:
        return
    batch_nids: dict[str, int] = {e.event_id: nid for e, nid in state_events}
    outside = {a for e, _ in state_events for a in e.auth_event_ids if a not in batch_nids}
    nid_of = dict(await event_nids(tx, cache, outside))
    nid_of.update(batch_nids)
    positions: dict[int, ChainPosition] = dict(
        await chain_positions(tx, cache, [nid_of[a] for a in outside if a in nid_of])
    )
    heads = await _chain_heads(tx, [p.chain_id for p in positions.values()])
    inserts: list[tuple[int, int, int, bytes]] = []
    for event, nid in state_events:
        auth_nids: dict[str, int] = {a: nid_of[a] for a in event.auth_event_ids if a in nid_of}
        found = {n: positions[n] for n in auth_nids.values() if n in positions}
        if len(found) < len(set(event.auth_event_ids)):
            continue  # unindexed, as index_event leaves it
        reach = reach_of_auth_events(found.values())
        chain_id, sequence = nid, 1
        for same in same_key_auth_positions(event, auth_nids, found):
            if heads.get(same.chain_id) == same.sequence:
                chain_id, sequence = same.chain_id, same.sequence + 1
                break
        flat = tuple(x for chain in sorted(reach) for x in (chain, reach[chain]))
        position = ChainPosition(chain_id, sequence, flat, event.state_tuple)
        positions[nid] = position
        heads[chain_id] = sequence
        cache.chain_positions[nid] = position
        inserts.append((nid, chain_id, sequence, pack_ints(flat)))
    await tx.executemany(
        "INSERT INTO auth_chain_positions (event_nid, chain_id, sequence, reach) "
        "VALUES (?, ?, ?, ?)",
        inserts,
    )
