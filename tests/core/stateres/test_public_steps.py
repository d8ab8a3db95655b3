"""The public step functions of ``roomserver.core.stateres``, each on a small fork whose
answers are worked out by hand below.

The room (v10 and v12; in v12 nothing cites the create event):

    E1 create (A)   E2 join A   E3 PL1 {A: 100 (v10)}   E4 join rules public
    E5 join B       E6 join C
    branch 1 (from E6):  E7 PL2 {+ B: 50} by A    E8 topic "one" by B (cites E7)
    branch 2 (from E6):  E9 topic "two" by A      E10 ban C by A

S1 = state after E8, S2 = state after E10.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import pytest

from roomserver.core import stateres
from roomserver.core.auth import CREATOR_POWER_LEVEL
from roomserver.core.pdu import Event
from roomserver.core.stateres import (
    MappingEventProvider,
    MissingEvent,
    SeparatedState,
    auth_difference,
    conflicted_state_subgraph,
    full_auth_chain,
    full_conflicted_set,
    iterative_auth_checks,
    lexicographical_topological_sort,
    mainline_ordering,
    resolve_state,
    reverse_topological_power_ordering,
    sender_power_level,
    separate_conflicted_state,
)
from roomserver.testing.builder import RoomBuilder
from tests.core.stateres.helpers import auth_closure, random_fork, reference_auth_difference

A, B, C = "@alice:example.org", "@bob:example.org", "@carol:example.org"
CREATE, PL, JR, TOPIC = (
    ("m.room.create", ""),
    ("m.room.power_levels", ""),
    ("m.room.join_rules", ""),
    ("m.room.topic", ""),
)
VERSIONS = ["10", "12"]


class Fork:
    """The room above: ``e[n]`` is event En's ID, ``events`` all of them, ``s1``/``s2``."""

    def __init__(self, version: str) -> None:
        b = RoomBuilder(version, room_id="!steps:example.org")
        v12 = b.rules.privileged_creators
        content: dict[str, Any] = {"room_version": version}
        if b.rules.creator_in_content:
            content["creator"] = A
        e: dict[int, Event] = {}
        e[1] = b.send("m.room.create", A, content, state_key="")
        e[2] = b.join(A)
        users1: dict[str, int] = {} if v12 else {A: 100}
        pl = {"users": users1, "state_default": 50, "ban": 50, "kick": 50, "redact": 50}
        e[3] = b.send("m.room.power_levels", A, pl, state_key="")
        e[4] = b.send("m.room.join_rules", A, {"join_rule": "public"}, state_key="")
        e[5] = b.join(B)
        e[6] = b.join(C)
        fork_state = dict(b.state)
        e[7] = b.send("m.room.power_levels", A, {**pl, "users": {**users1, B: 50}}, state_key="")
        e[8] = b.send("m.room.topic", B, {"topic": "one"}, state_key="")
        s1 = dict(b.state)
        b.state = dict(fork_state)
        e[9] = b.send(
            "m.room.topic", A, {"topic": "two"}, state_key="", prev_events=[e[6].event_id]
        )
        e[10] = b.member(A, C, "ban")
        s2 = dict(b.state)
        self.version = version
        self.v12 = v12
        self.e = {n: event.event_id for n, event in e.items()}
        self.events: dict[str, Event] = dict(b.events)
        self.s1: dict[tuple[str, str], str] = s1
        self.s2: dict[tuple[str, str], str] = s2

    def ids(self, *numbers: int) -> set[str]:
        return {self.e[n] for n in numbers}

    def seq(self, *numbers: int) -> list[str]:
        return [self.e[n] for n in numbers]


@pytest.fixture(params=VERSIONS)
def fork(request: pytest.FixtureRequest) -> Fork:
    return Fork(request.param)


def test_every_step_is_exported() -> None:
    for name in (
        "separate_conflicted_state",
        "full_auth_chain",
        "auth_difference",
        "conflicted_state_subgraph",
        "full_conflicted_set",
        "reverse_topological_power_ordering",
        "mainline_ordering",
        "lexicographical_topological_sort",
        "sender_power_level",
        "iterative_auth_checks",
    ):
        assert name in stateres.__all__
        assert getattr(stateres, name).__doc__


