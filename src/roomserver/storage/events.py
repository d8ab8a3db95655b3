"""Persisting one ``EventWrite`` atomically, and reading events back.

``persist`` is one transaction: room check (the room row is locked on PostgreSQL) ► event row,
prev edges, auth chain index, state-before snapshot ► redaction bookkeeping ► current state
snapshot, extremities, version bump, memberships ► outbox entries. Any failure rolls it all
back. ``tx.checkpoint`` marks the points where tests inject failures.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import replace
from typing import Any

from roomserver.api import StoredEvent
from roomserver.core.errors import InvalidEvent, UnknownRoomVersion
from roomserver.core.identifiers import server_name_of
from roomserver.core.ids import EventId, RoomId
from roomserver.core.pdu import Event, parse_event
from roomserver.ports import (
    ConcurrentUpdate,
    CorruptData,
    EventFacts,
    EventStatus,
    EventWrite,
    InputAssumption,
    MemberFacts,
    OutboxEntry,
    PersistResult,
    RedactionRecord,
    RoomInfo,
    RoomUpdate,
    SnapshotId,
    StaleRead,
    StateDelta,
    StorageError,
)
from roomserver.storage.authchain import index_event, index_unindexed
from roomserver.storage.batch import RoomInTx, RoomRow, WriteBatch, mark_sent
from roomserver.storage.cache import TxCache
from roomserver.storage.dialect import Dialect, insert_rows
from roomserver.storage.engine import Row, Tx
from roomserver.storage.ids import chunks
from roomserver.storage.state import write_snapshot


class EncodedWrite:
    """An ``EventWrite`` with its JSON already encoded (done before entering the transaction),
    and the two state deltas storage writes for it: its ``state_before`` and its room update's
    ``current_state``, with the placeholder bases known so far resolved (``resolve``). Storage
    reads the deltas here, never from ``write``: resolving a placeholder builds one small
    ``StateDelta`` instead of new ``EventWrite`` and ``RoomUpdate`` objects."""

    __slots__ = ("current_state", "event_json", "redacted_json", "state_before", "write")

    def __init__(self, write: EventWrite, event_json: bytes, redacted_json: bytes | None) -> None:
        self.write = write
        self.event_json = event_json
        self.redacted_json = redacted_json
        self.state_before = write.state_before
        update = write.room_update
        self.current_state = None if update is None else update.current_state

    def resolve(self, resolved: Mapping[int, int | None]) -> EncodedWrite:
        """Resolve the write's placeholder bases that ``resolved`` knows (the others are left
        as they are); returns ``self``."""
        write = self.write
        self.state_before = _resolved(write.state_before, resolved)
        update = write.room_update
        self.current_state = None if update is None else _resolved(update.current_state, resolved)
        return self

    def unresolved(self) -> int | None:
        """A placeholder base left unresolved, if any."""
        for delta in (self.state_before, self.current_state):
            if delta is not None and delta.base is not None and delta.base < 0:
                return delta.base
        return None


def _resolved(delta: StateDelta | None, resolved: Mapping[int, int | None]) -> StateDelta | None:
    if delta is None:
        return None
    base = delta.base
    if base is None or base >= 0 or base not in resolved:
        return delta
    real = resolved[base]
    return StateDelta(None if real is None else SnapshotId(real), delta.changes)


async def _room_row(tx: Tx, room_id: str, *, lock: bool) -> RoomRow | None:
    sql = "SELECT room_nid, version, current_state FROM rooms WHERE room_id = ?"
    row = await tx.fetchrow(sql + " FOR_UPDATE" if lock else sql, room_id)
    return None if row is None else RoomRow(row[0], row[1], row[2])


def _check_room_version(room_id: str, found: int, update: RoomUpdate) -> None:
    if update.expected_version is None:
        if found != 0:
            raise ConcurrentUpdate(f"room {room_id} already exists (version {found})")
    elif found != update.expected_version:
        raise ConcurrentUpdate(
            f"room {room_id} is at version {found}, expected {update.expected_version}"
        )


async def _ensure_room(tx: Tx, room_id: str, room_version: str, *, lock: bool) -> RoomRow:
    row = await tx.fetchrow(
        "INSERT INTO rooms (room_id, room_version) VALUES (?, ?) "
        "ON CONFLICT (room_id) DO NOTHING RETURNING room_nid",
        room_id,
        room_version,
    )
    if row is None:  # created meanwhile by another transaction
        existing = await _room_row(tx, room_id, lock=lock)
        if existing is None:
            raise StorageError(f"could not create room {room_id}")
        return existing
    return RoomRow(row[0], 0, None)


async def _room_in_tx(tx: Tx, batch: WriteBatch, ev: Event, *, lock: bool) -> RoomInTx:
    """The room of ``ev`` as this transaction sees it: read (and locked, if ``lock``) once."""
    known = batch.rooms.get(ev.room_id)
    if known is not None and (known.locked or not lock):
        return known
    # First seen, or seen unlocked so far (no update applied yet: only updates need the lock).
    row = await _room_row(tx, ev.room_id, lock=lock)
    if row is None:
        row = await _ensure_room(tx, ev.room_id, ev.room_version, lock=lock)
    room = RoomInTx(row, lock, row.version, row.current_state)
    batch.rooms[ev.room_id] = room
    return room


async def _insert_event(
    tx: Tx,
    cache: TxCache,
    batch: WriteBatch,
    room_nid: int,
    enc: EncodedWrite,
    state_before: int | None,
) -> int | None:
    """Insert a new event row and its edges; None if the event is already stored."""
    ev = enc.write.event
    inserted = await tx.fetchrow(
        "INSERT INTO events (event_id, room_nid, type, state_key, depth, outlier, rejected, "
        "rejection_reason, soft_failed, state_before, json) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_nid",
        *_event_row(enc, room_nid, state_before),
    )
    if inserted is None:
        return None
    nid = int(inserted[0])
    await _after_insert(tx, cache, batch, ev, nid)
    return nid


async def _after_insert(tx: Tx, cache: TxCache, batch: WriteBatch, ev: Event, nid: int) -> None:
    """A new event row's numeric ID, prev edges and auth chain position."""
    cache.event_nids[ev.event_id] = nid
    batch.prev_edges.extend((p, nid) for p in ev.prev_event_ids)
    await index_event(tx, cache, ev, event_nid=nid, pending=batch.positions)


