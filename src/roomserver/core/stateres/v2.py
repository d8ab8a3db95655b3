"""State resolution v2 (room versions 2-11) and v2.1 (room version 12, MSC4297).

The spec's algorithm (§11.3), one function per step:

1. ``full_conflicted_set``: the conflicted state set, the auth difference and (v2.1) the
   conflicted state subgraph; its power events with their auth ancestors in it, sorted by
   ``reverse_topological_power_ordering``;
2. ``iterative_auth_checks`` over them, from the unconflicted state map (v2) or from the empty
   map (v2.1);
3. the other events of the full conflicted set, in ``mainline_ordering`` relative to the power
   levels event of the partial state;
4. ``iterative_auth_checks`` over those;
5. ``merge_resolved``: the unconflicted state map wins over the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from roomserver.core.room_versions import RoomVersion, StateResAlgorithm
from roomserver.core.state_keys import POWER_LEVELS_KEY
from roomserver.core.stateres import auth_chains
from roomserver.core.stateres._rules import is_power_event
from roomserver.core.stateres.conflicts import (
    Conflicts,
    conflicted_keys,
    merge_resolved,
    split,
    unconflicted_event_ids,
)
from roomserver.core.stateres.iterative import PartialState, iterative_auth_checks
from roomserver.core.stateres.orderings import (
    mainline_ordering,
    power_event_graph,
    reverse_topological_power_ordering,
)
from roomserver.core.stateres.provider import (
    EventLookup,
    StateKey,
    StateMap,
)


def resolve_v2(
    rules: RoomVersion, state_sets: Sequence[StateMap], lookup: EventLookup
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` (at least one) with state res v2, or v2.1 when ``rules`` say so."""
    conflicts = split(state_sets, conflicted_keys(state_sets, lookup))
    if not conflicts.keys:
        return dict(state_sets[0])
    full = full_conflicted_set(rules, state_sets, conflicts, lookup)

    # Step 1: the power events and their auth ancestors in the full conflicted set, sorted.
    power_events = [e for e in full if is_power_event(lookup.get(e))]
    graph = power_event_graph(power_events, full, lookup)
    sorted_power_events = reverse_topological_power_ordering(graph, lookup)

    # Step 2: iterative auth checks from the unconflicted state map, or (v2.1) from nothing.
    if rules.state_res is StateResAlgorithm.V2_1:
        partial = PartialState({}, frozenset())
    else:
        partial = PartialState(state_sets[0], conflicts.keys)
    iterative_auth_checks(sorted_power_events, partial, lookup)

    # Step 3: everything else, in mainline order relative to the resolved power levels.
    power_levels_id = partial.get(POWER_LEVELS_KEY)
    power_levels = lookup.get(power_levels_id) if power_levels_id is not None else None
    others = [e for e in full if e not in graph]
    ordered = mainline_ordering(others, power_levels, lookup)

    # Step 4, then step 5.
    iterative_auth_checks(ordered, partial, lookup)
    return merge_resolved(state_sets[0], conflicts, partial.changes)


def full_conflicted_set(
    rules: RoomVersion, state_sets: Sequence[StateMap], conflicts: Conflicts, lookup: EventLookup
) -> set[str]:
    """The conflicted state set, the auth difference and, in v2.1, the conflicted state
    subgraph (spec §11.2, §11.4).

    Asks the provider when it can answer from an index; otherwise walks the conflicted graph
    once in memory (``auth_chains``).
    """
    want_subgraph = rules.state_res is StateResAlgorithm.V2_1
    full = set(conflicts.events)
    difference: AbstractSet[str] | None = None
    subgraph: AbstractSet[str] | None = None
    if lookup.auth_chain_difference is not None:
        difference = lookup.auth_chain_difference(state_sets)
    if want_subgraph and lookup.conflicted_subgraph is not None:
        subgraph = lookup.conflicted_subgraph(conflicts.events)
    if difference is None or (want_subgraph and subgraph is None):
        graph = auth_chains.ConflictedGraph(conflicts.per_set, lookup)
        if difference is None:
            difference = auth_chains.auth_chain_difference(
                graph,
                unconflicted_event_ids(state_sets, conflicts),
                len(state_sets),
                lookup,
                only_unconflicted=True,
            )
        if want_subgraph and subgraph is None:
            subgraph = auth_chains.conflicted_subgraph(graph)
    full.update(difference)
    if subgraph is not None:
        full.update(subgraph)
    return full
