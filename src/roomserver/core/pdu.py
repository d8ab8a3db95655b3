"""The immutable ``Event`` and the one function that builds it from a PDU: ``parse_event``.

``parse_event`` enforces the event format rules of the room version (spec: "Event format",
"Size limits", identifier grammars). Anything that does not fit raises ``InvalidEvent`` whose
message starts with the offending field. Hashes and signatures are checked elsewhere
(``roomserver.core.signatures``); authorization in ``roomserver.core.auth``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from roomserver.core.canonical_json import (
    MAX_SAFE_INTEGER,
    MIN_SAFE_INTEGER,
    CanonicalParts,
    canonical_json_parts,
)
from roomserver.core.errors import InvalidEvent
from roomserver.core.hashes import (
    compute_content_hash,
    content_hash_of_checked,
    event_id_for,
    event_id_from_reference_bytes,
    reference_bytes_of_checked,
    room_id_from_create_event_id,
)
from roomserver.core.identifiers import (
    MAX_ID_BYTES,
    is_valid_event_id,
    is_valid_room_id,
    is_valid_user_id,
)
from roomserver.core.ids import EventId, RoomId
from roomserver.core.room_versions import EventIdFormat, RoomVersion
from roomserver.core.room_versions import room_version as rules_for
from roomserver.core.state_keys import StateKey as StateKey

#: Whether this module runs compiled (roomserver/_native.py): ``Event.__init__`` differs.
_COMPILED = not __file__.endswith(".py")

MAX_PDU_BYTES = 65_536
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
_INT64_MAX = 2**63 - 1


class Event:
    """One room event, immutable once built. Build it with ``parse_event``.

    ``pdu`` is the event's JSON in federation format; treat it as read-only.
    """

    __slots__ = (
        "auth_event_ids",
        "canonical_bytes",
        "content",
        "content_hash",
        "depth",
        "event_id",
        "origin_server_ts",
        "pdu",
        "prev_event_ids",
        "redacts",
        "room_id",
        "room_version",
        "rules",
        "sender",
        "signed_bytes",
        "state_key",
        "type",
    )

    event_id: EventId
    room_id: RoomId
    type: str
    state_key: str | None
    sender: str
    content: Mapping[str, Any]
    prev_event_ids: tuple[EventId, ...]
    auth_event_ids: tuple[EventId, ...]
    depth: int
    origin_server_ts: int
    room_version: str
    rules: RoomVersion
    redacts: EventId | None
    pdu: Mapping[str, Any]
    #: The PDU as canonical JSON (as its room version encodes it), when ``parse_event`` computed
    #: it (size check): storage reuses it instead of encoding the event again.
    canonical_bytes: bytes | None
    #: What the event's signatures sign (its redacted form without signatures and unsigned, as
    #: canonical JSON), when ``parse_event`` computed it (event ID, v3+): signature checks reuse
    #: it.
    signed_bytes: bytes | None
    #: SHA-256 of the PDU without ``unsigned``, ``signatures`` and ``hashes`` (what
    #: ``hashes.sha256`` must be), when ``parse_event`` computed it (from the size check's
    #: encoding): ``check_content_hash`` reuses it.
    content_hash: bytes | None

    def __init__(
        self,
        *,
        event_id: EventId,
        room_id: RoomId,
        type: str,
        state_key: str | None,
        sender: str,
        content: Mapping[str, Any],
        prev_event_ids: tuple[EventId, ...],
        auth_event_ids: tuple[EventId, ...],
        depth: int,
        origin_server_ts: int,
        rules: RoomVersion,
        redacts: EventId | None,
        pdu: Mapping[str, Any],
        canonical_bytes: bytes | None = None,
        signed_bytes: bytes | None = None,
        content_hash: bytes | None = None,
    ) -> None:
        if _COMPILED:  # compiled code stores its own attributes; __setattr__ guards others
            self.event_id = event_id
            self.room_id = room_id
            self.type = type
            self.state_key = state_key
            self.sender = sender
            self.content = content
            self.prev_event_ids = prev_event_ids
            self.auth_event_ids = auth_event_ids
            self.depth = depth
            self.origin_server_ts = origin_server_ts
            self.room_version = rules.identifier
            self.rules = rules
            self.redacts = redacts
            self.pdu = pdu
            self.canonical_bytes = canonical_bytes
            self.signed_bytes = signed_bytes
            self.content_hash = content_hash
        else:
            sa = object.__setattr__
            sa(self, "event_id", event_id)
            sa(self, "room_id", room_id)
            sa(self, "type", type)
            sa(self, "state_key", state_key)
            sa(self, "sender", sender)
            sa(self, "content", content)
            sa(self, "prev_event_ids", prev_event_ids)
            sa(self, "auth_event_ids", auth_event_ids)
            sa(self, "depth", depth)
            sa(self, "origin_server_ts", origin_server_ts)
            sa(self, "room_version", rules.identifier)
            sa(self, "rules", rules)
            sa(self, "redacts", redacts)
            sa(self, "pdu", pdu)
            sa(self, "canonical_bytes", canonical_bytes)
            sa(self, "signed_bytes", signed_bytes)
            sa(self, "content_hash", content_hash)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Event is immutable (tried to set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Event is immutable (tried to delete {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.event_id == other.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __repr__(self) -> str:
        sk = "" if self.state_key is None else f", state_key={self.state_key!r}"
        return f"Event({self.event_id!r}, type={self.type!r}{sk}, sender={self.sender!r})"

    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def state_tuple(self) -> StateKey:
        """``(type, state_key)``; only meaningful for state events."""
        return (self.type, self.state_key if self.state_key is not None else "")

    @property
    def membership(self) -> str | None:
        """``content.membership`` of an ``m.room.member`` event when it is a string."""
        value = self.content.get("membership")
        return value if isinstance(value, str) else None


def _fail(field: str, problem: str) -> InvalidEvent:
    return InvalidEvent(f"{field}: {problem}", field=field)


def _show(value: object) -> str:
    """``repr`` of a value for an error message, cut short: messages end up in logs."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _require_str(pdu: Mapping[str, Any], key: str) -> str:
    if key not in pdu:
        raise _fail(key, "missing")
    value = pdu[key]
    if not isinstance(value, str):
        raise _fail(key, "must be a string")
    return value


