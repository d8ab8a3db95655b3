"""The input pipeline on a room created and grown, and the outcome of bad events."""

from __future__ import annotations

import copy
import itertools

from roomserver.api import Kind, Outcome, OutputNewRoomEvent
from roomserver.core.pdu import parse_event
from tests.input.fakes import FakeKeyRing
from tests.input.helpers import ALICE, BOB, HarnessFactory, new_room


async def test_room_created_and_grown(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    events += [builder.message(ALICE, f"m{i}") for i in range(5)]
    events.append(builder.send("m.room.topic", ALICE, {"topic": "t"}, state_key=""))
    h = await harness(builder)
    results = await h.submit_all(events)
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * len(events)
    assert [r.event_id for r in results] == [e.event_id for e in events]
    assert await h.current_state() == builder.state
    assert await h.extremities() == {events[-1].event_id}
    outputs = h.publisher.outputs("new_room_event")
    assert [o.event_id for o in outputs] == [e.event_id for e in events]
    # last_sent_event_id chains the outputs; latest_event_ids is the single extremity.
    assert outputs[0].last_sent_event_id is None
    for previous, output in itertools.pairwise(outputs):
        assert output.last_sent_event_id == previous.event_id
        assert output.latest_event_ids == (output.event_id,)
    create_out = outputs[0]
    assert create_out.adds_state_event_ids == (events[0].event_id,)
    assert create_out.state_before_removes_event_ids == (events[0].event_id,)
    message_out = outputs[6]
    assert message_out.adds_state_event_ids == () and message_out.removes_state_event_ids == ()
    topic_out = outputs[-1]
    assert topic_out.adds_state_event_ids == (events[-1].event_id,)
    assert topic_out.state_before_removes_event_ids == (events[-1].event_id,)
    assert await h.store.membership(builder.room_id, BOB) == "join"
    # Each output's message ID is stable: <event_id>:<type>:<n>.
    assert h.publisher.msg_ids()[0] == f"{events[0].event_id}:new_room_event:0"
    # Published outputs are marked sent with the room's next write, when idle, or at close.
    await h.processor.close()
    assert await h.store.pending_outbox(builder.room_id) == []


async def test_replacing_state_shows_removal_and_state_before(harness: HarnessFactory) -> None:
    builder, events = new_room()
    first = builder.send("m.room.topic", ALICE, {"topic": "a"}, state_key="")
    second = builder.send("m.room.topic", ALICE, {"topic": "b"}, state_key="")
    h = await harness(builder)
    await h.accept_all([*events, first, second])
    out: OutputNewRoomEvent = h.publisher.outputs("new_room_event")[-1]
    assert out.adds_state_event_ids == (second.event_id,)
    assert out.removes_state_event_ids == (first.event_id,)
    assert out.state_before_adds_event_ids == (first.event_id,)
    assert out.state_before_removes_event_ids == (second.event_id,)


async def test_rejected_event_is_stored_with_reason_and_no_output(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    await h.accept_all(events)
    h.publisher.clear()
    intruder = builder.message(BOB, "not a member")
    result = await h.submit(intruder)
    assert result.outcome is Outcome.REJECTED
    assert result.reason
    stored = await h.stored(intruder.event_id)
    assert stored.rejected and stored.rejection_reason == result.reason
    assert h.publisher.published == []
    assert await h.extremities() == {events[-1].event_id}


async def test_soft_failed_event_is_stored_without_output(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    before_ban = events[-1]
    ban = builder.member(ALICE, BOB, "ban")
    h = await harness(builder)
    await h.accept_all([*events, ban])
    h.publisher.clear()
    # Bob writes on a branch from before his ban: allowed there, not by the current state.
    sneaky = builder.send(
        "m.room.message",
        BOB,
        {"body": "evade"},
        prev_events=[before_ban.event_id],
        auth_events=[events[0].event_id, events[2].event_id, before_ban.event_id],
    )
    result = await h.submit(sneaky)
    assert result.outcome is Outcome.SOFT_FAILED, result
    assert (await h.stored(sneaky.event_id)).soft_failed
    assert h.publisher.published == []
    assert await h.extremities() == {ban.event_id}
    # Redelivery: the same outcome, still no output.
    again = await h.submit(sneaky)
    assert again.outcome is Outcome.SOFT_FAILED
    assert h.publisher.published == []


async def test_rejected_against_state_before_but_allowed_by_auth_events(
    harness: HarnessFactory,
) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    bob_join = events[-1]
    h = await harness(builder)
    await h.accept_all(events)
    ban = builder.member(ALICE, BOB, "ban")
    await h.accept_all([ban])
    # Cites Bob's join as an auth event, but the state before it (after the ban) bans him.
    msg = builder.send(
        "m.room.message",
        BOB,
        {"body": "x"},
        auth_events=[events[0].event_id, events[2].event_id, bob_join.event_id],
    )
    result = await h.submit(msg)
    assert result.outcome is Outcome.REJECTED
    assert "state before" in (result.reason or "")


async def test_invalid_inputs_are_not_stored(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    await h.accept_all(events)
    h.publisher.clear()
    good = builder.make_pdu("m.room.message", ALICE, {"body": "hi"})
    cases = []
    no_sender = dict(good)
    del no_sender["sender"]
    cases.append(no_sender)
    forged = copy.deepcopy(good)
    forged["origin_server_ts"] += 1  # covered by the signature
    cases.append(forged)
    unknown_room = dict(good, room_id="!unknown:example.org")
    cases.append(unknown_room)
    for pdu in cases:
        result = await h.submit(pdu)
        assert result.outcome is Outcome.INVALID, (pdu, result)
        assert result.reason
    for pdu in cases[1:]:
        assert not await h.has(parse_event(pdu, "10").event_id)
    assert h.publisher.published == []


async def test_unknown_signing_server_is_invalid(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder, keyring=FakeKeyRing())
    result = await h.submit(events[0])
    assert result.outcome is Outcome.INVALID
    # A caller that already verified the event may say so.
    result = await h.submit(events[0], verified=True)
    assert result.outcome is Outcome.ACCEPTED


async def test_content_hash_mismatch_stores_the_redacted_form(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    await h.accept_all(events)
    pdu = builder.make_pdu("m.room.message", ALICE, {"body": "original"})
    tampered = copy.deepcopy(pdu)
    tampered["content"]["body"] = "tampered"  # signatures cover only the redacted form
    result = await h.submit(tampered)
    assert result.outcome is Outcome.ACCEPTED
    assert result.event_id == parse_event(pdu, "10").event_id
    assert (await h.stored(result.event_id)).event.content == {}


async def test_server_acl_denies_origin(harness: HarnessFactory) -> None:
    builder, events = new_room()
    acl = builder.send(
        "m.room.server_acl", ALICE, {"allow": ["*"], "deny": ["evil.test"]}, state_key=""
    )
    h = await harness(builder)
    await h.accept_all([*events, acl])
    msg = builder.message(ALICE, "relayed")
    denied = await h.submit(msg, origin="evil.test")
    assert denied.outcome is Outcome.INVALID
    assert "ACL" in (denied.reason or "")
    allowed = await h.submit(msg, origin="good.test")
    assert allowed.outcome is Outcome.ACCEPTED


async def test_outlier_has_no_output_and_can_later_gain_state(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    await h.accept_all(events)
    h.publisher.clear()
    msg = builder.message(ALICE)
    assert (await h.submit(msg, Kind.OUTLIER)).outcome is Outcome.ACCEPTED
    assert (await h.stored(msg.event_id)).outlier
    assert h.publisher.published == []
    assert (await h.submit(msg, Kind.NEW)).outcome is Outcome.ACCEPTED
    assert not (await h.stored(msg.event_id)).outlier
    assert [o.event_id for o in h.publisher.outputs("new_room_event")] == [msg.event_id]


async def test_old_event_emits_old_room_event(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    await h.accept_all(events)
    h.publisher.clear()
    msg = builder.message(ALICE)
    assert (await h.submit(msg, Kind.OLD)).outcome is Outcome.ACCEPTED
    assert [o.event_id for o in h.publisher.outputs("old_room_event")] == [msg.event_id]
    assert await h.extremities() == {events[-1].event_id}
