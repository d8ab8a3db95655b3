"""The HTTP API over a real Roomserver: auth, errors, input and queries equal to the facade's,
every answer checked against the OpenAPI document."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate

from roomserver.api import Outcome
from roomserver.testing.builder import RoomBuilder
from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import ALICE, BOB, MALLORY, submit, trust, wait_for
from tests.service.http_helpers import PREFIX, TOKEN, api_client, listening

ROUTES = [
    ("POST", "/input", {}),
    ("GET", "/rooms/{roomId}/state", {"roomId": "!r:x"}),
    ("GET", "/rooms/{roomId}/latest_events", {"roomId": "!r:x"}),
    ("GET", "/rooms/{roomId}/dag.svg", {"roomId": "!r:x"}),
    ("GET", "/events/{eventId}", {"eventId": "$e"}),
    ("GET", "/admin/rooms", {}),
    ("GET", "/admin/rooms/{roomId}", {"roomId": "!r:x"}),
    ("POST", "/admin/rooms/{roomId}/retry", {"roomId": "!r:x"}),
    ("POST", "/admin/rooms/{roomId}/skip", {"roomId": "!r:x"}),
    ("POST", "/admin/rooms/{roomId}/purge", {"roomId": "!r:x"}),
    ("GET", "/openapi.json", {}),
]


def sample_room() -> tuple[RoomBuilder, list[dict[str, Any]], list[str]]:
    """A room with a fork and its merge, a rejected and a soft-failed event; returns the
    builder, the PDUs in submission order and the outcomes expected for them."""
    b = RoomBuilder("10")
    setup = [*b.create_room(ALICE), b.join(BOB)]
    base = list(b.latest)
    left = b.send("m.room.message", ALICE, {"body": "left"}, prev_events=base)
    right = b.send("m.room.message", BOB, {"body": "right"}, prev_events=base)
    merge = b.send(
        "m.room.topic",
        ALICE,
        {"topic": "t"},
        state_key="",
        prev_events=[left.event_id, right.event_id],
    )
    intruder = b.make_pdu("m.room.message", MALLORY, {"body": "hi"})
    before_ban = list(b.latest)
    bob_auth = b.auth_event_ids_for("m.room.message", BOB, None, {})
    ban = b.member(ALICE, BOB, "ban")
    late = b.make_pdu(
        "m.room.message", BOB, {"body": "late"}, prev_events=before_ban, auth_events=bob_auth
    )
    after = b.send("m.room.message", ALICE, {"body": "after"}, prev_events=[ban.event_id])
    pdus = [*(e.pdu for e in [*setup, left, right, merge]), intruder, ban.pdu, late, after.pdu]
    expected = ["accepted"] * (len(setup) + 3) + ["rejected", "accepted", "soft_failed", "accepted"]
    return b, pdus, expected


async def test_every_route_refuses_a_missing_or_wrong_token(
    open_roomserver: OpenRoomserver,
) -> None:
    rs = await open_roomserver()
    async with listening(rs) as base, api_client(base) as api:
        for method, template, params in ROUTES:
            status, body = await api.call(method, template, params=params, token=None)
            assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN"), (template, body)
            status, body = await api.call(method, template, params=params, token="wrong")
            assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN"), (template, body)
        assert api.checked == 2 * len(ROUTES)
        # Outside the API: metrics and health stay open.
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/healthz") as response:
                assert response.status == 200
            async with session.get(
                base + PREFIX + "/no/such/route", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as response:
                assert response.status == 404
                assert (await response.json())["errcode"] == "M_UNRECOGNIZED"


async def test_without_a_configured_token_the_api_is_refused(
    open_roomserver: OpenRoomserver,
) -> None:
    rs = await open_roomserver()
    async with listening(rs, token=None) as base, api_client(base) as api:
        for method, template, params in ROUTES:
            status, body = await api.call(method, template, params=params, token="anything")
            assert status == 403 and body["errcode"] == "M_FORBIDDEN", (template, body)
            assert "http.token" in body["error"]


async def test_openapi_document_validates_and_lists_every_route(
    open_roomserver: OpenRoomserver,
) -> None:
    rs = await open_roomserver()
    async with listening(rs) as base, api_client(base) as api:
        status, document = await api.call("GET", "/openapi.json")
    assert status == 200
    validate(document)
    assert document["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert documented == {(method, template) for method, template, _ in ROUTES}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_input_and_queries_through_http_equal_the_facade(
    open_roomserver: OpenRoomserver, backend: str
) -> None:
    rs = await open_roomserver()
    b, pdus, expected = sample_room()
    trust(rs, b)
    async with listening(rs) as base, api_client(base) as api:
        status, body = await api.call(
            "POST", "/input", json_body={"events": [{"event": p} for p in pdus]}
        )
        assert status == 200
        outcomes = [r["outcome"] for r in body["results"]]
        assert outcomes == expected, [r["reason"] for r in body["results"]]
        rejected = body["results"][expected.index("rejected")]
        assert "not joined" in rejected["reason"]

        status, state = await api.call("GET", "/rooms/{roomId}/state", params={"roomId": b.room_id})
        assert status == 200 and state["room_id"] == b.room_id and state["room_version"] == "10"
        facade_state = await rs.current_state(b.room_id)
        assert {(s["type"], s["state_key"]): s["event_id"] for s in state["state"]} == (
            facade_state
        )
        assert facade_state == b.state

        status, latest = await api.call(
            "GET", "/rooms/{roomId}/latest_events", params={"roomId": b.room_id}
        )
        assert status == 200 and latest["event_ids"] == await rs.latest_events(b.room_id)

        for result in body["results"]:
            status, got = await api.call(
                "GET", "/events/{eventId}", params={"eventId": result["event_id"]}
            )
            stored = await rs.event(result["event_id"])
            assert stored is not None and status == 200
            assert got["status"] == stored.outcome.value == result["outcome"]
            assert got["reason"] == stored.rejection_reason
            assert got["room_id"] == b.room_id
            assert got["event"] == dict(stored.event.pdu)

        # Asynchronous input: queued, then processed.
        more_events = [b.message(ALICE, f"async {i}") for i in range(3)]
        more = [e.pdu for e in more_events]
        status, queued = await api.call(
            "POST",
            "/input",
            json_body={"events": [{"event": p} for p in more], "asynchronous": True},
        )
        assert status == 200
        assert [r["outcome"] for r in queued["results"]] == ["queued"] * 3
        await wait_for(lambda: _latest_is(rs, b.room_id, b.latest))
        stored = await rs.event(b.latest[0])
        assert stored is not None and stored.outcome is Outcome.ACCEPTED

        # Stored is not yet acked: the message leaves the queue after its outputs are
        # published, so the summary is read once the queue has drained.
        async def drained() -> dict[str, Any] | None:
            status, summary = await api.call(
                "GET", "/admin/rooms/{roomId}", params={"roomId": b.room_id}
            )
            assert status == 200
            return summary if summary["queued"]["pending"] == 0 else None

        summary = await wait_for(drained)
        counts = await rs.event_counts(b.room_id)
        assert summary["events"] == {
            "accepted": counts.accepted,
            "soft_failed": 1,
            "rejected": 1,
            "outlier": 0,
        }
        assert counts.accepted == expected.count("accepted") + 3
        assert summary["state_size"] == len(b.state)
        assert summary["forward_extremities"] == b.latest
        assert summary["queued"]["pending"] == 0 and summary["skipped"] == []

    # The overview queries behind the console, on this backend.
    stored_ids = [r["event_id"] for r in body["results"]] + [e.event_id for e in more_events]
    rooms = await rs.rooms()
    assert [(r.room_id, r.room_version, r.events) for r in rooms] == [
        (b.room_id, "10", len(stored_ids))
    ]
    newest = await rs.newest_events(b.room_id, limit=5)
    assert [s.event.event_id for s in newest] == stored_ids[-5:]
    assert [s.event.event_id for s in await rs.newest_events(b.room_id, limit=500)] == stored_ids
    assert await rs.newest_events("!nowhere:example.org", limit=5) == []


async def _latest_is(rs: Any, room_id: str, ids: list[str]) -> bool:
    return bool(await rs.latest_events(room_id) == ids)


async def test_malformed_requests_get_400_and_unknown_things_404(
    open_roomserver: OpenRoomserver,
) -> None:
    rs = await open_roomserver()
    b, pdus, _ = sample_room()
    trust(rs, b)
    await submit(rs, pdus[:4])
    async with listening(rs, max_body_bytes=64 * 1024) as base, api_client(base) as api:
        bad_bodies: list[tuple[bytes | None, Any, str]] = [
            (b"{not json", None, "M_NOT_JSON"),
            (None, [1, 2], "M_BAD_JSON"),
            (None, {"events": "no"}, "M_BAD_JSON"),
            (None, {"events": [{"kind": "new"}]}, "M_BAD_JSON"),
            (None, {"events": [{"event": {}, "kind": "sideways"}]}, "M_BAD_JSON"),
            (None, {"events": [{"event": {}, "surprise": 1}]}, "M_BAD_JSON"),
            (None, {"events": [{"event": {}, "state_event_ids": [1]}]}, "M_BAD_JSON"),
            (None, {"events": [], "asynchronous": "yes"}, "M_BAD_JSON"),
        ]
        for data, json_body, errcode in bad_bodies:
            status, body = await api.call("POST", "/input", data=data, json_body=json_body)
            assert (status, body["errcode"]) == (400, errcode), (data, json_body, body)
        status, body = await api.call("POST", "/input", data=b"[" + b"1," * 40000 + b"1]")
        assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
        status, body = await api.call(
            "POST", "/admin/rooms/{roomId}/skip", params={"roomId": b.room_id}, json_body={}
        )
        assert (status, body["errcode"]) == (400, "M_BAD_JSON") and "reason" in body["error"]
        for limit in ("0", "x", "5000"):
            status, body = await api.call(
                "GET",
                "/rooms/{roomId}/dag.svg",
                params={"roomId": b.room_id},
                query={"limit": limit},
            )
            assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")

        unknown = "!nowhere:example.org"
        for template in (
            "/rooms/{roomId}/state",
            "/rooms/{roomId}/latest_events",
            "/rooms/{roomId}/dag.svg",
            "/admin/rooms/{roomId}",
        ):
            status, body = await api.call("GET", template, params={"roomId": unknown})
            assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), template
        for action in ("retry", "skip"):
            status, body = await api.call(
                "POST",
                f"/admin/rooms/{{roomId}}/{action}",
                params={"roomId": b.room_id},
                json_body={"reason": "r"},
            )
            assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), body
        status, body = await api.call("GET", "/events/{eventId}", params={"eventId": "$gone"})
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await api.call(
            "POST", "/admin/rooms/{roomId}/purge", params={"roomId": unknown}
        )
        assert status == 200 and body["purged"] == 0
        # An invalid event in a well-formed request is an outcome, not an HTTP error.
        status, body = await api.call("POST", "/input", json_body={"events": [{"event": {}}]})
        assert status == 200 and body["results"][0]["outcome"] == "invalid"
        assert api.checked >= 20


async def test_event_ids_with_slashes_are_found(open_roomserver: OpenRoomserver) -> None:
    """Room version 3 event IDs are standard base64 and may hold '/'."""
    rs = await open_roomserver()
    for _ in range(40):
        b = RoomBuilder("3")
        b.create_room(ALICE)
        if any("/" in e for e in b.events):
            break
    else:
        pytest.skip("no event ID with a slash came up")
    trust(rs, b)
    await submit(rs, b.pdus())
    slashed = next(e for e in b.events if "/" in e)
    async with listening(rs) as base, api_client(base) as api:
        status, body = await api.call("GET", "/events/{eventId}", params={"eventId": slashed})
        assert status == 200 and body["status"] == "accepted", body


async def test_requests_in_parallel(open_roomserver: OpenRoomserver) -> None:
    rs = await open_roomserver()
    b, pdus, _ = sample_room()
    trust(rs, b)
    async with listening(rs) as base, api_client(base) as api:
        status, _ = await api.call("POST", "/input", json_body={"events": [{"event": pdus[0]}]})
        assert status == 200
        results = await asyncio.gather(
            *(
                api.call("GET", "/rooms/{roomId}/state", params={"roomId": b.room_id})
                for _ in range(10)
            )
        )
        assert {status for status, _ in results} == {200}
