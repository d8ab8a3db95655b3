"""Bugs the pipeline fuzzing found whose fix belongs to the input pipeline (``input/processor.py``).

Each test states the right behaviour (both were strict xfails until the fix landed).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roomserver.api import Outcome
from roomserver.testing.builder import RoomBuilder
from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import ALICE, BOB, submit, trust
from tests.e2e.mutations import MALLORY


@pytest.mark.parametrize("version", ["1", "10"])
async def test_a_second_create_event_for_an_existing_room_is_refused(
    open_roomserver: OpenRoomserver, version: str
) -> None:
    rs = await open_roomserver()
    b = RoomBuilder(version, room_id=f"!second{version}:example.org")
    trust(rs, b)
    setup = [*b.create_room(ALICE), b.join(BOB)]
    await submit(rs, [e.pdu for e in setup])
    before = (await rs.current_state(b.room_id), await rs.latest_events(b.room_id))
    extra: dict[str, Any] = {"creator": MALLORY} if b.rules.creator_in_content else {}
    second = b.make_pdu(
        "m.room.create", MALLORY, {"room_version": version, **extra}, state_key="",
        prev_events=[], auth_events=[],
    )  # fmt: skip
    (result,) = (await submit(rs, [second], room_version=version)).results
    assert result.outcome in (Outcome.INVALID, Outcome.REJECTED), result
    assert (await rs.current_state(b.room_id), await rs.latest_events(b.room_id)) == before


async def test_events_of_two_versions_for_an_unknown_room_do_not_stall_it(
    open_roomserver: OpenRoomserver,
) -> None:
    rs = await open_roomserver()
    room_id = "!orphans:example.org"
    v1 = RoomBuilder("1", room_id=room_id)
    v10 = RoomBuilder("10", room_id=room_id)
    trust(rs, v1, v10)
    v1.create_room(ALICE)
    v10.create_room(ALICE)
    # Neither create event is sent: the room stays unknown to the roomserver.
    orphan_v1 = v1.make_pdu("m.room.message", ALICE, {"body": "v1"})
    orphan_v10 = v10.make_pdu("m.room.message", ALICE, {"body": "v10"})
    first = await submit(rs, [orphan_v1], room_version="1")
    assert first.results[0].outcome is Outcome.REJECTED
    second = await submit(rs, [orphan_v10], room_version="10")
    assert second.results[0].outcome in (Outcome.REJECTED, Outcome.INVALID)
    async with asyncio.timeout(10):  # the same event again: answered, not retried for minutes
        again = await submit(rs, [orphan_v10], room_version="10")
    assert again.results[0].outcome in (Outcome.REJECTED, Outcome.INVALID)