# -- separating conflicted from unconflicted state -------------------------------------------


def test_separate_conflicted_state(fork: Fork) -> None:
    unconflicted, conflicted = separate_conflicted_state([fork.s1, fork.s2], fork.events)
    member = ("m.room.member", C)
    assert unconflicted == {
        CREATE: fork.e[1],
        JR: fork.e[4],
        ("m.room.member", A): fork.e[2],
        ("m.room.member", B): fork.e[5],
    }
    assert conflicted == {
        PL: frozenset(fork.ids(3, 7)),
        member: frozenset(fork.ids(6, 10)),
        TOPIC: frozenset(fork.ids(8, 9)),
    }
    # Without events the answer is the same (the maps are compared directly).
    assert separate_conflicted_state([fork.s2, fork.s1]) == (unconflicted, conflicted)


def test_separate_a_key_missing_from_one_set_v2_versus_v1() -> None:
    s1 = {("m.room.name", ""): "$name:x", CREATE: "$create:x"}
    s2 = {CREATE: "$create:x"}
    v2 = separate_conflicted_state([s1, s2])
    assert v2 == SeparatedState(
        {CREATE: "$create:x"}, {("m.room.name", ""): frozenset({"$name:x"})}
    )
    v1 = separate_conflicted_state([s1, s2], room_version="1")
    assert v1 == SeparatedState({CREATE: "$create:x", ("m.room.name", ""): "$name:x"}, {})
    assert separate_conflicted_state([]) == ({}, {})


# -- auth chain, auth difference, conflicted state subgraph, full conflicted set -------------


def test_full_auth_chain(fork: Fork) -> None:
    create = set() if fork.v12 else fork.ids(1)
    assert full_auth_chain([fork.e[8]], fork.events) == create | fork.ids(2, 3, 4, 5, 7)
    assert full_auth_chain([fork.e[2]], fork.events) == create
    # E3 is in E8's chain, so it stays; E8 is reached by nothing.
    assert full_auth_chain(fork.seq(8, 3), fork.events) == create | fork.ids(2, 3, 4, 5, 7)
    assert full_auth_chain([], fork.events) == set()
    with pytest.raises(MissingEvent):
        full_auth_chain(["$unknown"], fork.events)


def test_auth_difference(fork: Fork) -> None:
    assert auth_difference([fork.s1, fork.s2], fork.events) == fork.ids(7, 8, 9, 10)
    assert auth_difference([fork.s1], fork.events) == set()
    assert auth_difference([fork.s1, fork.s1], fork.events) == set()


def test_auth_difference_asks_the_index() -> None:
    fork = Fork("10")

    class Indexed(MappingEventProvider):
        def auth_chain_difference(self, state_sets: Sequence[Mapping[Any, str]]) -> set[str]:
            return {"$from-the-index"}

    provider = Indexed(fork.events)
    assert auth_difference([fork.s1, fork.s2], provider) == {"$from-the-index"}


def test_conflicted_state_subgraph(fork: Fork) -> None:
    conflicted = fork.ids(3, 6, 7, 8, 9, 10)
    # E4 (E6 -> E4 -> E3) and E5 (E8 -> E5 -> E3) lie between conflicted events; E2 does not.
    assert conflicted_state_subgraph(conflicted, fork.events) == conflicted | fork.ids(4, 5)
    assert conflicted_state_subgraph(fork.ids(8, 9), fork.events) == fork.ids(8, 9)
    with pytest.raises(MissingEvent):
        conflicted_state_subgraph(["$unknown"], fork.events)


def test_conflicted_state_subgraph_asks_the_index() -> None:
    fork = Fork("12")

    class Indexed(MappingEventProvider):
        def conflicted_subgraph(self, conflicted_event_ids: AbstractSet[str]) -> set[str]:
            return set(conflicted_event_ids) | {"$extra"}

    provider = Indexed(fork.events)
    assert conflicted_state_subgraph(fork.ids(8), provider) == fork.ids(8) | {"$extra"}


