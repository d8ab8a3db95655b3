"""Missing auth events and missing prev events, with a fake fetcher; deadlines."""

from __future__ import annotations

import time
from typing import Any

from roomserver.api import Kind, Outcome
from roomserver.core.pdu import Event
from roomserver.input import InputConfig
from roomserver.testing.builder import RoomBuilder
from tests.input.fakes import FakeFetcher
from tests.input.helpers import ALICE, BOB, HarnessFactory, new_room


def grow(
    builder: RoomBuilder, count: int, states: dict[str, dict[tuple[str, str], str]]
) -> list[Event]:
    """``count`` events alternating messages and topic changes, recording each one's state
    before (what the fake remote answers to state_ids)."""
    out = []
    for i in range(count):
        before = dict(builder.state)
        if i % 3 == 0:
            event = builder.send("m.room.topic", ALICE, {"topic": f"t{i}"}, state_key="")
        else:
            event = builder.message(BOB, f"m{i}")
        states[event.event_id] = before
        out.append(event)
    return out


def remote_for(builder: RoomBuilder, states: dict[str, dict[tuple[str, str], str]]) -> FakeFetcher:
    return FakeFetcher(events=dict(builder.events), state_before=states)


async def test_missing_auth_events_are_fetched_as_outliers(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    msg = builder.message(BOB, "from afar")
    fetcher = remote_for(builder, {})
    h = await harness(builder, fetcher=fetcher)
    result = await h.submit(msg, Kind.OUTLIER, room_version="10", origin="remote.test")
    assert result.outcome is Outcome.ACCEPTED, result
    assert "fetch_auth_chain" in fetcher.calls
    for event_id in msg.auth_event_ids:
        stored = await h.stored(event_id)
        assert stored.outlier and not stored.rejected
    assert h.publisher.published == []


async def test_missing_auth_events_without_fetcher_are_reported(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    msg = builder.message(BOB, "from afar")
    h = await harness(builder)
    result = await h.submit(msg, Kind.OUTLIER, room_version="10")
    assert result.outcome is Outcome.REJECTED
    assert (result.reason or "").startswith("missing auth events")
    # Once the auth events are known, resubmitting processes it again.
    await h.submit_all(events, Kind.OUTLIER, room_version="10")
    again = await h.submit(msg, Kind.OUTLIER, room_version="10")
    assert again.outcome is Outcome.ACCEPTED, again


async def test_missing_prev_events_are_fetched_and_processed_as_old(
    harness: HarnessFactory,
) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    states: dict[str, dict[tuple[str, str], str]] = {}
    h_events = list(events)
    gap = grow(builder, 5, states)
    latest = builder.message(BOB, "after the gap")
    fetcher = remote_for(builder, states)
    h = await harness(builder, fetcher=fetcher)
    await h.accept_all(h_events)
    h.publisher.clear()
    result = await h.submit(latest, origin="remote.test")
    assert result.outcome is Outcome.ACCEPTED, result
    assert fetcher.calls == ["get_missing_events"]
    for e in gap:
        assert not (await h.stored(e.event_id)).outlier
    assert [o.event_id for o in h.publisher.outputs("old_room_event")] == [e.event_id for e in gap]
    assert await h.extremities() == {latest.event_id}
    assert await h.current_state() == builder.state
    out = h.publisher.outputs("new_room_event")[-1]
    assert out.event_id == latest.event_id
    assert set(out.adds_state_event_ids) == {builder.state[("m.room.topic", "")]}


async def test_long_gap_uses_state_ids_at_its_edge(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    states: dict[str, dict[tuple[str, str], str]] = {}
    gap = grow(builder, 30, states)
    latest = builder.message(BOB, "after a long gap")
    fetcher = remote_for(builder, states)
    h = await harness(builder, fetcher=fetcher)
    await h.accept_all(events)
    result = await h.submit(latest, origin="remote.test")
    assert result.outcome is Outcome.ACCEPTED, result
    assert fetcher.calls[0] == "get_missing_events"
    assert "state_ids" in fetcher.calls
    fetched = [e for e in gap if await h.has(e.event_id)]
    assert len(fetched) >= 20
    for e in gap[-20:]:
        assert not (await h.stored(e.event_id)).outlier
    assert await h.current_state() == builder.state
    # The gap is not closed: our old extremity stays one (no stored event cites it).
    assert await h.extremities() == {events[-1].event_id, latest.event_id}


async def test_missing_prevs_without_fetcher_reject_the_event(harness: HarnessFactory) -> None:
    builder, events = new_room()
    states: dict[str, dict[tuple[str, str], str]] = {}
    grow(builder, 2, states)
    latest = builder.message(ALICE, "after the gap")
    h = await harness(builder)
    await h.accept_all(events)
    result = await h.submit(latest)
    assert result.outcome is Outcome.REJECTED
    assert (result.reason or "").startswith("missing prev events")
    assert h.publisher.outputs("new_room_event")[-1].event_id == events[-1].event_id


async def test_hanging_fetch_is_cut_at_the_deadline(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    states: dict[str, dict[tuple[str, str], str]] = {}
    grow(builder, 3, states)
    latest = builder.message(BOB, "after the gap")
    fetcher = FakeFetcher(events=dict(builder.events), state_before=states, hang=True)
    h = await harness(builder, fetcher=fetcher, config=InputConfig(max_missing_processing_s=0.2))
    await h.accept_all(events)
    started = time.monotonic()
    result = await h.submit(latest, origin="remote.test")
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.ERROR
    assert "timed out" in (result.reason or "")
    assert 0.15 < elapsed < 2.0
    assert not await h.has(latest.event_id)
    # The room still takes other events.
    local = builder.send("m.room.message", ALICE, {"body": "x"}, prev_events=[events[-1].event_id])
    assert (await h.submit(local)).outcome is Outcome.ACCEPTED


class _NotFound(Exception):
    """Like a federation 404: permanent."""


class _FailingFetcher(FakeFetcher):
    async def fetch_auth_chain(self, *args: object, **kwargs: object) -> list[Event]:
        raise _NotFound("no such event")

    async def get_missing_events(self, *args: object, **kwargs: object) -> Any:
        raise _NotFound("no such event")


async def test_permanent_fetch_failures_reject_for_missing_data(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    states: dict[str, dict[tuple[str, str], str]] = {}
    grow(builder, 2, states)
    latest = builder.message(BOB, "after the gap")
    h = await harness(builder, fetcher=_FailingFetcher(events=dict(builder.events)))
    await h.accept_all(events)
    result = await h.submit(latest, origin="remote.test")
    assert result.outcome is Outcome.REJECTED
    assert (result.reason or "").startswith("missing prev events")
    h2 = await harness(builder, fetcher=_FailingFetcher(events=dict(builder.events)))
    result = await h2.submit(latest, Kind.OUTLIER, room_version="10", origin="remote.test")
    assert result.outcome is Outcome.REJECTED
    assert (result.reason or "").startswith("missing auth events")


async def test_transient_fetch_failure_is_an_error(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    msg = builder.message(BOB)

    class Flaky(FakeFetcher):
        async def fetch_auth_chain(self, *args: object, **kwargs: object) -> list[Event]:
            raise ConnectionResetError("remote went away")

    h = await harness(builder, fetcher=Flaky(events=dict(builder.events)))
    result = await h.submit(msg, Kind.OUTLIER, room_version="10", origin="remote.test")
    assert result.outcome is Outcome.ERROR
    assert not await h.has(msg.event_id)


async def test_sender_joined_inside_the_gap_is_not_soft_failed(harness: HarnessFactory) -> None:
    builder, events = new_room()
    states: dict[str, dict[tuple[str, str], str]] = {}
    gap = [builder.member(ALICE, "@dave:remote.test", "invite")]
    gap.append(builder.join("@dave:remote.test"))
    gap.append(builder.message("@dave:remote.test", "first"))
    latest = builder.message("@dave:remote.test", "hello after joining")
    h = await harness(builder, fetcher=remote_for(builder, states))
    await h.accept_all(events)
    result = await h.submit(latest, origin="remote.test")
    assert result.outcome is Outcome.ACCEPTED, result
    for event in gap:
        assert (await h.stored(event.event_id)).outcome is Outcome.ACCEPTED
    assert await h.current_state() == builder.state
    assert await h.extremities() == {latest.event_id}


async def test_servers_to_ask_are_ordered_deduplicated_and_valid(harness: HarnessFactory) -> None:
    from roomserver.input.job import Job

    builder, events = new_room()
    events.append(builder.join(BOB))
    h = await harness(builder)
    await h.accept_all(events)
    room = await h.store.room(builder.room_id)
    msg = builder.message(BOB)
    ask = h.processor.servers_for
    # Origin first, then the sender's server, then the joined servers (ours never).
    assert await ask(Job(event=msg, kind=Kind.NEW, origin="a.test"), room) == [
        "a.test",
        "remote.test",
    ]
    assert await ask(Job(event=msg, kind=Kind.NEW, origin="remote.test"), room) == ["remote.test"]
    # A name that is no server name is never asked.
    assert await ask(Job(event=msg, kind=Kind.NEW, origin="not a server"), room) == ["remote.test"]


async def test_state_event_rejected_for_missing_auth_is_fetched_again_for_state(
    harness: HarnessFactory,
) -> None:
    """A state event stored rejected for missing auth events is not "held" when the state at a
    gap's edge is fetched: it comes back, is processed again now that its auth events are
    known, and is part of the state (a held rejected event would be left out of it)."""
    builder, events = new_room()
    power = builder.send(
        "m.room.power_levels",
        ALICE,
        {"users": {ALICE: 100}, "users_default": 0, "invite": 0, "ban": 50},
        state_key="",
    )
    join = builder.join(BOB)  # its auth events cite the new power levels
    states: dict[str, dict[tuple[str, str], str]] = {}
    grow(builder, 25, states)
    latest = builder.message(ALICE, "after a long gap")
    fetcher = remote_for(builder, states)
    h = await harness(builder, fetcher=fetcher)
    await h.accept_all(events)
    del fetcher.events[power.event_id]  # not obtainable yet
    early = await h.submit(join, Kind.OUTLIER, origin="remote.test")
    assert early.outcome is Outcome.REJECTED
    assert (early.reason or "").startswith("missing auth events")
    fetcher.events[power.event_id] = power

    result = await h.submit(latest, origin="remote.test")
    assert result.outcome is Outcome.ACCEPTED, result
    assert "state_ids" in fetcher.calls
    stored = await h.stored(join.event_id)
    assert not stored.rejected, stored.rejection_reason
    assert await h.current_state() == builder.state
