"""Operator actions on a room's head message when it waits out a retry delay (the in-flight
case runs end to end in tests/service/test_http_admin.py)."""

from __future__ import annotations

import asyncio

from roomserver.bus import Bus, DeliveryInfo, EmbeddedNatsServer, HandlerResult
from roomserver.bus.admin import Intervention, InterventionOutcome
from tests.bus.helpers import Recorder, fast_config
from tests.e2e.helpers import wait_for

ROOM = "!waiting:example.org"


async def test_retry_and_skip_a_head_waiting_for_its_retry(
    nats_server: EmbeddedNatsServer,
) -> None:
    async def fail_first(room_id: str, payload: bytes, info: DeliveryInfo) -> HandlerResult | None:
        if payload == b"poison":
            return HandlerResult.retry(60.0, reason="database unavailable")
        return None

    recorder = Recorder(fail_first)
    bus = await Bus.connect(nats_server.url, config=fast_config())
    await bus.start_workers(recorder)
    try:
        await bus.publish_inputs([(ROOM, b"poison"), (ROOM, b"behind")])
        await wait_for(lambda: (h := bus.head_of(ROOM)) is not None and not h.in_flight)
        [room] = [r for r in await bus.queued_rooms() if r.room_id == ROOM]
        assert room.pending == 2 and room.head_delivery_count == 1
        assert room.head_in_flight is False and room.last_error == "database unavailable"
        assert room.retry_in_s is not None and room.retry_in_s > 30

        # Retry: delivered again at once, not after the 60 s delay.
        assert await bus.intervene(ROOM, Intervention.RETRY) is InterventionOutcome.APPLIED_WAITING
        await wait_for(lambda: recorder.by_room[ROOM] == [b"poison", b"poison"], timeout=5)
        await wait_for(lambda: (h := bus.head_of(ROOM)) is not None and not h.in_flight)
        head = bus.head_of(ROOM)
        assert head is not None and head.num_delivered == 2

        # Skip: terminated and recorded; the message behind it is processed.
        outcome = await bus.intervene(ROOM, Intervention.SKIP, "poison message")
        assert outcome is InterventionOutcome.APPLIED_WAITING
        await wait_for(lambda: recorder.acked[ROOM] == [b"behind"], timeout=5)
        [skipped] = await bus.skipped(ROOM)
        assert (skipped.reason, skipped.num_delivered, skipped.payload_bytes) == (
            "poison message",
            2,
            len(b"poison"),
        )
        await wait_for(lambda: _no_queue(bus))
        assert await bus.intervene(ROOM, Intervention.RETRY) is InterventionOutcome.NOT_HELD
        assert await bus.skipped("!other:example.org") == []
    finally:
        await bus.close()


async def _no_queue(bus: Bus) -> bool:
    return all(r.room_id != ROOM for r in await bus.queued_rooms())


async def test_purge_drops_the_queue_and_cancels_the_attempt_in_progress(
    nats_server: EmbeddedNatsServer,
) -> None:
    never = asyncio.Event()

    async def hang(room_id: str, payload: bytes, info: DeliveryInfo) -> HandlerResult | None:
        if payload != b"fresh":
            await never.wait()
        return None

    recorder = Recorder(hang)
    bus = await Bus.connect(nats_server.url, config=fast_config())
    await bus.start_workers(recorder)
    try:
        await bus.publish_inputs([(ROOM, b"a"), (ROOM, b"b"), (ROOM, b"c")])
        await wait_for(lambda: ROOM in recorder.active)
        [room] = [r for r in await bus.queued_rooms() if r.room_id == ROOM]
        assert room.pending == 3 and room.head_in_flight
        assert await bus.purge_room(ROOM) == 3
        await wait_for(lambda: _no_queue(bus))
        await bus.publish_inputs([(ROOM, b"fresh")])
        await wait_for(lambda: recorder.acked[ROOM] == [b"fresh"], timeout=5)
        assert recorder.by_room[ROOM] == [b"a", b"fresh"]
        await wait_for(lambda: _no_queue(bus))
        assert await bus.purge_room(ROOM) == 0
    finally:
        await bus.close()


async def test_another_process_retries_and_skips_a_head_it_does_not_hold(
    nats_server: EmbeddedNatsServer,
) -> None:
    never = asyncio.Event()

    async def hang(room_id: str, payload: bytes, info: DeliveryInfo) -> HandlerResult | None:
        if payload == b"stuck":
            await never.wait()
        return None

    recorder = Recorder(hang)
    holder = await Bus.connect(nats_server.url, config=fast_config())
    await holder.start_workers(recorder)
    operator = await Bus.connect(nats_server.url, config=fast_config())  # runs no workers
    try:
        await holder.publish_inputs([(ROOM, b"stuck"), (ROOM, b"next")])
        await wait_for(lambda: ROOM in recorder.active)
        assert operator.head_of(ROOM) is None
        outcome = await operator.intervene(ROOM, Intervention.RETRY)
        assert outcome is InterventionOutcome.CANCELLED_IN_FLIGHT
        await wait_for(lambda: recorder.by_room[ROOM] == [b"stuck", b"stuck"], timeout=5)
        outcome = await operator.intervene(ROOM, Intervention.SKIP, "from elsewhere")
        assert outcome is InterventionOutcome.CANCELLED_IN_FLIGHT
        await wait_for(lambda: recorder.acked[ROOM] == [b"next"], timeout=5)
        [skipped] = await operator.skipped(ROOM)
        assert (skipped.reason, skipped.num_delivered) == ("from elsewhere", 2)
        # Nothing queued: answered at once, without asking the other processes.
        await wait_for(lambda: _no_queue(operator))
        assert await operator.intervene(ROOM, Intervention.RETRY) is InterventionOutcome.NOT_HELD
    finally:
        await operator.close()
        await holder.close()
