"""Public request, response and output types of the roomserver, and their JSON wire format.

Wire format: every message body is a JSON object with a version ``"v"``. Input messages are
version 2 (a batch: the events of one request for one room, in order) and sync replies to them
carry one ``EventResult`` per event; version-1 input messages (one ``InputRoomEvent``) and
replies (one ``EventResult``) are still decoded. Output messages are version 1 and carry one
``OutputEvent``. Field names are documented with the codec functions at the end of this module
(``encode_*`` / ``decode_*``). Decoders reject unknown versions with ``WireFormatError``.
"""

from __future__ import annotations

import enum
import json
import json.encoder
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from roomserver.core.errors import CoreError
from roomserver.core.hashes import compute_event_id, compute_room_id
from roomserver.core.identifiers import MAX_ID_BYTES, is_valid_room_id
from roomserver.core.ids import EventId, RoomId, ServerName
from roomserver.core.pdu import Event
from roomserver.core.room_versions import room_version as _room_version_rules
from roomserver.wire_json import dumps as _dumps

WIRE_VERSION = 1
#: The version of input messages and of the sync replies to them (a batch of events / results).
INPUT_WIRE_VERSION = 2
#: An input item whose ``state_event_ids`` travel beside the message, in a blob store
#: (``roomserver.input.statelists``). The room worker replaces the reference by the list before
#: decoding; a decoder meeting one unresolved raises ``WireFormatError``.
STATE_LIST_REF_FIELD = "state_event_ids_ref"


class WireFormatError(ValueError):
    """A message body that is not a valid wire message of a supported version."""


class Kind(enum.IntEnum):
    """How an input event relates to the room's DAG (wire values as Dendrite's)."""

    OUTLIER = 1  # outside the contiguous DAG: stored and authorised, no state, no output
    NEW = 2  # extends the DAG forward: updates extremities and current state, emits output
    OLD = 3  # backfill / gap filling: gets state if possible, never moves extremities


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    SOFT_FAILED = "soft_failed"
    REJECTED = "rejected"
    INVALID = "invalid"
    ERROR = "error"
    QUEUED = "queued"  # asynchronous requests: published to the input stream


@dataclass(frozen=True, slots=True)
class TransactionId:
    session_id: int
    transaction_id: str


@dataclass(frozen=True, slots=True)
class InputRoomEvent:
    """One event to ingest.

    ``event`` is the PDU in federation format. ``room_version`` may be omitted when the room is
    known (or for a create event, whose content names it). ``verified`` marks an event whose
    hashes, signatures and server ACL the caller has already checked.
    """

    event: Mapping[str, Any]
    kind: Kind = Kind.NEW
    origin: ServerName | None = None
    has_state: bool = False
    state_event_ids: tuple[EventId, ...] = ()
    send_as_server: ServerName | None = None
    transaction_id: TransactionId | None = None
    verified: bool = False
    room_version: str | None = None

    def event_id_hint(self) -> EventId | None:
        """The event's ID if it can be told from the item alone, without knowing the room
        (best effort, for results): computed under ``room_version`` when given, else the PDU's
        ``event_id`` field; None otherwise, never an exception."""
        try:
            if self.room_version is not None:
                return compute_event_id(self.event, self.room_version)
            value = self.event.get("event_id")
            return EventId(value) if isinstance(value, str) else None
        except Exception:
            return None


@dataclass(frozen=True, slots=True)
class InputRoomEventsRequest:
    events: Sequence[InputRoomEvent]
    asynchronous: bool = False


