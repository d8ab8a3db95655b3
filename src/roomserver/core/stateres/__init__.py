"""State resolution: v1 (room version 1), v2 (versions 2-11) and v2.1 (version 12).

``resolve_state`` resolves; the room version's ``state_res`` flag picks the algorithm. Each
step of the algorithm is public too (module ``steps``: separating conflicted from unconflicted
state, auth chains, the auth difference, the conflicted state subgraph, the orderings, the
iterative auth checks, the sender's power level), over the same events. Pure and synchronous:
the caller gathers the events first and passes them as a mapping or an ``EventProvider`` (see
``provider`` and docs/stateres.md). The names in ``__all__`` are the public API; the other
modules are internal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from roomserver.core import room_versions
from roomserver.core.pdu import Event
from roomserver.core.room_versions import StateResAlgorithm
from roomserver.core.stateres.provider import (
    EventLookup,
    EventProvider,
    MappingEventProvider,
    MissingEvent,
    StateKey,
    StateMap,
    SupportsAuthChainDifference,
    SupportsConflictedSubgraph,
    SupportsRejection,
    SupportsStateDifference,
)
from roomserver.core.stateres.steps import (
    SeparatedState,
    auth_difference,
    conflicted_state_subgraph,
    full_auth_chain,
    full_conflicted_set,
    iterative_auth_checks,
    lexicographical_topological_sort,
    mainline_ordering,
    reverse_topological_power_ordering,
    sender_power_level,
    separate_conflicted_state,
)
from roomserver.core.stateres.v1 import resolve_v1
from roomserver.core.stateres.v2 import resolve_v2

__all__ = [
    "EventProvider",
    "MappingEventProvider",
    "MissingEvent",
    "SeparatedState",
    "StateKey",
    "StateMap",
    "SupportsAuthChainDifference",
    "SupportsConflictedSubgraph",
    "SupportsRejection",
    "SupportsStateDifference",
    "auth_difference",
    "conflicted_state_subgraph",
    "full_auth_chain",
    "full_conflicted_set",
    "iterative_auth_checks",
    "lexicographical_topological_sort",
    "mainline_ordering",
    "resolve_state",
    "reverse_topological_power_ordering",
    "sender_power_level",
    "separate_conflicted_state",
]


def resolve_state(
    room_version: str,
    state_sets: Sequence[Mapping[tuple[str, str], str]],
    events: Mapping[str, Event] | EventProvider,
) -> dict[tuple[str, str], str]:
    """The resolved state of ``state_sets`` under the rules of ``room_version``.

    Each state set maps ``(type, state_key)`` to the ID of an event of that type and state
    key. ``events`` supplies every event of the state sets and of their auth chains (and, in
    room version 12, the create event): a mapping of event ID to ``Event``, or an
    ``EventProvider`` (see docs/stateres.md for the optional index methods). The result does
    not depend on the order of ``state_sets``. Raises ``UnknownRoomVersion`` and
    ``MissingEvent``.
    """
    rules = room_versions.room_version(room_version)
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    lookup = EventLookup(events)
    if rules.state_res is StateResAlgorithm.V1:
        return resolve_v1(state_sets, lookup)
    return resolve_v2(rules, state_sets, lookup)
