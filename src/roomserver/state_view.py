"""The state read model: what the input pipeline and the queries both read of stored state.

A stored event carries the snapshot of the state before it; the state after it is that snapshot
plus the event itself (``state_after_delta``), written as a ``StateDelta`` so that nothing is
loaded until asked (``full_state``). ``EventCache`` keeps recently used accepted events in front
of storage. ``StateResolver`` resolves several full states into one: the algorithm is pure and
synchronous, so it runs in a worker thread with an event provider that hands storage reads back
to the event loop (after prefetching the likely events in one batch).

``roomserver.input`` (which writes) and ``roomserver.query`` (which only reads) both build on
this module; it knows storage only through the Protocols of ``roomserver.ports``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, cast

from roomserver.api import StoredEvent
from roomserver.core.decide import parse_rejection
from roomserver.core.ids import EventId, RoomId
from roomserver.core.pdu import Event
from roomserver.core.room_versions import RoomVersion
from roomserver.core.stateres import resolve_state
from roomserver.ports import (
    AuthChainIndex,
    EventStore,
    SnapshotId,
    StateDelta,
    StateKey,
    StateStore,
)


class StateReadStore(EventStore, StateStore, AuthChainIndex, Protocol):
    """The storage the state read model reads (a subset of ``roomserver.ports.Storage``)."""


class EventCache:
    """A bounded LRU of accepted stored events by ID, in front of ``InputStore.get_events``.

    Only events that are not rejected are cached: their JSON changes only when a redaction is
    applied (``evict`` then), and the rejected flag of an accepted event never flips back.
    """

    def __init__(self, store: EventStore, *, capacity: int = 20_000) -> None:
        self._store = store
        self._capacity = capacity
        self._events: OrderedDict[EventId, StoredEvent] = OrderedDict()
        self._by_room: dict[RoomId, set[EventId]] = {}

    async def get(self, event_ids: Iterable[EventId]) -> dict[EventId, StoredEvent]:
        out: dict[EventId, StoredEvent] = {}
        missing: list[EventId] = []
        for event_id in event_ids:
            hit = self._events.get(event_id)
            if hit is None:
                missing.append(event_id)
            else:
                self._events.move_to_end(event_id)
                out[event_id] = hit
        if missing:
            loaded = await self._store.get_events(missing)
            for event_id, stored in loaded.items():
                out[event_id] = stored
                self.remember(stored)
        return out

    def peek(self, event_ids: Iterable[EventId]) -> dict[EventId, StoredEvent]:
        """The cached ones among ``event_ids`` (no storage access)."""
        out: dict[EventId, StoredEvent] = {}
        for event_id in event_ids:
            hit = self._events.get(event_id)
            if hit is not None:
                out[event_id] = hit
        return out

    def remember(self, stored: StoredEvent) -> None:
        if stored.rejected:
            return
        event = stored.event
        self._events[event.event_id] = stored
        self._events.move_to_end(event.event_id)
        self._by_room.setdefault(event.room_id, set()).add(event.event_id)
        while len(self._events) > self._capacity:
            _, oldest = self._events.popitem(last=False)
            self._unindex(oldest.event)

    def evict(self, event_id: EventId) -> None:
        stored = self._events.pop(event_id, None)
        if stored is not None:
            self._unindex(stored.event)

    def forget_room(self, room_id: RoomId) -> None:
        """Drop the room's cached events (another process may have changed them: applied a
        redaction, given an outlier state)."""
        for event_id in self._by_room.pop(room_id, ()):
            self._events.pop(event_id, None)

    def settle_snapshots(
        self,
        event_ids: Iterable[EventId],
        resolve: Callable[[SnapshotId | None], SnapshotId | None],
    ) -> None:
        """Replace placeholder snapshot IDs (negative: from writes not yet committed when the
        events were cached) of the cached ``event_ids`` with what ``resolve`` says."""
        for event_id in event_ids:
            stored = self._events.get(event_id)
            if stored is None:
                continue
            if stored.state_snapshot is not None and stored.state_snapshot < 0:
                real = resolve(SnapshotId(stored.state_snapshot))
                self._events[event_id] = _with_snapshot(stored, real)

    def _unindex(self, event: Event) -> None:
        ids = self._by_room.get(event.room_id)
        if ids is not None:
            ids.discard(event.event_id)
            if not ids:
                del self._by_room[event.room_id]


def _with_snapshot(stored: StoredEvent, snapshot: SnapshotId | None) -> StoredEvent:
    """``replace(stored, state_snapshot=snapshot)``, without its per-call field lookup (a
    message settles most of its events)."""
    return StoredEvent(
        stored.event,
        stored.outlier,
        stored.rejected,
        stored.rejection_reason,
        stored.soft_failed,
        snapshot,
        stored.redacted_because,
        stored.stream_position,
    )


def snapshot_of(stored: StoredEvent) -> SnapshotId | None:
    return None if stored.state_snapshot is None else SnapshotId(stored.state_snapshot)


def state_after_delta(stored: StoredEvent) -> StateDelta:
    """Spec 11.1: the state after an event is the state before it, plus the event itself when
    it is a state event that was not rejected."""
    event = stored.event
    if event.state_key is not None and not stored.rejected:
        return StateDelta(snapshot_of(stored), {event.state_tuple: event.event_id})
    return StateDelta(snapshot_of(stored), {})


async def full_state(store: StateStore, delta: StateDelta) -> dict[StateKey, EventId]:
    """The whole state ``delta`` describes."""
    out = await store.state_map(delta.base) if delta.base is not None else {}
    out = dict(out)
    apply_changes(out, delta.changes)
    return out


def apply_changes(
    state: dict[StateKey, EventId], changes: Mapping[StateKey, EventId | None]
) -> None:
    for key, value in changes.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value


class _ThreadedProvider:
    """An event provider for state resolution running in a worker thread.

    Reads missing from the prefetched cache are sent to the event loop and awaited there.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        events: EventCache,
        prefetched: Mapping[EventId, StoredEvent],
    ) -> None:
        self._loop = loop
        self._events = events
        # State resolution (``roomserver.core.stateres``) asks by plain ``str`` event IDs.
        self._known = cast("dict[str, StoredEvent | None]", dict(prefetched))

    def _stored(self, event_id: str) -> StoredEvent | None:
        if event_id not in self._known:
            wanted = EventId(event_id)  # named by state resolution (only on a prefetch miss)
            future = asyncio.run_coroutine_threadsafe(self._events.get([wanted]), self._loop)
            self._known[event_id] = future.result().get(wanted)
        return self._known[event_id]

    def get_event(self, event_id: str) -> Event | None:
        stored = self._stored(event_id)
        return None if stored is None else stored.event

    def is_rejected(self, event_id: str) -> bool:
        """Rejected against its own auth events (not merely against the state before it)."""
        stored = self._stored(event_id)
        if stored is None or not stored.rejected:
            return False
        return parse_rejection(stored.rejection_reason).kind.rejected_for_state_resolution


