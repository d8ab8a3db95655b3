"""A room's queued input messages handled as one unit, end to end (docs/bus.md, "Units")."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from roomserver.api import Outcome, OutputNewRoomEvent
from roomserver.app import Roomserver
from roomserver.bus import DeliveryInfo, HandlerResult
from roomserver.testing.builder import RoomBuilder
from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import ALICE, BOB, read_outputs, submit, trust, wait_for


class _Held:
    """Holds the room worker's handler on the first message after ``hold()`` until
    ``release()``, so that input submitted meanwhile queues behind it; counts units."""

    def __init__(self, rs: Roomserver) -> None:
        pool = rs.bus.pool
        assert pool is not None and pool.unit_handler is not None
        self.inner_handler = pool.handler
        self.inner_unit = pool.unit_handler
        self.units: list[int] = []
        self.holding = False
        self.reached = asyncio.Event()
        self.released = asyncio.Event()
        pool.handler = self.handler
        pool.unit_handler = self.unit_handler

    async def handler(self, room_id: str, payload: bytes, info: DeliveryInfo) -> HandlerResult:
        if self.holding:
            self.holding = False
            self.reached.set()
            await self.released.wait()
        return await self.inner_handler(room_id, payload, info)

    async def unit_handler(
        self, room_id: str, messages: Sequence[tuple[bytes, DeliveryInfo]]
    ) -> Sequence[HandlerResult]:
        self.units.append(len(messages))
        return await self.inner_unit(room_id, messages)


async def test_queued_single_event_submissions_are_one_unit(
    open_roomserver: OpenRoomserver,
) -> None:
    rs = await open_roomserver()
    b = RoomBuilder("10")
    trust(rs, b)
    outputs = await rs.bus.output_subscription("e2e-units")
    setup = [*b.create_room(ALICE), b.join(BOB)]
    assert {r.outcome for r in (await submit(rs, [e.pdu for e in setup])).results} == {
        Outcome.ACCEPTED
    }
    held = _Held(rs)
    held.holding = True
    first = b.message(ALICE, "first")
    await submit(rs, [first.pdu], asynchronous=True)
    await asyncio.wait_for(held.reached.wait(), 10)
    # Queued behind it: single-event messages, asynchronous and synchronous ones.
    queued = [b.message(BOB if i % 2 else ALICE, f"message {i}") for i in range(10)]
    for event in queued[:6]:
        await submit(rs, [event.pdu], asynchronous=True)
    sync_calls = [asyncio.create_task(submit(rs, [event.pdu])) for event in queued[6:]]
    await wait_for(lambda: _queued_messages(rs, 10))
    held.released.set()
    for call, event in zip(sync_calls, queued[6:], strict=True):
        (result,) = (await call).results
        assert (result.event_id, result.outcome) == (event.event_id, Outcome.ACCEPTED)
    await wait_for(lambda: _latest_is(rs, b.room_id, [queued[-1].event_id]))
    assert held.units == [10]  # the first held alone; the ten behind it as one unit
    out = await read_outputs(outputs, len(setup) + 11)
    new_events = [o.payload for o in out if isinstance(o.payload, OutputNewRoomEvent)]
    assert [p.event_id for p in new_events] == [e.event_id for e in [*setup, first, *queued]]
    for event in queued:
        stored = await rs.event(event.event_id)
        assert stored is not None and stored.outcome is Outcome.ACCEPTED


async def test_an_undecodable_message_in_the_queue_is_terminated_alone(
    open_roomserver: OpenRoomserver,
) -> None:
    rs = await open_roomserver()
    b = RoomBuilder("10")
    trust(rs, b)
    setup = [*b.create_room(ALICE), b.join(BOB)]
    await submit(rs, [e.pdu for e in setup])
    held = _Held(rs)
    held.holding = True
    await submit(rs, [b.message(ALICE, "first").pdu], asynchronous=True)
    await asyncio.wait_for(held.reached.wait(), 10)
    before = [b.message(ALICE, f"before {i}") for i in range(3)]
    after = [b.message(BOB, f"after {i}") for i in range(3)]
    for event in before:
        await submit(rs, [event.pdu], asynchronous=True)
    await rs.bus.publish_input(b.room_id, b"\x00 not an input message")
    for event in after:
        await submit(rs, [event.pdu], asynchronous=True)
    await wait_for(lambda: _queued_messages(rs, 7))
    held.released.set()
    await wait_for(lambda: _latest_is(rs, b.room_id, [after[-1].event_id]))
    # The first unit (all seven queued) got results for the three events before the
    # undecodable message only; that one, as the next head, was terminated on its own (its
    # unit of four answered for it alone), and the three behind it went on as a unit.
    assert held.units == [7, 4, 3]
    for event in [*before, *after]:
        stored = await rs.event(event.event_id)
        assert stored is not None and stored.outcome is Outcome.ACCEPTED
    await wait_for(lambda: _queued_messages(rs, 0, exactly=True))


async def _queued_messages(rs: Roomserver, count: int, *, exactly: bool = False) -> bool:
    info = await rs.bus.js.stream_info("InputRoomEvent")
    return info.state.messages == count if exactly else info.state.messages >= count


async def _latest_is(rs: Roomserver, room_id: str, expected: list[str]) -> bool:
    return await rs.latest_events(room_id) == expected
