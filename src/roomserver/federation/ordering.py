"""Deterministic topological ordering of fetched events (oldest first)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from roomserver.core.ids import EventId
from roomserver.core.pdu import Event


def topological_order(
    events: Iterable[Event], parents: Callable[[Event], Iterable[str]]
) -> list[Event]:
    """``events`` with every event after its ``parents`` among them; ties by depth, event ID.

    Parents outside ``events`` are ignored. Events on a cycle (only a lying server makes one)
    are appended last in (depth, event ID) order, so the result always holds every event.
    """
    by_id = {e.event_id: e for e in events}
    waiting = {eid: {p for p in parents(e) if p in by_id and p != eid} for eid, e in by_id.items()}
    children: dict[str, list[EventId]] = {eid: [] for eid in by_id}
    for eid, parent_ids in waiting.items():
        for parent in parent_ids:
            children[parent].append(eid)
    ready = [(by_id[e].depth, e) for e, p in waiting.items() if not p]
    heapq.heapify(ready)
    out: list[Event] = []
    while ready:
        _, eid = heapq.heappop(ready)
        out.append(by_id[eid])
        for child in children[eid]:
            waiting[child].discard(eid)
            if not waiting[child]:
                heapq.heappush(ready, (by_id[child].depth, child))
    if len(out) < len(by_id):
        placed = {e.event_id for e in out}
        out += sorted((e for e in by_id.values() if e.event_id not in placed), key=_depth_key)
    return out


def _depth_key(event: Event) -> tuple[int, str]:
    return (event.depth, event.event_id)
