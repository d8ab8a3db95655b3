"""One room stuck fetching missing events over federation never delays another room."""

from __future__ import annotations

import asyncio
import time

from roomserver.api import Outcome
from roomserver.config import FederationConfig
from roomserver.testing.builder import RoomBuilder
from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import ALICE, BOB, submit, trust, wait_for


async def test_room_waiting_on_a_hanging_remote_does_not_delay_another_room(
    open_roomserver: OpenRoomserver, hanging_remote: str
) -> None:
    rs = await open_roomserver(
        federation=FederationConfig(
            server_overrides={"slow.test": hanging_remote, "example.org": hanging_remote},
            request_timeout_s=60.0,
        ),
        max_missing_processing_s=60.0,
    )
    stuck = RoomBuilder("10", room_id="!stuck:example.org")
    stuck.create_room(ALICE)
    busy = RoomBuilder("10", room_id="!busy:example.org")
    busy.create_room(BOB)
    trust(rs, stuck, busy)
    assert {r.outcome for r in (await submit(rs, stuck.pdus())).results} == {Outcome.ACCEPTED}

    # An event whose prev event we never saw: fetching it hangs on the remote.
    unseen = stuck.message(ALICE, "never delivered")
    gap = stuck.message(ALICE, "after the gap")
    assert gap.prev_event_ids == (unseen.event_id,)
    await submit(rs, [gap.pdu], asynchronous=True, origin="slow.test")
    await wait_for(lambda: rs.bus.stats().in_flight >= 1, timeout=10)
    await asyncio.sleep(0.5)  # the stuck room is now inside its fetch

    for _ in range(20):
        busy.message(BOB)
    started = time.monotonic()
    response = await submit(rs, busy.pdus())
    elapsed = time.monotonic() - started
    assert {r.outcome for r in response.results} == {Outcome.ACCEPTED}
    assert elapsed < 10.0, f"the busy room took {elapsed:.1f} s while another room hung"
    # The stuck room is still stuck: its event has no outcome yet.
    assert await rs.event(gap.event_id) is None
    assert await rs.latest_events(stuck.room_id) == [
        stuck.events[unseen.prev_event_ids[0]].event_id
    ]