def test_full_conflicted_set(fork: Fork) -> None:
    full = full_conflicted_set(fork.version, [fork.s1, fork.s2], fork.events)
    conflicted = fork.ids(3, 6, 7, 8, 9, 10)
    if fork.v12:  # v2.1 adds the conflicted state subgraph
        assert full == conflicted | fork.ids(4, 5)
    else:
        assert full == conflicted
    with pytest.raises(ValueError, match="v1"):
        full_conflicted_set("1", [fork.s1, fork.s2], fork.events)


# -- power levels and the orderings ---------------------------------------------------------


def test_sender_power_level(fork: Fork) -> None:
    creator = CREATOR_POWER_LEVEL if fork.v12 else 100
    assert sender_power_level(fork.e[8], fork.events) == 50  # B, granted by E7 which E8 cites
    assert sender_power_level(fork.e[9], fork.events) == creator
    assert sender_power_level(fork.e[5], fork.events) == 0  # B at E3: not listed
    assert sender_power_level(fork.e[2], fork.events) == creator  # no PL event cited yet
    with pytest.raises(MissingEvent):
        sender_power_level("$unknown", fork.events)


def test_reverse_topological_power_ordering(fork: Fork) -> None:
    # E3 first (the others cite it); E7 before E9 (same power, older); E9 before E8 although
    # newer: A outranks B, and E8 waits for E7 anyway.
    given = fork.seq(9, 8, 7, 3)
    assert reverse_topological_power_ordering(given, fork.events) == fork.seq(3, 7, 9, 8)
    assert reverse_topological_power_ordering(reversed(given), fork.events) == fork.seq(3, 7, 9, 8)
    # Without E7 in the set, E8 (B: 50) still sorts after E9 (A), by power alone.
    assert reverse_topological_power_ordering(fork.seq(8, 9), fork.events) == fork.seq(9, 8)


def test_mainline_ordering(fork: Fork) -> None:
    # Mainline of E7: E3 (depth 1), E7 (depth 2). E6, E9, E10 cite E3; E8 cites E7.
    given = fork.seq(8, 10, 9, 6)
    assert mainline_ordering(given, fork.events, power_levels=fork.e[7]) == fork.seq(6, 9, 10, 8)
    # Relative to E3, E8's closest mainline event is E3 too (through E7): timestamp order.
    assert mainline_ordering(given, fork.events, power_levels=fork.e[3]) == fork.seq(6, 8, 9, 10)
    assert mainline_ordering(given, fork.events, power_levels=None) == fork.seq(6, 8, 9, 10)
    assert mainline_ordering([], fork.events, power_levels=None) == []


def test_lexicographical_topological_sort() -> None:
    graph = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "x": ["outside"]}
    rank = {"a": 3, "b": 2, "c": 1, "d": 0, "x": 5}
    assert lexicographical_topological_sort(graph, key=rank.__getitem__) == list("acbdx")
    # Equal keys: the smaller vertex first.
    assert lexicographical_topological_sort(graph, key=lambda v: 0) == list("abcdx")
    # A cycle cannot be sorted: its vertices come last, in key order.
    cycle = {"p": ["q"], "q": ["p"], "r": []}
    assert lexicographical_topological_sort(cycle, key=lambda v: 0) == list("rpq")
    assert lexicographical_topological_sort({}, key=lambda v: 0) == []


# -- iterative auth checks ------------------------------------------------------------------


def test_iterative_auth_checks(fork: Fork) -> None:
    unconflicted, _ = separate_conflicted_state([fork.s1, fork.s2], fork.events)
    order = fork.seq(7, 10, 8, 9)
    result = iterative_auth_checks(order, fork.events, state=unconflicted)
    assert result == {
        **unconflicted,
        PL: fork.e[7],
        ("m.room.member", C): fork.e[10],
        TOPIC: fork.e[9],
    }
    # E7 reported rejected: skipped, and never used as E8's fallback auth event, so B has no
    # power to set the topic.
    rejected = MappingEventProvider(fork.events, rejected=fork.ids(7))
    result = iterative_auth_checks(order, rejected, state=unconflicted)
    assert result == {**unconflicted, ("m.room.member", C): fork.e[10], TOPIC: fork.e[9]}


