"""Edge cases of the event format and of redaction, one table per case.

* a redaction must name its target (``redacts`` v1-v10, ``content.redacts`` v11+), except the
  redacted form of a v1-v10 redaction, whose target the redaction algorithm removed;
* R11 keeps ``third_party_invite`` as an object holding only ``signed`` (empty without it);
* a PDU without ``content`` is redacted, hashed and signed with ``"content": {}``.

Expected values come from an independent computation (hand-written redaction, Python's
``json`` as canonical JSON, SHA-256) and from pinned vectors.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import pytest
from nacl.signing import SigningKey

from roomserver.core.errors import InvalidEvent
from roomserver.core.hashes import compute_content_hash, compute_event_id
from roomserver.core.pdu import is_create_event, parse_event
from roomserver.core.redaction import redact
from roomserver.core.room_versions import room_version
from roomserver.core.signatures import sign_event, verify_event
from tests.core.helpers import event_ref, valid_pdu

ALL = [str(n) for n in range(1, 13)]
TOP_LEVEL_TARGET = [str(n) for n in range(1, 11)]
CONTENT_TARGET = ["11", "12"]
KEY = SigningKey(b"\x11" * 32)


def _with_hash(pdu: dict[str, Any]) -> dict[str, Any]:
    """``pdu`` with its true content hash (so it is not taken for a redacted form)."""
    pdu["hashes"] = {"sha256": compute_content_hash(pdu)}
    return pdu


def _redaction(version: str, *, top: Any = None, inner: Any = None) -> dict[str, Any]:
    """A redaction PDU with ``redacts`` at top level and/or in content (``None``: absent)."""
    content: dict[str, Any] = {"reason": "spam"}
    if inner is not None:
        content["redacts"] = inner
    pdu = valid_pdu(version, type="m.room.redaction", content=content)
    if top is not None:
        pdu["redacts"] = top
    return _with_hash(pdu)


# -- a redaction must name its target ------------------------------------------------------

MISSING_TARGET = [
    # (name, versions, top-level redacts, content.redacts, field named by the error)
    ("no target at all", TOP_LEVEL_TARGET, None, None, "redacts"),
    ("only content.redacts before v11", TOP_LEVEL_TARGET, None, "TARGET", "redacts"),
    ("no target at all", CONTENT_TARGET, None, None, "content.redacts"),
    ("only top-level redacts from v11", CONTENT_TARGET, "TARGET", None, "content.redacts"),
]


@pytest.mark.parametrize(
    ("version", "top", "inner", "field"),
    [
        pytest.param(v, top, inner, field, id=f"{name}-v{v}")
        for name, versions, top, inner, field in MISSING_TARGET
        for v in versions
    ],
)
def test_redaction_without_target_is_invalid(
    version: str, top: Any, inner: Any, field: str
) -> None:
    target = event_ref(version, 9)
    pdu = _redaction(
        version,
        top=target if top == "TARGET" else None,
        inner=target if inner == "TARGET" else None,
    )
    with pytest.raises(InvalidEvent) as info:
        parse_event(pdu, version)
    assert info.value.field == field
    assert "missing" in info.value.reason


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("value", [None, "", 5, ["$x"], {"id": "$x"}])
def test_redaction_target_null_or_malformed_is_invalid(version: str, value: Any) -> None:
    rules = room_version(version)
    pdu = valid_pdu(version, type="m.room.redaction", content={})
    if rules.redacts_in_content:
        pdu["content"]["redacts"] = value
    else:
        pdu["redacts"] = value
    with pytest.raises(InvalidEvent) as info:
        parse_event(_with_hash(pdu), version)
    assert info.value.field == ("content.redacts" if rules.redacts_in_content else "redacts")


@pytest.mark.parametrize("version", ALL)
def test_redaction_with_its_target_parses(version: str) -> None:
    target = event_ref(version, 9)
    in_content = room_version(version).redacts_in_content
    pdu = _redaction(version, inner=target) if in_content else _redaction(version, top=target)
    assert parse_event(pdu, version).redacts == target


@pytest.mark.parametrize("version", TOP_LEVEL_TARGET)
def test_redacted_form_of_a_v1_to_v10_redaction_still_parses(version: str) -> None:
    """The redaction algorithm drops the top-level ``redacts``: a stored redacted redaction, or
    one used redacted after a content hash mismatch, has no target and must still parse."""
    target = event_ref(version, 9)
    full = _redaction(version, top=target)
    redacted = redact(full, version)
    assert "redacts" not in redacted
    event_id = parse_event(full, version).event_id
    for kwargs in ({}, {"event_id": event_id}):
        event = parse_event(redacted, version, **kwargs)
        assert event.redacts is None
        assert event.event_id == event_id  # redaction keeps the reference hash


@pytest.mark.parametrize("version", CONTENT_TARGET)
def test_redacted_form_of_a_v11_redaction_keeps_its_target(version: str) -> None:
    target = event_ref(version, 9)
    redacted = redact(_redaction(version, inner=target), version)
    assert redacted["content"] == {"redacts": target}
    assert parse_event(redacted, version).redacts == target


@pytest.mark.parametrize("version", CONTENT_TARGET)
def test_v11_redaction_without_content_target_is_invalid_even_with_a_bad_hash(
    version: str,
) -> None:
    """From v11 redaction keeps ``content.redacts``: no form of a valid redaction lacks it."""
    pdu = valid_pdu(version, type="m.room.redaction", content={}, hashes={"sha256": "bm9wZQ"})
    with pytest.raises(InvalidEvent) as info:
        parse_event(pdu, version)
    assert info.value.field == "content.redacts"


# -- R11: third_party_invite keeps only "signed" -------------------------------------------


def _invite_pdu(version: str, third_party_invite: Any) -> dict[str, Any]:
    return valid_pdu(
        version,
        type="m.room.member",
        state_key="@bob:example.org",
        content={
            "membership": "invite",
            "displayname": "Bob",
            "third_party_invite": third_party_invite,
        },
    )


def _oracle_id(pdu: dict[str, Any], redacted_content: dict[str, Any]) -> str:
    """The v11+ event ID the obvious way: R11 top-level keys, the given content, SHA-256."""
    keep = {
        "event_id", "type", "room_id", "sender", "state_key", "hashes", "depth",
        "prev_events", "auth_events", "origin_server_ts",
    }  # fmt: skip
    redacted = {k: v for k, v in pdu.items() if k in keep and k != "event_id"}
    redacted["content"] = redacted_content
    text = json.dumps(redacted, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(text.encode()).digest()
    return "$" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


THIRD_PARTY_INVITE_REDACTION = [
    # (name, third_party_invite, what R11 keeps of it; None: the key is dropped)
    ("signed only", {"display_name": "B", "signed": {"token": "t"}}, {"signed": {"token": "t"}}),
    ("no signed key", {"display_name": "B"}, {}),
    ("empty object", {}, {}),
    ("signed null", {"signed": None}, {"signed": None}),
    ("a string", "text", None),
    ("a list", [{"signed": {}}], None),
]


@pytest.mark.parametrize("version", CONTENT_TARGET)
@pytest.mark.parametrize(
    ("third_party_invite", "kept"),
    [pytest.param(t, k, id=name) for name, t, k in THIRD_PARTY_INVITE_REDACTION],
)
def test_r11_third_party_invite_redaction_and_event_id(
    version: str, third_party_invite: Any, kept: Any
) -> None:
    pdu = _invite_pdu(version, third_party_invite)
    expected_content: dict[str, Any] = {"membership": "invite"}
    if kept is not None:
        expected_content["third_party_invite"] = kept
    assert redact(pdu, version)["content"] == expected_content
    assert compute_event_id(pdu, version) == _oracle_id(pdu, expected_content)


@pytest.mark.parametrize("version", ["1", "9", "10"])
def test_before_r11_third_party_invite_is_not_kept(version: str) -> None:
    pdu = _invite_pdu(version, {"display_name": "B", "signed": {"token": "t"}})
    assert redact(pdu, version)["content"] == {"membership": "invite"}


def test_third_party_invite_without_signed_event_id_vector() -> None:
    """Pinned: the empty object kept by R11 is part of the reference hash (v11 and v12 alike).
    Dropping the key instead would give another ID (the last assertion)."""
    pdu = {
        "type": "m.room.member",
        "room_id": "!room:example.org",
        "sender": "@alice:example.org",
        "state_key": "@bob:example.org",
        "content": {"membership": "invite", "third_party_invite": {"display_name": "Bob"}},
        "origin_server_ts": 1_700_000_000_000,
        "depth": 7,
        "prev_events": ["$" + "a" * 43],
        "auth_events": ["$" + "b" * 43],
        "hashes": {"sha256": "aGFzaA"},
        "signatures": {"example.org": {"ed25519:a": "c2ln"}},
    }
    expected = "$DarQNeochn5JLKVOrt76MWUjin2KhvN4okorlexfOAk"
    assert compute_event_id(pdu, "11") == expected
    assert compute_event_id(pdu, "12") == expected
    assert _oracle_id(pdu, {"membership": "invite", "third_party_invite": {}}) == expected
    assert _oracle_id(pdu, {"membership": "invite"}) != expected


# -- a PDU without content ----------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_pdu_without_content_is_redacted_with_empty_content(version: str) -> None:
    pdu = valid_pdu(version)
    del pdu["content"]
    assert redact(pdu, version)["content"] == {}
    with_empty = {**copy.deepcopy(pdu), "content": {}}
    assert compute_event_id(pdu, version) == compute_event_id(with_empty, version)


@pytest.mark.parametrize("version", ALL)
def test_pdu_without_content_is_signed_over_empty_content(version: str) -> None:
    pdu = valid_pdu(version)
    del pdu["content"]
    del pdu["hashes"], pdu["signatures"], pdu["unsigned"]
    signed = sign_event(
        pdu, server_name="example.org", signing_key=KEY, key_id="ed25519:k", room_version=version
    )
    assert "content" not in signed  # the event itself is not changed
    # What was signed: the redacted form, with "content": {}.
    redacted = redact(signed, version)
    assert redacted["content"] == {}
    del redacted["signatures"]
    message = json.dumps(redacted, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    signature = base64.b64decode(signed["signatures"]["example.org"]["ed25519:k"] + "==")
    KEY.verify_key.verify(message.encode(), signature)
    verify_event(
        signed,
        room_version=version,
        verify_keys={"example.org": {"ed25519:k": KEY.verify_key}},
    )
    # And it is still not a valid event: the format requires content.
    with pytest.raises(InvalidEvent) as info:
        parse_event(signed, version)
    assert info.value.field == "content"


# -- which events are create events ---------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("event_type", "state_key", "expected"),
    [
        ("m.room.create", "", True),
        ("m.room.create", None, False),
        ("m.room.create", "x", False),
        ("m.room.create", " ", False),
        ("m.room.member", "", False),
        ("m.room.create ", "", False),
    ],
)
def test_is_create_event(
    version: str, event_type: str, state_key: str | None, expected: bool
) -> None:
    overrides: dict[str, Any] = {"type": event_type, "content": {}}
    if state_key is not None:
        overrides["state_key"] = state_key
    event = parse_event(valid_pdu(version, **overrides), version)
    assert is_create_event(event) is expected
