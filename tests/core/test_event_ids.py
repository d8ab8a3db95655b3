"""Event IDs per room version and v12 room IDs, checked against an independent computation.

The oracle follows the spec's recipe directly: redact by hand, drop signatures, Python's
``json.dumps`` as the spec's canonical JSON equivalent, SHA-256, unpadded base64.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from nacl.signing import SigningKey

from roomserver.core.errors import InvalidEvent
from roomserver.core.hashes import (
    compute_event_id,
    compute_room_id,
    room_id_from_create_event_id,
)
from roomserver.core.identifiers import is_valid_event_id, is_valid_room_id
from roomserver.core.pdu import parse_event
from roomserver.core.signatures import sign_event
from roomserver.testing.builder import RoomBuilder
from tests.core import vectors as v
from tests.core.helpers import valid_pdu

PRE_R11_TOP = {
    "event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "depth",
    "prev_events", "prev_state", "auth_events", "origin", "origin_server_ts", "membership",
}  # fmt: skip
R11_TOP = PRE_R11_TOP - {"origin", "membership", "prev_state"}


def oracle_event_id(pdu: dict[str, Any], *, r11: bool, url_safe: bool) -> str:
    """Reference hash of a message/create event the slow, obvious way."""
    keep = R11_TOP if r11 else PRE_R11_TOP
    redacted = {k: val for k, val in pdu.items() if k in keep and k != "event_id"}
    if pdu["type"] == "m.room.create":
        redacted["content"] = dict(pdu["content"]) if r11 else {}
    else:
        redacted["content"] = {}
    text = json.dumps(redacted, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(text.encode()).digest()
    encoded = (base64.urlsafe_b64encode if url_safe else base64.b64encode)(digest)
    return "$" + encoded.decode().rstrip("=")


def _signed(pdu: dict[str, Any], version: str) -> dict[str, Any]:
    return sign_event(
        pdu,
        server_name="example.org",
        signing_key=SigningKey(b"\x05" * 32),
        key_id="ed25519:k",
        room_version=version,
    )


def _with_both_alphabets(version: str) -> dict[str, Any]:
    """A signed event whose reference hash contains '+' or '/' in standard base64."""
    for depth in range(1, 200):
        pdu = _signed(valid_pdu(version, depth=depth), version)
        oracle = oracle_event_id(pdu, r11=False, url_safe=False)
        if "+" in oracle or "/" in oracle:
            return pdu
    raise AssertionError("no such event found")  # pragma: no cover


@pytest.mark.parametrize("version", ["1", "2"])
def test_v1_v2_event_id_is_server_assigned(version: str) -> None:
    pdu = valid_pdu(version, event_id="$abc123:other.example")
    assert compute_event_id(pdu, version) == "$abc123:other.example"
    assert parse_event(pdu, version).event_id == "$abc123:other.example"


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(
    "bad", [None, 5, "abc:domain", "$nodomain", "$x:bad_host", "$x:" + "a" * 253]
)
def test_v1_v2_event_id_must_be_present_and_valid(version: str, bad: Any) -> None:
    pdu = valid_pdu(version)
    if bad is None:
        del pdu["event_id"]
    else:
        pdu["event_id"] = bad
    with pytest.raises(InvalidEvent) as info:
        parse_event(pdu, version)
    assert info.value.field == "event_id"


def test_v3_event_id_standard_base64() -> None:
    pdu = _with_both_alphabets("3")
    expected = oracle_event_id(pdu, r11=False, url_safe=False)
    assert compute_event_id(pdu, "3") == expected
    assert parse_event(pdu, "3").event_id == expected
    assert is_valid_event_id(expected, format_name="base64")
    assert not is_valid_event_id(expected, format_name="url_safe_base64")


@pytest.mark.parametrize("version", [str(n) for n in range(4, 11)])
def test_v4_plus_event_id_url_safe_base64(version: str) -> None:
    pdu = _with_both_alphabets(version)
    expected = oracle_event_id(pdu, r11=False, url_safe=True)
    assert "-" in expected or "_" in expected
    assert compute_event_id(pdu, version) == expected
    assert parse_event(pdu, version).event_id == expected
    assert not is_valid_event_id(expected, format_name="base64")


@pytest.mark.parametrize("version", ["11", "12"])
def test_r11_event_id(version: str) -> None:
    pdu = _signed(valid_pdu(version), version)
    pdu["origin"] = "example.org"  # not covered by R11
    assert compute_event_id(pdu, version) == oracle_event_id(pdu, r11=True, url_safe=True)


def test_spec_vector_event_ids() -> None:
    """Derived regression data: IDs of the appendix's minimal event under v3 and v11."""
    key = v.signing_key()
    for version, expected in (
        ("3", "$" + v.MINIMAL_REF_PRE_R11),
        ("4", "$" + v.MINIMAL_REF_PRE_R11),
        ("11", "$" + v.MINIMAL_REF_R11_URL),
        ("12", "$" + v.MINIMAL_REF_R11_URL),
    ):
        signed = sign_event(
            v.minimal_event(),
            server_name=v.SERVER,
            signing_key=key,
            key_id=v.KEY_ID,
            room_version=version,
        )
        assert compute_event_id(signed, version) == expected


