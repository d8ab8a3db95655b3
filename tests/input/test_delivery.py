"""Idempotent redelivery, the outbox after a crash, and the disposition table."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from roomserver.api import (
    EventResult,
    InputRoomEvent,
    Kind,
    Outcome,
    decode_event_result,
    encode_input_room_event,
)
from roomserver.input import Disposition, handle_message, retry_delay_s
from roomserver.input.disposition import disposition_for_exception
from roomserver.input.errors import MissingData
from roomserver.ports import ConcurrentUpdate, CorruptData, StorageUnavailable
from tests.input.helpers import BOB, HarnessFactory, new_room


@dataclass
class Info:
    num_delivered: int = 1
    stream_seq: int = 7


async def test_redelivery_gives_the_same_result_and_no_duplicate_output(
    harness: HarnessFactory,
) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    events.append(builder.message(BOB))
    h = await harness(builder)
    first = await h.submit_all(events)
    published = list(h.publisher.published)
    second = await h.submit_all(events)
    assert first == second
    assert h.publisher.published == published
    rejected = builder.message("@mallory:evil.test")
    r1, r2 = await h.submit(rejected), await h.submit(rejected)
    assert r1 == r2 and r1.outcome is Outcome.REJECTED


async def test_crash_after_commit_republishes_unsent_outputs_once(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    await h.accept_all(events[:-1])
    h.publisher.fail_next = ConnectionError("bus down")
    item = InputRoomEvent(event=dict(events[-1].pdu), kind=Kind.NEW)
    with pytest.raises(ConnectionError):
        await h.processor.process_or_raise(item)
    assert await h.has(events[-1].event_id)  # committed
    assert len(await h.store.pending_outbox(builder.room_id)) == 1
    result = await h.processor.process_or_raise(item)
    assert result.outcome is Outcome.ACCEPTED
    ids = h.publisher.msg_ids()
    assert ids.count(f"{events[-1].event_id}:new_room_event:0") == 1
    assert len(ids) == len(set(ids)) == len(events)
    assert await h.store.pending_outbox(builder.room_id) == []


async def test_concurrent_update_is_retried_in_process(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    await h.accept_all(events[:-1])
    h.store.fail_next_persist = ConcurrentUpdate("moved")
    result = await h.submit(events[-1])
    assert result.outcome is Outcome.ACCEPTED


async def test_storage_unavailable_is_an_error(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    h.store.fail_next_persist = StorageUnavailable("db down")
    result = await h.submit(events[0])
    assert result.outcome is Outcome.ERROR
    assert result.event_id == events[0].event_id
    assert (await h.submit(events[0])).outcome is Outcome.ACCEPTED


async def test_handle_message_acks_outcomes_and_replies(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    payload = encode_input_room_event(InputRoomEvent(event=dict(events[0].pdu)))
    decision = await handle_message(h.processor, builder.room_id, payload, Info())
    assert decision.disposition is Disposition.ACK
    assert decision.reply is not None
    assert decode_event_result(decision.reply) == EventResult(events[0].event_id, Outcome.ACCEPTED)
    bad = encode_input_room_event(InputRoomEvent(event={"type": "x"}))
    decision = await handle_message(h.processor, builder.room_id, bad, Info())
    assert decision.disposition is Disposition.ACK
    assert [r.outcome for r in decision.results] == [Outcome.INVALID]


async def test_handle_message_terminates_undecodable(harness: HarnessFactory) -> None:
    builder, _ = new_room()
    h = await harness(builder)
    bodies = (
        b"not json",
        b'{"v": 99}',
        b'{"v": 1, "event": 5}',
        b'{"v": 2, "events": []}',
        b'{"v": 2, "events": [{"event": {}}, 5]}',
        b'{"v": "2", "events": [{"event": {}}]}',
    )
    for payload in bodies:
        decision = await handle_message(h.processor, builder.room_id, payload, Info())
        assert decision.disposition is Disposition.TERMINATE
        assert decision.reply is not None


async def test_handle_message_retries_transient_failures(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    h.store.fail_next_persist = StorageUnavailable("db down")
    payload = encode_input_room_event(InputRoomEvent(event=dict(events[0].pdu)))
    decision = await handle_message(h.processor, builder.room_id, payload, Info(num_delivered=3))
    assert decision.disposition is Disposition.RETRY
    assert decision.reply is None
    assert decision.delay_s == retry_delay_s(3) == 4.0


@pytest.mark.parametrize(
    ("exc", "attempt", "expected"),
    [
        (StorageUnavailable("x"), 50, Disposition.RETRY),
        (ConcurrentUpdate("x"), 50, Disposition.RETRY),
        (MissingData("x", transient=True), 50, Disposition.RETRY),
        (MissingData("x", transient=False), 1, Disposition.RETRY),
        (MissingData("x", transient=False), 10, Disposition.TERMINATE),
        (TimeoutError(), 50, Disposition.RETRY),
        (CorruptData("x"), 1, Disposition.RETRY),
        (CorruptData("x"), 10, Disposition.TERMINATE),
        (RuntimeError("bug"), 10, Disposition.TERMINATE),
    ],
)
def test_disposition_table(exc: Exception, attempt: int, expected: Disposition) -> None:
    assert disposition_for_exception(exc, attempt=attempt, max_attempts=10) is expected


def test_retry_delay_is_capped() -> None:
    assert [retry_delay_s(a) for a in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_delay_s(30) == 300.0
