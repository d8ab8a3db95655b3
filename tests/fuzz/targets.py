"""Fuzz targets: each takes arbitrary bytes and checks the module's one invariant, "any input
parses or raises the one documented error type" (plus a round trip where there is one).

A target returns normally when the invariant holds and raises anything else (an unexpected
exception type, or ``AssertionError``) when it does not. They are plain functions: the
coverage-guided fuzzer (``tests/fuzz/run_atheris.py``) calls them, and so does the corpus
regression test (``tests/fuzz/test_corpus.py``) for every input kept under ``corpus/<target>/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from roomserver.api import (
    EventResult,
    InputRoomEvent,
    WireFormatError,
    decode_event_result,
    decode_event_results,
    decode_input_message,
    decode_input_room_event,
    decode_output_event,
    encode_event_result,
    encode_event_results,
    encode_input_batch,
    encode_input_room_event,
    encode_output_event,
)
from roomserver.core.canonical_json import canonical_json
from roomserver.core.errors import CanonicalJSONError, InvalidEvent
from roomserver.core.pdu import parse_event
from roomserver.core.room_versions import KNOWN_ROOM_VERSIONS

VERSIONS = tuple(KNOWN_ROOM_VERSIONS)


def _json(data: bytes) -> tuple[bool, Any]:
    """``data`` as JSON, or (False, None) when it is not JSON (not this target's concern)."""
    try:
        return True, json.loads(data)
    except (ValueError, RecursionError):
        return False, None


def parse_event_target(data: bytes) -> None:
    """First byte: the room version (modulo the known versions) and whether the prev/auth event
    count limits apply (as for backfilled events, they do not when the byte is 12-23 modulo 24);
    the rest: a PDU as JSON. ``parse_event`` returns an ``Event`` or raises ``InvalidEvent``
    (``CanonicalJSONError`` and ``InvalidSignature`` are kinds of it)."""
    if not data:
        return
    version = VERSIONS[data[0] % len(VERSIONS)]
    check_edge_counts = (data[0] // len(VERSIONS)) % 2 == 0
    ok, pdu = _json(data[1:])
    if not ok:
        return
    try:
        event = parse_event(pdu, version, check_edge_counts=check_edge_counts)
    except InvalidEvent as exc:
        assert isinstance(exc.reason, str) and exc.reason, "InvalidEvent without a reason"
        return
    assert pdu == json.loads(data[1:]), "parse_event changed its input"
    assert event.room_version == version
    assert (event.type, event.sender) == (pdu["type"], pdu["sender"])
    again = parse_event(pdu, version, check_edge_counts=check_edge_counts)
    assert again.event_id == event.event_id, "the event ID is not a function of the PDU"


def canonical_json_target(data: bytes) -> None:
    """First byte: the mode (strict, strict without floats, lax); the rest: any JSON value.
    ``canonical_json`` returns bytes or raises ``CanonicalJSONError``; what it returns is JSON
    that decodes to an equal value and is its own canonical form."""
    if not data:
        return
    strict, integral_floats = [(True, True), (True, False), (False, True)][data[0] % 3]
    ok, value = _json(data[1:])
    if not ok:
        return
    try:
        out = canonical_json(value, strict=strict, integral_floats=integral_floats)
    except CanonicalJSONError as exc:
        assert isinstance(exc.reason, str) and exc.reason, "CanonicalJSONError without a reason"
        return
    again = json.loads(out)
    assert again == value, "canonical JSON does not decode to the value it encoded"
    assert canonical_json(again, strict=strict, integral_floats=integral_floats) == out


def _roundtrip(decode: Callable[[bytes], Any], encode: Callable[[Any], bytes], data: bytes) -> None:
    try:
        decoded = decode(data)
    except WireFormatError as exc:
        assert str(exc), "WireFormatError without a message"
        return
    try:
        body = encode(decoded)
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in the JSON text) decodes to a string that has no UTF-8
        # form. Encoders raise this ValueError for it; ``Roomserver.input_room_events`` answers
        # INVALID (it catches ValueError around the encoder).
        return
    assert encode(decode(body)) == body, "decode(encode(x)) changed the message"


def _encode_input_message(decoded: tuple[int, list[InputRoomEvent]]) -> bytes:
    version, items = decoded
    return encode_input_room_event(items[0]) if version == 1 else encode_input_batch(items)


def _encode_results(results: list[EventResult]) -> bytes:
    return encode_event_results(results)


def wire_codec_target(data: bytes) -> None:
    """First byte: which decoder (input event, output event, event result, input message of
    version 1 or 2, results of version 2); the rest: a message body. Each decoder returns its
    value or raises ``WireFormatError``; a decoded value encodes to a body that decodes to the
    same value."""
    if not data:
        return
    which = data[0] % 5
    body = data[1:]
    if which == 0:
        _roundtrip(decode_input_room_event, encode_input_room_event, body)
    elif which == 1:
        _roundtrip(decode_output_event, encode_output_event, body)
    elif which == 2:
        _roundtrip(decode_event_result, encode_event_result, body)
    elif which == 3:
        _roundtrip(decode_input_message, _encode_input_message, body)
    else:
        _roundtrip(decode_event_results, _encode_results, body)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "parse_event": parse_event_target,
    "canonical_json": canonical_json_target,
    "wire_codec": wire_codec_target,
}
