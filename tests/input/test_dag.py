"""Forks and merges, supplied state, invites, and room versions 1 and 12."""

from __future__ import annotations

import random

import pytest

from roomserver.api import Kind, Outcome
from roomserver.core.pdu import Event
from roomserver.testing.builder import RoomBuilder
from tests.input.helpers import ALICE, BOB, CAROL, SERVER, HarnessFactory, new_room


async def test_fork_and_merge_resolves_state(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    h = await harness(builder)
    await h.accept_all(events)
    fork_point = events[-1].event_id
    topic_a = builder.send(
        "m.room.topic", ALICE, {"topic": "A"}, state_key="", prev_events=[fork_point]
    )
    name_b = builder.send(
        "m.room.name", ALICE, {"name": "B"}, state_key="", prev_events=[fork_point]
    )
    await h.accept_all([topic_a, name_b])
    assert await h.extremities() == {topic_a.event_id, name_b.event_id}
    # Both branches' changes are in current state after the fork (resolved over extremities).
    state = await h.current_state()
    assert state[("m.room.topic", "")] == topic_a.event_id
    assert state[("m.room.name", "")] == name_b.event_id
    fork_out = h.publisher.outputs("new_room_event")[-1]
    assert set(fork_out.latest_event_ids) == {topic_a.event_id, name_b.event_id}
    assert fork_out.adds_state_event_ids == (name_b.event_id,)
    merge = builder.send(
        "m.room.message", ALICE, {"body": "merge"}, prev_events=[topic_a.event_id, name_b.event_id]
    )
    await h.accept_all([merge])
    assert await h.extremities() == {merge.event_id}
    assert (await h.current_state()) == state
    before = await h.state_before(merge.event_id)
    assert before[("m.room.topic", "")] == topic_a.event_id
    assert before[("m.room.name", "")] == name_b.event_id


async def test_conflicting_branches_resolve_deterministically(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    await h.accept_all(events)
    fork_point = events[-1].event_id
    a = builder.send("m.room.topic", ALICE, {"topic": "A"}, state_key="", prev_events=[fork_point])
    b = builder.send("m.room.topic", ALICE, {"topic": "B"}, state_key="", prev_events=[fork_point])
    await h.accept_all([a, b])
    winner = (await h.current_state())[("m.room.topic", "")]
    assert winner in {a.event_id, b.event_id}
    # The other arrival order resolves to the same state.
    h2 = await harness(builder)
    await h2.accept_all([*events, b, a])
    assert (await h2.current_state())[("m.room.topic", "")] == winner


async def test_has_state_rewrites_state_for_a_joined_room(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events.append(builder.message(ALICE, "before we joined"))
    carol_join = builder.join(CAROL)
    h = await harness(builder)
    state_ids = [e.event_id for e in events if e.is_state()]
    for event in events[:4]:
        result = await h.submit(event, Kind.OUTLIER, room_version="10")
        assert result.outcome is Outcome.ACCEPTED, result
    result = await h.submit(
        carol_join, Kind.NEW, has_state=True, state_event_ids=tuple(state_ids), room_version="10"
    )
    assert result.outcome is Outcome.ACCEPTED, result
    assert await h.extremities() == {carol_join.event_id}
    assert await h.current_state() == builder.state
    out = h.publisher.outputs("new_room_event")[-1]
    assert out.rewrites_state
    assert set(out.adds_state_event_ids) == set(builder.state.values())
    assert out.removes_state_event_ids == ()


async def test_has_state_with_unknown_state_event_is_invalid(harness: HarnessFactory) -> None:
    builder, events = new_room()
    join = builder.join(CAROL)
    h = await harness(builder)
    result = await h.submit(
        join, Kind.NEW, has_state=True, state_event_ids=(events[0].event_id,), room_version="10"
    )
    assert result.outcome is Outcome.INVALID


async def test_invite_and_retire_invite_for_local_users_only(harness: HarnessFactory) -> None:
    builder, events = new_room()
    invite = builder.member(ALICE, CAROL, "invite")
    remote_invite = builder.member(ALICE, BOB, "invite")
    h = await harness(builder)
    await h.accept_all([*events, invite, remote_invite])
    invites = h.publisher.outputs("new_invite_event")
    assert [i.event_id for i in invites] == [invite.event_id]
    join = builder.join(CAROL)
    await h.accept_all([join])
    retired = h.publisher.outputs("retire_invite_event")
    assert len(retired) == 1
    assert retired[0].event_id == invite.event_id
    assert retired[0].membership == "join"
    assert retired[0].retired_by_event_id == join.event_id
    assert retired[0].target_user_id == CAROL
    # Bob (remote) joining retires nothing for us.
    await h.accept_all([builder.join(BOB)])
    assert len(h.publisher.outputs("retire_invite_event")) == 1
    # Invite outputs come before the new_room_event of the same event.
    types = [t for _, t, _, m in h.publisher.published if m.startswith(invite.event_id)]
    assert types == ["new_invite_event", "new_room_event"]


@pytest.mark.parametrize("version", ["1", "3", "12"])
async def test_other_room_versions(version: str, harness: HarnessFactory) -> None:
    builder = RoomBuilder(version, server_name=SERVER)
    events = builder.create_room(ALICE)
    events.append(builder.join(BOB))
    events.append(builder.message(BOB, "hi"))
    events.append(builder.send("m.room.topic", ALICE, {"topic": "v"}, state_key=""))
    h = await harness(builder)
    await h.accept_all(events)
    assert await h.current_state() == builder.state
    assert await h.extremities() == {events[-1].event_id}
    intruder = builder.message("@mallory:evil.test", "x")
    assert (await h.submit(intruder)).outcome is Outcome.REJECTED


async def test_v12_room_id_is_derived_from_create_event(harness: HarnessFactory) -> None:
    builder = RoomBuilder("12", server_name=SERVER)
    events = builder.create_room(ALICE)
    h = await harness(builder)
    await h.accept_all(events)
    assert builder.room_id == "!" + events[0].event_id[1:]
    room = await h.store.room(builder.room_id)
    assert room is not None
    assert (room.room_version, room.forward_extremities) == ("12", (events[-1].event_id,))
    # An event of another "room" whose create event we lack is rejected or reported missing.
    other = RoomBuilder("12", server_name=SERVER)
    other_events = other.create_room(ALICE)
    h2 = await harness(other)
    result = await h2.submit(other_events[1], room_version="12")
    assert result.outcome is Outcome.REJECTED
    assert "missing auth events" in (result.reason or "")


def _random_topological_order(events: list[Event], rng: random.Random) -> list[Event]:
    by_id = {e.event_id: e for e in events}
    placed: set[str] = set()
    out: list[Event] = []
    pending = list(events)
    while pending:
        ready = [e for e in pending if all(p in placed or p not in by_id for p in e.prev_event_ids)]
        choice = rng.choice(ready)
        pending.remove(choice)
        placed.add(choice.event_id)
        out.append(choice)
    return out


@pytest.mark.parametrize("version", ["10", "12"])
async def test_shuffled_arrival_orders_agree(version: str, harness: HarnessFactory) -> None:
    builder = RoomBuilder(version, server_name=SERVER)
    events = builder.create_room(ALICE)
    events += [builder.join(BOB), builder.join(CAROL)]
    base = events[-1].event_id
    branch_a = [
        builder.send("m.room.topic", ALICE, {"topic": "A"}, state_key="", prev_events=[base])
    ]
    branch_a.append(builder.message(BOB, "a1"))
    branch_b = [builder.send("m.room.name", ALICE, {"name": "B"}, state_key="", prev_events=[base])]
    branch_b.append(
        builder.send(
            "m.room.topic", ALICE, {"topic": "B"}, state_key="", prev_events=[branch_b[0].event_id]
        )
    )
    tips = [branch_a[-1].event_id, branch_b[-1].event_id]
    merge = builder.send("m.room.message", ALICE, {"body": "merged"}, prev_events=tips)
    dag = [*events, *branch_a, *branch_b, merge]
    results = []
    for seed in range(3):
        order = _random_topological_order(dag, random.Random(seed))
        h = await harness(builder)
        await h.accept_all(order)
        results.append((await h.current_state(), await h.extremities()))
    assert all(r == results[0] for r in results)
    state, extremities = results[0]
    assert extremities == {merge.event_id}
    assert state[("m.room.name", "")] == branch_b[0].event_id
    assert state[("m.room.topic", "")] in {branch_a[0].event_id, branch_b[1].event_id}


async def test_event_cited_only_by_an_outlier_is_an_extremity(harness: HarnessFactory) -> None:
    """An outlier is not built upon: what it cites as a prev event is not "late"."""
    builder, events = new_room()
    h = await harness(builder)
    await h.accept_all(events[:-1])
    late = events[-1]
    child = builder.message(ALICE, "child of the late event")
    # The child arrives first, as an outlier; then the late event and its child as NEW.
    assert (await h.submit(child, Kind.OUTLIER)).outcome is Outcome.ACCEPTED
    await h.accept_all([late])
    assert await h.extremities() == {late.event_id}
    await h.accept_all([child])
    assert await h.extremities() == {child.event_id}


async def test_late_event_cited_by_an_event_with_state_is_not_an_extremity(
    harness: HarnessFactory,
) -> None:
    """An accepted event stored with state (here: backfilled with supplied state) that cites
    an event makes that event late: it does not become a forward extremity."""
    builder, events = new_room()
    h = await harness(builder)
    await h.accept_all(events[:-1])
    late = events[-1]
    child = builder.message(ALICE, "child of the late event")
    state_ids = tuple(sorted(e for e in builder.state.values() if e != late.event_id))
    result = await h.submit(child, Kind.OLD, has_state=True, state_event_ids=state_ids)
    assert result.outcome is Outcome.ACCEPTED, result
    await h.accept_all([late])
    assert await h.extremities() == {events[-2].event_id}