def _require_int(pdu: Mapping[str, Any], key: str, low: int, high: int) -> int:
    if key not in pdu:
        raise _fail(key, "missing")
    value = pdu[key]
    if type(value) is not int:
        raise _fail(key, "must be an integer")
    if not low <= value <= high:
        raise _fail(key, f"{value} is out of range [{low}, {high}]")
    return value


def _check_bytes(field: str, value: str) -> None:
    """Spec size limits: ``type`` and ``state_key`` are at most 255 bytes (UTF-8, not chars)."""
    # Fast path: a string of at most 63 characters cannot exceed 255 UTF-8 bytes.
    if len(value) > MAX_ID_BYTES // 4 and len(value.encode("utf-8", "surrogatepass")) > (
        MAX_ID_BYTES
    ):
        raise _fail(field, f"longer than {MAX_ID_BYTES} bytes")


def _check_size(pdu: Mapping[str, Any], rules: RoomVersion) -> CanonicalParts:
    """Spec size limits: the whole PDU is at most 65,536 bytes of canonical JSON.

    Encoding also enforces canonical JSON itself: from room version 6, integers outside
    +-(2**53 - 1) and floats (integral ones too, as other servers do) make the event invalid
    (``CanonicalJSONError``, an ``InvalidEvent``). So the events of those versions hash alike
    whichever canonical JSON mode a hash uses, and the checked PDU and its encoder
    (``canonical_json_parts``, returned with the bytes) serve the content hash and the
    reference hash as they are.
    """
    strict = rules.strict_canonical_json
    parts = canonical_json_parts(pdu, strict=strict, integral_floats=not strict)
    encoded = parts[0]
    if len(encoded) > MAX_PDU_BYTES:
        raise _fail(
            "event", f"is {len(encoded)} bytes as canonical JSON, the limit is {MAX_PDU_BYTES}"
        )
    return parts


def _parse_integers(pdu: Mapping[str, Any], rules: RoomVersion) -> tuple[int, int]:
    """``origin_server_ts`` (an int64; +-(2**53 - 1) from v6) and ``depth`` (0 to the limit)."""
    if rules.strict_canonical_json:
        ts_low, ts_high = MIN_SAFE_INTEGER, MAX_SAFE_INTEGER
    else:
        ts_low, ts_high = -_INT64_MAX - 1, _INT64_MAX
    origin_server_ts = _require_int(pdu, "origin_server_ts", ts_low, ts_high)
    depth = _require_int(pdu, "depth", 0, rules.max_depth)
    return origin_server_ts, depth


