"""Reverse topological power ordering and mainline ordering, each in isolation."""

from __future__ import annotations

from roomserver.core.auth import CREATOR_POWER_LEVEL
from roomserver.core.pdu import Event
from roomserver.core.stateres.orderings import (
    mainline,
    mainline_ordering,
    power_sort_key,
    reverse_topological_power_ordering,
    sender_power_level,
)
from roomserver.core.stateres.provider import EventLookup
from roomserver.testing.builder import RoomBuilder

ALICE, BOB, CAROL = "@alice:example.org", "@bob:example.org", "@carol:example.org"
PL_KEY = ("m.room.power_levels", "")


def _room(version: str = "10", **create: object) -> RoomBuilder:
    b = RoomBuilder(version, room_id="!order:example.org")
    b.create_room(ALICE, **create)  # type: ignore[arg-type]
    b.join(BOB)
    b.join(CAROL)
    return b


def _pl(b: RoomBuilder, sender: str, users: dict[str, int], **kw: object) -> Event:
    content = {"users": users, "state_default": 50, "ban": 50, "kick": 50}
    return b.send("m.room.power_levels", sender, content, state_key="", **kw)  # type: ignore[arg-type]


def _topic(b: RoomBuilder, sender: str, text: str, **kw: object) -> Event:
    return b.send("m.room.topic", sender, {"topic": text}, state_key="", **kw)  # type: ignore[arg-type]


def _flat(events: list[Event]) -> dict[str, set[str]]:
    return {e.event_id: set() for e in events}


def test_sender_power_level_comes_from_the_cited_power_levels() -> None:
    b = _room()
    _pl(b, ALICE, {ALICE: 100, BOB: 40})
    lookup = EventLookup(b.events)
    bob_topic = _topic(b, BOB, "x")
    carol_topic = _topic(b, CAROL, "y")
    assert sender_power_level(bob_topic, lookup) == 40
    assert sender_power_level(carol_topic, lookup) == 0


def test_sender_power_level_without_power_levels_creator_has_100() -> None:
    b = RoomBuilder("10", room_id="!order:example.org")
    create = b.send("m.room.create", ALICE, {"creator": ALICE}, state_key="")
    join = b.join(ALICE)
    lookup = EventLookup(b.events)
    assert sender_power_level(join, lookup) == 100
    assert sender_power_level(create, lookup) == 100
    bob = b.join(BOB)
    assert sender_power_level(bob, lookup) == 0


def test_sender_power_level_v12_creators_are_infinite() -> None:
    b = _room("12", extra_create_content={"additional_creators": [BOB]})
    lookup = EventLookup(b.events)
    assert sender_power_level(_topic(b, ALICE, "a"), lookup) == CREATOR_POWER_LEVEL
    assert sender_power_level(_topic(b, BOB, "b"), lookup) == CREATOR_POWER_LEVEL
    assert sender_power_level(_topic(b, CAROL, "c"), lookup) == 0


def test_power_ordering_higher_sender_power_first() -> None:
    b = _room()
    _pl(b, ALICE, {ALICE: 100, BOB: 50})
    fork = list(b.latest)
    bob = _topic(b, BOB, "bob", origin_server_ts=1)  # older, but less power
    alice = _topic(b, ALICE, "alice", prev_events=fork, origin_server_ts=2)
    lookup = EventLookup(b.events)
    assert reverse_topological_power_ordering(_flat([bob, alice]), lookup) == [
        alice.event_id,
        bob.event_id,
    ]


def test_power_ordering_then_older_first_then_event_id() -> None:
    b = _room()
    first = _topic(b, ALICE, "1", origin_server_ts=5)
    second = _topic(b, ALICE, "2", origin_server_ts=9)
    lookup = EventLookup(b.events)
    assert reverse_topological_power_ordering(_flat([second, first]), lookup) == [
        first.event_id,
        second.event_id,
    ]
    x = _topic(b, ALICE, "x", origin_server_ts=7)
    y = _topic(b, ALICE, "y", origin_server_ts=7)
    ids = sorted([x.event_id, y.event_id])
    assert reverse_topological_power_ordering(_flat([y, x]), lookup) == ids
    assert power_sort_key(x, lookup)[:2] == power_sort_key(y, lookup)[:2]


def test_power_ordering_auth_ancestors_come_first_whatever_their_power() -> None:
    b = _room()
    _pl(b, ALICE, {ALICE: 100, BOB: 50})
    bob_rules = b.send("m.room.join_rules", BOB, {"join_rule": "invite"}, state_key="")
    alice_kick = b.member(ALICE, CAROL, "leave")
    lookup = EventLookup(b.events)
    # The graph states the ancestry: Alice's kick depends on Bob's join rules.
    graph = {alice_kick.event_id: {bob_rules.event_id}, bob_rules.event_id: set()}
    assert reverse_topological_power_ordering(graph, lookup) == [
        bob_rules.event_id,
        alice_kick.event_id,
    ]


