"""Queries over what the roomserver stored. Read-only; safe to run beside the room workers."""

from __future__ import annotations

from collections.abc import Sequence

from roomserver.api import StoredEvent
from roomserver.core.ids import EventId, RoomId
from roomserver.core.room_versions import room_version
from roomserver.ports import StateKey
from roomserver.state_view import (
    EventCache,
    StateReadStore,
    StateResolver,
    full_state,
    state_after_delta,
)


class UnknownRoom(LookupError):
    """The roomserver holds no room with this ID."""

    def __init__(self, room_id: str) -> None:
        super().__init__(f"unknown room {room_id}")
        self.room_id = room_id


class UnknownEvents(LookupError):
    """Some of the events asked about are not stored (or have no state: outliers)."""

    def __init__(self, event_ids: Sequence[str]) -> None:
        super().__init__("events not stored with state: " + ", ".join(event_ids))
        self.event_ids = list(event_ids)


class Queries:
    def __init__(self, store: StateReadStore) -> None:
        self._store = store
        self._events = EventCache(store, capacity=2_000)
        self._resolver = StateResolver(store, self._events)

    async def current_state(self, room_id: RoomId) -> dict[StateKey, EventId]:
        """The room's current state; an empty mapping for an unknown room. Resolved from the
        forward extremities, so never names a rejected, soft-failed or outlier event."""
        info = await self._store.room(room_id)
        if info is None:
            return {}
        return await self._store.state_map(info.current_state)

    async def latest_events(self, room_id: RoomId) -> list[str]:
        """The room's forward extremities (accepted, not soft-failed events with state); empty
        for an unknown room."""
        info = await self._store.room(room_id)
        return [] if info is None else list(info.forward_extremities)

    async def event(self, event_id: EventId) -> StoredEvent | None:
        """The stored event with its flags (outlier, rejected and its reason, soft-failed)."""
        found = await self._store.get_events([event_id])
        return found.get(event_id)

    async def state_after(
        self, room_id: RoomId, event_ids: Sequence[EventId]
    ) -> dict[StateKey, EventId]:
        """The state after the given events: each event's state after it, resolved together
        with the room version's state resolution (spec 11.1).

        A rejected event's state after is the state before it; a soft-failed state event is
        part of the state after itself (it passed the checks against the state before it).
        Outliers have no state: ``UnknownEvents``, as for events not stored or of another
        room."""
        info = await self._store.room(room_id)
        if info is None:
            raise UnknownRoom(room_id)
        ids = list(dict.fromkeys(event_ids))
        stored = await self._store.get_events(ids)
        lacking = [
            i
            for i in ids
            if i not in stored
            or stored[i].state_snapshot is None
            or stored[i].event.room_id != room_id
        ]
        if lacking:
            raise UnknownEvents(lacking)
        sets = [await full_state(self._store, state_after_delta(stored[i])) for i in ids]
        if len(sets) == 1:
            return sets[0]
        return await self._resolver.resolve(room_version(info.room_version), sets)
