"""Room consumers follow the rooms with work; failover after a dead process takes AckWait, not
the handler's deadline; queued input outlives every process; an idle bus stops at once."""

import asyncio
import random
import time

import pytest

from roomserver.bus import Bus, DeliveryInfo, EmbeddedNatsServer, deletions
from roomserver.bus.discovery import shared_discovery_name
from roomserver.bus.pool import WorkerPool
from tests.bus.helpers import Recorder, eventually, fast_config

STREAM = "InputRoomEvent"


async def room_consumers(bus: Bus) -> list[str]:
    """Consumers on the input stream other than the discovery ones."""
    names = [c.name for c in await bus.js.consumers_info(STREAM)]
    return sorted(n for n in names if n and not n.startswith(shared_discovery_name("")))


async def test_rooms_that_go_quiet_leave_no_consumer(nats_server: EmbeddedNatsServer) -> None:
    recorder = Recorder()
    bus = await Bus.connect(nats_server.url, config=fast_config())
    await bus.start_workers(recorder)
    await bus.publish_inputs([(f"!quiet{i}:x", b"%d" % i) for i in range(50)])
    await recorder.wait_for(lambda: recorder.total_acked() == 50)
    started = time.monotonic()

    async def no_room_consumer() -> bool:
        assert bus.pool is not None
        return bus.pool.consumers_deleted >= 50 and not await room_consumers(bus)

    # idle_timeout (0.6 s) plus a pull (0.3 s), with a margin for a busy machine.
    await eventually(no_room_consumer, timeout=10)
    quiet_after = time.monotonic() - started
    info = await bus.js.stream_info(STREAM)
    assert info.state.consumer_count == 2  # the shared discovery consumer and our own
    assert info.state.messages == 0
    # A quiet room's next input gets a consumer again, and is processed.
    await bus.publish_input("!quiet3:x", b"again")
    await recorder.wait_for(lambda: recorder.acked["!quiet3:x"] == [b"3", b"again"])
    await bus.close()
    assert quiet_after < 10


async def test_input_arriving_while_a_consumer_is_deleted_is_processed_once(
    nats_server: EmbeddedNatsServer,
) -> None:
    """Publish for the room while its worker deletes the consumer, and right after it left."""
    recorder = Recorder()
    bus = await Bus.connect(nats_server.url, config=fast_config())
    publisher = await Bus.connect(nats_server.url, config=fast_config())
    await bus.start_workers(recorder)
    pool = bus.pool
    assert pool is not None
    delete = pool.delete_consumer
    sent: list[bytes] = []

    async def racing_delete(room_id: str) -> None:
        n = len(sent) // 2  # the round
        if n < 5:
            sent.append(b"during %d" % n)
            await publisher.publish_input(room_id, sent[-1])
            await asyncio.sleep(0.05)  # let discovery announce it to the deleting worker
        await delete(room_id)
        if n < 5:
            sent.append(b"after %d" % n)
            await publisher.publish_input(room_id, sent[-1])

    pool.delete_consumer = racing_delete  # type: ignore[method-assign]
    await publisher.publish_input("!race:x", b"first")
    await recorder.wait_for(lambda: len(recorder.acked["!race:x"]) == 11, timeout=30)

    async def gone() -> bool:
        return not await room_consumers(bus)

    await eventually(gone, timeout=10)
    assert recorder.acked["!race:x"] == [b"first", *sent]  # each once, in order
    assert len(recorder.deliveries) == 11
    assert (await bus.js.stream_info(STREAM)).state.messages == 0
    await publisher.close()
    await bus.close()


