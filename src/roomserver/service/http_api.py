"""The HTTP API under ``/_roomserver/v1/`` (see README "HTTP API and console", openapi.py).

Every route needs ``Authorization: Bearer <token>`` with the token of ``http.token`` (or
``http.token_file``); with no token configured the routes are refused. Errors are Matrix-style
JSON, ``{"errcode": "M_...", "error": "..."}``, with the matching status. Request bodies are
limited to ``http.max_body_bytes``.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from roomserver.api import (
    InputRoomEvent,
    InputRoomEventsRequest,
    Kind,
    Outcome,
    StoredEvent,
)
from roomserver.app import Roomserver
from roomserver.bus.admin import InterventionOutcome, QueuedRoom, SkippedMessage
from roomserver.core.ids import EventId, RoomId
from roomserver.service.dag_svg import render_dag_svg
from roomserver.service.openapi import openapi_document

log = logging.getLogger(__name__)

API_PREFIX = "/_roomserver/v1"
DEFAULT_DAG_LIMIT = 200
MAX_DAG_LIMIT = 2000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_KINDS = {"new": Kind.NEW, "old": Kind.OLD, "outlier": Kind.OUTLIER}
_INPUT_ITEM_KEYS = frozenset(
    {"event", "kind", "origin", "has_state", "state_event_ids", "room_version", "verified"}
)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    #: The bearer token; None: the API (and console) refuse every request.
    token: str | None


ROOMSERVER_KEY = web.AppKey("roomserver", Roomserver)
SETTINGS_KEY = web.AppKey("api_settings", ApiSettings)


class ApiError(Exception):
    """An error answered as Matrix-style JSON."""

    def __init__(self, status: int, errcode: str, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.errcode = errcode
        self.error = error


def error_response(status: int, errcode: str, error: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": error}, status=status)


def bad_json(error: str) -> ApiError:
    return ApiError(400, "M_BAD_JSON", error)


def token_matches(expected: str | None, presented: str | None) -> bool:
    if expected is None or presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


# ---------------------------------------------------------------------------------------------
# Middleware: Matrix errors, then authentication


@web.middleware
async def matrix_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under the API prefix, every error (ours, aiohttp's, unexpected) is Matrix JSON."""
    if not request.path.startswith(API_PREFIX + "/"):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.errcode, exc.error)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, "M_TOO_LARGE", f"request body too large: {exc.text}")
    except web.HTTPNotFound:
        return error_response(404, "M_UNRECOGNIZED", f"no route {request.path}")
    except web.HTTPMethodNotAllowed:
        return error_response(405, "M_UNRECOGNIZED", f"{request.method} not allowed here")
    except web.HTTPException as exc:
        return error_response(exc.status, "M_UNKNOWN", exc.reason)
    except Exception:
        log.exception("HTTP API: %s %s failed", request.method, request.path)
        return error_response(500, "M_UNKNOWN", "internal error (logged by the roomserver)")


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API_PREFIX + "/"):
        return await handler(request)
    expected = request.app[SETTINGS_KEY].token
    if expected is None:
        raise ApiError(
            403,
            "M_FORBIDDEN",
            "the HTTP API is disabled: configure http.token or http.token_file",
        )
    header = request.headers.get("Authorization")
    if header is None:
        raise ApiError(401, "M_MISSING_TOKEN", "missing Authorization: Bearer <token>")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not token_matches(expected, presented.strip()):
        raise ApiError(401, "M_UNKNOWN_TOKEN", "unknown or malformed bearer token")
    return await handler(request)


# ---------------------------------------------------------------------------------------------
# Bodies


async def read_json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "M_NOT_JSON", f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_json("body must be a JSON object")
    return body


def parse_input_item(index: int, item: Any) -> InputRoomEvent:
    where = f"events[{index}]"
    if not isinstance(item, dict):
        raise bad_json(f"{where}: must be an object")
    unknown = sorted(set(item) - _INPUT_ITEM_KEYS)
    if unknown:
        raise bad_json(f"{where}: unknown field {unknown[0]!r}")
    event = item.get("event")
    if not isinstance(event, dict):
        raise bad_json(f"{where}.event: must be an object (a PDU)")
    kind_name = item.get("kind", "new")
    if kind_name not in _KINDS:
        raise bad_json(f"{where}.kind: must be one of new, old, outlier")
    origin = item.get("origin")
    room_version = item.get("room_version")
    for name, value in (("origin", origin), ("room_version", room_version)):
        if value is not None and not isinstance(value, str):
            raise bad_json(f"{where}.{name}: must be a string")
    has_state = item.get("has_state", False)
    verified = item.get("verified", False)
    for name, value in (("has_state", has_state), ("verified", verified)):
        if not isinstance(value, bool):
            raise bad_json(f"{where}.{name}: must be true or false")
    state_ids = item.get("state_event_ids", [])
    if not isinstance(state_ids, list) or not all(isinstance(e, str) for e in state_ids):
        raise bad_json(f"{where}.state_event_ids: must be a list of event IDs")
    return InputRoomEvent(
        event=event,
        kind=_KINDS[kind_name],
        origin=origin,
        has_state=has_state,
        state_event_ids=tuple(state_ids),
        verified=verified,
        room_version=room_version,
    )