def _event_row(enc: EncodedWrite, room_nid: int, state_before: int | None) -> tuple[Any, ...]:
    """The values of an ``events`` row, in the order of ``_EVENT_COLUMNS``."""
    w = enc.write
    ev = w.event
    return (
        ev.event_id,
        room_nid,
        ev.type,
        ev.state_key,
        ev.depth,
        int(w.status is not EventStatus.STATEFUL),
        int(w.rejection_reason is not None),
        w.rejection_reason,
        int(w.soft_failed),
        state_before,
        enc.event_json,
    )


_EVENT_COLUMNS = (
    ("event_id", "TEXT"),
    ("room_nid", "BIGINT"),
    ("type", "TEXT"),
    ("state_key", "TEXT"),
    ("depth", "BIGINT"),
    ("outlier", "SMALLINT"),
    ("rejected", "SMALLINT"),
    ("rejection_reason", "TEXT"),
    ("soft_failed", "SMALLINT"),
    ("state_before", "BIGINT"),
    ("json", "BYTEA"),
)


def _insertable_ahead(enc: EncodedWrite, cache: TxCache, repeated: AbstractSet[str]) -> bool:
    """Whether the event row of ``enc`` is known before the writes ahead of it in its call are
    applied: a new event (as far as we know) written once in the call, whose state-before is
    none or an already stored snapshot, used as it is."""
    w = enc.write
    ev = w.event
    if ev.event_id in repeated or cache.event_nid(ev.event_id) is not None:
        return False
    if w.status is not EventStatus.STATEFUL:
        return True
    before = enc.state_before
    return before is not None and not before.changes and (before.base is None or before.base >= 0)


