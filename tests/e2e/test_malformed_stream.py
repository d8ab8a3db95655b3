"""Malformed messages published straight to the input stream (not through the facade).

Each is terminated with an error log line naming its stream sequence, is gone from the stream,
and the room goes on: a valid event published after it is accepted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from roomserver.api import InputRoomEvent, Kind, Outcome, encode_input_room_event
from roomserver.app import Roomserver
from roomserver.bus.subjects import input_stream_name, input_subject
from roomserver.bus.types import HEADER_ROOM_ID
from roomserver.testing.builder import RoomBuilder
from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import ALICE, BOB, submit, trust, wait_for

FIVE_MIB = 5 * 1024 * 1024


def _body(pdu: dict[str, Any], **envelope: Any) -> bytes:
    body = json.loads(encode_input_room_event(InputRoomEvent(event=pdu, kind=Kind.NEW)))
    body.update(envelope)
    return json.dumps(body).encode()


Case = Callable[[RoomBuilder, dict[str, Any]], tuple[bytes, dict[str, str] | None]]


def _bad_json(b: RoomBuilder, pdu: dict[str, Any]) -> tuple[bytes, dict[str, str] | None]:
    return b'{"v": 1, "event": {not json', {HEADER_ROOM_ID: b.room_id}


def _unknown_version(b: RoomBuilder, pdu: dict[str, Any]) -> tuple[bytes, dict[str, str] | None]:
    return _body(pdu, v=99), {HEADER_ROOM_ID: b.room_id}


def _truncated(b: RoomBuilder, pdu: dict[str, Any]) -> tuple[bytes, dict[str, str] | None]:
    body = _body(pdu)
    return body[: len(body) // 2], {HEADER_ROOM_ID: b.room_id}


def _five_mib_garbage(b: RoomBuilder, pdu: dict[str, Any]) -> tuple[bytes, dict[str, str] | None]:
    return b"[" * FIVE_MIB, {HEADER_ROOM_ID: b.room_id}


def _five_mib_event(b: RoomBuilder, pdu: dict[str, Any]) -> tuple[bytes, dict[str, str] | None]:
    """Well-formed, but the event is 5 MiB (the spec's limit is 65,536 bytes)."""
    body = _body(dict(pdu, content={"body": "x" * FIVE_MIB, "msgtype": "m.text"}))
    return body, {HEADER_ROOM_ID: b.room_id}


def _missing_header(b: RoomBuilder, pdu: dict[str, Any]) -> tuple[bytes, dict[str, str] | None]:
    return _body(pdu), None


def _mismatched_header(b: RoomBuilder, pdu: dict[str, Any]) -> tuple[bytes, dict[str, str] | None]:
    return _body(pdu), {HEADER_ROOM_ID: "!another:example.org"}


CASES: dict[str, Case] = {
    "bad JSON": _bad_json,
    "unknown version 99": _unknown_version,
    "truncated body": _truncated,
    "5 MiB of bad JSON": _five_mib_garbage,
    "missing room_id header": _missing_header,
    "mismatched room_id header": _mismatched_header,
}


async def _publish(
    rs: Roomserver, room_id: str, body: bytes, headers: dict[str, str] | None
) -> int:
    subject = input_subject(rs.bus.config.prefix, room_id)
    ack = await rs.bus.js.publish(subject, body, headers=headers, timeout=10)
    return int(ack.seq)


async def _drained(rs: Roomserver) -> bool:
    info = await rs.bus.js.stream_info(input_stream_name(rs.bus.config.prefix))
    return info.state.messages == 0


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_a_malformed_input_message_is_terminated_and_the_room_goes_on(
    open_roomserver: OpenRoomserver, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.INFO)
    rs = await open_roomserver()
    b = RoomBuilder("10", room_id="!malformed:example.org")
    trust(rs, b)
    setup = [*b.create_room(ALICE), b.join(BOB)]
    assert {r.outcome for r in (await submit(rs, [e.pdu for e in setup])).results} == {
        Outcome.ACCEPTED
    }
    # The malformed message carries an event, which must not be taken from it.
    carried = b.make_pdu("m.room.message", BOB, {"msgtype": "m.text", "body": "carried"})
    body, headers = CASES[case](b, carried)
    seq = await _publish(rs, b.room_id, body, headers)

    after = b.message(ALICE, "after the malformed message")
    response = await submit(rs, [after.pdu])
    assert response.results[0].outcome is Outcome.ACCEPTED, response.results[0]
    await wait_for(lambda: _drained(rs), timeout=20.0)
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and f"seq {seq}" in r.getMessage()
    ]
    assert any("terminat" in line for line in lines), [r.getMessage() for r in caplog.records]
    assert await rs.event(after.event_id) is not None
    assert await rs.latest_events(b.room_id) == [after.event_id]


async def test_a_five_mib_message_with_a_five_mib_event_is_invalid_and_the_room_goes_on(
    open_roomserver: OpenRoomserver,
) -> None:
    """Well-formed but 5 MiB: decoded (an input may carry a large room's state event IDs), its
    event refused for its size (spec: 65,536 bytes), acknowledged; the room goes on."""
    rs = await open_roomserver()
    b = RoomBuilder("10", room_id="!large:example.org")
    trust(rs, b)
    await submit(rs, [e.pdu for e in [*b.create_room(ALICE), b.join(BOB)]])
    carried = b.make_pdu("m.room.message", BOB, {"msgtype": "m.text", "body": "x" * FIVE_MIB})
    body = _body(carried)
    assert len(body) > FIVE_MIB
    seq = await _publish(rs, b.room_id, body, {HEADER_ROOM_ID: b.room_id})
    after = b.message(ALICE, "after")
    assert (await submit(rs, [after.pdu])).results[0].outcome is Outcome.ACCEPTED
    await wait_for(lambda: _drained(rs), timeout=20.0)
    assert seq > 0 and await rs.latest_events(b.room_id) == [after.event_id]


async def test_an_event_of_another_room_on_a_rooms_subject_is_not_processed(
    open_roomserver: OpenRoomserver,
) -> None:
    """Per-room exclusivity holds only if a room's worker processes only that room's events."""
    rs = await open_roomserver()
    a = RoomBuilder("10", room_id="!subject:example.org")
    b = RoomBuilder("10", room_id="!body:example.org")
    trust(rs, a, b)
    await submit(rs, [e.pdu for e in [*a.create_room(ALICE), *b.create_room(ALICE)]])
    smuggled = b.make_pdu("m.room.message", ALICE, {"msgtype": "m.text", "body": "smuggled"})
    await _publish(rs, a.room_id, _body(smuggled), {HEADER_ROOM_ID: a.room_id})
    after = a.message(ALICE, "after")
    assert (await submit(rs, [after.pdu])).results[0].outcome is Outcome.ACCEPTED
    await wait_for(lambda: _drained(rs), timeout=20.0)
    assert await rs.latest_events(b.room_id) == b.latest