async def test_two_processes_deleting_consumers_lose_nothing(
    nats_server: EmbeddedNatsServer,
) -> None:
    """Random input around the idle boundary, two processes pulling and deleting."""
    recorders = [Recorder(), Recorder()]
    config = fast_config(pull_expires=0.05, idle_timeout=0.05)
    buses = [await Bus.connect(nats_server.url, config=config) for _ in recorders]
    for bus, recorder in zip(buses, recorders, strict=True):
        await bus.start_workers(recorder)
    rng = random.Random(11)
    rooms = [f"!boundary{i}:x" for i in range(3)]
    published: dict[str, list[bytes]] = {room: [] for room in rooms}
    for n in range(120):
        room = rng.choice(rooms)
        payload = b"%d" % n
        await buses[n % 2].publish_input(room, payload)
        published[room].append(payload)
        await asyncio.sleep(rng.choice([0.0, 0.02, 0.05, 0.08, 0.12]))

    def handled(room: str) -> list[bytes]:
        merged = [d for r in recorders for d in r.deliveries if d.room_id == room]
        return [d.payload for d in sorted(merged, key=lambda d: d.info.stream_seq)]

    async def all_handled() -> bool:
        return all(set(handled(room)) == set(published[room]) for room in rooms)

    await eventually(all_handled, timeout=30)
    duplicates = 0
    for room in rooms:
        first_seen = list(dict.fromkeys(handled(room)))
        assert first_seen == published[room]  # nothing lost, in order
        duplicates += len(handled(room)) - len(first_seen)
    # A message delivered by the old consumer just before another process deletes it comes
    # again from the new one (docs/bus.md); the handler's idempotence covers that rare case.
    assert duplicates <= 6, duplicates

    async def no_room_consumer() -> bool:
        return not await room_consumers(buses[0])

    await eventually(no_room_consumer, timeout=10)
    for bus in buses:
        await bus.close()


async def test_a_dead_process_room_moves_within_ack_wait_while_a_live_one_keeps_it(
    nats_server: EmbeddedNatsServer,
) -> None:
    config = fast_config(ack_wait=2.0, progress_interval=0.5)
    slow_seen: list[DeliveryInfo] = []

    async def slow(room_id: str, payload: bytes, info: DeliveryInfo) -> None:
        slow_seen.append(info)
        if payload == b"hang":
            await asyncio.sleep(3600)  # the process "dies" with it in flight
        else:
            await asyncio.sleep(6.0)  # three AckWaits: in-progress acks keep it
        return None

    dying = await Bus.connect(nats_server.url, config=config)
    await dying.start_workers(Recorder(slow))
    await dying.publish_inputs([("!long:x", b"long"), ("!dead:x", b"hang")])
    await eventually(lambda: _true(len(slow_seen) == 2), timeout=10)
    survivor_recorder = Recorder()
    survivor = await Bus.connect(nats_server.url, config=config)
    await survivor.start_workers(survivor_recorder)
    await asyncio.sleep(0.5)
    # Kill the first process's connection without a goodbye: no ack, no in-progress ack, no
    # release of "hang"; "long" is still being handled by the live worker, though, and must
    # not move while it runs.
    killed_at = time.monotonic()
    assert dying.pool is not None
    await dying.pool.nc.close()
    await survivor_recorder.wait_for(lambda: bool(survivor_recorder.acked["!dead:x"]), timeout=15)
    moved_after = time.monotonic() - killed_at
    assert moved_after < 2.0 + 3.0, moved_after  # AckWait plus a pull
    assert survivor_recorder.deliveries[0].info.num_delivered == 2
    # "long" stayed with its handler until the connection died, then moved too.
    long_deliveries = [d for d in survivor_recorder.deliveries if d.room_id == "!long:x"]
    assert all(d.info.num_delivered == 2 for d in long_deliveries)
    await survivor.close()
    await dying.close(grace=0.1)


async def _true(value: bool) -> bool:
    return value


