"""Units: a worker handles the messages queued behind its room's head together."""

import asyncio
import itertools
from collections.abc import Sequence

import pytest

from roomserver.bus import Bus, DeliveryInfo, EmbeddedNatsServer, Handler, HandlerResult, workers
from tests.bus.helpers import OverlapCheck, Recorder, eventually, fast_config

ROOM = "!unit:example.org"


class Store:
    """An idempotent 'storage': the first handling of a payload records its outcome; any later
    handling returns the recorded one. Logs every handling, unit by unit."""

    def __init__(self) -> None:
        self.outcomes: dict[bytes, bytes] = {}
        self.units: list[list[bytes]] = []
        self.singles: list[bytes] = []
        self._next = itertools.count(1)

    def outcome(self, payload: bytes) -> bytes:
        if payload not in self.outcomes:
            self.outcomes[payload] = b"outcome-%d" % next(self._next)
        return self.outcomes[payload]

    async def handler(self, room_id: str, payload: bytes, info: DeliveryInfo) -> HandlerResult:
        self.singles.append(payload)
        return HandlerResult.ack(reply=self.outcome(payload))

    async def unit_handler(
        self, room_id: str, messages: Sequence[tuple[bytes, DeliveryInfo]]
    ) -> list[HandlerResult]:
        self.units.append([payload for payload, _ in messages])
        return [HandlerResult.ack(reply=self.outcome(payload)) for payload, _ in messages]


class Gate:
    """Holds the room's first message (``gate``) in its handler until opened, so that what is
    published meanwhile queues up behind it (input published before any consumer exists is
    not kept: the stream has interest retention)."""

    def __init__(self, handler: Handler) -> None:
        self.inner = handler
        self.reached = asyncio.Event()
        self.open = asyncio.Event()

    async def handler(self, room_id: str, payload: bytes, info: DeliveryInfo) -> HandlerResult:
        if payload == b"gate":
            self.reached.set()
            await self.open.wait()
            return HandlerResult.ack()
        return await self.inner(room_id, payload, info)

    async def close_on(self, bus: Bus) -> None:
        await bus.publish_input(ROOM, b"gate")
        await asyncio.wait_for(self.reached.wait(), 10)


async def _stream_empty(bus: Bus) -> bool:
    info = await bus.js.stream_info("InputRoomEvent")
    return info.state.messages == 0


async def _stored(bus: Bus, count: int) -> bool:
    info = await bus.js.stream_info("InputRoomEvent")
    return info.state.messages >= count


async def test_queued_messages_are_handled_as_one_unit(nats_server: EmbeddedNatsServer) -> None:
    store = Store()
    gate = Gate(store.handler)
    bus = await Bus.connect(nats_server.url, config=fast_config())
    await bus.start_workers(gate.handler, unit_handler=store.unit_handler)
    await gate.close_on(bus)
    payloads = [b"m%d" % i for i in range(12)]
    calls = [
        asyncio.create_task(bus.submit_sync([(ROOM, p) for p in payloads[:5]], reply_timeout=20)),
        asyncio.create_task(bus.submit_sync([(ROOM, p) for p in payloads[5:]], reply_timeout=20)),
    ]
    await eventually(lambda: _stored(bus, 13))
    gate.open.set()
    first, second = await asyncio.gather(*calls)
    # Every caller gets its own messages' results, in its order.
    assert first == [store.outcomes[p] for p in payloads[:5]]
    assert second == [store.outcomes[p] for p in payloads[5:]]
    # One unit: the head and the eleven behind it, in stream order; no handling twice.
    assert store.units == [payloads]
    assert store.singles == []
    await eventually(lambda: _stream_empty(bus))
    # The eleven behind the head were purged once it was acked: never delivered.
    assert bus.stats().processed == 2
    await bus.close()


