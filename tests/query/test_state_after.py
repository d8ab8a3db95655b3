"""``Queries.state_after``: the state after events, read from what the input pipeline stored.

Expectations are written from the spec, not from the resolver: the state after one event is the
state before it plus the event itself (a rejected event adds nothing); several events' states
are resolved together, and a conflict between two topics set by the same sender under the same
power levels goes to the later ``origin_server_ts`` (v2: mainline position, then timestamp).
"""

from __future__ import annotations

import random

import pytest

from roomserver.api import Kind, Outcome
from roomserver.query import Queries, UnknownEvents, UnknownRoom
from roomserver.testing.builder import RoomBuilder
from tests.input.helpers import ALICE, SERVER
from tests.query.conftest import HarnessMaker

BOB = "@bob:example.org"
TOPIC = ("m.room.topic", "")
NAME = ("m.room.name", "")


def _room(version: str = "10") -> RoomBuilder:
    builder = RoomBuilder(version, server_name=SERVER)
    # Anyone joined may set state; from v12 the creator's power comes from the create event.
    users = {} if builder.rules.privileged_creators else {ALICE: 100}
    builder.create_room(
        ALICE, power_levels={"users": users, "state_default": 0, "events_default": 0}
    )
    return builder


@pytest.mark.parametrize("version", ["2", "10", "12"])
async def test_forked_room_each_branch_and_both(make_harness: HarnessMaker, version: str) -> None:
    builder = _room(version)
    base_events = list(builder.events.values())
    fork = base_events[-1].event_id
    base_state = dict(builder.state)
    topic_a = builder.send("m.room.topic", ALICE, {"topic": "A"}, state_key="", prev_events=[fork])
    name_b = builder.send("m.room.name", ALICE, {"name": "B"}, state_key="", prev_events=[fork])
    topic_b = builder.send(
        "m.room.topic", ALICE, {"topic": "B"}, state_key="", prev_events=[name_b.event_id]
    )
    h = await make_harness(builder)
    await h.accept_all([*base_events, topic_a, name_b, topic_b])
    queries = Queries(h.store.inner)
    room_id = builder.room_id

    # One event: the state before it plus itself.
    assert await queries.state_after(room_id, [fork]) == base_state
    assert await queries.state_after(room_id, [topic_a.event_id]) == {
        **base_state,
        TOPIC: topic_a.event_id,
    }
    assert await queries.state_after(room_id, [topic_b.event_id]) == {
        **base_state,
        NAME: name_b.event_id,
        TOPIC: topic_b.event_id,
    }
    # Both branches: the unconflicted name is kept; the topics conflict and the later one wins.
    both = {**base_state, NAME: name_b.event_id, TOPIC: topic_b.event_id}
    ids = [topic_a.event_id, topic_b.event_id]
    for _ in range(3):
        random.shuffle(ids)
        assert await queries.state_after(room_id, ids) == both
    # A repeated ID is asked once; an ancestor adds nothing its descendant does not hold.
    assert await queries.state_after(room_id, [topic_b.event_id, topic_b.event_id, fork]) == {
        **base_state,
        NAME: name_b.event_id,
        TOPIC: topic_b.event_id,
    }


async def test_rejected_state_event_adds_nothing(make_harness: HarnessMaker) -> None:
    builder = _room()
    base_events = list(builder.events.values())
    base_state = dict(builder.state)
    # Bob never joined: his topic passes no rule, but it is stored (rejected) with state.
    bob_topic = builder.send("m.room.topic", BOB, {"topic": "mine"}, state_key="")
    h = await make_harness(builder)
    await h.accept_all(base_events)
    result = await h.submit(bob_topic)
    assert result.outcome is Outcome.REJECTED
    stored = await h.stored(bob_topic.event_id)
    assert stored.rejected and not stored.outlier

    after = await Queries(h.store.inner).state_after(builder.room_id, [bob_topic.event_id])
    assert after == base_state
    assert TOPIC not in after


async def test_soft_failed_state_event_is_in_its_own_state_after(
    make_harness: HarnessMaker,
) -> None:
    builder = _room()
    join = builder.join(BOB)
    # Built while Bob is joined (its auth events name his join), delivered after his ban.
    bob_topic_pdu = builder.make_pdu("m.room.topic", BOB, {"topic": "late"}, state_key="")
    ban = builder.member(ALICE, BOB, "ban")
    h = await make_harness(builder)
    await h.accept_all([e for e in builder.events.values() if e.event_id != ban.event_id])
    await h.accept_all([ban])
    result = await h.submit(bob_topic_pdu)
    assert result.outcome is Outcome.SOFT_FAILED
    assert result.event_id is not None

    queries = Queries(h.store.inner)
    after = await queries.state_after(builder.room_id, [result.event_id])
    assert after[TOPIC] == result.event_id
    assert after[("m.room.member", BOB)] == join.event_id
    # Current state never names it.
    assert TOPIC not in await queries.current_state(builder.room_id)


async def test_outlier_has_no_state(make_harness: HarnessMaker) -> None:
    builder = _room()
    base_events = list(builder.events.values())
    topic = builder.send("m.room.topic", ALICE, {"topic": "outlier"}, state_key="")
    h = await make_harness(builder)
    await h.accept_all(base_events)
    result = await h.submit(topic, Kind.OUTLIER)
    assert result.outcome is Outcome.ACCEPTED
    assert (await h.stored(topic.event_id)).outlier

    queries = Queries(h.store.inner)
    with pytest.raises(UnknownEvents) as raised:
        await queries.state_after(builder.room_id, [base_events[-1].event_id, topic.event_id])
    assert raised.value.event_ids == [topic.event_id]


async def test_unknown_event_room_and_event_of_another_room(make_harness: HarnessMaker) -> None:
    builder = _room()
    other = _room()
    h = await make_harness(builder)
    await h.accept_all(list(builder.events.values()))
    await h.accept_all(list(other.events.values()))
    queries = Queries(h.store.inner)
    known = list(builder.events)[-1]

    with pytest.raises(UnknownEvents) as raised:
        await queries.state_after(builder.room_id, [known, "$nowhere:example.org"])
    assert raised.value.event_ids == ["$nowhere:example.org"]
    # A stored event of another room is not an event of this room.
    foreign = list(other.events)[-1]
    with pytest.raises(UnknownEvents) as raised:
        await queries.state_after(builder.room_id, [foreign])
    assert raised.value.event_ids == [foreign]
    with pytest.raises(UnknownRoom) as unknown:
        await queries.state_after("!absent:example.org", [known])
    assert unknown.value.room_id == "!absent:example.org"