async def test_a_live_handler_longer_than_ack_wait_keeps_its_message(
    nats_server: EmbeddedNatsServer,
) -> None:
    config = fast_config(ack_wait=1.0, progress_interval=0.25)
    deliveries: list[tuple[str, int]] = []

    def handler(name: str) -> Recorder:
        async def decide(room_id: str, payload: bytes, info: DeliveryInfo) -> None:
            deliveries.append((name, info.num_delivered))
            await asyncio.sleep(4.0)
            return None

        return Recorder(decide)

    buses = [await Bus.connect(nats_server.url, config=config) for _ in range(2)]
    await buses[0].start_workers(handler("a"))
    await buses[1].start_workers(handler("b"))
    await buses[0].publish_input("!kept:x", b"1")
    await asyncio.sleep(5.0)
    assert len(deliveries) == 1 and deliveries[0][1] == 1, deliveries
    for bus in buses:
        await bus.close()


async def test_input_queued_while_every_process_is_down_is_processed(
    nats_server: EmbeddedNatsServer,
) -> None:
    """Every process gone for longer than its discovery consumer's expiry (1 s here, standing
    for any outage shorter than the stream's max age): input published before and during the
    outage survives, for rooms with and without a consumer."""
    config = fast_config(
        discovery_inactive_threshold=1.0,
        discovery_ack_wait=1.0,
        idle_timeout=5.0,
        ack_wait=2.0,
        progress_interval=0.5,
    )
    first = Recorder()
    bus = await Bus.connect(nats_server.url, config=config)
    await bus.start_workers(first)
    await bus.publish_inputs([("!before:x", b"0")])
    await first.wait_for(lambda: first.total_acked() == 1)

    # The only process dies with queued input (its room consumer exists) and an idle worker.
    async def stuck(room_id: str, payload: bytes, info: DeliveryInfo) -> None:
        await asyncio.sleep(3600)

    first.decide = stuck
    await bus.publish_inputs([("!before:x", b"1"), ("!before:x", b"2")])
    await first.wait_for(lambda: len(first.deliveries) == 2)
    assert bus.pool is not None
    await bus.pool.nc.close()
    # While nobody runs: input for that room and for rooms never seen.
    publisher = await Bus.connect(nats_server.url, config=config)
    await publisher.publish_inputs(
        [("!before:x", b"3"), *((f"!during{i}:x", b"%d" % i) for i in range(5))]
    )

    async def own_discovery_expired() -> bool:
        infos = await publisher.js.consumers_info(STREAM)
        names = [c.name for c in infos]
        return (
            names.count(shared_discovery_name("")) == 1
            and len([n for n in names if n and n.startswith(shared_discovery_name(""))]) == 1
        )

    await eventually(own_discovery_expired, timeout=20, interval=0.2)
    await asyncio.sleep(1.5)
    restarted = Recorder()
    successor = await Bus.connect(nats_server.url, config=config)
    await successor.start_workers(restarted)
    await restarted.wait_for(lambda: restarted.total_acked() == 8, timeout=30)
    assert restarted.acked["!before:x"] == [b"1", b"2", b"3"]
    assert sorted(restarted.acked) == ["!before:x", *(f"!during{i}:x" for i in range(5))]
    await successor.close()
    await publisher.close()
    await bus.close(grace=0.1)


async def test_an_idle_process_stops_in_under_a_second(nats_server: EmbeddedNatsServer) -> None:
    recorder = Recorder()
    bus = await Bus.connect(nats_server.url, config=fast_config(pull_expires=5.0, idle_timeout=10))
    await bus.start_workers(recorder)
    await bus.publish_inputs([(f"!stop{i}:x", b"%d" % i) for i in range(5)])
    await recorder.wait_for(lambda: recorder.total_acked() == 5)
    await asyncio.sleep(0.5)  # every worker and both discovery consumers wait in a pull
    started = time.monotonic()
    await bus.stop_workers()
    stopped_in = time.monotonic() - started
    assert stopped_in < 1.0, stopped_in
    # Nothing left unacknowledged by the abandoned pulls: a successor gets new input at once.
    successor = Recorder()
    await bus.start_workers(successor)
    await bus.publish_input("!stop1:x", b"next")
    await successor.wait_for(lambda: successor.total_acked() == 1, timeout=3)
    await bus.close()