def test_power_ordering_v12_creator_before_any_integer_level() -> None:
    b = _room("12")
    _pl(b, ALICE, {BOB: 100})
    fork = list(b.latest)
    bob = _topic(b, BOB, "bob", origin_server_ts=1)
    alice = _topic(b, ALICE, "alice", prev_events=fork, origin_server_ts=2)
    lookup = EventLookup(b.events)
    assert reverse_topological_power_ordering(_flat([bob, alice]), lookup)[0] == alice.event_id


def _mainline_room() -> tuple[RoomBuilder, list[Event]]:
    b = _room()
    pls = [b.events[b.state[PL_KEY]]]
    pls.append(_pl(b, ALICE, {ALICE: 100, BOB: 10}))
    pls.append(_pl(b, ALICE, {ALICE: 100, BOB: 20}))
    return b, pls


def test_mainline_depths_from_the_root() -> None:
    b, pls = _mainline_room()
    lookup = EventLookup(b.events)
    assert mainline(pls[2], lookup) == {pls[0].event_id: 1, pls[1].event_id: 2, pls[2].event_id: 3}
    assert mainline(None, lookup) == {}


def test_mainline_ordering_older_power_levels_first_despite_timestamps() -> None:
    b, pls = _mainline_room()
    on_pl2 = _topic(b, ALICE, "on pl2", origin_server_ts=1)
    on_pl0 = _topic(b, ALICE, "on pl0", auth_events=_auth_with(b, pls[0]), origin_server_ts=50)
    on_pl1 = _topic(b, ALICE, "on pl1", auth_events=_auth_with(b, pls[1]), origin_server_ts=99)
    lookup = EventLookup(b.events)
    ordered = mainline_ordering([on_pl2.event_id, on_pl1.event_id, on_pl0.event_id], pls[2], lookup)
    assert ordered == [on_pl0.event_id, on_pl1.event_id, on_pl2.event_id]


def test_mainline_ordering_same_position_by_timestamp_then_event_id() -> None:
    b, pls = _mainline_room()
    late = _topic(b, ALICE, "late", origin_server_ts=20)
    early = _topic(b, ALICE, "early", origin_server_ts=10)
    tie_a = _topic(b, ALICE, "a", origin_server_ts=15)
    tie_b = _topic(b, ALICE, "b", origin_server_ts=15)
    lookup = EventLookup(b.events)
    ordered = mainline_ordering(
        [late.event_id, tie_b.event_id, early.event_id, tie_a.event_id], pls[2], lookup
    )
    ties = sorted([tie_a.event_id, tie_b.event_id])
    assert ordered == [early.event_id, *ties, late.event_id]


def test_mainline_ordering_off_mainline_power_levels_lead_to_their_ancestor() -> None:
    b, pls = _mainline_room()
    # A power levels event forked from PL1, off the mainline of PL2.
    side_pdu = b.make_pdu(
        "m.room.power_levels",
        ALICE,
        {"users": {ALICE: 100, BOB: 15}},
        state_key="",
        auth_events=_auth_with(b, pls[1]),
    )
    side = b.add(side_pdu, update_state=False)
    on_side = _topic(b, ALICE, "side", auth_events=_auth_with(b, side), origin_server_ts=1)
    on_pl2 = _topic(b, ALICE, "pl2", origin_server_ts=0)
    lookup = EventLookup(b.events)
    ordered = mainline_ordering([on_pl2.event_id, on_side.event_id], pls[2], lookup)
    assert ordered == [on_side.event_id, on_pl2.event_id]  # depth 2 (PL1) before depth 3


def test_mainline_ordering_without_power_levels_is_by_timestamp() -> None:
    b, _ = _mainline_room()
    x = _topic(b, ALICE, "x", origin_server_ts=3)
    y = _topic(b, ALICE, "y", origin_server_ts=2)
    lookup = EventLookup(b.events)
    assert mainline_ordering([x.event_id, y.event_id], None, lookup) == [y.event_id, x.event_id]


def _auth_with(b: RoomBuilder, power_levels: Event) -> list[str]:
    """Alice's usual auth events, but citing ``power_levels``."""
    auth = [
        e
        for e in b.auth_event_ids_for("m.room.topic", ALICE, "", {})
        if e not in b.events or b.events[e].type != "m.room.power_levels"
    ]
    return [*auth, power_levels.event_id]
