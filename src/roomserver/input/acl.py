"""Server ACL of an event's origin, read from the room's current state.

The decision itself is ``roomserver.core.acl`` (pure); this module finds the ACL content. The
compiled predicate is cached per ACL event, so checking costs one cheap state lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from roomserver.core.acl import acl_predicate
from roomserver.core.ids import EventId, RoomId
from roomserver.core.state_keys import SERVER_ACL_KEY
from roomserver.input.store import EventCache, InputStore
from roomserver.ports import RoomInfo, SnapshotId


class ServerAclChecker(Protocol):
    """The server ACL of ``room`` (by its current state) as a predicate on server names;
    ``None`` (an unknown room) allows every server."""

    async def predicate(self, room: RoomInfo | None) -> Callable[[str], bool]: ...


class StoredAclChecker:
    """``ServerAclChecker`` over the room's current ``m.room.server_acl`` in storage."""

    def __init__(self, store: InputStore, events: EventCache) -> None:
        self._store = store
        self._events = events
        self._compiled: dict[str, Callable[[str], bool]] = {}
        self._by_snapshot: dict[SnapshotId, EventId | None] = {}

    async def predicate(self, room: RoomInfo | None) -> Callable[[str], bool]:
        if room is None or room.current_state is None:
            return acl_predicate(None)
        # Snapshots are immutable: remember which ACL event (if any) each one holds.
        if room.current_state in self._by_snapshot:
            acl_id = self._by_snapshot[room.current_state]
        else:
            entries = await self._store.state_entries(room.current_state, [SERVER_ACL_KEY])
            acl_id = entries.get(SERVER_ACL_KEY)
            if len(self._by_snapshot) > 10_000:
                self._by_snapshot.clear()
            self._by_snapshot[room.current_state] = acl_id
        if acl_id is None:
            return acl_predicate(None)
        compiled = self._compiled.get(acl_id)
        if compiled is None:
            stored = (await self._events.get([acl_id])).get(acl_id)
            compiled = acl_predicate(stored.event.content if stored is not None else None)
            if len(self._compiled) > 1024:
                self._compiled.clear()
            self._compiled[acl_id] = compiled
        return compiled

    async def server_allowed(self, room_id: RoomId, server_name: str) -> bool:
        return (await self.predicate(await self._store.room(room_id)))(server_name)