def parse_input_request(body: Mapping[str, Any]) -> InputRoomEventsRequest:
    unknown = sorted(set(body) - {"events", "asynchronous"})
    if unknown:
        raise bad_json(f"unknown field {unknown[0]!r}")
    events = body.get("events")
    if not isinstance(events, list):
        raise bad_json("events: must be a list")
    asynchronous = body.get("asynchronous", False)
    if not isinstance(asynchronous, bool):
        raise bad_json("asynchronous: must be true or false")
    return InputRoomEventsRequest(
        events=[parse_input_item(i, item) for i, item in enumerate(events)],
        asynchronous=asynchronous,
    )


# ---------------------------------------------------------------------------------------------
# Encoding


def event_status(stored: StoredEvent) -> str:
    return "outlier" if stored.outlier else stored.outcome.value


def state_list(state: Mapping[tuple[str, str], str]) -> list[dict[str, str]]:
    return [{"type": t, "state_key": k, "event_id": e} for (t, k), e in sorted(state.items())]


def queued_room_json(room: QueuedRoom) -> dict[str, Any]:
    return {
        "room_id": room.room_id,
        "pending": room.pending,
        "head_seq": room.head_seq,
        "delivery_count": room.head_delivery_count,
        "in_flight": room.head_in_flight,
        "in_flight_s": None if room.head_age_s is None else round(room.head_age_s, 3),
        "retry_in_s": None if room.retry_in_s is None else round(room.retry_in_s, 3),
        "last_error": room.last_error,
    }


def skipped_json(skip: SkippedMessage) -> dict[str, Any]:
    return {
        "stream_seq": skip.stream_seq,
        "delivery_count": skip.num_delivered,
        "reason": skip.reason,
        "skipped_at_ms": skip.skipped_at_ms,
        "payload_bytes": skip.payload_bytes,
    }


# ---------------------------------------------------------------------------------------------
# Routes


def path_room_id(request: web.Request) -> RoomId:
    """The room ID the request's path names (a room the server does not hold gets 404 from the
    handler that looks it up)."""
    return RoomId(request.match_info["room_id"])


def path_event_id(request: web.Request) -> EventId:
    """The event ID the request's path names."""
    return EventId(request.match_info["event_id"])


def _rs(request: web.Request) -> Roomserver:
    return request.app[ROOMSERVER_KEY]


async def _known_room_version(rs: Roomserver, room_id: str) -> str:
    info = await rs.room_info(room_id)
    if info is None:
        raise ApiError(404, "M_NOT_FOUND", f"unknown room {room_id}")
    return info.room_version


def dag_limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_DAG_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_DAG_LIMIT:
        raise ApiError(400, "M_INVALID_PARAM", f"limit: an integer from 1 to {MAX_DAG_LIMIT}")
    return limit


async def room_dag_svg(rs: Roomserver, room_id: RoomId, limit: int) -> str:
    await _known_room_version(rs, room_id)
    events = await rs.newest_events(room_id, limit=limit)
    latest = await rs.latest_events(room_id)
    return render_dag_svg(events, forward_extremities=latest, title=room_id)