def test_the_steps_compose_to_resolve_state(fork: Fork) -> None:
    """v2 / v2.1 by hand from the public steps gives ``resolve_state``'s answer."""
    state_sets = [fork.s1, fork.s2]
    unconflicted, _ = separate_conflicted_state(state_sets, fork.events)
    full = full_conflicted_set(fork.version, state_sets, fork.events)
    # The power events of the full conflicted set (E3, E7, the ban E10; in v2.1 also the join
    # rules E4) with their auth ancestors in it (E6, which the ban cites).
    power = fork.ids(3, 4, 6, 7, 10) if fork.v12 else fork.ids(3, 6, 7, 10)
    assert power <= full
    start: dict[tuple[str, str], str] = {} if fork.v12 else unconflicted
    partial = iterative_auth_checks(
        reverse_topological_power_ordering(power, fork.events), fork.events, state=start
    )
    ordered = mainline_ordering(full - power, fork.events, power_levels=partial.get(PL))
    partial = iterative_auth_checks(ordered, fork.events, state=partial)
    resolved = {**partial, **unconflicted}
    assert resolved == resolve_state(fork.version, state_sets, fork.events)
    assert resolved[TOPIC] == fork.e[8]  # B's topic comes last in mainline order


# -- on random forks, against plain reference computations -----------------------------------

SEEDS = range(8)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("seed", SEEDS)
def test_random_forks_against_references(version: str, seed: int) -> None:
    b, sets = random_fork(version, seed)
    events = b.events
    # Separation: every key with one value everywhere is unconflicted, the rest conflicted.
    unconflicted, conflicted = separate_conflicted_state(sets, events)
    keys = set().union(*sets)
    for key in keys:
        values = {s.get(key) for s in sets}
        if len(values) == 1:
            assert unconflicted[key] == sets[0][key]
        else:
            assert conflicted[key] == frozenset(v for v in values if v is not None)
    assert set(unconflicted) | set(conflicted) == keys
    assert not set(unconflicted) & set(conflicted)
    # Auth chain and auth difference.
    for event_id in list(events)[-5:]:
        parents = set(events[event_id].auth_event_ids)
        assert full_auth_chain([event_id], events) == auth_closure(parents, events)
    assert auth_difference(sets, events) == reference_auth_difference(sets, events)
    # Conflicted state subgraph: conflicted events and what lies between them.
    conflicted_ids = set().union(*conflicted.values())
    expected = set(conflicted_ids)
    for event_id in auth_closure(conflicted_ids, events) - conflicted_ids:
        if (auth_closure({event_id}, events) - {event_id}) & conflicted_ids:
            expected.add(event_id)
    assert conflicted_state_subgraph(conflicted_ids, events) == expected


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("seed", SEEDS)
def test_random_power_ordering_is_the_smallest_topological_order(version: str, seed: int) -> None:
    b, sets = random_fork(version, seed)
    events = b.events
    full = sorted(full_conflicted_set(version, sets, events))
    ordered = reverse_topological_power_ordering(full, events)
    shuffled = list(full)
    random.Random(seed).shuffle(shuffled)
    assert reverse_topological_power_ordering(shuffled, events) == ordered
    # Reference: repeatedly take the smallest event whose auth events (in the set) are out.
    inside = set(full)

    def key(event_id: str) -> tuple[float, int, str]:
        event = events[event_id]
        return (-sender_power_level(event_id, events), event.origin_server_ts, event_id)

    left, out = set(full), []
    while left:
        ready = [e for e in left if set(events[e].auth_event_ids) & inside <= set(out)]
        choice = min(ready, key=key)
        out.append(choice)
        left.remove(choice)
    assert ordered == out
