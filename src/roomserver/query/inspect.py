"""The operator's read side: the rooms held, a room's newest events with their outcomes, its
events counted by outcome. Used by the HTTP API and the console."""

from __future__ import annotations

from typing import Protocol

from roomserver.api import StoredEvent
from roomserver.core.ids import EventId
from roomserver.storage.inspect import EventCounts, RoomOverview


class RoomCatalog(Protocol):
    """The storage reads this module needs (``SqlStorage`` has them)."""

    async def list_rooms(self, *, limit: int = 1000) -> list[RoomOverview]: ...

    async def event_counts(self, room_id: str) -> EventCounts: ...

    async def newest_event_ids(self, room_id: str, *, limit: int) -> list[EventId]: ...

    async def get_events(self, event_ids: list[EventId]) -> dict[EventId, StoredEvent]: ...


class RoomInspector:
    def __init__(self, catalog: RoomCatalog) -> None:
        self._catalog = catalog

    async def rooms(self, *, limit: int = 1000) -> list[RoomOverview]:
        return await self._catalog.list_rooms(limit=limit)

    async def event_counts(self, room_id: str) -> EventCounts:
        return await self._catalog.event_counts(room_id)

    async def newest_events(self, room_id: str, *, limit: int) -> list[StoredEvent]:
        """The room's ``limit`` newest events (outliers excepted), oldest first."""
        ids = await self._catalog.newest_event_ids(room_id, limit=limit)
        found = await self._catalog.get_events(ids)
        return [found[i] for i in ids if i in found]