async def test_rooms_beyond_max_workers_wait_without_a_consumer(
    nats_server: EmbeddedNatsServer,
) -> None:
    """A room that waits for a worker slot has no consumer yet; its input is kept by the
    discovery consumers meanwhile and processed once, when it is admitted."""
    release = asyncio.Event()

    async def decide(room_id: str, payload: bytes, info: DeliveryInfo) -> None:
        await release.wait()

    recorder = Recorder(decide)
    bus = await Bus.connect(nats_server.url, config=fast_config(max_workers=2))
    await bus.start_workers(recorder)
    assert bus.pool is not None
    rooms = [f"!wait{i}:x" for i in range(6)]
    await bus.publish_inputs([(room, room.encode()) for room in rooms])
    await recorder.wait_for(lambda: len(recorder.active) == 2)
    await asyncio.sleep(1.0)  # pulls come and go: still only two rooms admitted
    assert len(await room_consumers(bus)) == 2
    assert bus.stats().workers == 2 and bus.stats().waiting_rooms == 4
    assert (await bus.js.stream_info(STREAM)).state.messages == 6
    release.set()
    await recorder.wait_for(lambda: recorder.total_acked() == 6)
    assert sorted(d.room_id for d in recorder.deliveries) == sorted(rooms)  # each once
    assert recorder.overlaps == 0

    async def gone() -> bool:
        return not await room_consumers(bus)

    await eventually(gone, timeout=10)
    await bus.close()


async def test_a_waiting_room_is_admitted_at_once_when_a_quiet_worker_holds_the_last_slot(
    nats_server: EmbeddedNatsServer,
) -> None:
    """A worker whose room has nothing left gives its slot to a waiting room at once, not
    after ``idle_timeout`` (30 s here) nor when its waiting pull expires (5 s); rooms are
    still handled once each, one at a time, and a room that gave its slot up is admitted
    again by its next input."""
    recorder = Recorder()
    config = fast_config(
        max_workers=1, pull_expires=5.0, idle_timeout=30.0, consumer_inactive_threshold=120.0
    )
    bus = await Bus.connect(nats_server.url, config=config)
    await bus.start_workers(recorder)
    assert bus.pool is not None
    await bus.publish_input("!held:x", b"first")
    await recorder.wait_for(lambda: recorder.total_acked() == 1)
    await asyncio.sleep(0.5)  # its worker now waits on a pull that expires in 5 s
    assert bus.stats().workers == 1
    started = time.monotonic()
    rooms = [f"!next{i}:x" for i in range(5)]
    await bus.publish_inputs([(room, room.encode()) for room in rooms])
    await recorder.wait_for(lambda: recorder.total_acked() == 6, timeout=20)
    elapsed = time.monotonic() - started
    assert elapsed < 4.0, elapsed
    assert sorted(d.room_id for d in recorder.deliveries) == sorted(["!held:x", *rooms])
    assert recorder.overlaps == 0
    assert bus.stats().workers <= 1
    await bus.publish_input("!held:x", b"second")
    await recorder.wait_for(lambda: recorder.acked["!held:x"] == [b"first", b"second"])

    async def yielded_consumers_deleted() -> bool:
        return len(await room_consumers(bus)) <= 1  # the room holding the slot keeps its own

    await eventually(yielded_consumers_deleted, timeout=10)
    assert len(recorder.deliveries) == 7
    await bus.close()


