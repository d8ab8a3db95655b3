"""Input messages that carry a batch of one room's events (wire version 2)."""

from __future__ import annotations

from dataclasses import dataclass

from roomserver.api import (
    EventResult,
    InputRoomEvent,
    Kind,
    Outcome,
    decode_event_result,
    decode_event_results,
    encode_input_batch,
    encode_input_room_event,
)
from roomserver.core.pdu import Event
from roomserver.input import Disposition, InputConfig, handle_message, retry_delay_s
from roomserver.ports import CorruptData, StorageUnavailable
from tests.input.fakes import FakeFetcher
from tests.input.helpers import ALICE, BOB, HarnessFactory, new_room

MALLORY = "@mallory:evil.test"


@dataclass
class Info:
    num_delivered: int = 1
    stream_seq: int = 7


def _batch(events: list[Event]) -> bytes:
    return encode_input_batch([InputRoomEvent(event=dict(e.pdu), kind=Kind.NEW) for e in events])


async def test_a_batch_gives_one_result_per_event_in_order(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events += [builder.join(BOB), builder.message(BOB), builder.message(ALICE)]
    h = await harness(builder)
    decision = await handle_message(h.processor, builder.room_id, _batch(events), Info())
    assert decision.disposition is Disposition.ACK
    assert decision.reply is not None
    expected = [EventResult(e.event_id, Outcome.ACCEPTED) for e in events]
    assert decode_event_results(decision.reply) == expected
    assert list(decision.results) == expected
    assert await h.extremities() == {events[-1].event_id}
    # Outputs are published once per message, pipelined, in the events' order.
    assert h.publisher.calls == 1
    new_ids = [m for m in h.publisher.msg_ids() if ":new_room_event:" in m]
    assert new_ids == [f"{e.event_id}:new_room_event:0" for e in events]


async def test_events_after_a_rejected_one_see_the_state_without_it(
    harness: HarnessFactory,
) -> None:
    builder, events = new_room()
    h = await harness(builder)
    await h.accept_all(events)
    # Mallory is not in the room: her topic is rejected, yet the next event cites it.
    bad_topic = builder.add(
        builder.make_pdu("m.room.topic", MALLORY, {"topic": "evil"}, state_key=""),
        update_state=False,
    )
    builder.latest = [bad_topic.event_id]
    after = builder.message(ALICE)
    good_topic = builder.send("m.room.topic", ALICE, {"topic": "good"}, state_key="")
    batch = [bad_topic, after, good_topic]
    decision = await handle_message(h.processor, builder.room_id, _batch(batch), Info())
    assert [r.outcome for r in decision.results] == [
        Outcome.REJECTED,
        Outcome.ACCEPTED,
        Outcome.ACCEPTED,
    ]
    assert ("m.room.topic", "") not in await h.state_before(after.event_id)
    assert (await h.current_state())[("m.room.topic", "")] == good_topic.event_id
    assert await h.extremities() == {good_topic.event_id}
    published = {m.split(":", 1)[0] for m in h.publisher.msg_ids()}
    assert bad_topic.event_id not in published


async def test_a_failed_commit_leaves_nothing_and_redelivery_finishes_the_batch(
    harness: HarnessFactory,
) -> None:
    builder, events = new_room()
    events += [builder.join(BOB), builder.message(BOB)]
    h = await harness(builder)
    payload = _batch(events)
    h.store.fail_next_persist = StorageUnavailable("db down")
    h.store.persists_before_failing = 2  # the transaction with the third event fails
    first = await handle_message(h.processor, builder.room_id, payload, Info(num_delivered=2))
    assert first.disposition is Disposition.RETRY
    assert first.reply is None and first.delay_s == retry_delay_s(2)
    # The message's writes are one transaction: none of them was stored, nothing published.
    for event in events:
        assert not await h.has(event.event_id)
    assert h.publisher.msg_ids() == []
    again = await handle_message(h.processor, builder.room_id, payload, Info(num_delivered=3))
    assert again.disposition is Disposition.ACK
    assert [r.outcome for r in again.results] == [Outcome.ACCEPTED] * len(events)
    ids = h.publisher.msg_ids()
    assert len(ids) == len(set(ids)), "an output was published twice"
    assert [m.split(":", 1)[0] for m in ids if ":new_room_event:" in m] == [
        e.event_id for e in events
    ]
    assert await h.extremities() == {events[-1].event_id}


async def test_an_event_needing_a_fetch_commits_the_batch_so_far(
    harness: HarnessFactory,
) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    h_events = list(events)
    first, second = builder.message(BOB, "one"), builder.message(ALICE, "two")
    unknown = builder.message(BOB, "never sent to us")  # the third event's missing prev
    third = builder.message(ALICE, "three")
    fetcher = FakeFetcher(events=dict(builder.events), hang=True)
    h = await harness(builder, fetcher=fetcher, config=InputConfig(max_missing_processing_s=0.3))
    await h.accept_all(h_events)
    payload = _batch([first, second, third])
    decision = await handle_message(h.processor, builder.room_id, payload, Info())
    # The fetch for the third event hangs past the message's deadline: retried later, but
    # what was decided before it is committed (and published) already.
    assert decision.disposition is Disposition.RETRY
    assert [r.outcome for r in decision.results] == [
        Outcome.ACCEPTED,
        Outcome.ACCEPTED,
        Outcome.ERROR,
    ]
    assert await h.has(first.event_id) and await h.has(second.event_id)
    assert not await h.has(third.event_id)
    assert "get_missing_events" in fetcher.calls
    published = {m.split(":", 1)[0] for m in h.publisher.msg_ids()}
    assert {first.event_id, second.event_id} <= published
    # The remote answers now: the redelivery fills the gap and finishes the message.
    fetcher.hang = False
    again = await handle_message(h.processor, builder.room_id, payload, Info(num_delivered=2))
    assert again.disposition is Disposition.ACK
    assert [r.outcome for r in again.results] == [Outcome.ACCEPTED] * 3
    assert await h.has(unknown.event_id)
    assert await h.extremities() == {third.event_id}


async def test_an_event_failing_for_good_does_not_stall_the_rest(
    harness: HarnessFactory,
) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    h = await harness(builder)
    await h.accept_all(events)
    fork_point = list(builder.latest)
    broken = builder.message(ALICE)
    builder.latest = fork_point
    sibling = builder.message(BOB)  # does not depend on the broken one
    h.store.poisoned[broken.event_id] = CorruptData("bad row")
    payload = _batch([broken, sibling])
    early = await handle_message(h.processor, builder.room_id, payload, Info(num_delivered=3))
    assert early.disposition is Disposition.RETRY  # maybe transient: the message is retried
    assert not await h.has(sibling.event_id)
    decision = await handle_message(h.processor, builder.room_id, payload, Info(num_delivered=10))
    assert decision.disposition is Disposition.ACK
    assert [(r.event_id, r.outcome) for r in decision.results] == [
        (broken.event_id, Outcome.ERROR),
        (sibling.event_id, Outcome.ACCEPTED),
    ]
    assert decision.reply is not None
    assert decode_event_results(decision.reply) == list(decision.results)
    assert await h.extremities() == {sibling.event_id}


async def test_version_1_and_version_2_messages_mix_on_one_room(
    harness: HarnessFactory,
) -> None:
    builder, events = new_room()
    events += [builder.join(BOB), builder.message(BOB), builder.message(ALICE)]
    h = await harness(builder)
    results: list[EventResult] = []
    for i, event in enumerate(events):
        if i % 2 == 0:
            payload = encode_input_room_event(InputRoomEvent(event=dict(event.pdu)))
            decision = await handle_message(h.processor, builder.room_id, payload, Info())
            assert decision.reply is not None
            results.append(decode_event_result(decision.reply))  # a version-1 reply
        else:
            decision = await handle_message(h.processor, builder.room_id, _batch([event]), Info())
            assert decision.reply is not None
            results += decode_event_results(decision.reply)
    assert results == [EventResult(e.event_id, Outcome.ACCEPTED) for e in events]
    assert await h.extremities() == {events[-1].event_id}


async def test_an_event_of_another_room_in_a_message_is_not_processed(
    harness: HarnessFactory,
) -> None:
    builder, events = new_room()
    other, other_events = new_room()
    h = await harness(builder)
    payload = _batch([*events, other_events[0]])
    decision = await handle_message(h.processor, builder.room_id, payload, Info())
    assert decision.disposition is Disposition.ACK
    *ours, foreign = decision.results
    assert [r.outcome for r in ours] == [Outcome.ACCEPTED] * len(events)
    assert foreign.outcome is Outcome.INVALID
    assert other.room_id in (foreign.reason or "")
    assert not await h.has(other_events[0].event_id)
