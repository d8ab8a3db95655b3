"""End to end through the Roomserver facade: input stream, room workers, storage, outputs."""

from __future__ import annotations

import asyncio
import copy

from roomserver.api import (
    InputRoomEvent,
    InputRoomEventsRequest,
    Outcome,
    OutputNewRoomEvent,
    OutputType,
)
from roomserver.app import Roomserver
from roomserver.testing.builder import RoomBuilder
from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import (
    ALICE,
    BOB,
    MALLORY,
    drain_outputs,
    read_outputs,
    submit,
    trust,
    wait_for,
)


async def test_room_grows_through_sync_and_async_input(open_roomserver: OpenRoomserver) -> None:
    rs = await open_roomserver()
    b = RoomBuilder("10")
    trust(rs, b)
    outputs = await rs.bus.output_subscription("e2e-grow")
    setup = [*b.create_room(ALICE), b.join(BOB)]
    response = await submit(rs, [e.pdu for e in setup])
    assert [r.outcome for r in response.results] == [Outcome.ACCEPTED] * len(setup)
    assert [r.event_id for r in response.results] == [e.event_id for e in setup]

    messages = [b.message(BOB if i % 2 else ALICE, f"message {i}") for i in range(30)]
    topic = b.send("m.room.topic", ALICE, {"topic": "e2e"}, state_key="")
    queued = await submit(rs, [e.pdu for e in [*messages, topic]], asynchronous=True)
    assert {r.outcome for r in queued.results} == {Outcome.QUEUED}

    await wait_for(lambda: _latest_is(rs, b.room_id, [topic.event_id]))
    assert await rs.current_state(b.room_id) == b.state
    stored = await rs.event(messages[-1].event_id)
    assert stored is not None and stored.outcome is Outcome.ACCEPTED and not stored.outlier

    every = [*setup, *messages, topic]
    out = await read_outputs(outputs, len(every))
    assert all(o.type is OutputType.NEW_ROOM_EVENT for o in out)
    payloads = [o.payload for o in out]
    assert all(isinstance(p, OutputNewRoomEvent) for p in payloads)
    new_events = [p for p in payloads if isinstance(p, OutputNewRoomEvent)]
    assert [p.event_id for p in new_events] == [e.event_id for e in every]
    # Each output names the extremities after it and the previous output of the room.
    assert [p.latest_event_ids for p in new_events] == [(e.event_id,) for e in every]
    assert new_events[0].last_sent_event_id in (None, "")
    assert [p.last_sent_event_id for p in new_events[1:]] == [e.event_id for e in every[:-1]]
    # The topic replaces nothing and is added to current state; messages change no state.
    assert new_events[-1].adds_state_event_ids == (topic.event_id,)
    assert new_events[-1].removes_state_event_ids == ()
    assert all(p.adds_state_event_ids == () for p in new_events[len(setup) : -1])
    assert await drain_outputs(outputs, quiet=0.5) == []


async def _latest_is(rs: Roomserver, room_id: str, expected: list[str]) -> bool:
    return await rs.latest_events(room_id) == expected