async def insert_run(
    tx: Tx,
    cache: TxCache,
    batch: WriteBatch,
    writes: Iterable[EncodedWrite],
    *,
    repeated: AbstractSet[str],
) -> int:
    """Insert, in one statement, the event rows of the longest prefix of ``writes`` (their
    placeholders resolved as far as the writes before them allow) whose rows are known ahead
    (``_insertable_ahead``); ``persist_in_batch`` then finds them in ``batch.inserted``. Events
    found stored already are left to it too. Returns the length of that prefix (0: the first
    write must be applied alone). Numeric IDs follow the order of ``writes``.

    ``repeated``: event IDs written more than once in the call (applied one by one, in order).
    """
    run: list[EncodedWrite] = []
    for enc in writes:
        if not _insertable_ahead(enc, cache, repeated):
            break
        run.append(enc)
    if len(run) < 2:
        return 0  # a single row gains nothing over persist_in_batch's own insert
    rows: list[tuple[Any, ...]] = []
    for enc in run:
        w = enc.write
        ev = w.event
        needs_lock = w.room_update is not None or w.expected_room_version is not None
        room = await _room_in_tx(tx, batch, ev, lock=needs_lock)
        before = enc.state_before
        stateful = w.status is EventStatus.STATEFUL
        rows.append(
            _event_row(enc, room.row.room_nid, before.base if stateful and before else None)
        )
    for sql, args in insert_rows(
        tx.dialect,
        "events",
        _EVENT_COLUMNS,
        rows,
        suffix="ON CONFLICT (event_id) DO NOTHING RETURNING event_id, event_nid",
    ):
        for event_id, nid in await tx.fetch(sql, *args):
            batch.inserted[event_id] = int(nid)
    batch.found_stored.update(r[0] for r in rows if r[0] not in batch.inserted)
    return len(run)


async def _store_event(
    tx: Tx, cache: TxCache, batch: WriteBatch, room_nid: int, enc: EncodedWrite
) -> tuple[int, int | None]:
    """Insert the event (or upgrade the stored one); its numeric ID and state-before snapshot."""
    w = enc.write
    ev = w.event
    delta = enc.state_before
    stateful = w.status is EventStatus.STATEFUL
    if stateful and delta is None:
        raise ValueError(f"{ev.event_id}: a stateful EventWrite needs state_before")
    ahead = batch.inserted.pop(ev.event_id, None)
    if ahead is not None:  # inserted by insert_run, with the same state-before
        base = delta.base if stateful and delta is not None else None
        await _after_insert(tx, cache, batch, ev, ahead)
        return ahead, base
    if (
        cache.event_nid(ev.event_id) is None
        and ev.event_id not in batch.found_stored
        and (delta is None or not stateful or not delta.changes)
    ):
        # The common case (a new event whose state-before needs no new snapshot): insert first,
        # saving a lookup; ON CONFLICT tells us if it was stored after all.
        base = delta.base if stateful and delta is not None else None
        nid = await _insert_event(tx, cache, batch, room_nid, enc, base)
        if nid is not None:
            return nid, base
    row = await tx.fetchrow(
        "SELECT event_nid, outlier, rejected, state_before FROM events WHERE event_id = ?",
        ev.event_id,
    )
    if row is None:
        state_before: int | None = None
        if stateful and delta is not None:
            state_before = await write_snapshot(
                tx, cache, delta, room_nid=room_nid, pending=batch.deltas
            )
        nid = await _insert_event(tx, cache, batch, room_nid, enc, state_before)
        if nid is None:
            raise StorageError(f"event {ev.event_id} appeared during the transaction")
        return nid, state_before

    # Written again: an outlier gaining state, or an event rejected for missing data processed
    # again. The row is updated in place; its prev edges and JSON were stored with it.
    nid, outlier, rejected, state_before = int(row[0]), bool(row[1]), bool(row[2]), row[3]
    if outlier and stateful and delta is not None:
        state_before = await write_snapshot(
            tx, cache, delta, room_nid=room_nid, pending=batch.deltas
        )
        await tx.execute(
            "UPDATE events SET outlier = 0, state_before = ?, soft_failed = ? WHERE event_nid = ?",
            state_before,
            int(w.soft_failed),
            nid,
        )
    if rejected:
        # The new outcome replaces the rejection: cleared (we now know more), or the new reason
        # (a later resubmission must see why it failed this time). A rejection is never set on
        # an accepted event.
        await tx.execute(
            "UPDATE events SET rejected = ?, rejection_reason = ?, soft_failed = ? "
            "WHERE event_nid = ?",
            int(w.rejection_reason is not None),
            w.rejection_reason,
            int(w.soft_failed),
            nid,
        )
    await index_unindexed(tx, cache, ev, event_nid=nid, pending=batch.positions)
    return nid, state_before