@dataclass(frozen=True, slots=True)
class EventResult:
    event_id: EventId | None
    outcome: Outcome
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class InputRoomEventsResponse:
    results: list[EventResult]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored, with its processing outcome."""

    event: Event
    outlier: bool
    rejected: bool = False
    rejection_reason: str | None = None
    soft_failed: bool = False
    state_snapshot: int | None = None  # snapshot of the state before the event; None for outliers
    redacted_because: EventId | None = None
    stream_position: int | None = None

    @property
    def outcome(self) -> Outcome:
        if self.rejected:
            return Outcome.REJECTED
        if self.soft_failed:
            return Outcome.SOFT_FAILED
        return Outcome.ACCEPTED


def route_room_id(item: InputRoomEvent) -> RoomId:
    """The room an input event belongs to (v12 create events name no room: derive it).

    Raises ``ValueError`` with a reason when the event names no usable room.
    """
    pdu = item.event
    if not isinstance(pdu, Mapping):
        raise ValueError("event: must be a JSON object")
    room_id = pdu.get("room_id")
    if isinstance(room_id, str) and room_id:
        return RoomId(_routable(room_id))
    if pdu.get("type") == "m.room.create" and pdu.get("state_key") == "":
        content = pdu.get("content")
        version = item.room_version or (
            content.get("room_version") if isinstance(content, Mapping) else None
        )
        if isinstance(version, str):
            try:
                if _room_version_rules(version).room_id_from_create_event:
                    return compute_room_id(pdu, version)
            except (CoreError, ValueError) as exc:
                raise ValueError(
                    f"room_id: cannot derive it from the create event: {exc}"
                ) from None
    raise ValueError("room_id: missing or not a string")


_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f]")


def _routable(room_id: str) -> str:
    """``room_id`` if it is a room ID of some room version (it travels in a message header, so
    no control characters either); ``ValueError`` naming what is wrong otherwise."""
    if len(room_id) > MAX_ID_BYTES or len(room_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise ValueError(f"room_id: longer than {MAX_ID_BYTES} bytes")
    if not (is_valid_room_id(room_id) or is_valid_room_id(room_id, hashed=True)):
        raise ValueError(f"room_id: {room_id!r} is not a valid room ID")
    if _CONTROL_CHARACTERS.search(room_id):
        raise ValueError(f"room_id: {room_id!r} contains control characters")
    return room_id


# ---------------------------------------------------------------------------------------------
# Output events (stream <prefix>OutputRoomEvent)


class OutputType(enum.Enum):
    NEW_ROOM_EVENT = "new_room_event"
    OLD_ROOM_EVENT = "old_room_event"
    NEW_INVITE_EVENT = "new_invite_event"
    RETIRE_INVITE_EVENT = "retire_invite_event"
    REDACTED_EVENT = "redacted_event"


@dataclass(frozen=True, slots=True)
class OutputNewRoomEvent:
    event: Mapping[str, Any]
    event_id: EventId
    room_version: str
    latest_event_ids: tuple[EventId, ...]
    adds_state_event_ids: tuple[EventId, ...] = ()
    removes_state_event_ids: tuple[EventId, ...] = ()
    state_before_adds_event_ids: tuple[EventId, ...] = ()
    state_before_removes_event_ids: tuple[EventId, ...] = ()
    last_sent_event_id: EventId | None = None
    rewrites_state: bool = False
    send_as_server: ServerName | None = None
    transaction_id: TransactionId | None = None
    history_visibility: str = "shared"


@dataclass(frozen=True, slots=True)
class OutputOldRoomEvent:
    event: Mapping[str, Any]
    event_id: EventId
    room_version: str
    history_visibility: str = "shared"


@dataclass(frozen=True, slots=True)
class OutputNewInviteEvent:
    event: Mapping[str, Any]
    event_id: EventId
    room_version: str


@dataclass(frozen=True, slots=True)
class OutputRetireInviteEvent:
    event_id: EventId  # the invite being retired
    room_id: RoomId
    target_user_id: str
    membership: str  # join, leave or ban
    retired_by_event_id: EventId | None = None


@dataclass(frozen=True, slots=True)
class OutputRedactedEvent:
    redacted_event_id: EventId
    redacted_because: Mapping[str, Any]  # the redaction event's PDU


OutputPayload = (
    OutputNewRoomEvent
    | OutputOldRoomEvent
    | OutputNewInviteEvent
    | OutputRetireInviteEvent
    | OutputRedactedEvent
)

_PAYLOAD_TYPES: dict[OutputType, type[Any]] = {
    OutputType.NEW_ROOM_EVENT: OutputNewRoomEvent,
    OutputType.OLD_ROOM_EVENT: OutputOldRoomEvent,
    OutputType.NEW_INVITE_EVENT: OutputNewInviteEvent,
    OutputType.RETIRE_INVITE_EVENT: OutputRetireInviteEvent,
    OutputType.REDACTED_EVENT: OutputRedactedEvent,
}
_TYPE_OF_PAYLOAD = {v: k for k, v in _PAYLOAD_TYPES.items()}


@dataclass(frozen=True, slots=True)
class OutputEvent:
    room_id: RoomId
    payload: OutputPayload
    type: OutputType = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _TYPE_OF_PAYLOAD[type(self.payload)])


# ---------------------------------------------------------------------------------------------
# JSON wire codec (version 1)
#
# Input message body (one InputRoomEvent):
#
#     {"v": 1,
#      "event": {...},                 the PDU, federation format (v1/v2 PDUs carry "event_id")
#      "kind": 2,                      1 outlier, 2 new, 3 old
#      "origin": "remote.example",     optional: the server that told us about the event
#      "has_state": false,             optional (default false)
#      "state_event_ids": ["$..."],    optional (default [])
#      "send_as_server": "example.org",optional
#      "transaction_id": {"session_id": 1, "transaction_id": "t1"},   optional
#      "verified": false,              optional (default false)
#      "room_version": "10"}           optional
#
# Input message body, version 2 (a batch: one request's events for one room, in order):
#
#     {"v": 2, "events": [{"event": {...}, "kind": 2, ...}, ...]}
#
# each element has the fields of a version-1 body, without "v". Sync replies to a version-2
# message: {"v": 2, "results": [{"event_id": ..., "outcome": ..., "reason": ...}, ...]}, one
# per event, in order.
#
# Output message body (one OutputEvent): an envelope naming the type, with the payload under a
# key equal to the type (the payload's keys are the dataclass field names):
#
#     {"v": 1, "type": "new_room_event", "room_id": "!r:example.org",
#      "new_room_event": {"event": {...}, "event_id": "$...", "room_version": "10",
#                         "latest_event_ids": [...], "adds_state_event_ids": [...], ...}}
#
# Optional values that are null/empty/default may be omitted by encoders; decoders accept both.
# ---------------------------------------------------------------------------------------------


def _loads(
    data: bytes | str, versions: frozenset[int] = frozenset({WIRE_VERSION})
) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireFormatError(f"not JSON: {exc}") from None
    except RecursionError:
        # The JSON parser gives up on deep nesting (about 1,000 levels) with a RecursionError.
        raise WireFormatError("not JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise WireFormatError("message body must be a JSON object")
    version = value.get("v")
    if type(version) is not int or version not in versions:
        raise WireFormatError(f"unsupported wire version {version!r}")
    return value


_INPUT_VERSIONS = frozenset({WIRE_VERSION, INPUT_WIRE_VERSION})


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise WireFormatError(f"{key}: must be a string")
    return value


def _str_tuple(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WireFormatError(f"{key}: must be a list of strings")
    return tuple(value)


def _event_ids(obj: Mapping[str, Any], key: str) -> tuple[EventId, ...]:
    """A list of event IDs (as named: their grammar is the room version's, checked later)."""
    if key not in obj:
        return ()
    return tuple(EventId(v) for v in _str_tuple(obj, key))


def _server_name(obj: Mapping[str, Any], key: str) -> ServerName | None:
    value = _opt_str(obj, key)
    return None if value is None else ServerName(value)


def _bool(obj: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise WireFormatError(f"{key}: must be a boolean")
    return value


def _object(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise WireFormatError(f"{key}: must be a JSON object")
    return value


def _txn_to_json(txn: TransactionId | None) -> dict[str, Any] | None:
    if txn is None:
        return None
    return {"session_id": txn.session_id, "transaction_id": txn.transaction_id}


def _txn_from_json(value: Any) -> TransactionId | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or type(value.get("session_id")) is not int
        or not isinstance(value.get("transaction_id"), str)
    ):
        raise WireFormatError("transaction_id: must be {session_id: int, transaction_id: str}")
    return TransactionId(value["session_id"], value["transaction_id"])


def _input_item_to_json(item: InputRoomEvent) -> dict[str, Any]:
    event = item.event
    body: dict[str, Any] = {
        "event": event if type(event) is dict else dict(event),
        "kind": int(item.kind),
    }
    if item.origin is not None:
        body["origin"] = item.origin
    if item.has_state:
        body["has_state"] = True
    if item.state_event_ids:
        body["state_event_ids"] = list(item.state_event_ids)
    if item.send_as_server is not None:
        body["send_as_server"] = item.send_as_server
    if item.transaction_id is not None:
        body["transaction_id"] = _txn_to_json(item.transaction_id)
    if item.verified:
        body["verified"] = True
    if item.room_version is not None:
        body["room_version"] = item.room_version
    return body


_KIND_NEW = int(Kind.NEW)
_KINDS = {k.value: k for k in Kind}


def _input_item_from_json(body: Mapping[str, Any]) -> InputRoomEvent:
    if STATE_LIST_REF_FIELD in body:
        raise WireFormatError(f"{STATE_LIST_REF_FIELD}: a state list reference not resolved")
    kind_value = body.get("kind", _KIND_NEW)
    kind = _KINDS.get(kind_value) if type(kind_value) is int else None
    if kind is None:
        raise WireFormatError(f"kind: unknown value {kind_value!r}")
    return InputRoomEvent(
        event=_object(body, "event"),
        kind=kind,
        origin=_server_name(body, "origin"),
        has_state=_bool(body, "has_state"),
        state_event_ids=_event_ids(body, "state_event_ids"),
        send_as_server=_server_name(body, "send_as_server"),
        transaction_id=_txn_from_json(body.get("transaction_id")),
        verified=_bool(body, "verified"),
        room_version=_opt_str(body, "room_version"),
    )


def encode_input_room_event(item: InputRoomEvent) -> bytes:
    """The version-1 wire body of one ``item`` (see the format above). Still decoded; new
    messages are batches (``encode_input_batch``)."""
    return _dumps({"v": WIRE_VERSION, **_input_item_to_json(item)})


def decode_input_room_event(data: bytes | str) -> InputRoomEvent:
    """Parse a version-1 input body; raise ``WireFormatError`` on anything malformed.

    Only the envelope is checked here; the PDU itself is validated by the input pipeline.
    """
    return _input_item_from_json(_loads(data))


def encode_input_item(item: InputRoomEvent) -> bytes:
    """One element of a version-2 batch, encoded on its own (``join_input_batch`` joins them),
    so that a publisher can measure each event before deciding where a batch ends."""
    return _dumps(_input_item_to_json(item))


def join_input_batch(encoded_items: Sequence[bytes]) -> bytes:
    """The version-2 body made of items encoded by ``encode_input_item``, in order."""
    return b'{"v":2,"events":[' + b",".join(encoded_items) + b"]}"


def encode_input_batch(items: Sequence[InputRoomEvent]) -> bytes:
    """The version-2 wire body of a batch: events of one room, in order."""
    return join_input_batch([encode_input_item(item) for item in items])


def decode_input_message(data: bytes | str) -> tuple[int, list[InputRoomEvent]]:
    """Parse an input message of version 1 (one event) or 2 (a batch): its version and its
    events, in order. Raise ``WireFormatError`` on anything malformed (then no event of it is
    used)."""
    body = _loads(data, _INPUT_VERSIONS)
    if body["v"] == WIRE_VERSION:
        return WIRE_VERSION, [_input_item_from_json(body)]
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise WireFormatError("events: must be a non-empty list")
    out: list[InputRoomEvent] = []
    for index, element in enumerate(events):
        if not isinstance(element, dict):
            raise WireFormatError(f"events[{index}]: must be a JSON object")
        try:
            out.append(_input_item_from_json(element))
        except WireFormatError as exc:
            raise WireFormatError(f"events[{index}]: {exc}") from None
    return INPUT_WIRE_VERSION, out


_PAYLOAD_FIELDS = {cls: tuple(cls.__dataclass_fields__) for cls in _PAYLOAD_TYPES.values()}


def _payload_to_json(payload: OutputPayload) -> dict[str, Any]:
    """The payload's fields as JSON values (the encoder only reads them: a ``dict`` is passed
    as it is, other mappings are copied into one)."""
    out: dict[str, Any] = {}
    for name in _PAYLOAD_FIELDS[type(payload)]:
        value = getattr(payload, name)
        kind = type(value)
        if kind is str or value is None or kind is bool or kind is dict:
            pass  # encoded as they are (the common fields, first)
        elif kind is tuple:
            value = list(value)
        elif isinstance(value, TransactionId):
            value = _txn_to_json(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[name] = value
    return out


_TUPLE_FIELDS = frozenset(
    {
        "latest_event_ids",
        "adds_state_event_ids",
        "removes_state_event_ids",
        "state_before_adds_event_ids",
        "state_before_removes_event_ids",
    }
)
_BOOL_FIELDS = frozenset({"rewrites_state"})
_OBJECT_FIELDS = frozenset({"event", "redacted_because"})


def _payload_from_json(cls: type[Any], obj: Mapping[str, Any]) -> OutputPayload:
    kwargs: dict[str, Any] = {}
    for name in cls.__dataclass_fields__:
        if name not in obj:
            continue
        if name in _TUPLE_FIELDS:
            kwargs[name] = _str_tuple(obj, name)
        elif name in _BOOL_FIELDS:
            kwargs[name] = _bool(obj, name)
        elif name in _OBJECT_FIELDS:
            kwargs[name] = _object(obj, name)
        elif name == "transaction_id":
            kwargs[name] = _txn_from_json(obj[name])
        else:
            value = obj[name]
            if value is not None and not isinstance(value, str):
                raise WireFormatError(f"{name}: must be a string")
            kwargs[name] = value
    try:
        payload: OutputPayload = cls(**kwargs)
    except TypeError as exc:
        raise WireFormatError(f"{cls.__name__}: {exc}") from None
    return payload


_json_string: Callable[[str], str] = json.encoder.encode_basestring  # as _dumps writes


def encode_output_event(output: OutputEvent, *, event_json: bytes | None = None) -> bytes:
    """The version-1 wire body of ``output`` (see the format above). ``event_json``: the
    payload's ``event`` already encoded as JSON (the PDU's ``Event.canonical_bytes``), put in
    as it is instead of encoding the PDU again (the body decodes to the same output)."""
    kind = output.type.value
    payload = _payload_to_json(output.payload)
    if event_json is None or "event" not in payload:
        return _dumps({"v": WIRE_VERSION, "type": kind, "room_id": output.room_id, kind: payload})
    del payload["event"]  # the first member: spliced in first
    rest = _dumps(payload)
    # What the encoder writes for the envelope's members (``kind`` is a plain identifier).
    room_id = _json_string(output.room_id)
    head = f'{{"v":{WIRE_VERSION},"type":"{kind}","room_id":{room_id},"{kind}":{{"event":'
    tail = b"," + rest[1:] if len(rest) > 2 else b"}"
    return b"".join((head.encode(), event_json, tail, b"}"))


def decode_output_event(data: bytes | str) -> OutputEvent:
    """Parse a version-1 output body; raise ``WireFormatError`` on anything malformed."""
    body = _loads(data)
    try:
        output_type = OutputType(body.get("type"))
    except ValueError:
        raise WireFormatError(f"type: unknown output type {body.get('type')!r}") from None
    room_id = body.get("room_id")
    if not isinstance(room_id, str):
        raise WireFormatError("room_id: must be a string")
    payload = _payload_from_json(_PAYLOAD_TYPES[output_type], _object(body, output_type.value))
    return OutputEvent(room_id=RoomId(room_id), payload=payload)


def _result_to_json(result: EventResult) -> dict[str, Any]:
    return {"event_id": result.event_id, "outcome": result.outcome.value, "reason": result.reason}


_OUTCOMES = {o.value: o for o in Outcome}


def _result_from_json(body: Mapping[str, Any]) -> EventResult:
    value = body.get("outcome")
    outcome = _OUTCOMES.get(value) if isinstance(value, str) else None
    if outcome is None:
        raise WireFormatError(f"outcome: unknown value {value!r}")
    event_id = _opt_str(body, "event_id")
    return EventResult(
        None if event_id is None else EventId(event_id), outcome, _opt_str(body, "reason")
    )


def encode_event_result(result: EventResult) -> bytes:
    """The version-1 reply body to a synchronous caller of a version-1 message:
    ``{"v": 1, "event_id": "$..." | null, "outcome": "accepted", "reason": null | "..."}``."""
    return _dumps({"v": WIRE_VERSION, **_result_to_json(result)})


def decode_event_result(data: bytes | str) -> EventResult:
    return _result_from_json(_loads(data))


def encode_event_results(results: Sequence[EventResult]) -> bytes:
    """The version-2 reply body: one result per event of the message, in order."""
    return _dumps({"v": INPUT_WIRE_VERSION, "results": [_result_to_json(r) for r in results]})


def decode_event_results(data: bytes | str) -> list[EventResult]:
    """Parse a reply of version 1 (one result) or 2 (one per event of the message)."""
    body = _loads(data, _INPUT_VERSIONS)
    if body["v"] == WIRE_VERSION:
        return [_result_from_json(body)]
    results = body.get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise WireFormatError("results: must be a list of JSON objects")
    return [_result_from_json(r) for r in results]