async def test_units_respect_their_limits_and_a_lone_message_uses_the_handler(
    nats_server: EmbeddedNatsServer,
) -> None:
    store = Store()
    gate = Gate(store.handler)
    bus = await Bus.connect(nats_server.url, config=fast_config(unit_max_messages=4))
    await bus.start_workers(gate.handler, unit_handler=store.unit_handler)
    await gate.close_on(bus)
    payloads = [b"m%d" % i for i in range(10)]
    await bus.publish_inputs([(ROOM, p) for p in payloads])
    gate.open.set()
    await eventually(lambda: _stream_empty(bus))
    # 4 + 4, then two: the head with one behind it, as a unit of two.
    assert store.units == [payloads[0:4], payloads[4:8], payloads[8:10]]
    await bus.publish_inputs([(ROOM, b"alone")])
    await eventually(lambda: _stream_empty(bus))
    assert store.singles == [b"alone"]  # nothing queued behind it: no unit
    await bus.close()


async def test_a_failing_unit_falls_back_to_one_message_at_a_time(
    nats_server: EmbeddedNatsServer,
) -> None:
    handled: list[bytes] = []
    units: list[list[bytes]] = []

    async def handler(room_id: str, payload: bytes, info: DeliveryInfo) -> HandlerResult:
        handled.append(payload)
        if payload == b"poison":
            return HandlerResult.terminate("cannot be handled", reply=b"poisoned")
        return HandlerResult.ack(reply=b"ok:" + payload)

    async def unit_handler(
        room_id: str, messages: Sequence[tuple[bytes, DeliveryInfo]]
    ) -> list[HandlerResult]:
        payloads = [payload for payload, _ in messages]
        units.append(payloads)
        if b"poison" in payloads:
            raise RuntimeError("the unit cannot be committed")
        handled.extend(payloads)
        return [HandlerResult.ack(reply=b"ok:" + p) for p in payloads]

    gate = Gate(handler)
    bus = await Bus.connect(nats_server.url, config=fast_config())
    await bus.start_workers(gate.handler, unit_handler=unit_handler)
    await gate.close_on(bus)
    payloads = [b"a", b"b", b"poison", b"c", b"d"]
    call = asyncio.create_task(bus.submit_sync([(ROOM, p) for p in payloads], reply_timeout=20))
    await eventually(lambda: _stored(bus, 6))
    gate.open.set()
    replies = await call
    assert replies == [b"ok:a", b"ok:b", b"poisoned", b"ok:c", b"ok:d"]
    # The poison message took no other message down, and nothing was handled twice or out of
    # order: a, b and poison alone (each unit containing poison failed), then c and d together.
    assert handled == payloads
    assert units == [payloads, payloads[1:], payloads[2:], payloads[3:]]
    await eventually(lambda: _stream_empty(bus))
    await bus.close()


async def test_a_nak_for_a_later_message_leaves_it_to_its_own_delivery(
    nats_server: EmbeddedNatsServer,
) -> None:
    recorder = Recorder()

    async def unit_handler(
        room_id: str, messages: Sequence[tuple[bytes, DeliveryInfo]]
    ) -> list[HandlerResult]:
        # Results for a prefix only: the first two, and a NAK for the third.
        return [HandlerResult.ack(), HandlerResult.ack(), HandlerResult.retry(0.0)]

    gate = Gate(recorder)
    bus = await Bus.connect(nats_server.url, config=fast_config())
    await bus.start_workers(gate.handler, unit_handler=unit_handler)
    await gate.close_on(bus)
    await bus.publish_inputs([(ROOM, b"%d" % i) for i in range(5)])
    gate.open.set()
    await eventually(lambda: _stream_empty(bus))
    # 0 and 1 settled by the first unit; 2 starts the next unit (2, 3, 4), which settles 2
    # and 3; 4 is then delivered alone, with nothing behind it.
    assert recorder.by_room[ROOM] == [b"4"]
    await bus.close()


