"""Content hashes, reference hashes, event IDs and v12 room IDs (spec: "Event IDs", hashing)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from roomserver.core.base64 import encode_base64
from roomserver.core.canonical_json import canonical_json
from roomserver.core.errors import InvalidEvent
from roomserver.core.ids import EventId, RoomId
from roomserver.core.redaction import redacted_view_keeping, top_level_keys_kept
from roomserver.core.room_versions import EventIdFormat, RoomVersion
from roomserver.core.room_versions import room_version as rules_for

_NOT_HASHED = frozenset({"unsigned", "signatures", "hashes"})


def content_hash_bytes(pdu: Mapping[str, Any], *, strict: bool = False) -> bytes:
    """SHA-256 over the canonical JSON of the PDU without unsigned, signatures and hashes.

    ``strict`` refuses what room versions 6+ refuse (``CanonicalJSONError``); for events that
    ``parse_event`` accepted the hash is the same either way.
    """
    stripped = {k: v for k, v in pdu.items() if k not in _NOT_HASHED}
    encoded = canonical_json(stripped, strict=strict, integral_floats=not strict)
    return hashlib.sha256(encoded).digest()


def content_hash_of_checked(checked: Mapping[str, Any], encode: Callable[[Any], bytes]) -> bytes:
    """``content_hash_bytes`` of a PDU from ``canonical_json_parts``: the object as checked and
    the encoder (lax; or strict for an event ``parse_event`` accepted, where the modes agree)."""
    kept = {k: v for k, v in checked.items() if k not in _NOT_HASHED}
    return hashlib.sha256(encode(kept)).digest()


def compute_content_hash(pdu: Mapping[str, Any]) -> str:
    """The unpadded standard base64 of the PDU's content hash (the value of ``hashes.sha256``)."""
    return encode_base64(content_hash_bytes(pdu))


def reference_bytes(pdu: Mapping[str, Any], rules: RoomVersion) -> bytes:
    """The redacted PDU without signatures and unsigned, as canonical JSON: what the reference
    hash hashes, and (for an event within the size and number limits of its version, where the
    canonical JSON modes agree) what its signatures sign.

    From room version 3 on, PDUs carry no ``event_id``; a stray one is not part of the event and
    is left out (``parse_event`` and ``verify_event`` ignore it the same way).
    """
    return canonical_json(_reference_view(pdu, rules), strict=False)


def _reference_view(pdu: Mapping[str, Any], rules: RoomVersion) -> dict[str, Any]:
    return redacted_view_keeping(pdu, rules, _reference_keys(rules))


def _reference_keys(rules: RoomVersion) -> frozenset[str]:
    """The top-level keys of a reference view: those redaction keeps, but ``signatures`` and
    ``unsigned`` (and, from v3, ``event_id``)."""
    kept = top_level_keys_kept(rules)
    server_assigned = rules.event_id_format is EventIdFormat.SERVER_ASSIGNED
    keys = _REFERENCE_KEYS.get((kept, server_assigned))
    if keys is None:
        keys = kept - {"signatures", "unsigned"} - (set() if server_assigned else {"event_id"})
        _REFERENCE_KEYS[(kept, server_assigned)] = keys
    return keys


_REFERENCE_KEYS: dict[tuple[frozenset[str], bool], frozenset[str]] = {}


def reference_bytes_of_checked(
    checked: Mapping[str, Any], rules: RoomVersion, encode: Callable[[Any], bytes]
) -> bytes:
    """``reference_bytes`` of a PDU from ``canonical_json_parts`` (the object as checked, in a
    mode that agrees with lax for it, and the encoder): its values are not checked again."""
    return encode(_reference_view(checked, rules))


def reference_hash(pdu: Mapping[str, Any], rules: RoomVersion) -> bytes:
    """SHA-256 of ``reference_bytes`` (spec: reference hashes)."""
    return hashlib.sha256(reference_bytes(pdu, rules)).digest()


def event_id_from_reference_bytes(data: bytes, rules: RoomVersion) -> EventId:
    """The event ID (room version 3+) of an event whose ``reference_bytes`` are ``data``."""
    url_safe = rules.event_id_format is EventIdFormat.URL_SAFE_BASE64
    return EventId("$" + encode_base64(hashlib.sha256(data).digest(), url_safe=url_safe))


def event_id_for(pdu: Mapping[str, Any], rules: RoomVersion) -> EventId:
    """The event ID of ``pdu`` under ``rules``, computed or (v1-v2) read from the PDU."""
    fmt = rules.event_id_format
    if fmt is EventIdFormat.SERVER_ASSIGNED:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise InvalidEvent(
                f"event_id: required string in room version {rules.identifier}", field="event_id"
            )
        return EventId(event_id)
    digest = reference_hash(pdu, rules)
    return EventId("$" + encode_base64(digest, url_safe=fmt is EventIdFormat.URL_SAFE_BASE64))


def compute_event_id(pdu: Mapping[str, Any], room_version: str) -> EventId:
    """Public form of ``event_id_for`` taking a room version identifier."""
    return event_id_for(pdu, rules_for(room_version))


def room_id_from_create_event_id(create_event_id: str) -> RoomId:
    """Room version 12: the room ID is ``!`` followed by the create event ID's hash part."""
    return RoomId("!" + create_event_id[1:])


def compute_room_id(create_pdu: Mapping[str, Any], room_version: str) -> RoomId:
    """The room ID a v12 create event defines."""
    rules = rules_for(room_version)
    if not rules.room_id_from_create_event:
        raise ValueError(f"room version {room_version} does not derive room IDs from events")
    return room_id_from_create_event_id(event_id_for(create_pdu, rules))
