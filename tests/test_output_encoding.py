"""An output body with the event spliced in as its canonical JSON decodes to the same output,
and is the same JSON value as the body that encodes the PDU."""

from __future__ import annotations

import json

import pytest

from roomserver.api import (
    OutputEvent,
    OutputNewInviteEvent,
    OutputNewRoomEvent,
    OutputOldRoomEvent,
    OutputPayload,
    OutputRetireInviteEvent,
    TransactionId,
    decode_output_event,
    encode_output_event,
)
from roomserver.core.pdu import Event
from roomserver.testing.builder import RoomBuilder

ALICE = "@alice:example.org"


def _event(version: str) -> Event:
    builder = RoomBuilder(version, room_id="!r:example.org")
    builder.create_room(ALICE)
    content: dict[str, object] = {
        "body": 'café \u2028 "quoted"\n\u0007 ☃',
        "nested": {"b": [1, -2, None], "a": True},
    }
    if version == "1":
        content["floats"] = [2.5, 2.0, 1e300]  # lax canonical JSON keeps them
    return builder.send("m.room.message", ALICE, content)


def _payloads(event: Event) -> list[OutputPayload]:
    return [
        OutputNewRoomEvent(
            event=event.pdu,
            event_id=event.event_id,
            room_version=event.room_version,
            latest_event_ids=(event.event_id,),
            adds_state_event_ids=("$s",),
            last_sent_event_id="$d",
            send_as_server="example.org",
            transaction_id=TransactionId(1, "t"),
            history_visibility="joined",
        ),
        OutputOldRoomEvent(
            event=event.pdu, event_id=event.event_id, room_version=event.room_version
        ),
        OutputNewInviteEvent(
            event=event.pdu, event_id=event.event_id, room_version=event.room_version
        ),
    ]


@pytest.mark.parametrize("version", ["10", "1"])
@pytest.mark.parametrize("index", range(3))
def test_the_spliced_event_decodes_to_the_same_output(index: int, version: str) -> None:
    event = _event(version)
    assert event.canonical_bytes is not None
    output = OutputEvent(room_id=event.room_id, payload=_payloads(event)[index])
    encoded = encode_output_event(output)
    spliced = encode_output_event(output, event_json=event.canonical_bytes)
    assert spliced != encoded  # the event's members in canonical (sorted) order
    assert decode_output_event(spliced) == output
    assert json.loads(spliced) == json.loads(encoded)
    # The same members in the same order, the event first.
    assert list(json.loads(spliced)) == list(json.loads(encoded))
    kind = output.type.value
    assert list(json.loads(spliced)[kind]) == list(json.loads(encoded)[kind])
    assert next(iter(json.loads(spliced)[kind])) == "event"


def test_a_payload_without_an_event_ignores_event_json() -> None:
    output = OutputEvent(
        room_id="!r:x", payload=OutputRetireInviteEvent("$i", "!r:x", "@c:x", "join", None)
    )
    assert encode_output_event(output, event_json=b'{"x":1}') == encode_output_event(output)


def test_the_envelope_is_what_the_encoder_writes() -> None:
    event = _event("10")
    payload = OutputNewInviteEvent(event={}, event_id=event.event_id, room_version="10")
    output = OutputEvent(room_id='!r"\\é\u2028:x', payload=payload)  # type: ignore[arg-type]
    # An event of no members: both bodies are the same bytes.
    assert encode_output_event(output, event_json=b"{}") == encode_output_event(output)