class StateResolver:
    """Resolves several full states into one (spec: state resolution of the room version)."""

    def __init__(self, store: StateReadStore, events: EventCache) -> None:
        self._store = store
        self._events = events

    async def resolve(
        self,
        rules: RoomVersion,
        state_sets: Sequence[Mapping[StateKey, EventId]],
        *,
        pending: Sequence[Event] = (),
    ) -> dict[StateKey, EventId]:
        """``pending``: accepted events not stored yet that the state sets may name."""
        if not state_sets:
            return {}
        first = state_sets[0]
        if all(s == first for s in state_sets[1:]):
            return dict(first)
        conflicted: set[EventId] = set()
        keys = set().union(*(s.keys() for s in state_sets))
        for key in keys:
            values = {s.get(key) for s in state_sets}
            if len(values) > 1:
                conflicted.update(v for v in values if v is not None)
        chain = await self._store.auth_chain(conflicted)
        prefetched = await self._events.get(sorted(conflicted | chain))
        for event in pending:
            prefetched[event.event_id] = StoredEvent(event=event, outlier=False)
        provider = _ThreadedProvider(asyncio.get_running_loop(), self._events, prefetched)
        sets = [dict(s) for s in state_sets]
        resolved = await asyncio.to_thread(resolve_state, rules.identifier, sets, provider)
        # State resolution returns plain ``str`` values: the IDs of the state sets' events.
        return cast("dict[StateKey, EventId]", dict(resolved))
