"""Optimistic reads (``InputConfig.optimistic_reads``): a message of a cached room whose prev
events are cached reads nothing before deciding; what it assumed is checked in the commit's
transaction, and when it is false the message is processed again at once with real reads.

Each assumption is made false here, and the outcomes, outputs and stored state must be those
of a processor that always reads (the reference). Two processors on one storage stand for
two processes sharing a stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from roomserver.api import InputRoomEvent, Kind, Outcome, encode_input_batch
from roomserver.core.pdu import Event
from roomserver.handler import InputHandler
from roomserver.input import InputConfig, InputProcessor, handle_message
from roomserver.input.write_behind import BufferedWriteFailed, WriteBehind
from roomserver.metrics import Metrics
from roomserver.ports import StaleRead
from roomserver.testing.builder import RoomBuilder
from tests.input.fakes import RecordingPublisher
from tests.input.helpers import ALICE, BOB, SERVER, Harness, HarnessFactory, new_room

READING = InputConfig(optimistic_reads=False)


@dataclass
class Info:
    num_delivered: int = 1
    stream_seq: int = 1


async def _send(processor: InputProcessor, room_id: str, events: list[Event]) -> list[Outcome]:
    payload = encode_input_batch([InputRoomEvent(event=dict(e.pdu), kind=Kind.NEW) for e in events])
    decision = await handle_message(processor, room_id, payload, Info())  # type: ignore[arg-type]
    return [r.outcome for r in decision.results]


class _CountingReads:
    """Counts the reads a processor's message gathers make (``WriteBehind.prefetch``)."""

    def __init__(self, processor: InputProcessor) -> None:
        self.reads = 0
        write_behind = processor._write_behind
        assert write_behind is not None
        prefetch = write_behind.prefetch

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.reads += 1
            return await prefetch(*args, **kwargs)

        write_behind.prefetch = counted  # type: ignore[method-assign]


def _other_process(h: Harness, config: InputConfig | None = None) -> InputProcessor:
    """A second processor on the harness's storage (another process on the same stream)."""
    return InputProcessor(
        h.store, h.keyring, None, RecordingPublisher(), server_name=SERVER, config=config
    )


async def _final(h: Harness) -> tuple[set[str], dict[tuple[str, str], str]]:
    return await h.extremities(), await h.current_state()


