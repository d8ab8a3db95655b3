"""Properties: whatever JSON it is given, ``parse_event`` returns an Event or raises
``InvalidEvent``, for every room version (the parser's fuzz invariant)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomserver.core.canonical_json import canonical_json
from roomserver.core.errors import CanonicalJSONError, InvalidEvent
from roomserver.core.pdu import Event, parse_event
from roomserver.core.redaction import redact
from roomserver.core.signatures import check_content_hash, verify_event
from tests.core.helpers import valid_pdu

ALL_VERSIONS = [str(n) for n in range(1, 13)]
VERSIONS = st.sampled_from(ALL_VERSIONS)

# Text including lone surrogates (json.loads produces them from "\ud800") and NUL.
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
    | st.sampled_from(["@a:example.org", "!r:example.org", "$e:example.org", "", "m.room.member"])
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            TEXT | st.sampled_from(["type", "content", "membership"]), children, max_size=5
        )
    ),
    max_leaves=25,
)

TOP_LEVEL_KEYS = [
    "type", "sender", "room_id", "content", "origin_server_ts", "depth", "prev_events",
    "auth_events", "hashes", "signatures", "unsigned", "state_key", "event_id", "redacts",
]  # fmt: skip


def check(value: Any, version: str) -> Event | None:
    try:
        event = parse_event(value, version)
    except InvalidEvent as exc:
        assert exc.reason and str(exc) == exc.reason
        return None
    # What parses says what the PDU says, and its ID is a function of the PDU alone.
    assert (event.type, event.sender) == (value["type"], value["sender"])
    assert event.room_version == version
    assert parse_event(value, version).event_id == event.event_id
    return event


@pytest.mark.parametrize("version", ALL_VERSIONS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=JSON)
def test_any_json_value_parses_or_is_invalid(version: str, value: Any) -> None:
    check(value, version)
    check({"content": value, "type": value, "sender": "@a:example.org"}, version)


@st.composite
def mutated_pdus(draw: st.DrawFn, version: str) -> dict[str, Any]:
    pdu = valid_pdu(version)
    if draw(st.booleans()):
        pdu["type"] = draw(st.sampled_from(["m.room.member", "m.room.create", "m.room.redaction"]))
        pdu["state_key"] = draw(st.sampled_from(["", "@a:example.org"]))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        key = draw(st.sampled_from(TOP_LEVEL_KEYS))
        action = draw(st.sampled_from(["set", "delete", "nest"]))
        if action == "delete":
            pdu.pop(key, None)
        elif action == "set":
            pdu[key] = draw(JSON)
        else:
            target = pdu.get(key)
            if isinstance(target, dict):
                target[draw(TEXT | st.sampled_from(["redacts", "membership", "sha256"]))] = draw(
                    JSON
                )
            elif isinstance(target, list) and target:
                target[draw(st.integers(0, len(target) - 1))] = draw(JSON)
            else:
                pdu[key] = [draw(JSON)]
    return pdu


@pytest.mark.parametrize("version", ALL_VERSIONS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_pdus_parse_or_are_invalid(version: str, data: st.DataObject) -> None:
    pdu = data.draw(mutated_pdus(version))
    before = repr(pdu)
    event = check(pdu, version)
    assert repr(pdu) == before  # parsing never mutates its input
    if event is not None:
        # What parses can be redacted, hashed and handed to verification without surprises.
        redact(event.pdu, version)
        check_content_hash(event)
        with contextlib.suppress(InvalidEvent):
            verify_event(event.pdu, room_version=version, verify_keys={})


@settings(max_examples=30, deadline=None)
@given(
    depth=st.integers(min_value=1, max_value=3_000),
    wrap=st.sampled_from(["list", "dict"]),
    where=st.sampled_from(["content", "unsigned", "signatures", "prev_events", "hashes"]),
    version=VERSIONS,
)
def test_deep_nesting_parses_or_is_invalid(depth: int, wrap: str, where: str, version: str) -> None:
    value: Any = 1
    for _ in range(depth):
        value = [value] if wrap == "list" else {"k": value}
    pdu = valid_pdu(version)
    pdu[where] = {"x": value}
    check(pdu, version)


@settings(max_examples=300, deadline=None)
@given(value=JSON, strict=st.booleans())
def test_canonical_json_encodes_or_raises_its_error(value: Any, strict: bool) -> None:
    try:
        encoded = canonical_json(value, strict=strict)
    except CanonicalJSONError:
        return
    # Canonical JSON is a fixed point: decoding and re-encoding gives the same bytes.
    assert canonical_json(json.loads(encoded), strict=strict) == encoded
    assert encoded.decode("utf-8")
