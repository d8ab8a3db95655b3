"""The console's pages and forms over plain HTTP: sign-in, disabled without a token, unknown
rooms, and the queue actions on a room stuck on a hanging remote."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp

from roomserver.app import Roomserver
from roomserver.config import FederationConfig
from roomserver.testing.builder import RoomBuilder
from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import ALICE, submit, trust, wait_for
from tests.service.http_helpers import TOKEN, listening


async def test_console_sign_in_and_pages(open_roomserver: OpenRoomserver) -> None:
    rs = await open_roomserver()
    async with listening(rs, token=None) as base, _session() as http:
        async with http.get(base + "/") as response:
            assert "Console disabled" in await response.text()
        async with http.post(base + "/login", data={"token": "x"}) as response:
            assert response.status == 401
    async with listening(rs) as base, _session() as http:
        async with http.get(base + "/rooms/" + quote("!r:x", safe="")) as response:
            assert "Sign in" in await response.text()  # no cookie: the sign-in form
        async with http.post(base + "/login", data={"token": "wrong"}) as response:
            assert response.status == 401
        async with http.post(base + "/login", data={"token": TOKEN}) as response:
            assert response.status == 200 and response.url.path == "/"
            page = await response.text()
            assert "No rooms yet" in page and "No room has input waiting" in page
        async with http.get(base + "/rooms/" + quote("!r:x", safe="")) as response:
            assert response.status == 404
        # The session cookie is not the token itself.
        assert all(TOKEN not in cookie.value for cookie in http.cookie_jar)


async def test_console_queue_actions_on_a_stuck_room(
    open_roomserver: OpenRoomserver, hanging_remote: str
) -> None:
    rs = await open_roomserver(
        federation=FederationConfig(
            server_overrides={"example.org": hanging_remote}, request_timeout_s=60.0
        ),
        max_missing_processing_s=60.0,
    )
    room = RoomBuilder("10", room_id="!stuck-console:example.org")
    room.create_room(ALICE)
    trust(rs, room)
    await submit(rs, room.pdus())
    known = list(room.latest)
    unseen = room.add(
        room.make_pdu("m.room.message", ALICE, {}, prev_events=known), update_state=False
    )
    gaps = [
        room.make_pdu("m.room.message", ALICE, {"body": str(i)}, prev_events=[unseen.event_id])
        for i in range(2)
    ]
    for gap in gaps:  # one request each: two input messages (a request's events share one)
        await submit(rs, [gap], asynchronous=True, origin="example.org")
    await wait_for(lambda: rs.bus.stats().in_flight >= 1, timeout=10)
    room_url = "/rooms/" + quote(room.room_id, safe="")
    async with listening(rs) as base, _session() as http:
        async with http.post(base + "/login", data={"token": TOKEN}):
            pass
        async with http.get(base + "/") as response:
            page = await response.text()
            assert "queued-rooms" in page and room.room_id in page
        async with http.get(base + room_url) as response:
            assert "queue-actions" in await response.text()
        async with http.post(base + room_url + "/skip", data={"reason": "gone"}) as response:
            assert "skip: cancelled_in_flight" in await response.text()
        [skipped] = await rs.skipped_input(room.room_id)
        assert skipped.reason == "gone"
        # A form posted from another site is refused.
        async with http.post(
            base + room_url + "/purge", headers={"Origin": "http://evil.example"}
        ) as response:
            assert response.status == 403
        async with http.post(base + room_url + "/purge") as response:
            assert "purged 1 message(s)" in await response.text()
        await wait_for(lambda: _queue_empty(rs, room.room_id))


def _session() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies of an IP address host (127.0.0.1).
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _queue_empty(rs: Roomserver, room_id: str) -> bool:
    return (await rs.queued_input_of(room_id)).pending == 0
