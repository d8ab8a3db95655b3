"""The OpenAPI 3.1 document of the HTTP API (served at ``/_roomserver/v1/openapi.json``).

Schemas are JSON Schema 2020-12 (as OpenAPI 3.1 has it); the tests check every response they
get against them.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
_NULLABLE_INT: dict[str, Any] = {"type": ["integer", "null"]}
_NULLABLE_NUMBER: dict[str, Any] = {"type": ["number", "null"]}
_OUTCOMES = ["accepted", "soft_failed", "rejected", "invalid", "error", "queued"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], *, required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {
            "errcode": {"type": "string", "pattern": "^M_[A-Z_]+$"},
            "error": {"type": "string"},
        },
        "required": ["errcode", "error"],
    },
    "Pdu": {
        "type": "object",
        "description": "A room event in federation format (room version dependent).",
        "additionalProperties": True,
    },
    "InputEvent": _object(
        {
            "event": _ref("Pdu"),
            "kind": {"enum": ["new", "old", "outlier"], "default": "new"},
            "origin": {"type": "string", "description": "The server the event came from."},
            "has_state": {"type": "boolean", "default": False},
            "state_event_ids": {"type": "array", "items": {"type": "string"}},
            "room_version": {
                "type": "string",
                "description": "Needed only when the room is unknown and this is not its "
                "create event.",
            },
            "verified": {
                "type": "boolean",
                "default": False,
                "description": "The caller has checked hashes, signatures and server ACLs.",
            },
        },
        required=["event"],
    ),
    "InputRequest": _object(
        {
            "events": {"type": "array", "items": _ref("InputEvent")},
            "asynchronous": {
                "type": "boolean",
                "default": False,
                "description": "Return once queued (outcome `queued`) instead of waiting.",
            },
        },
        required=["events"],
    ),
    "EventResult": _object(
        {
            "event_id": _NULLABLE_STRING,
            "outcome": {"enum": _OUTCOMES},
            "reason": _NULLABLE_STRING,
        }
    ),
    "InputResponse": _object({"results": {"type": "array", "items": _ref("EventResult")}}),
    "StateEntry": _object(
        {
            "type": {"type": "string"},
            "state_key": {"type": "string"},
            "event_id": {"type": "string"},
        }
    ),
    "RoomState": _object(
        {
            "room_id": {"type": "string"},
            "room_version": {"type": "string"},
            "state": {"type": "array", "items": _ref("StateEntry")},
        }
    ),
    "LatestEvents": _object({"event_ids": {"type": "array", "items": {"type": "string"}}}),
    "StoredEvent": _object(
        {
            "event": _ref("Pdu"),
            "room_id": {"type": "string"},
            "status": {"enum": ["accepted", "soft_failed", "rejected", "outlier"]},
            "reason": _NULLABLE_STRING,
        }
    ),
    "QueuedRoom": _object(
        {
            "room_id": {
                "type": ["string", "null"],
                "description": "Null only for a hashed subject whose room consumer is gone.",
            },
            "pending": {"type": "integer", "minimum": 0},
            "head_seq": _NULLABLE_INT,
            "delivery_count": {
                **_NULLABLE_INT,
                "description": "Deliveries of the head message (null: not held here).",
            },
            "in_flight": {"type": ["boolean", "null"]},
            "in_flight_s": {
                **_NULLABLE_NUMBER,
                "description": "Seconds since the head message was first delivered.",
            },
            "retry_in_s": {
                **_NULLABLE_NUMBER,
                "description": "For a head released after a failure: seconds to its retry.",
            },
            "last_error": _NULLABLE_STRING,
        }
    ),
    "QueuedRooms": _object({"rooms": {"type": "array", "items": _ref("QueuedRoom")}}),
    "SkippedMessage": _object(
        {
            "stream_seq": {"type": "integer"},
            "delivery_count": {"type": "integer"},
            "reason": {"type": "string"},
            "skipped_at_ms": {"type": "integer"},
            "payload_bytes": {"type": "integer"},
        }
    ),
    "RoomSummary": _object(
        {
            "room_id": {"type": "string"},
            "room_version": _NULLABLE_STRING,
            "events": _object(
                {
                    "accepted": {"type": "integer"},
                    "soft_failed": {"type": "integer"},
                    "rejected": {"type": "integer"},
                    "outlier": {"type": "integer"},
                }
            ),
            "state_size": {"type": "integer"},
            "forward_extremities": {"type": "array", "items": {"type": "string"}},
            "queued": _ref("QueuedRoom"),
            "skipped": {"type": "array", "items": _ref("SkippedMessage")},
        }
    ),
    "SkipRequest": _object({"reason": {"type": "string", "minLength": 1}}),
    "InterventionResult": _object(
        {
            "room_id": {"type": "string"},
            "action": {"enum": ["retry", "skip"]},
            "outcome": {
                "enum": ["cancelled_in_flight", "applied_waiting"],
                "description": "cancelled_in_flight: the attempt in progress was cancelled "
                "first; applied_waiting: the head was waiting for its retry.",
            },
        }
    ),
    "PurgeResult": _object({"room_id": {"type": "string"}, "purged": {"type": "integer"}}),
}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


_AUTH_ERRORS = {
    "401": _error("No or a wrong bearer token (M_MISSING_TOKEN, M_UNKNOWN_TOKEN)."),
    "403": _error("No token is configured: the API is disabled (M_FORBIDDEN)."),
}
_ROOM_ID = {
    "name": "roomId",
    "in": "path",
    "required": True,
    "description": "The room ID, percent-encoded.",
    "schema": {"type": "string"},
}


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    operation_id: str,
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
    tags: tuple[str, ...] = ("rooms",),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": operation_id,
        "tags": list(tags),
        "responses": {**responses, **_AUTH_ERRORS},
    }
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
        op["responses"].setdefault("400", _error("Malformed body (M_NOT_JSON, M_BAD_JSON)."))
        op["responses"].setdefault("413", _error("Body too large (M_TOO_LARGE)."))
    return op


def _paths() -> dict[str, Any]:
    not_found = _error("Unknown room (M_NOT_FOUND).")
    admin = ("admin",)
    return {
        "/input": {
            "post": _operation(
                "Submit events; synchronous requests wait for every outcome.",
                {"200": _json("InputResponse", "One result per event, in request order.")},
                operation_id="input",
                body="InputRequest",
                tags=("input",),
            )
        },
        "/rooms/{roomId}/state": {
            "get": _operation(
                "The room's current state.",
                {"200": _json("RoomState", "Current state, sorted."), "404": not_found},
                operation_id="roomState",
                parameters=[_ROOM_ID],
            )
        },
        "/rooms/{roomId}/latest_events": {
            "get": _operation(
                "The room's forward extremities.",
                {"200": _json("LatestEvents", "Forward extremities."), "404": not_found},
                operation_id="latestEvents",
                parameters=[_ROOM_ID],
            )
        },
        "/rooms/{roomId}/dag.svg": {
            "get": _operation(
                "A picture of the room's newest events and their prev-event edges.",
                {
                    "200": {
                        "description": "SVG: one node per event, one edge per prev event.",
                        "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                    },
                    "400": _error("Bad limit (M_INVALID_PARAM)."),
                    "404": not_found,
                },
                operation_id="roomDagSvg",
                parameters=[
                    _ROOM_ID,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "How many of the newest events to draw.",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 2000,
                            "default": 200,
                        },
                    },
                ],
            )
        },
        "/events/{eventId}": {
            "get": _operation(
                "A stored event with its outcome.",
                {
                    "200": _json("StoredEvent", "The event, its room, status and reason."),
                    "404": _error("Unknown event (M_NOT_FOUND)."),
                },
                operation_id="event",
                parameters=[
                    {
                        "name": "eventId",
                        "in": "path",
                        "required": True,
                        "description": "The event ID, percent-encoded.",
                        "schema": {"type": "string"},
                    }
                ],
                tags=("events",),
            )
        },
        "/admin/rooms": {
            "get": _operation(
                "Rooms with queued input, most pending first.",
                {"200": _json("QueuedRooms", "Each room's queue and head message.")},
                operation_id="queuedRooms",
                tags=admin,
            )
        },
        "/admin/rooms/{roomId}": {
            "get": _operation(
                "A room summary: events by outcome, state size, extremities, queued input.",
                {
                    "200": _json("RoomSummary", "The summary."),
                    "404": _error("Neither stored nor queued (M_NOT_FOUND)."),
                },
                operation_id="roomSummary",
                parameters=[_ROOM_ID],
                tags=admin,
            )
        },
        "/admin/rooms/{roomId}/retry": {
            "post": _operation(
                "Redeliver the room's head input message now.",
                _intervention_responses(),
                operation_id="retryHead",
                parameters=[_ROOM_ID],
                tags=admin,
            )
        },
        "/admin/rooms/{roomId}/skip": {
            "post": _operation(
                "Terminate the room's head input message and record why.",
                _intervention_responses(),
                operation_id="skipHead",
                parameters=[_ROOM_ID],
                body="SkipRequest",
                tags=admin,
            )
        },
        "/admin/rooms/{roomId}/purge": {
            "post": _operation(
                "Drop the room's queued input.",
                {"200": _json("PurgeResult", "How many messages were dropped.")},
                operation_id="purgeRoom",
                parameters=[_ROOM_ID],
                tags=admin,
            )
        },
        "/openapi.json": {
            "get": _operation(
                "This document.",
                {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
                operation_id="openapi",
                tags=("meta",),
            )
        },
    }


def _intervention_responses() -> dict[str, Any]:
    return {
        "200": _json("InterventionResult", "Applied."),
        "404": _error("The room has no queued input (M_NOT_FOUND)."),
        "409": _error("No roomserver process holds the head message now (M_BAD_STATE)."),
    }


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "roomserver HTTP API",
            "version": "1",
            "description": "Input, queries and queue administration of a Matrix roomserver. "
            "Every route needs `Authorization: Bearer <token>` (config `http.token`). Errors "
            'are `{"errcode": "M_...", "error": "..."}`.',
        },
        "servers": [{"url": "/_roomserver/v1"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may change theirs)."""
    return copy.deepcopy(_document())
