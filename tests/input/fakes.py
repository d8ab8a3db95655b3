"""In-memory fakes of the ports the input pipeline uses: storage, key ring, fetcher, publisher.

``MemoryStorage`` follows the ``roomserver.ports`` contract (idempotent ``EventWrite``s,
optimistic room versions, outbox with sequences); snapshots are plain dicts.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any

from roomserver.api import StoredEvent, decode_output_event
from roomserver.core.errors import InvalidSignature
from roomserver.core.identifiers import server_name_of
from roomserver.core.pdu import Event, parse_event
from roomserver.core.signatures import verify_event
from roomserver.ports import (
    ConcurrentUpdate,
    EventFacts,
    EventStatus,
    EventWrite,
    HaveEvents,
    InputAssumption,
    MemberFacts,
    OutboxEntry,
    PersistResult,
    RedactionRecord,
    RoomInfo,
    SnapshotId,
    StaleRead,
    StateDelta,
    StateKey,
    record_placeholders,
    with_placeholders_resolved,
)
from roomserver.testing.builder import RoomBuilder


class MemoryStorage:
    def __init__(self) -> None:
        self.events: dict[str, StoredEvent] = {}
        self.member_facts_reads = 0
        self.rooms: dict[str, RoomInfo] = {}
        self.snapshots: dict[int, dict[StateKey, str]] = {}
        self.redactions: dict[str, RedactionRecord] = {}
        self.outbox: dict[str, list[tuple[OutboxEntry, bool]]] = {}
        self.memberships: dict[tuple[str, str], str] = {}
        self.persist_calls = 0
        self.fail_next_persist: Exception | None = None
        self._ids = itertools.count(1)
        self._positions = itertools.count(1)
        self._sequences = itertools.count(1)

    # -- EventStore ------------------------------------------------------------------------
    async def get_events(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        return {i: self.events[i] for i in event_ids if i in self.events}

    async def event_facts(self, event_ids: Iterable[str]) -> dict[str, EventFacts]:
        out = {}
        for i in event_ids:
            if i in self.events:
                stored = self.events[i]
                event = stored.event
                out[i] = EventFacts(event.type, event.state_key, event.depth, stored.rejected)
        return out

    async def member_facts(self, event_ids: Iterable[str]) -> dict[str, MemberFacts]:
        self.member_facts_reads += 1
        return {
            i: MemberFacts(self.events[i].event.membership, self.events[i].event.sender)
            for i in event_ids
            if i in self.events
        }

    async def room(self, room_id: str) -> RoomInfo | None:
        return self.rooms.get(room_id)

    async def room_version_of(self, room_id: str) -> str | None:
        room = self.rooms.get(room_id)
        if room is not None:
            return room.room_version
        for stored in self.events.values():
            if stored.event.room_id == room_id:
                return stored.event.room_version
        return None

    def _snapshot(self, delta: StateDelta) -> SnapshotId | None:
        if not delta.changes:
            return delta.base  # as storage does: nothing changes, the base is the snapshot
        state = dict(self.snapshots[delta.base]) if delta.base is not None else {}
        for key, value in delta.changes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        snapshot = next(self._ids)
        self.snapshots[snapshot] = state
        return SnapshotId(snapshot)

    async def persist_many(
        self, writes: Sequence[EventWrite], *, expect: InputAssumption | None = None
    ) -> list[PersistResult]:
        """In order, with placeholder snapshots resolved (not atomic: a fake), after checking
        ``expect`` as the real storage does."""
        if expect is not None:
            room = self.rooms.get(expect.room_id)
            if room is None or room.version != expect.room_row_version:
                raise StaleRead(f"room {expect.room_id} moved on")
            if any(i in self.events for i in expect.not_stored):
                raise StaleRead("an event is stored already")
            if await self.referenced_as_prev(expect.room_id, expect.not_cited):
                raise StaleRead("an assumed-uncited event is cited")
            for event_id in expect.not_redacted:
                if await self.redactions_for(event_id):
                    raise StaleRead("an assumed-unredacted event has a redaction")
        resolved: dict[int, int | None] = {}
        results = []
        for write in writes:
            result = await self.persist(with_placeholders_resolved(write, resolved))
            record_placeholders(write, result, resolved)
            results.append(result)
        return results

    async def persist(self, write: EventWrite) -> PersistResult:
        self.persist_calls += 1
        if self.fail_next_persist is not None:
            exc, self.fail_next_persist = self.fail_next_persist, None
            raise exc
        event = write.event
        room_update = write.room_update
        room = self.rooms.get(event.room_id)
        if room_update is not None:
            expected = room.version if room is not None else None
            if room_update.expected_version != expected:
                raise ConcurrentUpdate(f"room {event.room_id} moved on")
        existing = self.events.get(event.event_id)
        state_before: SnapshotId | None = None
        if write.status is EventStatus.STATEFUL and write.state_before is not None:
            if existing is not None and not existing.outlier:
                state_before = SnapshotId(existing.state_snapshot or 0)
            else:
                state_before = self._snapshot(write.state_before)
        if existing is None:
            stored = StoredEvent(
                event=event,
                outlier=write.status is EventStatus.OUTLIER,
                rejected=write.rejection_reason is not None,
                rejection_reason=write.rejection_reason,
                soft_failed=write.soft_failed,
                state_snapshot=state_before,
                stream_position=next(self._positions),
            )
        else:
            stored = existing
            if existing.outlier and write.status is EventStatus.STATEFUL:
                stored = replace(stored, outlier=False, state_snapshot=state_before)
            if existing.rejected and write.rejection_reason is None:
                stored = replace(stored, rejected=False, rejection_reason=None)
            if existing.rejected and write.rejection_reason is not None:
                stored = replace(stored, rejection_reason=write.rejection_reason)
            stored = replace(stored, soft_failed=write.soft_failed)
        self.events[event.event_id] = stored
        current = room.current_state if room is not None else None
        if room_update is not None:
            current = self._snapshot(room_update.current_state)
            self.rooms[event.room_id] = RoomInfo(
                room_id=event.room_id,
                room_version=room_update.room_version,
                forward_extremities=tuple(room_update.forward_extremities),
                current_state=current,
                last_sent_event_id=room_update.last_sent_event_id,
                version=(room.version + 1) if room is not None else 1,
            )
            for change in room_update.membership_changes:
                self.memberships[(event.room_id, change.user_id)] = change.membership
        box = self.outbox.setdefault(event.room_id, [])
        known = {e.msg_id for e, _ in box}
        for entry in write.outbox:
            if entry.msg_id not in known:
                box.append((replace(entry, sequence=next(self._sequences)), False))
        if write.redaction_target is not None and event.event_id not in self.redactions:
            self.redactions[event.event_id] = RedactionRecord(
                event.event_id, write.redaction_target, False
            )
        applied = write.apply_redaction
        if applied is not None:
            target = self.events[applied.target_id]
            redacted = parse_event(
                applied.redacted_pdu, target.event.room_version, event_id=applied.target_id
            )
            self.events[applied.target_id] = replace(
                target, event=redacted, redacted_because=applied.redaction_id
            )
            self.redactions[applied.redaction_id] = RedactionRecord(
                applied.redaction_id, applied.target_id, True
            )
        return PersistResult(state_before, current, stored.stream_position or 0)

    async def referenced_as_prev(self, room_id: str, event_ids: Iterable[str]) -> set[str]:
        """As ``SqlStorage``: only citations by events of the room with state, not rejected
        and not soft-failed, count."""
        wanted = set(event_ids)
        return {
            p
            for s in self.events.values()
            if s.event.room_id == room_id and not (s.outlier or s.rejected or s.soft_failed)
            for p in s.event.prev_event_ids
            if p in wanted
        }

    async def redactions_for(self, event_id: str) -> list[RedactionRecord]:
        return sorted(
            (r for r in self.redactions.values() if event_id in (r.target_id, r.redaction_id)),
            key=lambda r: r.redaction_id,
        )

    async def pending_outbox(self, room_id: str) -> list[OutboxEntry]:
        return [e for e, sent in self.outbox.get(room_id, []) if not sent]

    async def mark_outbox_sent(self, room_id: str, sequences: Collection[int]) -> None:
        wanted = set(sequences)
        self.outbox[room_id] = [
            (e, sent or e.sequence in wanted) for e, sent in self.outbox.get(room_id, [])
        ]

    # -- StateStore ------------------------------------------------------------------------
    async def state_map(self, snapshot: SnapshotId | None) -> dict[StateKey, str]:
        return dict(self.snapshots[snapshot]) if snapshot is not None else {}

    async def state_entries(
        self, snapshot: SnapshotId | None, keys: Iterable[StateKey]
    ) -> dict[StateKey, str]:
        state = self.snapshots[snapshot] if snapshot is not None else {}
        return {k: state[k] for k in keys if k in state}

    async def state_diff(
        self, old: SnapshotId | None, new: SnapshotId | None
    ) -> tuple[dict[StateKey, str], dict[StateKey, str]]:
        a, b = await self.state_map(old), await self.state_map(new)
        added = {k: v for k, v in b.items() if a.get(k) != v}
        removed = {k: v for k, v in a.items() if b.get(k) != v}
        return added, removed

    # -- AuthChainIndex --------------------------------------------------------------------
    async def auth_chain(self, event_ids: Iterable[str]) -> set[str]:
        out: set[str] = set()
        todo = list(event_ids)
        while todo:
            stored = self.events.get(todo.pop())
            if stored is None:
                continue
            for auth_id in stored.event.auth_event_ids:
                if auth_id not in out:
                    out.add(auth_id)
                    todo.append(auth_id)
        return out

    async def auth_chain_difference(self, state_sets: Sequence[Collection[str]]) -> set[str]:
        chains = [await self.auth_chain(s) | set(s) for s in state_sets]
        return set().union(*chains) - chains[0].intersection(*chains[1:]) if chains else set()

    # -- MembershipStore -------------------------------------------------------------------
    async def membership(self, room_id: str, user_id: str) -> str | None:
        return self.memberships.get((room_id, user_id))

    async def joined_users(self, room_id: str) -> list[str]:
        return sorted(u for (r, u), m in self.memberships.items() if r == room_id and m == "join")

    async def joined_servers(self, room_id: str) -> list[str]:
        return sorted({server_name_of(u) for u in await self.joined_users(room_id)})

    async def close(self) -> None:
        return None

    # -- test helpers ----------------------------------------------------------------------
    async def current_state(self, room_id: str) -> dict[StateKey, str]:
        room = self.rooms[room_id]
        return await self.state_map(room.current_state)


class FakeKeyRing:
    """Verifies signatures with the keys of ``RoomBuilder``s (read at each call, so keys the
    builders create later count too)."""

    def __init__(self, *builders: RoomBuilder) -> None:
        self.builders = builders
        self.calls = 0

    async def verify_event(self, pdu: Event | Mapping[str, Any], room_version: str) -> None:
        self.calls += 1
        keys: dict[str, dict[str, Any]] = {}
        for builder in self.builders:
            for server, by_id in builder.verify_keys().items():
                keys.setdefault(server, {}).update(by_id)
        verify_event(pdu, room_version=room_version, verify_keys=keys)


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, bytes, str]] = []
        self.fail_next: Exception | None = None
        self.calls = 0  # publish_room_outputs calls (one per published batch)

    async def publish_room_outputs(self, room_id: str, outputs: Sequence[OutboxEntry]) -> None:
        self.calls += 1
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        for o in outputs:
            self.published.append((room_id, o.output_type, o.payload, o.msg_id))

    def outputs(self, output_type: str | None = None) -> list[Any]:
        return [
            decode_output_event(p).payload
            for _, t, p, _ in self.published
            if output_type is None or t == output_type
        ]

    def msg_ids(self) -> list[str]:
        return [m for *_, m in self.published]

    def clear(self) -> None:
        self.published.clear()


@dataclass
class _MissingEvents:
    events: tuple[Event, ...]
    unresolved_prev_ids: tuple[str, ...]


@dataclass
class _RemoteState:
    event_id: str
    server: str
    state_event_ids: tuple[str, ...]
    auth_chain_ids: tuple[str, ...]
    events: tuple[Event, ...]
    missing_event_ids: tuple[str, ...]


async def _held(have: HaveEvents, ids: Sequence[str]) -> AbstractSet[str]:
    if isinstance(have, AbstractSet):
        return {i for i in ids if i in have}
    return await have(ids)


def _auth_order(events: Iterable[Event]) -> list[Event]:
    """Oldest first by auth events (depth, then event ID, as tie-break)."""
    by_id = {e.event_id: e for e in events}
    out: list[Event] = []
    seen: set[str] = set()

    def visit(event: Event) -> None:
        if event.event_id in seen:
            return
        seen.add(event.event_id)
        for auth_id in event.auth_event_ids:
            if auth_id in by_id:
                visit(by_id[auth_id])
        out.append(event)

    for event in sorted(by_id.values(), key=lambda e: (e.depth, e.event_id)):
        visit(event)
    return out


@dataclass
class FakeFetcher:
    """A remote server holding ``events``; ``state_before`` gives its state before each event.

    ``hang`` makes every call wait forever (to test deadlines); ``calls`` records the calls.
    """

    events: dict[str, Event]
    state_before: dict[str, dict[StateKey, str]] = field(default_factory=dict)
    hang: bool = False
    calls: list[str] = field(default_factory=list)

    async def _maybe_hang(self, name: str) -> None:
        self.calls.append(name)
        if self.hang:
            await asyncio.Event().wait()

    async def fetch_event(
        self, room_id: str, room_version: str, event_id: str, servers: Sequence[str]
    ) -> Event:
        await self._maybe_hang("fetch_event")
        return self.events[event_id]

    def _chain(self, event_id: str) -> list[Event]:
        out: dict[str, Event] = {}
        todo = list(self.events[event_id].auth_event_ids)
        while todo:
            eid = todo.pop()
            if eid in out or eid not in self.events:
                continue
            out[eid] = self.events[eid]
            todo.extend(self.events[eid].auth_event_ids)
        return _auth_order(out.values())

    async def fetch_auth_chain(
        self,
        room_id: str,
        room_version: str,
        event_id: str,
        servers: Sequence[str],
        *,
        have: HaveEvents = frozenset(),
    ) -> list[Event]:
        await self._maybe_hang("fetch_auth_chain")
        return self._chain(event_id)

    async def get_missing_events(
        self,
        room_id: str,
        room_version: str,
        earliest: Sequence[str],
        latest: Sequence[str],
        *,
        limit: int = 20,
        min_depth: int = 0,
        servers: Sequence[str],
        have: HaveEvents = frozenset(),
    ) -> _MissingEvents:
        await self._maybe_hang("get_missing_events")
        stop = set(earliest)
        found: dict[str, Event] = {}
        frontier = [p for eid in latest for p in self.events[eid].prev_event_ids]
        while frontier and len(found) < limit:
            eid = frontier.pop(0)
            if eid in found or eid in stop or eid not in self.events:
                continue
            if eid in await _held(have, [eid]):
                continue
            found[eid] = self.events[eid]
            frontier.extend(self.events[eid].prev_event_ids)
        ordered = sorted(found.values(), key=lambda e: (e.depth, e.event_id))
        cited = {p for e in ordered for p in e.prev_event_ids}
        unresolved = cited - set(found) - stop - set(await _held(have, sorted(cited)))
        return _MissingEvents(tuple(ordered), tuple(sorted(unresolved)))

    async def state_ids(
        self,
        room_id: str,
        room_version: str,
        event_id: str,
        servers: Sequence[str],
        *,
        have: HaveEvents = frozenset(),
    ) -> _RemoteState:
        await self._maybe_hang("state_ids")
        state = self.state_before[event_id]
        state_ids = sorted(state.values())
        chain: dict[str, Event] = {}
        for sid in state_ids:
            chain[sid] = self.events[sid]
            for e in self._chain(sid):
                chain[e.event_id] = e
        held = await _held(have, sorted(chain))
        lacked = [e for e in chain.values() if e.event_id not in held]
        return _RemoteState(
            event_id=event_id,
            server="remote.test",
            state_event_ids=tuple(state_ids),
            auth_chain_ids=tuple(sorted(set(chain) - set(state_ids))),
            events=tuple(_auth_order(lacked)),
            missing_event_ids=(),
        )


def invalid_signature_keyring() -> FakeKeyRing:
    """A key ring that knows no keys: every event fails verification."""
    return FakeKeyRing()


__all__ = [
    "FakeFetcher",
    "FakeKeyRing",
    "InvalidSignature",
    "MemoryStorage",
    "RecordingPublisher",
    "invalid_signature_keyring",
]
