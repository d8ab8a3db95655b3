"""The types of identifiers at the public boundaries: ``EventId``, ``RoomId``, ``ServerName``.

They are ``NewType``s of ``str``: free at run time, checked by mypy. A value gets its type where
it is parsed or checked (``parse_event`` for the IDs an event names, ``compute_event_id`` and
``compute_room_id``, ``roomserver.api.route_room_id`` and the wire decoders of
``roomserver.api``); a caller holding a plain string it trusts wraps it: ``RoomId(value)``.
Their grammars are in ``roomserver.core.identifiers``.
"""

from __future__ import annotations

from typing import NewType

__all__ = ["EventId", "RoomId", "ServerName"]

EventId = NewType("EventId", str)
"""An event ID: ``$`` and an opaque part (``$local:server`` in room versions 1-2, the event's
reference hash from v3)."""

RoomId = NewType("RoomId", str)
"""A room ID: ``!local:server``, or from room version 12 ``!`` and the create event's
reference hash."""

ServerName = NewType("ServerName", str)
"""A server name: ``host[:port]``."""