async def _record_redactions(tx: Tx, enc: EncodedWrite) -> None:
    w = enc.write
    if w.redaction_target is not None:
        await tx.execute(
            "INSERT INTO redactions (redaction_id, target_id, validated) VALUES (?, ?, 0) "
            "ON CONFLICT (redaction_id) DO NOTHING",
            w.event.event_id,
            w.redaction_target,
        )
    applied = w.apply_redaction
    if applied is not None:
        assert enc.redacted_json is not None
        changed = await tx.execute(
            "UPDATE events SET json = ?, redacted_because = ? WHERE event_id = ?",
            enc.redacted_json,
            applied.redaction_id,
            applied.target_id,
        )
        if changed != 1:
            raise StorageError(f"cannot apply a redaction to {applied.target_id}: not stored")
        await tx.execute(
            "INSERT INTO redactions (redaction_id, target_id, validated) VALUES (?, ?, 1) "
            "ON CONFLICT (redaction_id) DO UPDATE SET validated = 1",
            applied.redaction_id,
            applied.target_id,
        )


async def _apply_room_update(
    tx: Tx,
    cache: TxCache,
    batch: WriteBatch,
    room: RoomInTx,
    update: RoomUpdate,
    current_state: StateDelta,
) -> int | None:
    """``update``, whose current state is ``current_state`` (its delta, placeholders resolved)."""
    room_nid = room.row.room_nid
    current = await write_snapshot(
        tx, cache, current_state, room_nid=room_nid, pending=batch.deltas
    )
    room.update = (
        update.room_version,
        tuple(update.forward_extremities),
        current,
        update.last_sent_event_id,
    )
    room.version += 1
    room.current_state = current
    batch.memberships.extend(
        (room_nid, m.user_id, server_name_of(m.user_id), m.membership, m.event_id, m.sender)
        for m in update.membership_changes
    )
    return current


async def persist_in_batch(
    tx: Tx, cache: TxCache, batch: WriteBatch, enc: EncodedWrite
) -> tuple[PersistResult, int]:
    """Apply one write inside a transaction; the rows nothing reads back wait in ``batch``
    (the caller flushes it before the transaction ends). The result (without the pending
    outbox) and the room's numeric ID."""
    w = enc.write
    ev = w.event
    update = w.room_update
    lock = update is not None or w.expected_room_version is not None
    room = await _room_in_tx(tx, batch, ev, lock=lock)
    if update is not None:
        # After _ensure_room: a concurrent creator may have committed in between.
        _check_room_version(ev.room_id, room.version, update)
    elif w.expected_room_version is not None and room.version != w.expected_room_version:
        raise ConcurrentUpdate(
            f"room {ev.room_id} is at version {room.version}, "
            f"decided at version {w.expected_room_version}"
        )
    tx.checkpoint("room")
    room_nid = room.row.room_nid
    nid, state_before = await _store_event(tx, cache, batch, room_nid, enc)
    tx.checkpoint("event")
    await _record_redactions(tx, enc)
    tx.checkpoint("redactions")
    current = room.current_state
    if update is not None:
        assert enc.current_state is not None
        current = await _apply_room_update(tx, cache, batch, room, update, enc.current_state)
    tx.checkpoint("room_update")
    batch.outbox.extend((room_nid, o.msg_id, o.output_type, o.payload) for o in w.outbox)
    if w.outbox_sent:
        batch.outbox_sent.setdefault(room_nid, set()).update(w.outbox_sent)
    tx.checkpoint("outbox")
    result = PersistResult(
        state_before=None if state_before is None else SnapshotId(state_before),
        current_state=None if current is None else SnapshotId(current),
        stream_position=nid,
    )
    return result, room_nid


