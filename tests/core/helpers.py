"""Small builders of valid PDUs for the core tests (no signatures needed for parsing)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from roomserver.core.canonical_json import canonical_json
from roomserver.core.errors import CanonicalJSONError
from roomserver.core.room_versions import room_version

V12_ROOM_ID = "!" + "A" * 42 + "Q"  # "!" + 43 URL-safe base64 characters
V3_EVENT_ID = "$" + "a+b/" * 10 + "abc"  # standard alphabet, 43 characters
V4_EVENT_ID = "$" + "a-b_" * 10 + "abc"  # URL-safe alphabet, 43 characters


def event_ref(version: str, n: int = 0) -> str:
    """A valid event ID for ``version`` (distinct per ``n``)."""
    fmt = room_version(version).event_id_format.value
    if fmt == "server_assigned":
        return f"$ev{n}:example.org"
    base = V3_EVENT_ID if fmt == "base64" else V4_EVENT_ID
    return base[:-3] + f"{n:03d}"[-3:]


def edges(version: str, count: int, start: int = 0) -> list[Any]:
    """``count`` prev/auth entries in the room version's shape."""
    ids = [event_ref(version, start + i) for i in range(count)]
    if room_version(version).prev_auth_events_with_hashes:
        return [[i, {"sha256": "aGFzaA"}] for i in ids]
    return ids


def room_id_for(version: str) -> str:
    return V12_ROOM_ID if room_version(version).room_id_from_create_event else "!room:example.org"


def valid_pdu(version: str, **overrides: Any) -> dict[str, Any]:
    """A format-valid message PDU for ``version``; ``overrides`` replace top-level keys."""
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "sender": "@alice:example.org",
        "room_id": room_id_for(version),
        "content": {"body": "hello", "msgtype": "m.text"},
        "origin_server_ts": 1_700_000_000_000,
        "depth": 5,
        "prev_events": edges(version, 1, 100),
        "auth_events": edges(version, 3, 200),
        "hashes": {"sha256": "aGFzaA"},
        "signatures": {"example.org": {"ed25519:a": "c2ln"}},
        "unsigned": {"age": 5},
    }
    if room_version(version).event_id_format.value == "server_assigned":
        pdu["event_id"] = "$msg1:example.org"
    pdu.update(copy.deepcopy(overrides))
    return pdu


def whole_or_same_error(
    encode: Callable[..., object], value: Any, strict: bool, integral_floats: bool
) -> bytes | None:
    """``canonical_json(value)``; or, when that raises, None once ``encode`` (a variant taking
    the same arguments) is seen to raise the same error."""
    try:
        return canonical_json(value, strict=strict, integral_floats=integral_floats)
    except CanonicalJSONError as exc:
        with pytest.raises(CanonicalJSONError) as caught:
            encode(value, strict=strict, integral_floats=integral_floats)
        assert str(caught.value) == str(exc)
        return None