async def test_a_crash_before_the_acks_redelivers_with_the_same_outcomes(
    nats_server: EmbeddedNatsServer,
) -> None:
    config = fast_config(ack_wait=2.0, progress_interval=0.5)
    store = Store()
    committed = asyncio.Event()

    async def commits_then_hangs(
        room_id: str, messages: Sequence[tuple[bytes, DeliveryInfo]]
    ) -> list[HandlerResult]:
        results = await store.unit_handler(room_id, messages)
        committed.set()
        await asyncio.sleep(3600)  # the process "dies" before acking anything
        return results

    gate = Gate(store.handler)
    dying = await Bus.connect(nats_server.url, config=config)
    await dying.start_workers(gate.handler, unit_handler=commits_then_hangs)
    await gate.close_on(dying)
    caller = await Bus.connect(nats_server.url, config=config)
    payloads = [b"m%d" % i for i in range(6)]
    call = asyncio.create_task(caller.submit_sync([(ROOM, p) for p in payloads], reply_timeout=30))
    await eventually(lambda: _stored(caller, 7))
    gate.open.set()
    await asyncio.wait_for(committed.wait(), 10)
    first_outcomes = dict(store.outcomes)
    assert dying.pool is not None
    await dying.pool.nc.close()  # no ack, no in-progress ack, no release
    await caller.start_workers(store.handler, unit_handler=store.unit_handler)
    replies = await call
    # The same outcome for every message, recorded once (the store made no new ones).
    assert replies == [first_outcomes[p] for p in payloads]
    assert store.outcomes == first_outcomes
    # The head came back after AckWait and was handled alone; the rest as a unit again.
    assert store.singles == [b"m0"]
    assert store.units == [payloads, payloads[1:]]
    await eventually(lambda: _stream_empty(caller))
    await caller.close()
    await dying.close(grace=0.1)


async def test_without_the_purge_the_kept_results_settle_the_messages_on_delivery(
    nats_server: EmbeddedNatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def purge_fails(*args: object) -> bool:
        return False

    monkeypatch.setattr(workers, "purge_settled", purge_fails)
    store = Store()
    gate = Gate(store.handler)
    bus = await Bus.connect(nats_server.url, config=fast_config())
    await bus.start_workers(gate.handler, unit_handler=store.unit_handler)
    await gate.close_on(bus)
    payloads = [b"m%d" % i for i in range(6)]
    call = asyncio.create_task(bus.submit_sync([(ROOM, p) for p in payloads], reply_timeout=20))
    await eventually(lambda: _stored(bus, 7))
    gate.open.set()
    assert await call == [store.outcomes[p] for p in payloads]
    await eventually(lambda: _stream_empty(bus))
    # Delivered one by one and settled from the kept results: no second handling.
    assert store.units == [payloads]
    assert store.singles == []
    assert bus.stats().processed == 7
    await bus.close()


async def test_two_processes_with_units_keep_each_room_in_order(
    nats_server: EmbeddedNatsServer,
) -> None:
    check = OverlapCheck()
    first_handled: dict[str, list[bytes]] = {}
    seen: set[bytes] = set()

    async def handle(room_id: str, payloads: list[bytes]) -> None:
        await check.hold(room_id)
        for payload in payloads:  # a second handling (idempotent) records nothing new
            if payload not in seen:
                seen.add(payload)
                first_handled.setdefault(room_id, []).append(payload)

    async def handler(room_id: str, payload: bytes, info: DeliveryInfo) -> HandlerResult:
        await handle(room_id, [payload])
        return HandlerResult.ack()

    async def unit_handler(
        room_id: str, messages: Sequence[tuple[bytes, DeliveryInfo]]
    ) -> list[HandlerResult]:
        await handle(room_id, [payload for payload, _ in messages])
        return [HandlerResult.ack() for _ in messages]

    buses = []
    for _ in range(2):
        bus = await Bus.connect(nats_server.url, config=fast_config())
        await bus.start_workers(handler, unit_handler=unit_handler)
        buses.append(bus)
    items = [(f"!shared{i % 3}:x", b"%d" % i) for i in range(300)]
    for start in range(0, 300, 30):  # bursts, so that input queues behind heads
        await buses[start // 30 % 2].publish_inputs(items[start : start + 30])
    await eventually(lambda: _true(len(seen) == 300))
    assert check.overlaps == 0
    for i in range(3):
        room = f"!shared{i}:x"
        assert first_handled[room] == [p for r, p in items if r == room]
    await eventually(lambda: _stream_empty(buses[0]))
    for bus in buses:
        await bus.close()


async def _true(value: bool) -> bool:
    return value
