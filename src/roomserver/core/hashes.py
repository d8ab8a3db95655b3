"""Content hashes, reference hashes, event IDs and v12 room IDs (spec: "Event IDs", hashing)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from roomserver.core.base64 import encode_base64
from roomserver.core.canonical_json import canonical_json
from roomserver.core.errors import InvalidEvent
from roomserver.core.redaction import redact_with
from roomserver.core.room_versions import EventIdFormat, RoomVersion, room_version


def content_hash_bytes(pdu: Mapping[str, Any]) -> bytes:
    """SHA-256 over the canonical JSON of the PDU without unsigned, signatures and hashes."""
    stripped = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(canonical_json(stripped, strict=False)).digest()


def compute_content_hash(pdu: Mapping[str, Any]) -> str:
    """The unpadded standard base64 of the PDU's content hash (the value of ``hashes.sha256``)."""
    return encode_base64(content_hash_bytes(pdu))


def reference_hash(pdu: Mapping[str, Any], rules: RoomVersion) -> bytes:
    """SHA-256 of the redacted PDU without signatures and unsigned (spec: reference hashes)."""
    redacted = redact_with(pdu, rules)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return hashlib.sha256(canonical_json(redacted, strict=False)).digest()


def event_id_for(pdu: Mapping[str, Any], rules: RoomVersion) -> str:
    """The event ID of ``pdu`` under ``rules``, computed or (v1-v2) read from the PDU."""
    fmt = rules.event_id_format
    if fmt is EventIdFormat.SERVER_ASSIGNED:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise InvalidEvent(
                f"event_id: required string in room version {rules.identifier}", field="event_id"
            )
        return event_id
    digest = reference_hash(pdu, rules)
    return "$" + encode_base64(digest, url_safe=fmt is EventIdFormat.URL_SAFE_BASE64)


def compute_event_id(pdu: Mapping[str, Any], room_version_id: str) -> str:
    """Public form of ``event_id_for`` taking a room version identifier."""
    return event_id_for(pdu, room_version(room_version_id))


def room_id_from_create_event_id(create_event_id: str) -> str:
    """Room version 12: the room ID is ``!`` followed by the create event ID's hash part."""
    return "!" + create_event_id[1:]


def compute_room_id(create_pdu: Mapping[str, Any], room_version_id: str) -> str:
    """The room ID a v12 create event defines."""
    rules = room_version(room_version_id)
    if not rules.room_id_from_create_event:
        raise ValueError(f"room version {room_version_id} does not derive room IDs")
    return room_id_from_create_event_id(event_id_for(create_pdu, rules))