@pytest.mark.parametrize("version", [str(n) for n in range(3, 13)])
def test_stray_event_id_is_ignored_from_v3(version: str) -> None:
    pdu = valid_pdu(version)
    with_stray = {**pdu, "event_id": "$stray:example.org"}
    assert compute_event_id(with_stray, version) == compute_event_id(pdu, version)
    event = parse_event(with_stray, version)
    assert event.event_id == compute_event_id(pdu, version)
    assert "event_id" not in event.pdu


def test_event_id_changes_with_signed_fields_not_with_unsigned() -> None:
    pdu = valid_pdu("10")
    base = compute_event_id(pdu, "10")
    assert compute_event_id({**pdu, "unsigned": {"age": 99}}, "10") == base
    assert compute_event_id({**pdu, "signatures": {}}, "10") == base
    assert compute_event_id({**pdu, "content": {"body": "other"}}, "10") == base  # redacted away
    assert compute_event_id({**pdu, "depth": 6}, "10") != base
    assert compute_event_id({**pdu, "hashes": {"sha256": "b3RoZXI"}}, "10") != base


def _v12_create(extra_content: dict[str, Any] | None = None) -> dict[str, Any]:
    pdu = {
        "type": "m.room.create",
        "state_key": "",
        "sender": "@alice:example.org",
        "content": {"room_version": "12", **(extra_content or {})},
        "origin_server_ts": 1_700_000_000_000,
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
    }
    return _signed(pdu, "12")


def test_v12_room_id_from_create_event() -> None:
    create = _v12_create()
    event_id = compute_event_id(create, "12")
    assert event_id == oracle_event_id(create, r11=True, url_safe=True)
    room_id = "!" + event_id[1:]
    assert compute_room_id(create, "12") == room_id
    assert room_id_from_create_event_id(event_id) == room_id
    assert is_valid_room_id(room_id, hashed=True)
    assert not is_valid_room_id(room_id)  # not "!opaque:domain"
    event = parse_event(create, "12")
    assert (event.event_id, event.room_id) == (event_id, room_id)
    # The whole create content is covered: a random key gives another room.
    other = _v12_create({"nonce": "x"})
    assert compute_room_id(other, "12") != room_id


def test_v12_room_built_by_builder_uses_derived_room_id() -> None:
    b = RoomBuilder("12")
    create, join, *_ = b.create_room("@alice:example.org")
    assert create.room_id == "!" + create.event_id[1:]
    assert join.room_id == create.room_id
    assert "room_id" not in create.pdu


def test_compute_room_id_refuses_older_versions() -> None:
    with pytest.raises(ValueError):
        compute_room_id(_v12_create(), "11")
