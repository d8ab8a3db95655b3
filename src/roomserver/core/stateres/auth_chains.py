"""Auth chain questions of state resolution v2 / v2.1, answered in memory.

Used when the provider has no index to answer them (see ``provider``). Both answers come from
one walk of the *conflicted graph*: the conflicted events and everything reachable from them
through ``auth_events``, each event visited once per resolution. The events every state set
shares are only scanned for their direct auth events (at C speed), never walked one by one.

Events the provider does not know are treated as absent from the graph: the walk stops there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from operator import attrgetter

from roomserver.core.stateres.provider import EventLookup

_auth_ids = attrgetter("auth_event_ids")


class ConflictedGraph:
    """The conflicted events of each state set and every event in their auth chains.

    ``order`` lists the graph's events with every event after all of its auth events;
    ``sets_reaching[e]`` is a bit mask of the state sets whose conflicted events reach ``e``
    (an event reaches itself).
    """

    __slots__ = ("auth_edges", "conflicted", "order", "sets_reaching")

    def __init__(self, per_set_conflicted: Sequence[AbstractSet[str]], lookup: EventLookup) -> None:
        self.conflicted: set[str] = set().union(*per_set_conflicted)
        self.auth_edges: dict[str, tuple[str, ...]] = {}
        self.order: list[str] = []
        self._walk(sorted(self.conflicted), lookup)
        masks = dict.fromkeys(self.order, 0)
        for index, ids in enumerate(per_set_conflicted):
            bit = 1 << index
            for event_id in ids:
                if event_id in masks:
                    masks[event_id] |= bit
        edges = self.auth_edges
        for event_id in reversed(self.order):  # descendants before their auth events
            mask = masks[event_id]
            for auth_id in edges[event_id]:
                masks[auth_id] |= mask
        self.sets_reaching = masks

    def _walk(self, roots: Iterable[str], lookup: EventLookup) -> None:
        """Depth-first post-order over ``auth_events``: auth events land before their users."""
        edges = self.auth_edges
        order = self.order
        for root in roots:
            if root in edges or lookup.find(root) is None:
                continue
            edges[root] = ()
            stack: list[tuple[str, Iterable[str]]] = [(root, iter(self._known_auth(root, lookup)))]
            while stack:
                node, pending = stack[-1]
                for auth_id in pending:
                    if auth_id not in edges:
                        edges[auth_id] = ()
                        stack.append((auth_id, iter(self._known_auth(auth_id, lookup))))
                        break
                else:
                    stack.pop()
                    order.append(node)

    def _known_auth(self, event_id: str, lookup: EventLookup) -> tuple[str, ...]:
        event = lookup.get(event_id)
        known = tuple(a for a in event.auth_event_ids if lookup.find(a) is not None)
        self.auth_edges[event_id] = known
        return known


def closure(seeds: Iterable[str], lookup: EventLookup) -> set[str]:
    """``seeds`` (those the provider knows) and every event reachable through ``auth_events``."""
    seen: set[str] = set()
    stack = [s for s in seeds if lookup.find(s) is not None]
    seen.update(stack)
    while stack:
        for auth_id in lookup.get(stack.pop()).auth_event_ids:
            if auth_id not in seen and lookup.find(auth_id) is not None:
                seen.add(auth_id)
                stack.append(auth_id)
    return seen


def direct_auth_event_ids(event_ids: Iterable[str], lookup: EventLookup) -> set[str]:
    """The union of the ``auth_events`` of ``event_ids``; C-speed over a plain mapping."""
    if lookup.mapping is not None:
        getter = lookup.mapping.__getitem__
        try:
            return set().union(*map(_auth_ids, map(getter, event_ids)))
        except KeyError:
            pass  # an unknown event: fall back to the checked path below
    out: set[str] = set()
    for event_id in event_ids:
        event = lookup.find(event_id)
        if event is not None:
            out.update(event.auth_event_ids)
    return out


def auth_chain_difference(
    graph: ConflictedGraph,
    shared_event_ids: Iterable[str],
    set_count: int,
    lookup: EventLookup,
    *,
    only_unconflicted: bool = False,
) -> set[str]:
    """The auth chain difference of the state sets (spec: state res v2, "Auth difference").

    The auth chain of a state set is its events plus their auth chains (docs/stateres.md).
    Events shared by every state set (``shared_event_ids``) put their whole auth chains into
    every set's auth chain, so only events of the conflicted graph can differ: an event is in
    the difference when the conflicted events of some but not all sets reach it, and no shared
    event does.

    With ``only_unconflicted`` the conflicted events themselves are left out of the answer
    (the caller adds them to the full conflicted set anyway), which skips the scan of the
    shared events when nothing else differs.
    """
    full = (1 << set_count) - 1
    conflicted = graph.conflicted
    candidates = [
        event_id
        for event_id, mask in graph.sets_reaching.items()
        if mask != full and not (only_unconflicted and event_id in conflicted)
    ]
    if not candidates:
        return set()
    shared = (
        shared_event_ids if isinstance(shared_event_ids, AbstractSet) else set(shared_event_ids)
    )
    reached_by_shared = closure(direct_auth_event_ids(shared, lookup), lookup)
    return {e for e in candidates if e not in shared and e not in reached_by_shared}


def conflicted_subgraph(graph: ConflictedGraph) -> set[str]:
    """The conflicted state subgraph (spec: state res v2.1, MSC4297).

    Every event on an ``auth_events`` path between two conflicted events, ends included: the
    conflicted events, and each event of their auth chains that itself reaches a conflicted
    event through its auth events.
    """
    conflicted = graph.conflicted
    edges = graph.auth_edges
    reaches: dict[str, bool] = {}
    for event_id in graph.order:  # auth events before their users
        reaches[event_id] = any(a in conflicted or reaches[a] for a in edges[event_id])
    return conflicted | {e for e, hit in reaches.items() if hit}
