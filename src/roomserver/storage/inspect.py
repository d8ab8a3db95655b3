"""Read-only overviews for operators: the rooms held, a room's events by outcome, and the IDs
of a room's newest events (the console and the DAG picture). Written once over the dialect."""

from __future__ import annotations

from dataclasses import dataclass

from roomserver.core.ids import EventId
from roomserver.storage.engine import Tx


@dataclass(frozen=True, slots=True)
class RoomOverview:
    room_id: str
    room_version: str
    #: Stored events of the room, outliers included.
    events: int


@dataclass(frozen=True, slots=True)
class EventCounts:
    """A room's stored events by outcome (an outlier counts only as an outlier)."""

    accepted: int = 0
    soft_failed: int = 0
    rejected: int = 0
    outlier: int = 0


async def list_rooms(tx: Tx, *, limit: int) -> list[RoomOverview]:
    """The created rooms, most events first (then by room ID), at most ``limit``."""
    rows = await tx.fetch(
        "SELECT r.room_id, r.room_version, COUNT(e.event_nid) AS n FROM rooms r "
        "LEFT JOIN events e ON e.room_nid = r.room_nid WHERE r.version > 0 "
        "GROUP BY r.room_id, r.room_version ORDER BY n DESC, r.room_id LIMIT ?",
        limit,
    )
    return [RoomOverview(str(r[0]), str(r[1]), int(r[2])) for r in rows]


async def event_counts(tx: Tx, room_id: str) -> EventCounts:
    rows = await tx.fetch(
        "SELECT e.outlier, e.rejected, e.soft_failed, COUNT(*) FROM events e "
        "JOIN rooms r ON r.room_nid = e.room_nid WHERE r.room_id = ? "
        "GROUP BY e.outlier, e.rejected, e.soft_failed",
        room_id,
    )
    accepted = soft_failed = rejected = outlier = 0
    for is_outlier, is_rejected, is_soft_failed, count in rows:
        if is_outlier:
            outlier += int(count)
        elif is_rejected:
            rejected += int(count)
        elif is_soft_failed:
            soft_failed += int(count)
        else:
            accepted += int(count)
    return EventCounts(accepted, soft_failed, rejected, outlier)


async def newest_event_ids(tx: Tx, room_id: str, *, limit: int) -> list[EventId]:
    """The IDs of the room's ``limit`` newest non-outlier events (by stream position), oldest
    first."""
    rows = await tx.fetch(
        "SELECT e.event_id FROM events e JOIN rooms r ON r.room_nid = e.room_nid "
        "WHERE r.room_id = ? AND e.outlier = 0 ORDER BY e.event_nid DESC LIMIT ?",
        room_id,
        limit,
    )
    return [EventId(str(r[0])) for r in reversed(rows)]