async def post_input(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    input_request = parse_input_request(body)
    response = await _rs(request).input_room_events(input_request)
    return web.json_response(
        {
            "results": [
                {"event_id": r.event_id, "outcome": r.outcome.value, "reason": r.reason}
                for r in response.results
            ]
        }
    )


async def get_state(request: web.Request) -> web.Response:
    rs = _rs(request)
    room_id = path_room_id(request)
    version = await _known_room_version(rs, room_id)
    state = await rs.current_state(room_id)
    return web.json_response(
        {"room_id": room_id, "room_version": version, "state": state_list(state)}
    )


async def get_latest_events(request: web.Request) -> web.Response:
    rs = _rs(request)
    room_id = path_room_id(request)
    await _known_room_version(rs, room_id)
    return web.json_response({"event_ids": await rs.latest_events(room_id)})


async def get_event(request: web.Request) -> web.Response:
    event_id = path_event_id(request)
    stored = await _rs(request).event(event_id)
    if stored is None:
        raise ApiError(404, "M_NOT_FOUND", f"unknown event {event_id}")
    return web.json_response(
        {
            "event": dict(stored.event.pdu),
            "room_id": stored.event.room_id,
            "status": event_status(stored),
            "reason": stored.rejection_reason,
        }
    )


async def get_dag_svg(request: web.Request) -> web.Response:
    svg = await room_dag_svg(_rs(request), path_room_id(request), dag_limit(request))
    return web.Response(text=svg, content_type="image/svg+xml")


async def get_admin_rooms(request: web.Request) -> web.Response:
    rooms = await _rs(request).queued_input()
    return web.json_response({"rooms": [queued_room_json(r) for r in rooms]})


async def room_summary(rs: Roomserver, room_id: RoomId) -> dict[str, Any]:
    """The room as an operator sees it; ApiError 404 when neither stored nor queued."""
    info = await rs.room_info(room_id)
    queued = await rs.queued_input_of(room_id)
    if info is None and queued.pending == 0:
        raise ApiError(404, "M_NOT_FOUND", f"unknown room {room_id} (nothing stored or queued)")
    counts = await rs.event_counts(room_id)
    state = await rs.current_state(room_id)
    return {
        "room_id": room_id,
        "room_version": None if info is None else info.room_version,
        "events": {
            Outcome.ACCEPTED.value: counts.accepted,
            Outcome.SOFT_FAILED.value: counts.soft_failed,
            Outcome.REJECTED.value: counts.rejected,
            "outlier": counts.outlier,
        },
        "state_size": len(state),
        "forward_extremities": [] if info is None else list(info.forward_extremities),
        "queued": queued_room_json(queued),
        "skipped": [skipped_json(s) for s in await rs.skipped_input(room_id)],
    }


async def get_admin_room(request: web.Request) -> web.Response:
    return web.json_response(await room_summary(_rs(request), path_room_id(request)))


async def _intervention_response(
    rs: Roomserver, room_id: str, action: str, outcome: InterventionOutcome
) -> web.Response:
    if outcome is InterventionOutcome.NOT_HELD:
        queued = await rs.queued_input_of(room_id)
        if queued.pending == 0:
            raise ApiError(404, "M_NOT_FOUND", f"room {room_id} has no queued input")
        raise ApiError(
            409,
            "M_BAD_STATE",
            f"room {room_id} has queued input, but no roomserver process holds its head "
            "message right now (between deliveries, or no process runs room workers)",
        )
    return web.json_response({"room_id": room_id, "action": action, "outcome": outcome.value})


async def post_retry(request: web.Request) -> web.Response:
    rs = _rs(request)
    room_id = path_room_id(request)
    await read_json_object(request)  # an empty body or {}
    outcome = await rs.retry_input(room_id)
    return await _intervention_response(rs, room_id, "retry", outcome)


async def post_skip(request: web.Request) -> web.Response:
    rs = _rs(request)
    room_id = path_room_id(request)
    body = await read_json_object(request)
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise bad_json("reason: a non-empty string saying why the message is skipped")
    outcome = await rs.skip_input(room_id, reason.strip())
    return await _intervention_response(rs, room_id, "skip", outcome)


async def post_purge(request: web.Request) -> web.Response:
    rs = _rs(request)
    room_id = path_room_id(request)
    await read_json_object(request)
    purged = await rs.purge_input(room_id)
    return web.json_response({"room_id": room_id, "purged": purged})


async def get_openapi(_: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def add_api_routes(app: web.Application) -> None:
    p = API_PREFIX
    app.router.add_post(f"{p}/input", post_input)
    app.router.add_get(f"{p}/rooms/{{room_id}}/state", get_state)
    app.router.add_get(f"{p}/rooms/{{room_id}}/latest_events", get_latest_events)
    app.router.add_get(f"{p}/rooms/{{room_id}}/dag.svg", get_dag_svg)
    app.router.add_get(f"{p}/events/{{event_id}}", get_event)
    app.router.add_get(f"{p}/admin/rooms", get_admin_rooms)
    app.router.add_get(f"{p}/admin/rooms/{{room_id}}", get_admin_room)
    app.router.add_post(f"{p}/admin/rooms/{{room_id}}/retry", post_retry)
    app.router.add_post(f"{p}/admin/rooms/{{room_id}}/skip", post_skip)
    app.router.add_post(f"{p}/admin/rooms/{{room_id}}/purge", post_purge)
    app.router.add_get(f"{p}/openapi.json", get_openapi)
    # Anything else under the prefix: authenticated first, then 404 M_UNRECOGNIZED.
    app.router.add_route("*", f"{p}/{{tail:.*}}", _unrecognized)


async def _unrecognized(request: web.Request) -> web.Response:
    raise ApiError(404, "M_UNRECOGNIZED", f"no route {request.method} {request.path}")
