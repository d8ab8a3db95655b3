"""Each step of state resolution as a public function, for use outside ``resolve_state``.

Every function takes event IDs (or state sets of event IDs) and the same ``events`` as
``resolve_state``: a mapping of event ID to ``Event``, or an ``EventProvider`` whose optional
index methods (``auth_chain_difference``, ``conflicted_subgraph``, ``state_difference``,
``is_rejected``) are used when it has them. Like the rest of the core they are pure and
synchronous. They wrap the functions ``resolve_state`` itself runs, so both answer alike.

Spec references are to the room version 2 document, "State resolution" (v2, room versions
2-11; "Definitions" and "Algorithm"), MSC4297 / room version 12 for v2.1, and the room version
1 document for v1. Unknown events: a given event ID the provider does not have raises
``MissingEvent``; an unknown *auth* event is treated as absent from the graph (the walk stops
there), as in ``resolve_state``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from roomserver.core import room_versions
from roomserver.core.pdu import Event
from roomserver.core.room_versions import StateResAlgorithm
from roomserver.core.stateres import auth_chains, conflicts, orderings, v2
from roomserver.core.stateres.iterative import PartialState
from roomserver.core.stateres.iterative import iterative_auth_checks as _iterative_auth_checks
from roomserver.core.stateres.provider import EventLookup, EventProvider, StateKey, StateMap

Events = Mapping[str, Event] | EventProvider


class SeparatedState(NamedTuple):
    """State sets split into the unconflicted state map and the conflicted state set.

    ``conflicted`` maps each conflicted key to the event IDs the state sets hold for it.
    """

    unconflicted: dict[StateKey, str]
    conflicted: dict[StateKey, frozenset[str]]


def _lookup(events: Events) -> EventLookup:
    return EventLookup(events)


def _known(event_ids: Iterable[str], lookup: EventLookup) -> list[str]:
    """``event_ids``, each checked to be known (``MissingEvent`` otherwise)."""
    ids = list(dict.fromkeys(event_ids))
    for event_id in ids:
        lookup.get(event_id)
    return ids


def separate_conflicted_state(
    state_sets: Sequence[StateMap],
    events: Events | None = None,
    *,
    room_version: str | None = None,
) -> SeparatedState:
    """The unconflicted state map and the conflicted state set of ``state_sets`` (spec v2,
    "Unconflicted state map and conflicted state set").

    A key is unconflicted when every state set maps it to the same event; a key missing from
    some state set is conflicted. With a ``room_version`` that uses state res v1 (spec v1,
    "State resolution"), a key only some state sets have is not a conflict and goes to the
    unconflicted map. ``events`` is optional: it lets a provider answer from storage
    (``state_difference``) or the comparison go through event IDs.
    """
    if not state_sets:
        return SeparatedState({}, {})
    lookup = _lookup(events) if events is not None else None
    v1 = (
        room_version is not None
        and room_versions.room_version(room_version).state_res is StateResAlgorithm.V1
    )
    if v1:
        keys = conflicts.disagreeing_keys(state_sets, lookup)
        unconflicted: dict[StateKey, str] = {}
        for state_set in reversed(state_sets):
            unconflicted.update(state_set)
    else:
        keys = conflicts.conflicted_keys(state_sets, lookup)
        unconflicted = dict(state_sets[0])
    for key in keys:
        unconflicted.pop(key, None)
    conflicted = {key: frozenset(s[key] for s in state_sets if key in s) for key in keys}
    return SeparatedState(unconflicted, conflicted)


def full_auth_chain(event_ids: Iterable[str], events: Events) -> set[str]:
    """The auth chain of the events (spec v2, "Auth chain"): every event reachable from them
    through ``auth_events``, recursively. A given event is in the answer only when another
    one reaches it."""
    lookup = _lookup(events)
    ids = _known(event_ids, lookup)
    return auth_chains.closure(auth_chains.direct_auth_event_ids(ids, lookup), lookup)


def auth_difference(state_sets: Sequence[StateMap], events: Events) -> set[str]:
    """The auth difference of ``state_sets`` (spec v2, "Auth difference"): the events in the
    auth chain of some state set but not of all of them.

    The auth chain of a state set includes its own events, as Synapse's does (see
    docs/stateres.md, "Auth chain difference"). Answered by the provider's
    ``auth_chain_difference`` when it has one.
    """
    if len(state_sets) < 2:
        return set()
    lookup = _lookup(events)
    if lookup.auth_chain_difference is not None:
        return set(lookup.auth_chain_difference(state_sets))
    split = conflicts.split(state_sets, conflicts.conflicted_keys(state_sets, lookup))
    graph = auth_chains.ConflictedGraph(split.per_set, lookup)
    return auth_chains.auth_chain_difference(
        graph, conflicts.unconflicted_event_ids(state_sets, split), len(state_sets), lookup
    )


def conflicted_state_subgraph(conflicted_event_ids: Iterable[str], events: Events) -> set[str]:
    """The conflicted state subgraph (state res v2.1, MSC4297 / room version 12): every event
    on an ``auth_events`` path between two of ``conflicted_event_ids``, both ends included.

    Answered by the provider's ``conflicted_subgraph`` when it has one.
    """
    lookup = _lookup(events)
    ids = frozenset(_known(conflicted_event_ids, lookup))
    if lookup.conflicted_subgraph is not None:
        return set(lookup.conflicted_subgraph(ids))
    return auth_chains.conflicted_subgraph(auth_chains.ConflictedGraph([ids], lookup))


def full_conflicted_set(
    room_version: str, state_sets: Sequence[StateMap], events: Events
) -> set[str]:
    """The full conflicted set (spec v2, "Full conflicted set"): the conflicted state set and
    the auth difference, and in v2.1 (room version 12) the conflicted state subgraph too.

    Not defined for state res v1 (``ValueError``).
    """
    rules = room_versions.room_version(room_version)
    if rules.state_res is StateResAlgorithm.V1:
        raise ValueError(f"room version {room_version} uses state res v1: no full conflicted set")
    if len(state_sets) < 2:
        return set()
    lookup = _lookup(events)
    split = conflicts.split(state_sets, conflicts.conflicted_keys(state_sets, lookup))
    return v2.full_conflicted_set(rules, state_sets, split, lookup)


def sender_power_level(event_id: str, events: Events) -> int | float:
    """The power level of the event's sender as its own auth events grant it (spec v2,
    "Reverse topological power ordering", first comparison): the power levels event it cites;
    if none, 100 for the room's creator up to room version 11; in room version 12 creators
    outrank every integer (``CREATOR_POWER_LEVEL``, infinite)."""
    lookup = _lookup(events)
    return orderings.sender_power_level(lookup.get(event_id), lookup)


def reverse_topological_power_ordering(event_ids: Iterable[str], events: Events) -> list[str]:
    """The events sorted by reverse topological power ordering (spec v2, "Reverse topological
    power ordering"): every event after its auth events among them; otherwise higher sender
    power level first, then older ``origin_server_ts``, then smaller event ID."""
    lookup = _lookup(events)
    ids = _known(event_ids, lookup)
    graph = orderings.power_event_graph(ids, frozenset(ids), lookup)
    return orderings.reverse_topological_power_ordering(graph, lookup)


def mainline_ordering(
    event_ids: Collection[str], events: Events, *, power_levels: str | None
) -> list[str]:
    """The events sorted by mainline ordering relative to the power levels event
    ``power_levels`` (spec v2, "Mainline ordering"): events whose closest mainline event is
    older first, then older ``origin_server_ts``, then smaller event ID. Without a power
    levels event every event is before the mainline and the order is by timestamp."""
    lookup = _lookup(events)
    ids = _known(event_ids, lookup)
    power_levels_event = lookup.get(power_levels) if power_levels is not None else None
    return orderings.mainline_ordering(ids, power_levels_event, lookup)


def lexicographical_topological_sort(
    graph: Mapping[str, Iterable[str]], *, key: Callable[[str], Any]
) -> list[str]:
    """The lexicographically smallest topological ordering of ``graph`` (spec v2, "Reverse
    topological power ordering", which defines it through Kahn's algorithm).

    ``graph`` maps each vertex to the vertices that must come before it (for events: their
    auth events); edges to vertices outside ``graph`` are ignored. Among the vertices whose
    predecessors are all out, the one with the smallest ``key(vertex)`` comes next; ties of
    ``key`` go to the smaller vertex. A pure graph function: it needs no events. Vertices left
    behind by a cycle come last, in key order.
    """
    edges = {vertex: {b for b in before if b in graph} for vertex, before in graph.items()}
    keys = {vertex: (key(vertex), vertex) for vertex in graph}
    return orderings.lexicographical_topological_sort(edges, keys)


def iterative_auth_checks(
    event_ids: Iterable[str],
    events: Events,
    *,
    state: StateMap | None = None,
) -> dict[StateKey, str]:
    """The iterative auth checks over the events in the given order (spec v2, "Iterative auth
    checks"), starting from ``state`` (empty if ``None``); returns the resulting state.

    Each state event is checked against the partial state, falling back to its own auth
    events for keys the partial state lacks (never to rejected ones: ``is_rejected``); if it
    passes it takes its key. Events the provider reports as rejected are skipped, as are
    non-state events.
    """
    lookup = _lookup(events)
    base: StateMap = state if state is not None else {}
    partial = PartialState(base, frozenset())
    _iterative_auth_checks(_known(event_ids, lookup), partial, lookup)
    return {**base, **partial.changes}
