"""The version-1 JSON wire format of input events, output events and sync replies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomserver.api import (
    EventResult,
    InputRoomEvent,
    Kind,
    Outcome,
    OutputEvent,
    OutputNewInviteEvent,
    OutputNewRoomEvent,
    OutputOldRoomEvent,
    OutputRedactedEvent,
    OutputRetireInviteEvent,
    TransactionId,
    WireFormatError,
    decode_event_result,
    decode_input_room_event,
    decode_output_event,
    encode_event_result,
    encode_input_room_event,
    encode_output_event,
)
from roomserver.core.hashes import compute_event_id
from roomserver.input.errors import event_id_of_failure

PDU = {"type": "m.room.message", "content": {"body": "é"}, "room_id": "!r:x"}


@pytest.mark.parametrize(
    "item",
    [
        InputRoomEvent(event=PDU),
        InputRoomEvent(
            event=PDU,
            kind=Kind.OLD,
            origin="remote.test",
            has_state=True,
            state_event_ids=("$a", "$b"),
            send_as_server="example.org",
            transaction_id=TransactionId(3, "txn"),
            verified=True,
            room_version="12",
        ),
    ],
)
def test_input_round_trip(item: InputRoomEvent) -> None:
    body = encode_input_room_event(item)
    assert json.loads(body)["v"] == 1
    assert decode_input_room_event(body) == item


def test_input_defaults_and_field_names() -> None:
    body = json.dumps({"v": 1, "event": PDU, "kind": 1}).encode()
    assert decode_input_room_event(body) == InputRoomEvent(event=PDU, kind=Kind.OUTLIER)
    full = json.loads(encode_input_room_event(InputRoomEvent(event=PDU, has_state=True)))
    assert full == {"v": 1, "event": PDU, "kind": 2, "has_state": True}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"v": 2, "event": {}}',
        b'{"v": 1}',
        b'{"v": 1, "event": {}, "kind": 7}',
        b'{"v": 1, "event": {}, "kind": true}',
        b'{"v": 1, "event": {}, "has_state": 1}',
        b'{"v": 1, "event": {}, "state_event_ids": [1]}',
        b'{"v": 1, "event": {}, "transaction_id": {"session_id": "x"}}',
        b"\xff\xfe",
    ],
)
def test_input_rejects_malformed(body: bytes) -> None:
    with pytest.raises(WireFormatError):
        decode_input_room_event(body)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_KEYS = st.sampled_from(
    ["event", "kind", "origin", "has_state", "state_event_ids", "transaction_id", "verified",
     "type", "room_id", "new_room_event", "redacted_event", "outcome", "event_id", "reason"]
)  # fmt: skip
_ENVELOPES = st.dictionaries(_KEYS, _JSON).map(lambda d: json.dumps({**d, "v": 1}).encode())


@given(st.binary(max_size=200) | _ENVELOPES)
def test_any_body_decodes_or_raises_wire_format_error(body: bytes) -> None:
    """Nothing but ``WireFormatError`` escapes a decoder, and what decodes is a value the
    encoder writes back to a body that decodes to the same value."""
    codecs: list[tuple[Callable[[bytes], Any], Callable[[Any], bytes]]] = [
        (decode_input_room_event, encode_input_room_event),
        (decode_output_event, encode_output_event),
        (decode_event_result, encode_event_result),
    ]
    for decode, encode in codecs:
        try:
            value = decode(body)
        except WireFormatError:
            continue
        assert decode(encode(value)) == value


@pytest.mark.parametrize(
    "payload",
    [
        OutputNewRoomEvent(
            event=PDU,
            event_id="$e",
            room_version="10",
            latest_event_ids=("$e", "$f"),
            adds_state_event_ids=("$s",),
            removes_state_event_ids=("$t",),
            state_before_adds_event_ids=("$t",),
            state_before_removes_event_ids=("$s",),
            last_sent_event_id="$d",
            rewrites_state=True,
            send_as_server="example.org",
            transaction_id=TransactionId(1, "t"),
            history_visibility="joined",
        ),
        OutputOldRoomEvent(event=PDU, event_id="$e", room_version="1"),
        OutputNewInviteEvent(event=PDU, event_id="$i", room_version="11"),
        OutputRetireInviteEvent("$i", "!r:x", "@c:x", "join", "$j"),
        OutputRedactedEvent(redacted_event_id="$e", redacted_because=PDU),
    ],
)
def test_output_round_trip(payload: object) -> None:
    output = OutputEvent(room_id="!r:x", payload=payload)  # type: ignore[arg-type]
    body = encode_output_event(output)
    envelope = json.loads(body)
    assert envelope["type"] == output.type.value
    assert output.type.value in envelope
    assert decode_output_event(body) == output


def test_event_result_round_trip() -> None:
    for result in (
        EventResult("$e", Outcome.ACCEPTED),
        EventResult(None, Outcome.INVALID, "bad"),
    ):
        assert decode_event_result(encode_event_result(result)) == result


def test_event_id_hint() -> None:
    """Computed under the item's room version; else the PDU's ``event_id``; never raises."""
    computed = InputRoomEvent(event=PDU, room_version="10").event_id_hint()
    assert computed == compute_event_id(PDU, "10")
    assert computed is not None and computed.startswith("$")
    v1 = {**PDU, "event_id": "$abc:x"}
    assert InputRoomEvent(event=v1).event_id_hint() == "$abc:x"
    assert InputRoomEvent(event=v1, room_version="1").event_id_hint() == "$abc:x"
    assert InputRoomEvent(event=PDU).event_id_hint() is None
    assert InputRoomEvent(event={**PDU, "event_id": 5}).event_id_hint() is None
    assert InputRoomEvent(event=PDU, room_version="no such version").event_id_hint() is None
    assert InputRoomEvent(event=PDU, room_version="1").event_id_hint() is None  # no event_id
    assert InputRoomEvent(event="not an object").event_id_hint() is None  # type: ignore[arg-type]


def test_event_id_of_failure() -> None:
    """The ID the pipeline noted on the exception first, else the item's hint."""
    item = InputRoomEvent(event={**PDU, "event_id": "$abc:x"})
    assert event_id_of_failure(RuntimeError("boom"), item) == "$abc:x"
    noted = RuntimeError("boom")
    noted.input_event_id = "$noted"  # type: ignore[attr-defined]
    assert event_id_of_failure(noted, item) == "$noted"
    assert event_id_of_failure(RuntimeError("boom"), InputRoomEvent(event=PDU)) is None