async def unsent_outbox(tx: Tx, room_nid: int) -> tuple[OutboxEntry, ...]:
    rows = await tx.fetch(
        "SELECT msg_id, output_type, payload, sequence FROM outbox "
        "WHERE room_nid = ? AND sent = 0 ORDER BY sequence",
        room_nid,
    )
    return tuple(_outbox_entry(r) for r in rows)


async def persist(
    tx: Tx, cache: TxCache, enc: EncodedWrite, *, report_pending: bool = True
) -> PersistResult:
    batch = WriteBatch()
    result, room_nid = await persist_in_batch(tx, cache, batch, enc)
    await batch.flush(tx)
    if not report_pending:
        return result
    return replace(result, pending_outbox=await unsent_outbox(tx, room_nid))


# ---------------------------------------------------------------------------------------------
# Outbox, prev edges, redactions


def _outbox_entry(row: Row) -> OutboxEntry:
    return OutboxEntry(row[0], row[1], bytes(row[2]), int(row[3]))


async def pending_outbox(tx: Tx, room_id: str) -> list[OutboxEntry]:
    rows = await tx.fetch(
        "SELECT o.msg_id, o.output_type, o.payload, o.sequence FROM outbox o "
        "JOIN rooms r ON r.room_nid = o.room_nid "
        "WHERE r.room_id = ? AND o.sent = 0 ORDER BY o.sequence",
        room_id,
    )
    return [_outbox_entry(r) for r in rows]


async def rooms_with_unsent_outbox(tx: Tx) -> list[RoomId]:
    """The rooms that have outbox entries not marked sent, by room ID."""
    rows = await tx.fetch(
        "SELECT r.room_id FROM rooms r WHERE EXISTS "
        "(SELECT 1 FROM outbox o WHERE o.room_nid = r.room_nid AND o.sent = 0) "
        "ORDER BY r.room_id"
    )
    return [RoomId(str(r[0])) for r in rows]


async def mark_outbox_sent(tx: Tx, room_id: str, sequences: list[int]) -> None:
    row = await tx.fetchrow("SELECT room_nid FROM rooms WHERE room_id = ?", room_id)
    if row is not None:
        await mark_sent(tx, int(row[0]), sequences)


async def referenced_as_prev(tx: Tx, room_id: str, event_ids: list[str]) -> set[EventId]:
    """The IDs among ``event_ids`` (sorted, distinct) that an event of ``room_id`` in the room's
    DAG cites as a prev event: stored with state (not an outlier), not rejected and not
    soft-failed. Edges of the other events stay stored (a rejected event processed again may
    be accepted) but do not count: an event they alone cite is still a forward extremity."""
    out: set[EventId] = set()
    for part in chunks(event_ids):
        # The citing event is looked up by its key in a scalar subquery, never joined: a join
        # lets PostgreSQL scan the whole events table when it guesses the flag filters select
        # few rows (tables never analysed, e.g. with autovacuum off), which made this read
        # cost O(room size): seconds per call at 20,000 events.
        rows = await tx.fetch(
            "SELECT DISTINCT p.prev_event_id FROM prev_edges p "
            "WHERE p.prev_event_id IN @LIST AND ("
            "SELECT e.room_nid FROM events e WHERE e.event_nid = p.event_nid "
            "AND e.outlier = 0 AND e.rejected = 0 AND e.soft_failed = 0"
            ") = (SELECT r.room_nid FROM rooms r WHERE r.room_id = ?)",
            part,
            room_id,
        )
        out.update(r[0] for r in rows)
    return out


