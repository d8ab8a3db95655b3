"""``parse_event`` keeps the canonical JSON it computed; every later use of it must equal what
encoding the event again gives (signature checks and storage reuse it)."""

from __future__ import annotations

import pytest

from roomserver.core.canonical_json import canonical_json
from roomserver.core.errors import InvalidSignature
from roomserver.core.pdu import parse_event
from roomserver.core.room_versions import room_version
from roomserver.core.signatures import _event_signed_bytes, verify_event
from roomserver.testing.builder import RoomBuilder

VERSIONS = [str(v) for v in range(1, 13)]


@pytest.mark.parametrize("version", VERSIONS)
def test_cached_bytes_equal_a_fresh_encoding(version: str) -> None:
    builder = RoomBuilder(version)
    events = builder.create_room("@alice:example.org")
    events.append(builder.send("m.room.message", "@alice:example.org", {"body": "é ☃", "n": 7}))
    rules = room_version(version)
    for event in events:
        parsed = parse_event(event.pdu, version)
        strict = rules.strict_canonical_json
        assert parsed.canonical_bytes == canonical_json(event.pdu, strict=strict)
        if parsed.signed_bytes is None:
            assert version in ("1", "2")  # server-assigned event IDs: nothing computed
        else:
            assert parsed.signed_bytes == _event_signed_bytes(event.pdu, rules)


@pytest.mark.parametrize("version", ["3", "10", "12"])
def test_a_parsed_event_verifies_like_its_json(version: str) -> None:
    builder = RoomBuilder(version)
    builder.create_room("@alice:example.org")
    event = builder.send("m.room.message", "@alice:example.org", {"body": "hi"})
    keys = builder.verify_keys()
    parsed = parse_event(event.pdu, version)
    verify_event(parsed, room_version=version, verify_keys=keys)
    verify_event(event.pdu, room_version=version, verify_keys=keys)
    # A change after signing is caught through the cached bytes as through the JSON.
    forged = dict(event.pdu, origin_server_ts=event.pdu["origin_server_ts"] + 1)
    forged_parsed = parse_event(forged, version)
    with pytest.raises(InvalidSignature):
        verify_event(forged_parsed, room_version=version, verify_keys=keys)
    with pytest.raises(InvalidSignature):
        verify_event(forged, room_version=version, verify_keys=keys)
