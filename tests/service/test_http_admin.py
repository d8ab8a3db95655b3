"""Retry, skip and purge through the HTTP API, on a room that is really stuck: its event's
missing prev event is fetched from a remote that never answers."""

from __future__ import annotations

from typing import Any

from roomserver.config import FederationConfig
from roomserver.testing.builder import RoomBuilder
from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import ALICE, submit, trust, wait_for
from tests.service.http_helpers import CheckedClient, api_client, listening


async def _queued(api: CheckedClient, room_id: str) -> dict[str, Any] | None:
    status, body = await api.call("GET", "/admin/rooms")
    assert status == 200
    return next((r for r in body["rooms"] if r["room_id"] == room_id), None)


async def _stuck_head(api: CheckedClient, room_id: str, *, deliveries: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        room = await _queued(api, room_id)
        if room and room["in_flight"] and room["delivery_count"] == deliveries:
            return room
        return None

    found: dict[str, Any] = await wait_for(check, timeout=20)
    return found


async def test_retry_skip_and_purge_a_stuck_room(
    open_roomserver: OpenRoomserver, hanging_remote: str
) -> None:
    rs = await open_roomserver(
        federation=FederationConfig(
            server_overrides={"slow.test": hanging_remote, "example.org": hanging_remote},
            request_timeout_s=60.0,
        ),
        max_missing_processing_s=60.0,
    )
    room = RoomBuilder("10", room_id="!stuck:example.org")
    room.create_room(ALICE)
    trust(rs, room)
    await submit(rs, room.pdus())
    known_latest = list(room.latest)

    def gap_event(n: int) -> dict[str, Any]:
        """An event whose prev event the roomserver never saw: fetching it hangs."""
        unseen = room.make_pdu(
            "m.room.message", ALICE, {"body": f"unseen {n}"}, prev_events=known_latest
        )
        unseen_id = room.add(unseen, update_state=False).event_id
        return room.make_pdu("m.room.message", ALICE, {"body": f"gap {n}"}, prev_events=[unseen_id])

    async with listening(rs) as base, api_client(base) as api:
        status, body = await api.call(
            "POST",
            "/input",
            json_body={
                "events": [{"event": gap_event(1), "origin": "slow.test"}],
                "asynchronous": True,
            },
        )
        assert status == 200 and body["results"][0]["outcome"] == "queued"
        head = await _stuck_head(api, room.room_id, deliveries=1)
        assert head["pending"] == 1 and head["in_flight_s"] >= 0
        first_seq = head["head_seq"]

        # Retry: the hanging attempt is cancelled and the message delivered again.
        status, body = await api.call(
            "POST", "/admin/rooms/{roomId}/retry", params={"roomId": room.room_id}
        )
        assert status == 200 and body["outcome"] == "cancelled_in_flight", body
        head = await _stuck_head(api, room.room_id, deliveries=2)
        assert head["head_seq"] == first_seq and head["pending"] == 1

        # Skip: terminated, recorded with its reason, and the queue is empty.
        status, body = await api.call(
            "POST",
            "/admin/rooms/{roomId}/skip",
            params={"roomId": room.room_id},
            json_body={"reason": "its remote never answers"},
        )
        assert status == 200 and body["outcome"] == "cancelled_in_flight", body
        await wait_for(lambda: _absent(api, room.room_id), timeout=20)
        status, summary = await api.call(
            "GET", "/admin/rooms/{roomId}", params={"roomId": room.room_id}
        )
        assert status == 200
        assert [(s["stream_seq"], s["reason"]) for s in summary["skipped"]] == [
            (first_seq, "its remote never answers")
        ]
        assert summary["skipped"][0]["delivery_count"] == 2
        assert summary["queued"]["pending"] == 0
        assert await rs.latest_events(room.room_id) == known_latest

        # Purge: two messages (one request each) queued behind a stuck one are all dropped...
        for n in (2, 3):
            status, body = await api.call(
                "POST",
                "/input",
                json_body={
                    "events": [{"event": gap_event(n), "origin": "slow.test"}],
                    "asynchronous": True,
                },
            )
            assert status == 200
        head = await _stuck_head(api, room.room_id, deliveries=1)
        assert head["pending"] == 2
        status, body = await api.call(
            "POST", "/admin/rooms/{roomId}/purge", params={"roomId": room.room_id}
        )
        assert status == 200 and body["purged"] == 2, body
        await wait_for(lambda: _absent(api, room.room_id), timeout=20)

        # ...and the room processes new input afterwards.
        message = room.make_pdu(
            "m.room.message", ALICE, {"body": "after purge"}, prev_events=known_latest
        )
        status, body = await api.call("POST", "/input", json_body={"events": [{"event": message}]})
        assert status == 200 and body["results"][0]["outcome"] == "accepted", body
        status, latest = await api.call(
            "GET", "/rooms/{roomId}/latest_events", params={"roomId": room.room_id}
        )
        assert latest["event_ids"] == [body["results"][0]["event_id"]]


async def _absent(api: CheckedClient, room_id: str) -> bool:
    return await _queued(api, room_id) is None