def _check_hashes_and_signatures(pdu: Mapping[str, Any]) -> None:
    """``hashes`` (with a ``sha256`` string) and ``signatures`` are required objects;
    ``unsigned`` is an object if present.

    Their values are checked by ``signatures.verify_event`` and ``check_content_hash``.
    """
    hashes = pdu.get("hashes")
    if not _is_mapping(hashes):
        raise _fail("hashes", "missing or not an object")
    if not isinstance(hashes.get("sha256"), str):
        raise _fail("hashes.sha256", "missing or not a string")
    signatures = pdu.get("signatures")
    if not _is_mapping(signatures):
        raise _fail("signatures", "missing or not an object")
    for server, sigs in signatures.items():
        if not _is_mapping(sigs) or not all(isinstance(s, str) for s in sigs.values()):
            where = server if len(server) <= 64 else server[:61] + "..."
            raise _fail(f"signatures.{where}", "must map key IDs to strings")
    if "unsigned" in pdu and not _is_mapping(pdu["unsigned"]):
        raise _fail("unsigned", "must be an object")


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)``, at once for the dicts JSON gives."""
    return type(value) is dict or isinstance(value, Mapping)


def _edge_ids(
    pdu: Mapping[str, Any], key: str, rules: RoomVersion, limit: int | None
) -> tuple[EventId, ...]:
    """``prev_events``/``auth_events``: a list of event IDs (v1-v2: ``[event_id, hashes]`` pairs),
    at most ``limit`` long."""
    if key not in pdu:
        raise _fail(key, "missing")
    raw = pdu[key]
    if not isinstance(raw, list):
        raise _fail(key, "must be a list")
    if limit is not None and len(raw) > limit:
        raise _fail(key, f"has {len(raw)} entries, at most {limit} are allowed")
    fmt = rules.event_id_format.value
    pairs = rules.prev_auth_events_with_hashes
    ids: list[EventId] = []  # checked below (``entry`` is untyped JSON: no wrapping needed)
    for i, entry in enumerate(raw):
        if pairs:
            if not isinstance(entry, list) or len(entry) != 2 or not _is_mapping(entry[1]):
                raise _fail(f"{key}[{i}]", "must be an [event_id, {hashes}] pair")
            entry = entry[0]
        if not is_valid_event_id(entry, format_name=fmt):
            raise _fail(f"{key}[{i}]", f"not a valid event ID for room version {rules.identifier}")
        ids.append(entry)
    return tuple(ids)


def _parse_event_id(
    pdu: Mapping[str, Any], rules: RoomVersion, given: str | None, parts: CanonicalParts
) -> tuple[EventId, bytes | None]:
    """The event ID: given (trusted), read from the PDU (v1-v2) or the reference hash (v3+);
    and the reference bytes when they were computed for it."""
    signed: bytes | None = None
    if given is not None:
        event_id = EventId(given)  # trusted (see ``parse_event``)
    elif rules.event_id_format is EventIdFormat.SERVER_ASSIGNED:
        event_id = event_id_for(pdu, rules)
    else:
        signed = reference_bytes_of_checked(parts[1], rules, parts[2])
        # "$" and the unpadded base64 of a SHA-256: always of the version's grammar.
        return event_id_from_reference_bytes(signed, rules), signed
    if not is_valid_event_id(event_id, format_name=rules.event_id_format.value):
        raise _fail(
            "event_id", f"{_show(event_id)} is not valid for room version {rules.identifier}"
        )
    return event_id, signed


def _parse_room_id(
    pdu: Mapping[str, Any],
    rules: RoomVersion,
    event_type: str,
    state_key: str | None,
    event_id: str,
) -> RoomId:
    """``room_id`` (required), except a v12 create event's, which its own event ID defines."""
    if rules.room_id_from_create_event and event_type == "m.room.create" and state_key == "":
        # A create event that has a room_id anyway is well-formed but rejected by authorization
        # rule 1.2 (room version 12), so it is not refused here.
        return room_id_from_create_event_id(event_id)
    room_id = _require_str(pdu, "room_id")
    if not is_valid_room_id(room_id, hashed=rules.room_id_from_create_event):
        raise _fail("room_id", f"{_show(room_id)} is not valid for room version {rules.identifier}")
    return RoomId(room_id)


