"""Iterative auth checks in isolation."""

from __future__ import annotations

from roomserver.core.pdu import Event
from roomserver.core.stateres import MappingEventProvider
from roomserver.core.stateres.iterative import PartialState, auth_state_for, iterative_auth_checks
from roomserver.core.stateres.provider import EventLookup
from roomserver.testing.builder import RoomBuilder

ALICE, BOB, CAROL = "@alice:example.org", "@bob:example.org", "@carol:example.org"
PL_KEY = ("m.room.power_levels", "")
TOPIC_KEY = ("m.room.topic", "")


def _room(version: str = "10") -> RoomBuilder:
    b = RoomBuilder(version, room_id="!iter:example.org")
    b.create_room(ALICE)
    b.join(BOB)
    b.join(CAROL)
    return b


def _promote_bob(b: RoomBuilder, version: str = "10") -> Event:
    users = {BOB: 50} if version == "12" else {ALICE: 100, BOB: 50}
    return b.send("m.room.power_levels", ALICE, {"users": users}, state_key="")


def test_event_allowed_by_its_own_auth_events_when_the_partial_state_lacks_keys() -> None:
    b = _room()
    _promote_bob(b)
    topic = b.send("m.room.topic", BOB, {"topic": "t"}, state_key="")
    partial = PartialState({}, frozenset())
    iterative_auth_checks([topic.event_id], partial, EventLookup(b.events))
    assert partial.changes == {TOPIC_KEY: topic.event_id}


def test_partial_state_wins_over_the_events_own_auth_events() -> None:
    b = _room()
    before = b.state[PL_KEY]  # Bob has no power here
    _promote_bob(b)
    topic = b.send("m.room.topic", BOB, {"topic": "t"}, state_key="")
    partial = PartialState({PL_KEY: before}, frozenset())
    iterative_auth_checks([topic.event_id], partial, EventLookup(b.events))
    assert partial.changes == {}


def test_hidden_base_keys_fall_back_to_own_auth_events() -> None:
    b = _room()
    before = b.state[PL_KEY]
    _promote_bob(b)
    topic = b.send("m.room.topic", BOB, {"topic": "t"}, state_key="")
    partial = PartialState({PL_KEY: before}, frozenset({PL_KEY}))  # conflicted: hidden
    iterative_auth_checks([topic.event_id], partial, EventLookup(b.events))
    assert partial.changes == {TOPIC_KEY: topic.event_id}


def test_events_apply_in_order_and_later_ones_see_earlier_results() -> None:
    b = _room()
    fork_state = dict(b.state)
    promote = _promote_bob(b)
    topic = b.send("m.room.topic", BOB, {"topic": "t"}, state_key="")
    ban = b.member(BOB, CAROL, "ban")
    lookup = EventLookup(b.events)
    partial = PartialState(fork_state, frozenset())
    iterative_auth_checks([promote.event_id, topic.event_id, ban.event_id], partial, lookup)
    assert partial.get(PL_KEY) == promote.event_id
    assert partial.get(TOPIC_KEY) == topic.event_id
    assert partial.get(("m.room.member", CAROL)) == ban.event_id
    # Without the promotion first, Bob may do neither.
    partial = PartialState(fork_state, frozenset())
    iterative_auth_checks([topic.event_id, ban.event_id], partial, lookup)
    assert partial.changes == {}


def test_rejected_auth_events_are_never_a_fallback() -> None:
    b = _room()
    promote = _promote_bob(b)
    topic = b.send("m.room.topic", BOB, {"topic": "t"}, state_key="")
    provider = MappingEventProvider(b.events, rejected=frozenset({promote.event_id}))
    lookup = EventLookup(provider)
    state = auth_state_for(topic, PartialState({}, frozenset()), lookup)
    assert PL_KEY not in state
    partial = PartialState({}, frozenset())
    iterative_auth_checks([topic.event_id], partial, lookup)
    assert partial.changes == {}  # Bob has no power without the promotion


def test_rejected_events_are_never_admitted() -> None:
    b = _room()
    topic = b.send("m.room.topic", ALICE, {"topic": "t"}, state_key="")
    provider = MappingEventProvider(b.events, rejected=frozenset({topic.event_id}))
    partial = PartialState({}, frozenset())
    iterative_auth_checks([topic.event_id], partial, EventLookup(provider))
    assert partial.changes == {}


def test_non_state_events_are_ignored() -> None:
    b = _room()
    message = b.message(ALICE)
    partial = PartialState({}, frozenset())
    iterative_auth_checks([message.event_id], partial, EventLookup(b.events))
    assert partial.changes == {}


def test_v12_create_event_comes_from_the_room_id() -> None:
    b = _room("12")
    _promote_bob(b, "12")
    topic = b.send("m.room.topic", BOB, {"topic": "t"}, state_key="")
    assert all(b.events[a].type != "m.room.create" for a in topic.auth_event_ids)
    lookup = EventLookup(b.events)
    state = auth_state_for(topic, PartialState({}, frozenset()), lookup)
    assert state[("m.room.create", "")].event_id == "$" + topic.room_id[1:]
    partial = PartialState({}, frozenset())
    iterative_auth_checks([topic.event_id], partial, lookup)
    assert partial.changes == {TOPIC_KEY: topic.event_id}
