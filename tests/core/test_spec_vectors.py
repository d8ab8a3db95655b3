"""The spec appendix vectors: canonical JSON, unpadded base64, signing JSON, signing events."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from nacl.signing import SigningKey

from roomserver.core.base64 import decode_base64, encode_base64
from roomserver.core.canonical_json import canonical_json
from roomserver.core.errors import InvalidSignature
from roomserver.core.hashes import compute_content_hash, reference_hash
from roomserver.core.redaction import redacted_view
from roomserver.core.room_versions import room_version
from roomserver.core.signatures import sign_event, sign_json, verify_event, verify_json
from tests.core import vectors as v

CANONICAL_CASES = [
    ("{}", b"{}"),
    ('{"one": 1, "two": "Two"}', b'{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', b'{"a":"1","b":"2"}'),
    (
        """{"auth": {"success": true, "mxid": "@john.doe:example.com",
            "profile": {"display_name": "John Doe", "three_pids": [
              {"medium": "email", "address": "john.doe@example.org"},
              {"medium": "msisdn", "address": "123456789"}]}}}""",
        b'{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        b'"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        b'{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'.encode()),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'.encode()),
    ('{"a": "\\u65E5"}', '{"a":"日"}'.encode()),
    ('{"a": null}', b'{"a":null}'),
    ('{"a": -0, "b": 1e10}', b'{"a":0,"b":10000000000}'),
]


@pytest.mark.parametrize(("text", "expected"), CANONICAL_CASES)
def test_canonical_json_spec_examples(text: str, expected: bytes) -> None:
    assert canonical_json(json.loads(text)) == expected
    if "1e10" not in text:
        assert canonical_json(json.loads(text), strict=False) == expected


def test_lax_canonical_json_keeps_floats_as_written_by_python() -> None:
    # Room versions 1-5 only need to reproduce the bytes old events were signed over.
    assert canonical_json(json.loads('{"a": -0, "b": 1e10}'), strict=False) == (
        b'{"a":0,"b":10000000000.0}'
    )
    assert canonical_json({"ban": 50.0, "x": 0.1}, strict=False) == b'{"ban":50.0,"x":0.1}'


BASE64_CASES = [
    (b"", ""),
    (b"f", "Zg"),
    (b"fo", "Zm8"),
    (b"foo", "Zm9v"),
    (b"foob", "Zm9vYg"),
    (b"fooba", "Zm9vYmE"),
    (b"foobar", "Zm9vYmFy"),
]


@pytest.mark.parametrize(("raw", "encoded"), BASE64_CASES)
def test_unpadded_base64_spec_examples(raw: bytes, encoded: str) -> None:
    assert encode_base64(raw) == encoded
    assert decode_base64(encoded) == raw
    # Decoders should accept padded input too.
    assert decode_base64(encoded + "=" * (-len(encoded) % 4)) == raw


def test_url_safe_base64_alphabet() -> None:
    raw = bytes([0xFB, 0xFF, 0xBF])
    assert encode_base64(raw) == "+/+/"
    assert encode_base64(raw, url_safe=True) == "-_-_"
    assert decode_base64("-_-_") == raw == decode_base64("+/+/")


@pytest.mark.parametrize("bad", ["Z", "Zm9v!", "Zm9vY", "日本"])
def test_base64_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_base64(bad)


def test_signing_key_vector() -> None:
    assert encode_base64(bytes(v.signing_key().verify_key)) == v.PUBLIC_KEY


@pytest.mark.parametrize(
    ("value", "signature"),
    [
        (
            {},
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ",
        ),
        (
            {"one": 1, "two": "Two"},
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw",
        ),
    ],
)
def test_sign_json_vectors(value: dict[str, Any], signature: str) -> None:
    signed = sign_json(value, server_name=v.SERVER, signing_key=v.signing_key(), key_id=v.KEY_ID)
    assert signed == {**value, "signatures": {v.SERVER: {v.KEY_ID: signature}}}
    keys = {v.KEY_ID: v.signing_key().verify_key}
    verify_json(signed, server_name=v.SERVER, verify_keys=keys)


def _sign(pdu: dict[str, Any], version: str) -> dict[str, Any]:
    return sign_event(
        pdu,
        server_name=v.SERVER,
        signing_key=v.signing_key(),
        key_id=v.KEY_ID,
        room_version=version,
    )


@pytest.mark.parametrize("version", v.PRE_R11_VERSIONS)
def test_sign_minimal_event_vector(version: str) -> None:
    signed = _sign(v.minimal_event(), version)
    expected = {
        **v.minimal_event(),
        "hashes": {"sha256": v.MINIMAL_HASH},
        "signatures": {v.SERVER: {v.KEY_ID: v.MINIMAL_SIG}},
    }
    assert signed == expected  # every other field, unsigned included, unchanged


@pytest.mark.parametrize("version", ["1", "2"])
def test_sign_message_event_vector(version: str) -> None:
    # The vector carries an event_id, which only room versions 1-2 keep in the PDU.
    signed = _sign(v.message_event(), version)
    expected = {
        **v.message_event(),
        "hashes": {"sha256": v.MESSAGE_HASH},
        "signatures": {v.SERVER: {v.KEY_ID: v.MESSAGE_SIG}},
    }
    assert signed == expected


@pytest.mark.parametrize("version", v.R11_VERSIONS)
def test_sign_minimal_event_r11_regression(version: str) -> None:
    signed = _sign(v.minimal_event(), version)
    assert signed["hashes"] == {"sha256": v.MINIMAL_HASH}
    assert signed["signatures"] == {v.SERVER: {v.KEY_ID: v.MINIMAL_SIG_R11}}


def test_message_event_r11_regression() -> None:
    # Derived data: the R11 form of the signed vector, event_id kept as the vector has it.
    signed = _sign(v.message_event(), "1")
    redacted = redacted_view(signed, room_version("11"))
    redacted.pop("signatures")
    assert "origin" not in redacted and "event_id" in redacted
    signature = v.signing_key().sign(canonical_json(redacted)).signature
    assert encode_base64(signature) == v.MESSAGE_SIG_R11
    assert encode_base64(hashlib.sha256(canonical_json(redacted)).digest()) == v.MESSAGE_REF_R11


def test_content_hash_vectors() -> None:
    assert compute_content_hash(v.minimal_event()) == v.MINIMAL_HASH
    assert compute_content_hash(v.message_event()) == v.MESSAGE_HASH


@pytest.mark.parametrize("version", v.PRE_R11_VERSIONS)
def test_signed_vectors_verify(version: str) -> None:
    keys = {v.SERVER: {v.KEY_ID: v.signing_key().verify_key}}
    signed = _sign(v.minimal_event(), version)
    verify_event(signed, room_version=version, verify_keys=keys)
    if version in ("1", "2"):
        verify_event(_sign(v.message_event(), version), room_version=version, verify_keys=keys)
    # The same vector with a signed field changed, or under another key, does not verify.
    with pytest.raises(InvalidSignature):
        verify_event(
            {**signed, "origin_server_ts": signed["origin_server_ts"] + 1},
            room_version=version,
            verify_keys=keys,
        )
    other = {v.SERVER: {v.KEY_ID: SigningKey(b"\x09" * 32).verify_key}}
    with pytest.raises(InvalidSignature):
        verify_event(signed, room_version=version, verify_keys=other)


def test_reference_hash_regression_data() -> None:
    minimal_v1 = _sign(v.minimal_event(), "1")
    assert encode_base64(reference_hash(minimal_v1, room_version("1"))) == v.MINIMAL_REF_PRE_R11
    minimal_v11 = _sign(v.minimal_event(), "11")
    digest = reference_hash(minimal_v11, room_version("11"))
    assert encode_base64(digest) == v.MINIMAL_REF_R11_STD
    assert encode_base64(digest, url_safe=True) == v.MINIMAL_REF_R11_URL
    message_v1 = _sign(v.message_event(), "1")
    digest = reference_hash(message_v1, room_version("1"))
    assert encode_base64(digest) == v.MESSAGE_REF_PRE_R11_STD
    assert encode_base64(digest, url_safe=True) == v.MESSAGE_REF_PRE_R11_URL
