"""Auth chain difference and the conflicted state subgraph, against plain reference searches."""

from __future__ import annotations

import pytest

from roomserver.core.stateres import resolve_state
from roomserver.core.stateres.auth_chains import (
    ConflictedGraph,
    auth_chain_difference,
    conflicted_subgraph,
)
from roomserver.core.stateres.conflicts import conflicted_keys, split, unconflicted_event_ids
from roomserver.core.stateres.provider import EventLookup
from roomserver.testing.builder import RoomBuilder
from tests.core.stateres.helpers import (
    CountingProvider,
    IndexedProvider,
    auth_closure,
    random_fork,
    reference_auth_difference,
)

ALICE, BOB = "@alice:example.org", "@bob:example.org"


def _difference(sets, events):  # type: ignore[no-untyped-def]
    lookup = EventLookup(events)
    conflicts = split(sets, conflicted_keys(sets))
    graph = ConflictedGraph(conflicts.per_set, lookup)
    shared = unconflicted_event_ids(sets, conflicts)
    return graph, auth_chain_difference(graph, shared, len(sets), lookup), conflicts


@pytest.mark.parametrize("version", ["10", "12"])
@pytest.mark.parametrize("seed", range(12))
def test_auth_chain_difference_matches_reference(version: str, seed: int) -> None:
    b, sets = random_fork(version, seed)
    _, difference, _ = _difference(sets, b.events)
    assert difference == reference_auth_difference(sets, b.events)


@pytest.mark.parametrize("seed", range(12))
def test_conflicted_subgraph_matches_reference(seed: int) -> None:
    b, sets = random_fork("12", seed)
    graph, _, conflicts = _difference(sets, b.events)
    conflicted = set(conflicts.events)
    expected = set(conflicted)
    for event_id in auth_closure(conflicted, b.events) - conflicted:
        ancestors = auth_closure({event_id}, b.events) - {event_id}
        if ancestors & conflicted:
            expected.add(event_id)
    assert conflicted_subgraph(graph) == expected


def test_conflicted_subgraph_holds_the_events_between_conflicted_ones() -> None:
    b = RoomBuilder("12", room_id="!sub:example.org")
    b.create_room(ALICE)
    b.join(BOB)
    pls = []
    for level in (1, 2, 3):
        pls.append(b.send("m.room.power_levels", ALICE, {"users": {BOB: level}}, state_key=""))
        if level == 2:  # an event both state sets hold cites PL2
            b.send("m.room.topic", ALICE, {"topic": "t"}, state_key="")
    base = dict(b.state)
    stale = dict(base)
    stale[("m.room.power_levels", "")] = pls[0].event_id
    graph, difference, _ = _difference([base, stale], b.events)
    assert pls[1].event_id in conflicted_subgraph(graph)
    # Both state sets reach PL2 (through the topic): it is not in the auth difference.
    assert pls[1].event_id not in difference


def test_events_shared_by_all_sets_leave_the_difference() -> None:
    b = RoomBuilder("10", room_id="!shared:example.org")
    b.create_room(ALICE)
    fork_state, fork_latest = dict(b.state), list(b.latest)
    joined = b.join(BOB)
    topic = b.send("m.room.topic", BOB, {"topic": "x"}, state_key="")
    a = dict(b.state)
    b.state, b.latest = fork_state, fork_latest
    b.send("m.room.name", ALICE, {"name": "n"}, state_key="")
    c = dict(b.state)
    _, difference, _ = _difference([a, c], b.events)
    assert joined.event_id in difference and topic.event_id in difference
    c[("m.room.member", BOB)] = joined.event_id  # now both sets hold Bob's join
    _, difference, _ = _difference([a, c], b.events)
    assert joined.event_id not in difference and topic.event_id in difference


def test_provider_index_answers_the_difference() -> None:
    b, sets = random_fork("10", 3)
    reference = reference_auth_difference(sets, b.events)
    provider = IndexedProvider(b.events, difference=reference)
    assert resolve_state("10", sets, provider) == resolve_state("10", sets, b.events)
    assert provider.difference_calls == 1


def test_lookups_do_not_grow_with_the_room_when_the_index_answers() -> None:
    """The same conflict in a room of 10 or 300 extra members: the same number of lookups."""
    counts = []
    for members in (10, 300):
        b, sets = random_fork("10", 5, members=members)
        provider = IndexedProvider(b.events, difference=reference_auth_difference(sets, b.events))
        resolve_state("10", sets, provider)
        counts.append(provider.lookups)
    assert counts[0] == counts[1]


def test_lookups_without_index_scale_with_the_shared_state_only_once() -> None:
    """The in-memory path reads each shared event once, and walks no more than that."""
    b, sets = random_fork("10", 5, members=300)
    provider = CountingProvider(b.events)
    resolve_state("10", sets, provider)
    state_size = len(set().union(*(s.values() for s in sets)))
    assert provider.lookups < 4 * state_size
