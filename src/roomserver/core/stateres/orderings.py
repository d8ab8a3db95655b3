"""The two orderings of state resolution v2 (spec: room version 2, "State resolution").

* ``reverse_topological_power_ordering``: auth ancestors first, ties broken by the sender's
  power level (higher first), then ``origin_server_ts``, then event ID.
* ``mainline_ordering``: by the position of each event's closest mainline power levels event
  (older first), then ``origin_server_ts``, then event ID.

Both compute every sort key once and sort with total keys ending in the event ID.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from roomserver.core.pdu import Event
from roomserver.core.stateres._rules import user_power_level
from roomserver.core.stateres.provider import EventLookup

PowerSortKey = tuple[float, int, str]


def sender_power_level(event: Event, lookup: EventLookup) -> float:
    """The power level of ``event``'s sender as its own auth events grant it (spec §11.2).

    The power levels event it cites decides; if it cites none, the room's creator has 100
    (up to room version 11). In room version 12 creators outrank every integer level whatever
    the power levels say (MSC4289).
    """
    return user_power_level(
        event.sender,
        power_levels=lookup.power_levels_auth_event(event),
        create=lookup.create_event_for(event),
        rules=event.rules,
    )


def power_sort_key(event: Event, lookup: EventLookup) -> PowerSortKey:
    """x sorts before y when x's sender has more power, then when x is older, then by ID."""
    return (-sender_power_level(event, lookup), event.origin_server_ts, event.event_id)


def power_event_graph(
    power_event_ids: Iterable[str], full_conflicted_set: AbstractSet[str], lookup: EventLookup
) -> dict[str, set[str]]:
    """The power events and their auth ancestors within the full conflicted set, as a graph.

    Maps each event to its auth events that are in the full conflicted set. The walk goes
    through the full conflicted set only (docs/stateres.md, "Ancestors outside the full
    conflicted set").
    """
    graph: dict[str, set[str]] = {}
    stack = [e for e in power_event_ids if e in full_conflicted_set]
    while stack:
        event_id = stack.pop()
        if event_id in graph:
            continue
        edges: set[str] = {
            a for a in lookup.get(event_id).auth_event_ids if a in full_conflicted_set
        }
        graph[event_id] = edges
        stack.extend(a for a in edges if a not in graph)
    return graph


def reverse_topological_power_ordering(
    graph: dict[str, set[str]], lookup: EventLookup
) -> list[str]:
    """The events of ``graph`` in reverse topological power ordering (spec: "reverse
    topological power ordering"): the lexicographical topological sort by ``power_sort_key``.

    ``graph`` maps each event to its auth events within the set being sorted.
    """
    keys = {event_id: power_sort_key(lookup.get(event_id), lookup) for event_id in graph}
    return lexicographical_topological_sort(graph, keys)


def lexicographical_topological_sort(
    graph: Mapping[str, AbstractSet[str]], keys: Mapping[str, tuple[Any, ...]]
) -> list[str]:
    """Kahn's algorithm emitting, among the vertices whose predecessors are all out, the one
    with the smallest key (spec: the "lexicographically smallest topological ordering").

    ``graph`` maps each vertex to the vertices that must come before it, all of them in
    ``graph``; ``keys`` gives each vertex a total sort key whose last element is the vertex
    itself. Vertices left behind by a cycle (no accepted event can be in one) come last, in
    key order.
    """
    waiting_on = {vertex: len(edges) for vertex, edges in graph.items()}
    users: dict[str, list[str]] = {vertex: [] for vertex in graph}
    for vertex, edges in graph.items():
        for before in edges:
            users[before].append(vertex)
    ready = [keys[v] for v, count in waiting_on.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        vertex = heapq.heappop(ready)[-1]
        ordered.append(vertex)
        for user in users[vertex]:
            waiting_on[user] -= 1
            if waiting_on[user] == 0:
                heapq.heappush(ready, keys[user])
    if len(ordered) != len(graph):
        left = sorted(set(graph) - set(ordered), key=keys.__getitem__)
        ordered.extend(left)
    return ordered


def mainline(power_levels: Event | None, lookup: EventLookup) -> dict[str, int]:
    """The mainline of ``power_levels``, as a map from event ID to its depth on it.

    The root (the power levels event citing none) has depth 1 and ``power_levels`` itself the
    largest depth (spec: "mainline"); no power levels event gives an empty mainline.
    """
    chain: list[str] = []
    seen: set[str] = set()
    event = power_levels
    while event is not None and event.event_id not in seen:
        seen.add(event.event_id)
        chain.append(event.event_id)
        event = lookup.power_levels_auth_event(event)
    return {event_id: depth for depth, event_id in enumerate(reversed(chain), start=1)}


def mainline_depth(event: Event, positions: dict[str, int], lookup: EventLookup) -> int:
    """The mainline depth of ``event``'s closest mainline event, 0 when it reaches none.

    Walks the power levels events cited through ``auth_events`` from ``event``. Each power
    levels event's answer is memoised in ``positions`` (for events off the mainline it is the
    depth they lead to), so walks shared by many events are done once.
    """
    walked: list[str] = []
    current: Event | None = event
    depth = 0
    while current is not None:
        found = positions.get(current.event_id)
        if found is not None:
            depth = found
            break
        if current.event_id in walked[-64:] and current.event_id in walked:
            break  # a cycle: only possible with forged server-assigned IDs (v1, v2)
        walked.append(current.event_id)
        current = lookup.power_levels_auth_event(current)
    for event_id in walked[1:]:  # the power levels events on the way (not ``event`` itself)
        positions[event_id] = depth
    return depth


def mainline_ordering(
    event_ids: Collection[str], power_levels: Event | None, lookup: EventLookup
) -> list[str]:
    """``event_ids`` sorted by mainline ordering relative to ``power_levels`` (spec §11.2).

    Events whose closest mainline event is older come first, then older ``origin_server_ts``,
    then smaller event ID.
    """
    if not event_ids:
        return []
    positions = mainline(power_levels, lookup)
    keyed: list[tuple[int, int, str]] = []
    for event_id in event_ids:
        event = lookup.get(event_id)
        keyed.append((mainline_depth(event, positions, lookup), event.origin_server_ts, event_id))
    keyed.sort()
    return [event_id for _, _, event_id in keyed]