async def check_assumption(tx: Tx, batch: WriteBatch, expect: InputAssumption) -> None:
    """``StaleRead`` unless what ``expect`` assumed instead of reading holds now: the room row
    is at its version, and none of the events is stored, cited as a prev event (as
    ``referenced_as_prev`` counts) or redacting or redacted. The room row is read locked
    (PostgreSQL: no other transaction changes it before this one ends) and kept in ``batch``
    for the writes that follow, which then do not read it again."""
    room_id = expect.room_id
    row = await _room_row(tx, room_id, lock=True)
    if row is None or row.version != expect.room_row_version:
        found = "no row" if row is None else f"version {row.version}"
        raise StaleRead(
            f"room {room_id}: its cached row was at version {expect.room_row_version}, "
            f"storage has {found}"
        )
    if room_id not in batch.rooms:
        batch.rooms[room_id] = RoomInTx(row, True, row.version, row.current_state)
    for part in chunks(sorted(set(expect.not_stored))):
        stored = await tx.fetchrow("SELECT event_id FROM events WHERE event_id IN @LIST", part)
        if stored is not None:
            raise StaleRead(f"room {room_id}: event {stored[0]} is stored already")
    cited = await referenced_as_prev(tx, room_id, sorted(set(expect.not_cited)))
    if cited:
        raise StaleRead(f"room {room_id}: event {min(cited)} is cited as a prev event")
    redactions = await redactions_for_many(tx, sorted(set(expect.not_redacted)))
    if redactions:
        record = redactions[0]
        raise StaleRead(
            f"room {room_id}: redaction {record.redaction_id} of {record.target_id} is stored"
        )


async def redactions_for(tx: Tx, event_id: str) -> list[RedactionRecord]:
    rows = await tx.fetch(
        "SELECT redaction_id, target_id, validated FROM redactions "
        "WHERE target_id = ? OR redaction_id = ? ORDER BY redaction_id",
        event_id,
        event_id,
    )
    return [RedactionRecord(r[0], r[1], bool(r[2])) for r in rows]


async def redactions_for_many(tx: Tx, event_ids: list[str]) -> list[RedactionRecord]:
    """``redactions_for`` of each of ``event_ids`` (sorted, distinct), in one list."""
    out: dict[tuple[str, str], RedactionRecord] = {}
    for part in chunks(event_ids):
        rows = await tx.fetch(
            "SELECT redaction_id, target_id, validated FROM redactions "
            "WHERE target_id IN @LIST OR redaction_id IN @LIST",
            part,
            part,
        )
        for r in rows:
            out[(r[0], r[1])] = RedactionRecord(r[0], r[1], bool(r[2]))
    return [out[k] for k in sorted(out)]


# ---------------------------------------------------------------------------------------------
# Reading


def decode_event(event_id: str, blob: bytes, version: str) -> Event:
    """Parse a stored event's JSON; ``CorruptData`` if that fails."""
    try:
        pdu = json.loads(bytes(blob))
        return parse_event(pdu, version, event_id=event_id, check_edge_counts=False)
    except (ValueError, TypeError, InvalidEvent, UnknownRoomVersion) as exc:
        raise CorruptData(f"stored event {event_id} cannot be decoded: {exc}") from exc


async def get_events(
    tx: Tx, cache: TxCache, event_ids: Iterable[str]
) -> dict[EventId, StoredEvent]:
    """Flags come from the database every time; parsed JSON from a cache keyed by the event ID
    and its redaction (the only change stored JSON ever sees)."""
    flags: dict[EventId, Row] = {}
    for part in chunks(sorted(set(event_ids))):
        for row in await tx.fetch(
            "SELECT event_id, event_nid, outlier, rejected, rejection_reason, soft_failed, "
            "state_before, redacted_because FROM events WHERE event_id IN @LIST",
            part,
        ):
            flags[row[0]] = row
    parsed: dict[EventId, Event] = {}
    for event_id, row in flags.items():
        event = cache.shared.events.get((event_id, row[7]))
        if event is not None:
            parsed[event_id] = event
    for part in chunks(sorted(flags.keys() - parsed.keys())):
        for event_id, blob, version in await tx.fetch(
            "SELECT e.event_id, e.json, r.room_version FROM events e "
            "JOIN rooms r ON r.room_nid = e.room_nid WHERE e.event_id IN @LIST",
            part,
        ):
            event = decode_event(event_id, blob, version)
            parsed[event_id] = event
            cache.shared.events.put((event_id, flags[event_id][7]), event)
    out: dict[EventId, StoredEvent] = {}
    for event_id, row in flags.items():
        _, nid, outlier, rejected, reason, soft_failed, state_before, redacted_because = row
        if event_id not in parsed:
            raise CorruptData(f"stored event {event_id} has no room")
        out[event_id] = StoredEvent(
            event=parsed[event_id],
            outlier=bool(outlier),
            rejected=bool(rejected),
            rejection_reason=reason,
            soft_failed=bool(soft_failed),
            state_snapshot=state_before,
            redacted_because=redacted_because,
            stream_position=nid,
        )
    return out