async def test_rejected_soft_failed_and_invalid_events_get_no_output(
    open_roomserver: OpenRoomserver,
) -> None:
    rs = await open_roomserver()
    b = RoomBuilder("10")
    trust(rs, b)
    outputs = await rs.bus.output_subscription("e2e-outcomes")
    setup = [*b.create_room(ALICE), b.join(BOB)]
    assert {r.outcome for r in (await submit(rs, [e.pdu for e in setup])).results} == {
        Outcome.ACCEPTED
    }
    assert len(await read_outputs(outputs, len(setup))) == len(setup)

    # Rejected: a user who never joined cannot send.
    intruder = b.make_pdu("m.room.message", MALLORY, {"body": "hi"})
    # Soft-failed: Bob's message built on the state before his ban, arriving after it.
    before_ban = list(b.latest)
    bob_auth = b.auth_event_ids_for("m.room.message", BOB, None, {})
    ban = b.member(ALICE, BOB, "ban")
    late = b.make_pdu(
        "m.room.message", BOB, {"body": "late"}, prev_events=before_ban, auth_events=bob_auth
    )
    # Invalid: a forged signature, and a PDU without a sender.
    forged = copy.deepcopy(b.make_pdu("m.room.message", ALICE, {"body": "forged"}))
    forged["signatures"]["example.org"] = {
        key_id: "A" * 86 for key_id in forged["signatures"]["example.org"]
    }
    no_sender = {k: v for k, v in b.make_pdu("m.room.message", ALICE, {}).items() if k != "sender"}
    after = b.make_pdu("m.room.message", ALICE, {"body": "after"}, prev_events=[ban.event_id])

    response = await submit(rs, [intruder, ban.pdu, late, forged, no_sender, after])
    outcomes = [r.outcome for r in response.results]
    assert outcomes == [
        Outcome.REJECTED,
        Outcome.ACCEPTED,
        Outcome.SOFT_FAILED,
        Outcome.INVALID,
        Outcome.INVALID,
        Outcome.ACCEPTED,
    ], [r.reason for r in response.results]
    assert "not joined" in (response.results[0].reason or "")
    assert response.results[4].reason and "sender" in response.results[4].reason

    rejected = await rs.event(response.results[0].event_id or "")
    assert rejected is not None and rejected.rejected and rejected.rejection_reason
    soft = await rs.event(response.results[2].event_id or "")
    assert soft is not None and soft.soft_failed and soft.outcome is Outcome.SOFT_FAILED
    assert await rs.event(response.results[3].event_id or "$none") is None

    out = await read_outputs(outputs, 2)
    ids = [o.payload.event_id for o in out if isinstance(o.payload, OutputNewRoomEvent)]
    assert ids == [ban.event_id, response.results[5].event_id]
    assert await drain_outputs(outputs, quiet=0.5) == []
    assert await rs.latest_events(b.room_id) == [response.results[5].event_id]


async def test_order_kept_per_room_under_concurrent_input_to_100_rooms(
    open_roomserver: OpenRoomserver,
) -> None:
    rs = await open_roomserver()
    outputs = await rs.bus.output_subscription("e2e-100")
    builders = []
    for i in range(100):
        b = RoomBuilder("10", room_id=f"!room{i}:example.org")
        b.create_room(ALICE)
        for j in range(6):
            b.message(ALICE, f"{i}/{j}")
        builders.append(b)
    trust(rs, *builders)

    async def feed(b: RoomBuilder) -> None:
        events = list(b.events.values())
        for start in range(0, len(events), 3):
            await submit(rs, [e.pdu for e in events[start : start + 3]], asynchronous=True)

    await asyncio.gather(*(feed(b) for b in builders))
    total = sum(len(b.events) for b in builders)
    out = await read_outputs(outputs, total, timeout=120)
    per_room: dict[str, list[str]] = {}
    for o in out:
        assert isinstance(o.payload, OutputNewRoomEvent)
        per_room.setdefault(o.room_id, []).append(o.payload.event_id)
    for b in builders:
        assert per_room[b.room_id] == list(b.events), b.room_id
        assert await rs.latest_events(b.room_id) == b.latest


async def test_request_in_order_results_and_unroutable_events(
    open_roomserver: OpenRoomserver,
) -> None:
    rs = await open_roomserver()
    a, c = RoomBuilder("10", room_id="!a:example.org"), RoomBuilder("11", room_id="!c:example.org")
    trust(rs, a, c)
    a.create_room(ALICE)
    c.create_room(BOB)
    mixed = [p for pair in zip(a.pdus(), c.pdus(), strict=True) for p in pair]
    garbage = {"type": "m.room.message"}  # names no room
    response = await rs.input_room_events(
        InputRoomEventsRequest(
            events=[InputRoomEvent(event=p) for p in [*mixed[:3], garbage, *mixed[3:]]]
        )
    )
    outcomes = [r.outcome for r in response.results]
    assert outcomes[3] is Outcome.INVALID and "room_id" in (response.results[3].reason or "")
    assert outcomes[:3] + outcomes[4:] == [Outcome.ACCEPTED] * len(mixed)
    expected = [
        e.event_id for pair in zip(a.events.values(), c.events.values(), strict=True) for e in pair
    ]
    assert [r.event_id for r in response.results[:3] + response.results[4:]] == expected


async def test_v12_room_is_routed_by_its_derived_room_id(open_roomserver: OpenRoomserver) -> None:
    rs = await open_roomserver()
    b = RoomBuilder("12")
    trust(rs, b)
    b.create_room(ALICE)
    b.join(BOB)
    response = await submit(rs, b.pdus())
    assert {r.outcome for r in response.results} == {Outcome.ACCEPTED}, response
    assert await rs.current_state(b.room_id) == b.state