@pytest.mark.interpreted  # counts WriteBehind.prefetch calls
async def test_a_cached_room_reads_nothing_before_deciding(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    processor = _other_process(h)
    counting = _CountingReads(processor)
    assert await _send(processor, builder.room_id, events) == [Outcome.ACCEPTED] * 4
    before = counting.reads
    for i in range(3):
        assert await _send(processor, builder.room_id, [builder.message(ALICE, f"m{i}")]) == [
            Outcome.ACCEPTED
        ]
    assert counting.reads == before  # decided on the cached room; the commits checked it
    assert processor.stale_reads == 0
    # The same with optimistic reads off: one read per message.
    reading = _other_process(h, READING)
    counting = _CountingReads(reading)
    await _send(reading, builder.room_id, [builder.message(ALICE, "r0")])
    before = counting.reads
    await _send(reading, builder.room_id, [builder.message(ALICE, "r1")])
    assert counting.reads == before + 1


async def _kick_then_stale_message(
    h: Harness, builder: RoomBuilder, events: list[Event], optimistic: bool
) -> tuple[list[Outcome], InputProcessor]:
    """Processor A caches the room; B (another process) kicks Bob; A gets Bob's message that
    cites the event before the kick: accepted against its stale cache, soft-failed against
    the room as stored."""
    config = InputConfig(optimistic_reads=optimistic)
    a = _other_process(h, config)
    b = _other_process(h)
    join = builder.join(BOB)
    assert await _send(a, builder.room_id, [*events, join]) == [Outcome.ACCEPTED] * 5
    late = _late_message(builder)
    kick = builder.member(ALICE, BOB, "leave")
    assert await _send(b, builder.room_id, [kick]) == [Outcome.ACCEPTED]
    return await _send(a, builder.room_id, [late]), a


def _late_message(builder: RoomBuilder) -> Event:
    """Bob's message citing the room's latest event, made now (while Bob is joined) but not
    the builder's latest: the next event is its sibling."""
    return builder.add(
        builder.make_pdu("m.room.message", BOB, {"body": "late"}), update_state=False
    )


async def test_a_room_another_process_moved_on_is_processed_again_with_real_reads(
    harness: HarnessFactory,
) -> None:
    builder, events = new_room()
    h = await harness(builder)
    outcomes, a = await _kick_then_stale_message(h, builder, events, optimistic=True)
    assert outcomes == [Outcome.SOFT_FAILED]
    assert a.stale_reads == 1
    # The reference: the same input, always reading.
    ref_builder, ref_events = new_room()
    ref = await harness(ref_builder)
    ref_outcomes, ref_a = await _kick_then_stale_message(ref, ref_builder, ref_events, False)
    assert ref_outcomes == outcomes
    assert ref_a.stale_reads == 0
    ext, state = await _final(h)
    ref_ext, ref_state = await _final(ref)
    assert len(ext) == len(ref_ext) == 1
    assert set(state) == set(ref_state)


async def test_a_stale_read_is_counted_in_the_decision_and_the_metrics(
    harness: HarnessFactory,
) -> None:
    builder, events = new_room()
    h = await harness(builder)
    a, b = _other_process(h), _other_process(h)
    metrics = Metrics()
    handler = InputHandler(processor=a, storage=h.store, metrics=metrics, blobs=None, bulk=None)
    assert await _send(a, builder.room_id, events) == [Outcome.ACCEPTED] * 4
    sibling = builder.add(
        builder.make_pdu("m.room.message", ALICE, {"body": "b"}), update_state=False
    )
    assert await _send(b, builder.room_id, [sibling]) == [Outcome.ACCEPTED]
    mine = builder.message(ALICE, "a")
    payload = encode_input_batch([InputRoomEvent(event=dict(mine.pdu), kind=Kind.NEW)])
    decision = await handle_message(a, builder.room_id, payload, Info())  # type: ignore[arg-type]
    assert decision.stale_reads == 1
    assert [r.outcome for r in decision.results] == [Outcome.ACCEPTED]
    # Through the handler (the bus's entry): counted in roomserver_input_stale_reads_total.
    a._assume_paused.clear()  # the redo cached the room again; let the next message assume
    sibling2 = builder.add(
        builder.make_pdu("m.room.message", ALICE, {"body": "b2"}), update_state=False
    )
    assert await _send(b, builder.room_id, [sibling2]) == [Outcome.ACCEPTED]
    mine2 = builder.message(ALICE, "a2")
    payload = encode_input_batch([InputRoomEvent(event=dict(mine2.pdu), kind=Kind.NEW)])
    await handler.handle(builder.room_id, payload, Info())  # type: ignore[arg-type]
    assert b"roomserver_input_stale_reads_total 1.0" in metrics.render()


async def test_an_event_another_process_stored_gets_its_recorded_outcome(
    harness: HarnessFactory,
) -> None:
    """The room row does not move (B's event is soft-failed: no room update), so only the
    "not stored yet" assumption catches it; the event is not stored or published twice."""
    builder, events = new_room()
    h = await harness(builder)
    a = _other_process(h)
    publisher_b = RecordingPublisher()
    b = InputProcessor(h.store, h.keyring, None, publisher_b, server_name=SERVER)
    join = builder.join(BOB)
    late = _late_message(builder)
    kick = builder.member(ALICE, BOB, "leave")
    assert await _send(a, builder.room_id, [*events, join, kick]) == [Outcome.ACCEPTED] * 6
    assert await _send(b, builder.room_id, [late]) == [Outcome.SOFT_FAILED]
    room_before = await h.store.room(builder.room_id)
    assert await _send(a, builder.room_id, [late]) == [Outcome.SOFT_FAILED]
    assert a.stale_reads == 1
    assert await h.store.room(builder.room_id) == room_before
    publisher_a = a._publisher
    assert isinstance(publisher_a, RecordingPublisher)
    assert not [m for m in publisher_a.msg_ids() if m.startswith(late.event_id)]


async def test_a_redaction_stored_before_its_target_is_seen(harness: HarnessFactory) -> None:
    """The one stale assumption a single process meets: a redaction came before its target."""

    def build() -> tuple[RoomBuilder, list[Event], Event, Event]:
        builder, events = new_room()
        events.append(builder.join(BOB))
        fork = events[-1].event_id
        target = builder.send("m.room.message", BOB, {"body": "secret"}, prev_events=[fork])
        redaction = builder.send(
            "m.room.redaction", ALICE, {}, extra={"redacts": target.event_id}, prev_events=[fork]
        )
        return builder, events, target, redaction

    seen: list[tuple[list[Outcome], dict[str, Any], set[str]]] = []
    for config in (InputConfig(), READING):
        builder, events, target, redaction = build()
        h = await harness(builder)
        processor = _other_process(h, config)
        assert (
            await _send(processor, builder.room_id, [*events, redaction]) == [Outcome.ACCEPTED] * 6
        )
        outcomes = await _send(processor, builder.room_id, [target])
        assert processor.stale_reads == (1 if config.optimistic_reads else 0)
        stored = await h.stored(target.event_id)
        names = {target.event_id: "target", redaction.event_id: "redaction"}
        extremities = {names.get(e, e) for e in await h.extremities()}
        seen.append((outcomes, dict(stored.event.content), extremities))
    assert seen[0] == seen[1]
    assert seen[0][0] == [Outcome.ACCEPTED]
    assert seen[0][1] == {}  # redacted


@pytest.mark.interpreted  # counts WriteBehind.prefetch calls
async def test_after_a_stale_read_the_room_reads_for_a_while(harness: HarnessFactory) -> None:
    builder, events = new_room()
    h = await harness(builder)
    a = _other_process(h)
    counting = _CountingReads(a)
    b = _other_process(h)
    assert await _send(a, builder.room_id, events) == [Outcome.ACCEPTED] * 4
    sibling = builder.add(  # cites what A cached, as A's next message does
        builder.make_pdu("m.room.message", ALICE, {"body": "b"}), update_state=False
    )
    assert await _send(b, builder.room_id, [sibling]) == [Outcome.ACCEPTED]
    assert await _send(a, builder.room_id, [builder.message(ALICE, "a")]) == [Outcome.ACCEPTED]
    assert a.stale_reads == 1
    before = counting.reads
    await _send(a, builder.room_id, [builder.message(ALICE, "a2")])
    assert counting.reads == before + 1  # paused: read for real


async def test_a_message_that_writes_nothing_still_checks_what_it_assumed(
    harness: HarnessFactory,
) -> None:
    builder, events = new_room()
    h = await harness(builder)
    assert await _send(h.processor, builder.room_id, events) == [Outcome.ACCEPTED] * 4
    room = await h.store.room(builder.room_id)
    assert room is not None
    inner = h.store.inner
    write_behind = WriteBehind(inner)
    stored_id = events[-1].event_id
    write_behind.open(builder.room_id)
    write_behind.assume(room, [stored_id], referenced_ids=[stored_id], redactions_of=[stored_id])
    with pytest.raises(BufferedWriteFailed) as failed:
        await write_behind.close(builder.room_id)
    assert isinstance(failed.value.cause, StaleRead)
    assert "stored already" in str(failed.value.cause)
    # A true assumption passes, and writes nothing.
    write_behind.open(builder.room_id)
    write_behind.assume(room, ["$new"], referenced_ids=["$new"], redactions_of=["$new"])
    assert await write_behind.close(builder.room_id) == (None, set(), [])