def _parse_redacts(
    pdu: Mapping[str, Any], rules: RoomVersion, event_type: str, content: Mapping[str, Any]
) -> EventId | None:
    """A redaction's target: top-level ``redacts`` (v1-v10) or ``content.redacts`` (v11+).

    Required: a redaction that names no event is not a valid event. One exception: up to room
    version 10 the redaction algorithm drops the top-level ``redacts``, so the redacted form of
    a redaction (stored after being redacted, or used because its content hash did not match)
    has no target. Such a PDU is recognised by its content hash, which was computed over the
    full event and so no longer matches; it parses with ``redacts`` ``None``.
    """
    if event_type != "m.room.redaction":
        return None
    field = "content.redacts" if rules.redacts_in_content else "redacts"
    raw = content.get("redacts") if rules.redacts_in_content else pdu.get("redacts")
    if raw is None:
        if rules.redacts_in_content or _content_hash_matches(pdu):
            raise _fail(field, "missing: a redaction must name the event it redacts")
        return None
    if not is_valid_event_id(raw, format_name=rules.event_id_format.value):
        raise _fail(field, f"{_show(raw)} is not a valid event ID")
    return EventId(str(raw))


def _content_hash_matches(pdu: Mapping[str, Any]) -> bool:
    """Whether ``hashes.sha256`` (already checked to be a string) is the PDU's content hash."""
    return bool(pdu["hashes"]["sha256"] == compute_content_hash(pdu))


def is_create_event(event: Event) -> bool:
    """Whether ``event`` can be a room's create event: type ``m.room.create`` and the empty
    state key. An ``m.room.create`` event without a state key, or with another one, is
    rejected by the authorization rules and never counts as the room's create event."""
    return event.type == "m.room.create" and event.state_key == ""


def parse_event(
    pdu: Mapping[str, Any],
    room_version: str | object,
    *,
    event_id: str | None = None,
    check_edge_counts: bool = True,
) -> Event:
    """Build an ``Event`` from a PDU, enforcing the format rules of ``room_version``.

    A given ``event_id`` is trusted (events from our own storage, or from a trusted caller) and the
    reference hash is not recomputed. ``check_edge_counts=False`` skips the prev/auth event count
    limits, which the spec says must not be applied to backfilled events.
    Raises ``InvalidEvent`` (or ``UnknownRoomVersion`` for ``room_version``) and nothing else.
    """
    rules = rules_for(room_version)
    if not isinstance(pdu, Mapping):
        raise InvalidEvent("event: must be a JSON object", field="event")
    if rules.event_id_format is not EventIdFormat.SERVER_ASSIGNED and "event_id" in pdu:
        # v3+ PDUs carry no event ID; a stray one is not part of the event. Ignore it.
        pdu = {k: v for k, v in pdu.items() if k != "event_id"}
    elif not isinstance(pdu, dict):
        pdu = dict(pdu)
    parts = _check_size(pdu, rules)

    event_type = _require_str(pdu, "type")
    _check_bytes("type", event_type)
    sender = _require_str(pdu, "sender")
    if not is_valid_user_id(sender):
        raise _fail("sender", f"{_show(sender)} is not a valid user ID")
    state_key: str | None = None
    if "state_key" in pdu:
        state_key = _require_str(pdu, "state_key")
        _check_bytes("state_key", state_key)
    if "content" not in pdu:
        raise _fail("content", "missing")
    content = pdu["content"]
    if not _is_mapping(content):
        raise _fail("content", "must be an object")
    origin_server_ts, depth = _parse_integers(pdu, rules)
    _check_hashes_and_signatures(pdu)

    # A repeated prev event is one edge of the DAG: keep the first of each. Repeated auth events
    # stay as given: the authorization rules reject them (duplicate (type, state_key) entries),
    # which stores the event as rejected rather than dropping it.
    prev_limit = MAX_PREV_EVENTS if check_edge_counts else None
    auth_limit = MAX_AUTH_EVENTS if check_edge_counts else None
    prev_event_ids = tuple(dict.fromkeys(_edge_ids(pdu, "prev_events", rules, prev_limit)))
    auth_event_ids = _edge_ids(pdu, "auth_events", rules, auth_limit)

    event_id, signed = _parse_event_id(pdu, rules, event_id, parts)
    return Event(
        event_id=event_id,
        room_id=_parse_room_id(pdu, rules, event_type, state_key, event_id),
        type=event_type,
        state_key=state_key,
        sender=sender,
        content=content,
        prev_event_ids=prev_event_ids,
        auth_event_ids=auth_event_ids,
        depth=depth,
        origin_server_ts=origin_server_ts,
        rules=rules,
        redacts=_parse_redacts(pdu, rules, event_type, content),
        pdu=pdu,
        canonical_bytes=parts[0],
        signed_bytes=signed,
        content_hash=content_hash_of_checked(parts[1], parts[2]),
    )
