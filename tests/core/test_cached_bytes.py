"""``parse_event`` keeps the canonical JSON it computed; every later use of it must equal what
encoding the event again gives (signature checks and storage reuse it)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomserver.core.canonical_json import canonical_json, canonical_json_members
from roomserver.core.errors import InvalidSignature
from roomserver.core.hashes import content_hash_bytes, reference_bytes
from roomserver.core.pdu import parse_event
from roomserver.core.room_versions import room_version
from roomserver.core.signatures import _event_signed_bytes, check_content_hash, verify_event
from roomserver.testing.builder import RoomBuilder
from tests.core.helpers import whole_or_same_error

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
            assert parsed.signed_bytes == reference_bytes(parsed.pdu, rules)
        assert parsed.content_hash == content_hash_bytes(event.pdu)
        assert check_content_hash(parsed) and check_content_hash(parsed.pdu)


@pytest.mark.parametrize("version", ["1", "3", "10", "12"])
def test_a_cached_content_hash_still_catches_a_changed_content(version: str) -> None:
    builder = RoomBuilder(version)
    builder.create_room("@alice:example.org")
    event = builder.send("m.room.message", "@alice:example.org", {"body": "hi"})
    changed = parse_event(dict(event.pdu, content={"body": "changed"}), version)
    assert changed.content_hash == content_hash_bytes(changed.pdu)
    assert not check_content_hash(changed)
    assert not check_content_hash(changed.pdu)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=15,
)


@pytest.mark.parametrize(
    ("strict", "integral_floats"), [(False, True), (True, True), (True, False)]
)
@given(value=st.dictionaries(st.text(max_size=6), _JSON, max_size=6))
def test_members_join_to_the_whole_encoding(
    strict: bool, integral_floats: bool, value: dict[str, Any]
) -> None:
    whole = whole_or_same_error(canonical_json_members, value, strict, integral_floats)
    if whole is None:
        return
    encoded, members = canonical_json_members(value, strict=strict, integral_floats=integral_floats)
    assert encoded == whole
    assert set(members) == set(value)


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
