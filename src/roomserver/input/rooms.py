"""The room rows as this processor last wrote or read them (bounded LRU).

Per-room exclusivity makes a cached row current; a stale one (another process handled the room)
fails the version check of the next ``RoomUpdate``, which clears the cache, and every message
starts by reading the row from storage (``InputProcessor.begin_message``).
"""

from __future__ import annotations

from collections import OrderedDict

from roomserver.core.ids import RoomId
from roomserver.ports import EventStore, RoomInfo

_ROOM_CACHE_SIZE = 10_000


class RoomRows:
    def __init__(self, store: EventStore, *, capacity: int = _ROOM_CACHE_SIZE) -> None:
        self._store = store
        self._capacity = capacity
        self._rooms: OrderedDict[RoomId, RoomInfo] = OrderedDict()

    def peek(self, room_id: RoomId) -> RoomInfo | None:
        """The cached row (no storage access)."""
        return self._rooms.get(room_id)

    async def get(self, room_id: RoomId) -> RoomInfo | None:
        """The cached row, else the stored one (then cached)."""
        room = self._rooms.get(room_id)
        if room is None:
            room = await self._store.room(room_id)
            if room is not None:
                self.remember(room)
        return room

    def remember(self, room: RoomInfo) -> None:
        self._rooms[room.room_id] = room
        self._rooms.move_to_end(room.room_id)
        while len(self._rooms) > self._capacity:
            self._rooms.popitem(last=False)

    def forget(self, room_id: RoomId) -> None:
        self._rooms.pop(room_id, None)

    def clear(self) -> None:
        self._rooms.clear()
