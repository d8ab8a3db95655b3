"""Signature verification (matrix-spec-notes §8.3, §9) and the content hash check."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from nacl.signing import SigningKey, VerifyKey

from roomserver.core.base64 import decode_base64, encode_base64
from roomserver.core.errors import InvalidEvent, InvalidSignature
from roomserver.core.hashes import compute_content_hash
from roomserver.core.pdu import parse_event
from roomserver.core.redaction import redact
from roomserver.core.room_versions import room_version
from roomserver.core.signatures import (
    check_content_hash,
    required_signers,
    sign_event,
    sign_json,
    verify_event,
    verify_json,
)
from tests.core.helpers import valid_pdu

ALL = [str(n) for n in range(1, 13)]
TS = 1_700_000_000_000
DAY_MS = 24 * 60 * 60 * 1000

KEYS = {
    "example.org": ("ed25519:a", SigningKey(b"\x01" * 32)),
    "other.org": ("ed25519:b", SigningKey(b"\x02" * 32)),
    "auth.org": ("ed25519:c", SigningKey(b"\x03" * 32)),
}


def verify_keys(*servers: str) -> dict[str, dict[str, VerifyKey]]:
    return {s: {KEYS[s][0]: KEYS[s][1].verify_key} for s in servers}


def sign(pdu: dict[str, Any], version: str, *servers: str) -> dict[str, Any]:
    for server in servers or ("example.org",):
        key_id, key = KEYS[server]
        pdu = sign_event(
            pdu, server_name=server, signing_key=key, key_id=key_id, room_version=version
        )
    return pdu


def unsigned_pdu(version: str, **overrides: Any) -> dict[str, Any]:
    pdu = valid_pdu(version, origin_server_ts=TS, **overrides)
    pdu.pop("signatures")
    pdu.pop("hashes")
    return pdu


def reason_of(pdu: Any, version: str, keys: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidSignature) as info:
        verify_event(pdu, room_version=version, verify_keys=keys, **kwargs)
    assert isinstance(info.value, InvalidEvent)  # an invalid signature is an invalid event
    return info.value.reason


@pytest.mark.parametrize("version", ALL)
def test_good_event_verifies(version: str) -> None:
    pdu = sign(unsigned_pdu(version), version)
    verify_event(pdu, room_version=version, verify_keys=verify_keys("example.org"))
    assert check_content_hash(pdu)
    event = parse_event(pdu, version)
    assert check_content_hash(event)
    verify_event(event.pdu, room_version=version, verify_keys=verify_keys("example.org"))


@pytest.mark.parametrize("version", ALL)
def test_tampered_content_is_a_hash_mismatch_not_a_bad_signature(version: str) -> None:
    pdu = sign(unsigned_pdu(version), version)
    pdu["content"]["body"] = "tampered"
    # Message content is not covered by the signature (it is redacted away) ...
    verify_event(pdu, room_version=version, verify_keys=verify_keys("example.org"))
    # ... but by the content hash: the event must be used redacted.
    assert not check_content_hash(pdu)
    redacted = redact(pdu, version)
    verify_event(redacted, room_version=version, verify_keys=verify_keys("example.org"))
    assert redacted["content"] == {}


@pytest.mark.parametrize("version", ALL)
def test_tampered_protected_field_fails(version: str) -> None:
    member = unsigned_pdu(
        version,
        type="m.room.member",
        state_key="@alice:example.org",
        content={"membership": "join"},
    )
    for field, value in (("depth", 6), ("sender", "@mallory:example.org"), ("type", "m.room.name")):
        pdu = sign(copy.deepcopy(member), version)
        pdu[field] = value
        keys = verify_keys("example.org")
        assert "does not verify" in reason_of(pdu, version, keys)
    pdu = sign(copy.deepcopy(member), version)
    pdu["content"]["membership"] = "ban"  # protected content
    assert "does not verify" in reason_of(pdu, version, verify_keys("example.org"))


@pytest.mark.parametrize("version", ALL)
def test_tampered_signature_fails(version: str) -> None:
    pdu = sign(unsigned_pdu(version), version)
    raw = bytearray(decode_base64(pdu["signatures"]["example.org"]["ed25519:a"]))
    raw[0] ^= 1
    pdu["signatures"]["example.org"]["ed25519:a"] = encode_base64(bytes(raw))
    reason = reason_of(pdu, version, verify_keys("example.org"))
    assert "signatures.example.org.ed25519:a" in reason and "does not verify" in reason
    for bad in ("not base64!", "", 5, encode_base64(b"short")):
        pdu["signatures"]["example.org"]["ed25519:a"] = bad
        reason_of(pdu, version, verify_keys("example.org"))


@pytest.mark.parametrize("version", ALL)
def test_wrong_key_fails(version: str) -> None:
    pdu = sign(unsigned_pdu(version), version)
    keys = {"example.org": {"ed25519:a": KEYS["other.org"][1].verify_key}}
    assert "does not verify" in reason_of(pdu, version, keys)


@pytest.mark.parametrize("version", ALL)
def test_missing_required_signer(version: str) -> None:
    pdu = sign(unsigned_pdu(version), version, "other.org")
    reason = reason_of(pdu, version, verify_keys("example.org", "other.org"))
    assert "missing a signature from example.org (the sender's server)" in reason
    no_signatures = {**pdu, "signatures": {}}
    reason_of(no_signatures, version, verify_keys("example.org"))
    reason_of({**pdu, "signatures": {"example.org": {}}}, version, verify_keys("example.org"))


@pytest.mark.parametrize("version", ALL)
def test_unknown_key_ids_are_skipped_but_one_must_verify(version: str) -> None:
    pdu = sign(unsigned_pdu(version), version)
    good = pdu["signatures"]["example.org"]["ed25519:a"]
    # Only signatures under keys we do not have: nothing verifiable.
    only_unknown = copy.deepcopy(pdu)
    only_unknown["signatures"]["example.org"] = {"ed25519:zzz": good, "curve25519:q": good}
    reason = reason_of(only_unknown, version, verify_keys("example.org"))
    assert "no verifiable signature from example.org" in reason
    assert "ed25519:zzz: no known key" in reason and "curve25519:q: unknown algorithm" in reason
    # An unknown key ID next to a good signature is skipped, whatever its value.
    extra = copy.deepcopy(pdu)
    extra["signatures"]["example.org"]["ed25519:zzz"] = "garbage"
    extra["signatures"]["example.org"]["ed25519:b"] = "more garbage"
    verify_event(extra, room_version=version, verify_keys=verify_keys("example.org"))
    # An unknown algorithm is skipped even if a key is (oddly) registered under its ID.
    odd_keys = {
        "example.org": {
            "ed25519:a": KEYS["example.org"][1].verify_key,
            "curve25519:q": KEYS["other.org"][1].verify_key,
        }
    }
    extra["signatures"]["example.org"]["curve25519:q"] = "x"
    verify_event(extra, room_version=version, verify_keys=odd_keys)


@pytest.mark.parametrize("version", ALL)
def test_every_known_key_must_verify(version: str) -> None:
    pdu = sign(unsigned_pdu(version), version)
    second = SigningKey(b"\x09" * 32)
    keys = {
        "example.org": {
            "ed25519:a": KEYS["example.org"][1].verify_key,
            "ed25519:second": second.verify_key,
        }
    }
    # A signature made by another key does not verify under ed25519:second.
    sigs = pdu["signatures"]["example.org"]
    sigs["ed25519:second"] = sigs["ed25519:a"]
    assert "signatures.example.org.ed25519:second" in reason_of(pdu, version, keys)
    both = sign_event(
        sign(unsigned_pdu(version), version),
        server_name="example.org",
        signing_key=second,
        key_id="ed25519:second",
        room_version=version,
    )
    verify_event(both, room_version=version, verify_keys=keys)


@pytest.mark.parametrize("version", ["1", "2"])
def test_v1_v2_event_id_server_must_sign(version: str) -> None:
    pdu = unsigned_pdu(version, event_id="$abc:other.org")
    assert required_signers(pdu, room_version(version)) == {"example.org", "other.org"}
    only_sender = sign(pdu, version, "example.org")
    reason = reason_of(only_sender, version, verify_keys("example.org", "other.org"))
    assert "other.org (the event ID's server)" in reason
    both = sign(pdu, version, "example.org", "other.org")
    verify_event(both, room_version=version, verify_keys=verify_keys("example.org", "other.org"))
    # The keys of the event ID's server are needed too.
    assert "other.org" in reason_of(both, version, verify_keys("example.org"))


@pytest.mark.parametrize("version", [str(n) for n in range(3, 13)])
def test_event_id_server_not_required_from_v3(version: str) -> None:
    pdu = sign(unsigned_pdu(version, event_id="$abc:other.org"), version)
    assert required_signers(pdu, room_version(version)) == {"example.org"}
    verify_event(pdu, room_version=version, verify_keys=verify_keys("example.org"))


def _restricted_join(version: str, membership: str = "join") -> dict[str, Any]:
    return unsigned_pdu(
        version,
        type="m.room.member",
        sender="@bob:example.org",
        state_key="@bob:example.org",
        content={"membership": membership, "join_authorised_via_users_server": "@c:auth.org"},
    )


@pytest.mark.parametrize("version", ALL)
def test_restricted_join_authoriser_must_sign_from_v8(version: str) -> None:
    rules = room_version(version)
    pdu = _restricted_join(version)
    keys = verify_keys("example.org", "auth.org")
    if rules.restricted_joins:
        assert required_signers(pdu, rules) == {"example.org", "auth.org"}
        reason = reason_of(sign(pdu, version), version, keys)
        assert "auth.org (the restricted join's authoriser)" in reason
        verify_event(
            sign(pdu, version, "example.org", "auth.org"), room_version=version, verify_keys=keys
        )
    else:
        assert required_signers(pdu, rules) == {"example.org"}
        verify_event(sign(pdu, version), room_version=version, verify_keys=keys)


@pytest.mark.parametrize("version", ["8", "10", "12"])
def test_authoriser_only_matters_on_joins(version: str) -> None:
    for membership in ("invite", "leave", "knock"):
        pdu = _restricted_join(version, membership)
        assert required_signers(pdu, room_version(version)) == {"example.org"}
    not_a_user = _restricted_join(version)
    not_a_user["content"]["join_authorised_via_users_server"] = "auth.org"
    assert required_signers(not_a_user, room_version(version)) == {"example.org"}


@pytest.mark.parametrize("version", ALL)
def test_third_party_invite_waives_the_senders_server(version: str) -> None:
    pdu = unsigned_pdu(
        version,
        type="m.room.member",
        state_key="@carol:elsewhere.org",
        content={"membership": "invite", "third_party_invite": {"signed": {"token": "t"}}},
    )
    rules = room_version(version)
    expected = {"example.org"} if rules.event_id_server_signature else set()  # event ID server
    assert required_signers(pdu, rules) == expected
    signed = sign(pdu, version, "other.org")
    if expected:
        reason_of(signed, version, verify_keys("example.org", "other.org"))
    else:
        verify_event(signed, room_version=version, verify_keys={})


def test_required_signers_and_verify_event_accept_events() -> None:
    pdu = sign(unsigned_pdu("1", event_id="$x:other.org"), "1", "example.org", "other.org")
    event = parse_event(pdu, "1")
    assert required_signers(event, room_version("1")) == {"example.org", "other.org"}
    verify_event(event, room_version="1", verify_keys=verify_keys("example.org", "other.org"))
    with pytest.raises(InvalidSignature):
        verify_event(event, room_version="1", verify_keys=verify_keys("example.org"))


@pytest.mark.parametrize("version", ALL)
def test_key_validity_from_v5_only(version: str) -> None:
    rules = room_version(version)
    pdu = sign(unsigned_pdu(version), version)
    keys = verify_keys("example.org")

    def check(valid_until: int, now_ms: int | None = None) -> None:
        verify_event(
            pdu,
            room_version=version,
            verify_keys=keys,
            now_ms=now_ms,
            key_validity={"example.org": {"ed25519:a": valid_until}},
        )

    check(TS)  # valid until exactly the event's timestamp: usable
    check(TS + 10 * DAY_MS, now_ms=TS - DAY_MS)  # capped at now + 7 days, still >= TS
    if rules.enforce_key_validity:
        with pytest.raises(InvalidSignature, match="before the event's timestamp"):
            check(TS - 1)
        with pytest.raises(InvalidSignature):
            check(TS + 10 * DAY_MS, now_ms=TS - 8 * DAY_MS)  # cap: now + 7 days < TS
    else:
        check(TS - 1)  # room versions 1-4 ignore valid_until_ts
        check(TS + 10 * DAY_MS, now_ms=TS - 8 * DAY_MS)


@pytest.mark.parametrize("version", ["5", "10", "12"])
def test_expired_old_key_is_skipped_not_fatal(version: str) -> None:
    old = SigningKey(b"\x0a" * 32)
    pdu = sign(unsigned_pdu(version), version)
    pdu = sign_event(
        pdu, server_name="example.org", signing_key=old, key_id="ed25519:old", room_version=version
    )
    pdu["signatures"]["example.org"]["ed25519:old"] = "would not verify"
    keys = {
        "example.org": {
            "ed25519:a": KEYS["example.org"][1].verify_key,
            "ed25519:old": old.verify_key,
        }
    }
    validity = {"example.org": {"ed25519:old": TS - 1, "ed25519:a": TS + DAY_MS}}
    # The expired key is ignored (its bad signature too); the current one verifies.
    verify_event(pdu, room_version=version, verify_keys=keys, key_validity=validity)
    # Without validity information the bad signature under a known key is fatal.
    reason_of(pdu, version, keys)


@pytest.mark.parametrize("version", [str(n) for n in range(3, 13)])
def test_stray_event_id_does_not_affect_verification(version: str) -> None:
    pdu = sign(unsigned_pdu(version), version)
    verify_event(
        {**pdu, "event_id": "$stray:x"},
        room_version=version,
        verify_keys=verify_keys("example.org"),
    )
    signed_with_stray = sign(unsigned_pdu(version, event_id="$stray:x"), version)
    assert "event_id" not in signed_with_stray
    assert signed_with_stray == pdu


@pytest.mark.parametrize("version", ALL)
def test_garbage_in_is_invalid_signature(version: str) -> None:
    keys = verify_keys("example.org")
    pdu = sign(unsigned_pdu(version), version)
    not_objects: list[Any] = [None, [], "x"]
    for bad in not_objects:
        reason_of(bad, version, keys)
    reason_of({**pdu, "signatures": "x"}, version, keys)
    reason_of({**pdu, "sender": 5}, version, keys)
    reason_of({**pdu, "sender": "nobody"}, version, keys)
    reason_of({**pdu, "content": {"n": float("nan")}, "type": "m.room.create"}, version, keys)


def test_check_content_hash() -> None:
    pdu = sign(unsigned_pdu("10"), "10")
    assert check_content_hash(pdu)
    # Signatures and unsigned are not covered.
    assert check_content_hash({**pdu, "unsigned": {"age": 1}, "signatures": {}})
    # Padded and URL-safe base64 are accepted.
    padded = compute_content_hash(pdu) + "="
    assert check_content_hash({**pdu, "hashes": {"sha256": padded}})
    for hashes in ({}, {"sha256": 5}, {"sha256": "!!"}, {"sha256": "aGFzaA"}, "x", None):
        assert not check_content_hash({**pdu, "hashes": hashes})
    assert not check_content_hash({**pdu, "depth": 99})


def test_verify_json() -> None:
    key_id, key = KEYS["example.org"]
    value = {"server_name": "example.org", "valid_until_ts": TS, "unsigned": {"x": 1}}
    signed = sign_json(value, server_name="example.org", signing_key=key, key_id=key_id)
    keys = {key_id: key.verify_key}
    verify_json(signed, server_name="example.org", verify_keys=keys)
    verify_json(
        {**signed, "unsigned": {"changed": True}}, server_name="example.org", verify_keys=keys
    )
    cases: list[tuple[Any, str, dict[str, VerifyKey]]] = [
        ({**signed, "valid_until_ts": TS + 1}, "example.org", keys),
        (signed, "other.org", keys),
        (signed, "example.org", {}),
        (signed, "example.org", {key_id: KEYS["other.org"][1].verify_key}),
        ({k: val for k, val in signed.items() if k != "signatures"}, "example.org", keys),
        ({**signed, "float": float("inf")}, "example.org", keys),
        ([], "example.org", keys),
    ]
    for value_, server, keys_ in cases:
        with pytest.raises(InvalidSignature):
            verify_json(value_, server_name=server, verify_keys=keys_)


def test_sign_json_keeps_other_signatures() -> None:
    key_id, key = KEYS["example.org"]
    first = sign_json(
        {"a": 1}, server_name="other.org", signing_key=KEYS["other.org"][1], key_id="ed25519:b"
    )
    both = sign_json(first, server_name="example.org", signing_key=key, key_id=key_id)
    assert set(both["signatures"]) == {"other.org", "example.org"}
    verify_json(
        both, server_name="other.org", verify_keys={"ed25519:b": KEYS["other.org"][1].verify_key}
    )
    verify_json(both, server_name="example.org", verify_keys={key_id: key.verify_key})


@pytest.mark.parametrize("version", ["1", "3", "5"])
def test_float_power_levels_of_old_rooms_hash_as_other_servers_wrote_them(version: str) -> None:
    """v1-v5 events may carry floats; their hashes and signatures cover Python's rendering."""
    import hashlib

    import canonicaljson

    content = {"ban": 50.0, "users": {"@alice:example.org": 100.0}, "users_default": 0.5}
    pdu = sign(
        unsigned_pdu(version, type="m.room.power_levels", state_key="", content=content), version
    )
    stripped = {k: val for k, val in pdu.items() if k not in ("hashes", "signatures", "unsigned")}
    oracle = hashlib.sha256(canonicaljson.encode_canonical_json(stripped)).digest()
    assert pdu["hashes"]["sha256"] == encode_base64(oracle)
    assert check_content_hash(pdu)
    verify_event(pdu, room_version=version, verify_keys=verify_keys("example.org"))
    event = parse_event(pdu, version)
    assert event.content["ban"] == 50.0


def test_many_junk_key_ids_do_not_hide_a_good_signature() -> None:
    pdu = sign(unsigned_pdu("10"), "10")
    good = pdu["signatures"]["example.org"]["ed25519:a"]
    junk = {f"curve{i:03d}:x": "junk" for i in range(50)} | {
        f"ed25519:0{i:03d}": "j" for i in range(50)
    }
    pdu["signatures"]["example.org"] = {**junk, "ed25519:a": good}
    verify_event(pdu, room_version="10", verify_keys=verify_keys("example.org"))
    del pdu["signatures"]["example.org"]["ed25519:a"]
    reason = reason_of(pdu, "10", verify_keys("example.org"))
    assert reason.endswith("; ...") and len(reason) < 400
