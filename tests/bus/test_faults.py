"""Faults and resources: server restarts, graceful stop, orphans, bounded workers and tasks."""

import asyncio
import contextlib
import time

import nats.errors
import nats.js.errors
import pytest

from roomserver.bus import Bus, DeliveryInfo, EmbeddedNatsServer
from tests.bus.helpers import Recorder, fast_config


async def test_restarting_nats_server_under_load_loses_nothing(
    nats_server: EmbeddedNatsServer,
) -> None:
    recorder = Recorder()
    # A delivery on the wire when a connection drops stays unacknowledged on the server until
    # AckWait; a short one keeps this test short (it is 5 min 10 s by default).
    config = fast_config(
        publish_timeout=2.0, ack_wait=3.0, handler_timeout=2.0, progress_interval=1.0
    )
    bus = await Bus.connect(nats_server.url, config=config)
    await bus.start_workers(recorder)
    confirmed: set[bytes] = set()

    async def produce() -> None:
        for n in range(600):
            payload = b"%d" % n
            try:
                await bus.publish_input(f"!load{n % 10}:x", payload)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
                continue  # not confirmed: may or may not be stored
            confirmed.add(payload)
            if n % 50 == 0:
                await asyncio.sleep(0.01)

    producer = asyncio.create_task(produce())
    await asyncio.sleep(0.1)
    await nats_server.restart()
    await asyncio.sleep(0.2)
    await nats_server.restart(hard=True)
    await producer
    await recorder.wait_for(
        lambda: confirmed.issubset({d.payload for d in recorder.deliveries}), timeout=30
    )
    for n in range(10):
        got = [int(p) for p in recorder.acked[f"!load{n}:x"]]
        # Order per room holds for the first delivery of each message.
        first_seen = list(dict.fromkeys(got))
        assert first_seen == sorted(first_seen)
    assert len(confirmed) > 300
    await bus.close()


async def test_graceful_stop_finishes_the_in_flight_message(
    nats_server: EmbeddedNatsServer,
) -> None:
    async def slow(room_id: str, payload: bytes, info: DeliveryInfo) -> None:
        await asyncio.sleep(0.5)
        return None

    recorder = Recorder(slow)
    bus = await Bus.connect(nats_server.url, config=fast_config())
    await bus.start_workers(recorder)
    await bus.publish_inputs([("!g:x", b"1"), ("!g:x", b"2")])
    await recorder.wait_for(lambda: bool(recorder.active))
    await bus.stop_workers(grace=5)
    assert recorder.acked["!g:x"] == [b"1"]  # finished, and the next one not started
    # A new process picks up where this one stopped, without waiting for AckWait.
    successor = Recorder()
    started = time.monotonic()
    await bus.start_workers(successor)
    await successor.wait_for(lambda: successor.total_acked() == 1, timeout=5)
    assert successor.acked["!g:x"] == [b"2"]
    assert time.monotonic() - started < 3
    await bus.close()


async def test_stop_after_grace_releases_the_message(nats_server: EmbeddedNatsServer) -> None:
    async def hangs(room_id: str, payload: bytes, info: DeliveryInfo) -> None:
        if info.num_delivered == 1:
            await asyncio.sleep(60)
        return None

    recorder = Recorder(hangs)
    bus = await Bus.connect(nats_server.url, config=fast_config())
    await bus.start_workers(recorder)
    await bus.publish_input("!h:x", b"1")
    await recorder.wait_for(lambda: bool(recorder.active))
    await bus.stop_workers(grace=0.2)
    successor = Recorder()
    await bus.start_workers(successor)
    await successor.wait_for(lambda: successor.total_acked() == 1, timeout=5)
    assert successor.deliveries[0].info.num_delivered == 2
    await bus.close()


async def test_lost_discovery_consumer_is_recreated(nats_server: EmbeddedNatsServer) -> None:
    recorder = Recorder()
    bus = await Bus.connect(nats_server.url, config=fast_config())
    await bus.start_workers(recorder)
    assert bus.discovery is not None
    await bus.publish_input("!d:x", b"before")
    await recorder.wait_for(lambda: recorder.total_acked() == 1)
    await bus.js.delete_consumer("InputRoomEvent", bus.discovery.name)
    await bus.publish_input("!d:x", b"after")
    await bus.publish_input("!e:x", b"new room")  # the shared discovery consumer keeps it
    await asyncio.sleep(1.0)
    await bus.publish_input("!f:x", b"later")
    await recorder.wait_for(lambda: len(recorder.acked["!f:x"]) == 1, timeout=10)
    await recorder.wait_for(lambda: len(recorder.acked["!d:x"]) == 2, timeout=10)
    await recorder.wait_for(lambda: len(recorder.acked["!e:x"]) == 1, timeout=10)
    await bus.close()


@pytest.mark.slow  # about 12 s alone; the server slows down a lot on a busy machine
async def test_two_thousand_quiet_rooms_leave_nothing_behind(
    nats_server: EmbeddedNatsServer,
) -> None:
    recorder = Recorder()
    config = fast_config(max_workers=300, consumer_inactive_threshold=600.0)
    bus = await Bus.connect(nats_server.url, config=config)
    await bus.start_workers(recorder)
    assert bus.pool is not None
    await bus.publish_inputs([("!warm-up:x", b"0")])
    await recorder.wait_for(lambda: recorder.total_acked() == 1)
    async with asyncio.timeout(10):
        await bus.pool.wait_idle()
    baseline_tasks = len(asyncio.all_tasks())
    high_water = 0

    async def watch() -> None:
        nonlocal high_water
        while True:
            high_water = max(high_water, bus.stats().workers)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    await bus.publish_inputs([(f"!quiet{i}:x", b"%d" % i) for i in range(2000)])
    await recorder.wait_for(lambda: recorder.total_acked() == 2001, timeout=120)
    async with asyncio.timeout(10):
        await bus.pool.wait_idle()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    assert high_water <= 300
    stats = bus.stats()
    assert (stats.workers, stats.waiting_rooms, stats.in_flight) == (0, 0, 0)
    assert not bus.pool._by_id and not bus.pool._by_consumer and not bus.pool.ack_waiters
    # Deleting 2,000 consumers takes a while on a busy server (the queue's tasks are transient).
    async with asyncio.timeout(120):
        await bus.pool.wait_deletions()
    # No task per room survives (the watcher is gone too, hence equality).
    assert len(asyncio.all_tasks()) == baseline_tasks

    assert (await bus.js.stream_info("InputRoomEvent")).state.messages == 0
    await bus.close()