async def busy_room_backlog(
    nats_server: EmbeddedNatsServer,
) -> tuple[Bus, WorkerPool, Recorder, asyncio.Event]:
    """A bus (``delete_backlog`` 5) whose room ``!busy:x`` has 20 messages queued, its
    handler blocked until the returned event is set: the stream holds a backlog."""
    release = asyncio.Event()

    async def decide(room_id: str, payload: bytes, info: DeliveryInfo) -> None:
        if room_id == "!busy:x":
            await release.wait()

    recorder = Recorder(decide)
    bus = await Bus.connect(nats_server.url, config=fast_config(delete_backlog=5))
    await bus.start_workers(recorder)
    assert bus.pool is not None
    await bus.publish_inputs([("!busy:x", b"%d" % i) for i in range(20)])
    await recorder.wait_for(lambda: "!busy:x" in recorder.active)
    return bus, bus.pool, recorder, release


async def test_consumer_deletion_waits_for_the_backlog_and_is_called_off_by_input(
    nats_server: EmbeddedNatsServer,
) -> None:
    """While the stream holds more than ``delete_backlog`` messages and the API is busy, a
    quiet room keeps its consumer (queued for deletion); new input for it calls the deletion
    off and is processed once; once the API is idle, or the backlog gone, the queued
    consumers are deleted."""
    bus, pool, recorder, release = await busy_room_backlog(nats_server)
    pool.api_in_flight += 1  # stands for a busy API: under a backlog, no delete goes then
    await bus.publish_inputs([("!quick:x", b"one"), ("!other:x", b"one")])
    await recorder.wait_for(lambda: recorder.total_acked() == 2)

    async def queued() -> bool:
        return set(pool.deletions.to_delete) == {"!quick:x", "!other:x"}

    await eventually(queued, timeout=10)
    await asyncio.sleep(1.0)
    assert set(await room_consumers(bus)) >= {"RoomInput_21quick_3Ax", "RoomInput_21other_3Ax"}
    await bus.publish_input("!quick:x", b"two")
    await recorder.wait_for(lambda: recorder.acked["!quick:x"] == [b"one", b"two"])
    await eventually(queued, timeout=10)  # quiet again, queued again
    pool.api_in_flight -= 1

    async def only_busy_left() -> bool:
        return await room_consumers(bus) == ["RoomInput_21busy_3Ax"]

    await eventually(only_busy_left, timeout=10)  # deleted one at a time meanwhile
    assert "!busy:x" in recorder.active
    release.set()
    await recorder.wait_for(lambda: recorder.total_acked() == 23, timeout=30)

    async def gone() -> bool:
        return not await room_consumers(bus)

    await eventually(gone, timeout=20)
    assert recorder.acked["!quick:x"] == [b"one", b"two"]
    assert recorder.acked["!other:x"] == [b"one"]
    assert (await bus.js.stream_info(STREAM)).state.messages == 0
    await bus.close()


async def test_queued_deletions_wait_while_the_server_would_scan_too_much(
    nats_server: EmbeddedNatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete costs the server messages x consumers under the stream's lock: a queued
    deletion waits while that exceeds the budget, even with the API idle, and goes once it
    does not."""
    monkeypatch.setattr(deletions, "_DELETE_SCAN_BUDGET", 0)
    bus, pool, recorder, release = await busy_room_backlog(nats_server)
    await bus.publish_input("!quick:x", b"one")
    await recorder.wait_for(lambda: recorder.acked["!quick:x"] == [b"one"])

    async def queued() -> bool:
        return set(pool.deletions.to_delete) == {"!quick:x"}

    await eventually(queued, timeout=10)
    await asyncio.sleep(1.5)  # the API is idle: only the budget holds the deletion back
    assert "RoomInput_21quick_3Ax" in await room_consumers(bus)
    monkeypatch.setattr(deletions, "_DELETE_SCAN_BUDGET", 10**9)

    async def only_busy_left() -> bool:
        return await room_consumers(bus) == ["RoomInput_21busy_3Ax"]

    await eventually(only_busy_left, timeout=10)
    release.set()
    await recorder.wait_for(lambda: recorder.total_acked() == 21, timeout=30)
    await bus.close()