# SQLite answers with the JSON text of each field (not its value), decoded and type-checked
# here as ``Event.membership`` does, so a value of another type or with escapes reads the same.
# PostgreSQL cannot: its JSON operators fail on a document with a ``\u0000`` escape anywhere,
# so there the stored JSON is decoded here (still no whole-event parse).
_MEMBER_FACTS_SQLITE = (
    "SELECT event_id, CAST(json AS TEXT) -> '$.content.membership', "
    "CAST(json AS TEXT) -> '$.sender' FROM events WHERE event_id IN @LIST"
)
_MEMBER_FACTS_POSTGRES = "SELECT event_id, json FROM events WHERE event_id IN @LIST"


async def member_facts(tx: Tx, event_ids: Iterable[EventId]) -> dict[EventId, MemberFacts]:
    """``content.membership`` (when a string) and ``sender`` of stored events, read from their
    stored JSON without parsing whole events; unknown IDs are left out."""
    out: dict[EventId, MemberFacts] = {}
    sqlite = tx.dialect is Dialect.SQLITE
    sql = _MEMBER_FACTS_SQLITE if sqlite else _MEMBER_FACTS_POSTGRES
    for part in chunks(sorted(set(event_ids))):
        for row in await tx.fetch(sql, part):
            event_id = row[0]
            try:
                if sqlite:
                    membership = json.loads(row[1]) if row[1] is not None else None
                    sender = json.loads(row[2]) if row[2] is not None else None
                else:
                    pdu = json.loads(bytes(row[1]))
                    content = pdu.get("content")
                    membership = content.get("membership") if isinstance(content, dict) else None
                    sender = pdu.get("sender")
            except (ValueError, AttributeError) as exc:
                raise CorruptData(f"stored event {event_id} cannot be decoded: {exc}") from exc
            if not isinstance(sender, str):
                raise CorruptData(f"stored event {event_id} has no sender")
            out[event_id] = MemberFacts(membership if isinstance(membership, str) else None, sender)
    return out


async def event_facts(tx: Tx, event_ids: Iterable[EventId]) -> dict[EventId, EventFacts]:
    """``EventFacts`` of stored events, from their rows' columns; unknown IDs are left out."""
    out: dict[EventId, EventFacts] = {}
    for part in chunks(sorted(set(event_ids))):
        for event_id, type_, state_key, depth, rejected in await tx.fetch(
            "SELECT event_id, type, state_key, depth, rejected FROM events WHERE event_id IN @LIST",
            part,
        ):
            out[event_id] = EventFacts(type_, state_key, int(depth), bool(rejected))
    return out


async def room_version_of(tx: Tx, room_id: str) -> str | None:
    row = await tx.fetchrow("SELECT room_version FROM rooms WHERE room_id = ?", room_id)
    return None if row is None else str(row[0])


async def room_info(tx: Tx, room_id: RoomId) -> RoomInfo | None:
    row = await tx.fetchrow(
        "SELECT room_version, forward_extremities, current_state, last_sent_event_id, version "
        "FROM rooms WHERE room_id = ? AND version > 0",
        room_id,
    )
    if row is None:
        return None
    try:
        extremities = json.loads(row[1])
        if not isinstance(extremities, list) or not all(isinstance(e, str) for e in extremities):
            raise ValueError("not a list of strings")
    except ValueError as exc:
        raise CorruptData(f"room {room_id}: bad forward extremities: {exc}") from exc
    return RoomInfo(
        room_id=room_id,
        room_version=row[0],
        forward_extremities=tuple(extremities),
        current_state=None if row[2] is None else SnapshotId(row[2]),
        last_sent_event_id=row[3],
        version=int(row[4]),
    )
