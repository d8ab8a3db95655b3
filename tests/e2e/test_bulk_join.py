"""Joining a room end to end: its state and auth chain as outliers (the bulk path), then the
join with ``has_state`` whose state list travels beside its message (``input/statelists.py``)."""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from roomserver import submit as submit_module
from roomserver.api import (
    InputRoomEvent,
    InputRoomEventsRequest,
    Kind,
    Outcome,
    decode_event_results,
    join_input_batch,
)
from roomserver.app import Roomserver
from roomserver.bus.blobs import JetStreamBlobStore
from roomserver.bus.types import DeliveryInfo, Disposition
from roomserver.input import statelists
from roomserver.testing.joins import JOINER, JoinRoom, build_join_room
from tests.e2e.conftest import OpenRoomserver


def _trust(rs: Roomserver, room: JoinRoom) -> None:
    for server, (key_id, seed) in room.keys.items():
        rs.keyring.add_verify_key(server, key_id, SigningKey(seed).verify_key, 2**62)


def _join_item(room: JoinRoom) -> InputRoomEvent:
    return InputRoomEvent(
        event=room.join,
        kind=Kind.NEW,
        has_state=True,
        state_event_ids=tuple(room.state_event_ids),
    )


async def _blob_names(rs: Roomserver) -> set[str]:
    assert isinstance(rs.blobs, JetStreamBlobStore)
    return await rs.blobs.names()


async def test_join_of_a_few_hundred_members(
    open_roomserver: OpenRoomserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit_module, "MAX_INPUT_MESSAGE_BYTES", 64 * 1024)
    rs = await open_roomserver()
    rs.inline_state_ids_max_bytes = 4 * 1024  # the state list travels as a blob
    room = build_join_room(300, seed=11, odd=True)
    _trust(rs, room)
    outliers = [InputRoomEvent(event=p, kind=Kind.OUTLIER) for p in room.outliers]
    response = await rs.input_room_events(InputRoomEventsRequest(events=outliers))
    outcomes = [r.outcome for r in response.results]
    assert outcomes.count(Outcome.ACCEPTED) >= 300
    assert Outcome.INVALID in outcomes and Outcome.REJECTED in outcomes
    assert Outcome.ERROR not in outcomes
    assert rs.bulk is not None and rs.bulk.totals.stored >= 300

    assert len(room.state_event_ids) * 44 > 4 * 1024
    joined = await rs.input_room_events(InputRoomEventsRequest(events=[_join_item(room)]))
    assert [r.outcome for r in joined.results] == [Outcome.ACCEPTED], joined.results
    state = await rs.current_state(room.room_id)
    assert set(state.values()) == {*room.state_event_ids, joined.results[0].event_id}
    assert state[("m.room.member", JOINER)] == joined.results[0].event_id
    assert await _blob_names(rs) == set()  # deleted once the outcome was stored

    # Submitting the same again changes nothing.
    again = await rs.input_room_events(InputRoomEventsRequest(events=outliers))
    assert [r.outcome for r in again.results] == outcomes
    assert (await rs.input_room_events(InputRoomEventsRequest(events=[_join_item(room)]))).results[
        0
    ].outcome is Outcome.ACCEPTED


def _info(delivered: int) -> DeliveryInfo:
    return DeliveryInfo(
        stream_seq=1, num_delivered=delivered, num_pending=0, timestamp_ns=0, reply_to=None
    )


async def test_state_list_survives_redelivery_and_is_kept_until_final(
    open_roomserver: OpenRoomserver,
) -> None:
    rs = await open_roomserver()
    room = build_join_room(40, seed=5)
    _trust(rs, room)
    assert rs.blobs is not None
    encoded = await statelists.encode_item(_join_item(room), rs.blobs, inline_max_bytes=64)
    assert statelists.STATE_LIST_REF_FIELD.encode() in encoded
    payload = join_input_batch([encoded])

    # The outliers are not stored yet: the state IDs are unknown, the join is INVALID, and
    # the blob stays (a resubmission after the outliers must find the same list).
    first = await rs.handler.handle(room.room_id, payload, _info(1))
    assert first.disposition is Disposition.ACK and first.reply is not None
    assert decode_event_results(first.reply)[0].outcome is Outcome.INVALID
    assert len(await _blob_names(rs)) == 1

    outliers = [InputRoomEvent(event=p, kind=Kind.OUTLIER) for p in room.outliers]
    await rs.input_room_events(InputRoomEventsRequest(events=outliers))
    second = await rs.handler.handle(room.room_id, payload, _info(2))
    assert second.reply is not None
    [accepted] = decode_event_results(second.reply)
    assert accepted.outcome is Outcome.ACCEPTED
    assert await _blob_names(rs) == set()

    # A crash between the deletion and the ack: the redelivery finds no blob, but the event
    # is stored, so it is answered from storage.
    third = await rs.handler.handle(room.room_id, payload, _info(3))
    assert third.disposition is Disposition.ACK and third.reply is not None
    assert decode_event_results(third.reply) == [accepted]


async def test_lost_state_list_of_an_unstored_event_terminates(
    open_roomserver: OpenRoomserver,
) -> None:
    rs = await open_roomserver()
    room = build_join_room(3, seed=2)
    assert rs.blobs is not None
    encoded = await statelists.encode_item(_join_item(room), rs.blobs, inline_max_bytes=64)
    for name in await _blob_names(rs):
        await rs.blobs.delete(name)
    result = await rs.handler.handle(room.room_id, join_input_batch([encoded]), _info(1))
    assert result.disposition is Disposition.TERMINATE
    assert result.reason is not None and "is gone" in result.reason


async def test_join_queued_behind_and_ahead_of_other_messages(
    open_roomserver: OpenRoomserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outliers and a join whose state list travels as a blob, queued together, so the room's
    worker takes them as units: a message with a state list reference (or outliers for the
    bulk path) is handled on its own, never decoded with its reference unresolved."""
    monkeypatch.setattr(submit_module, "MAX_INPUT_MESSAGE_BYTES", 64 * 1024)
    rs = await open_roomserver()
    rs.inline_state_ids_max_bytes = 4 * 1024
    room = build_join_room(200, seed=12)
    _trust(rs, room)
    outliers = [InputRoomEvent(event=p, kind=Kind.OUTLIER) for p in room.outliers]
    # Queued at once: the join's message has the second join's message behind it.
    for events in ([*outliers, _join_item(room)], [_join_item(room)]):
        await rs.input_room_events(InputRoomEventsRequest(events=events, asynchronous=True))
    response = await rs.input_room_events(InputRoomEventsRequest(events=[_join_item(room)]))
    assert [r.outcome for r in response.results] == [Outcome.ACCEPTED], response.results
    state = await rs.current_state(room.room_id)
    assert state[("m.room.member", JOINER)] == response.results[0].event_id
    assert set(state.values()) == {*room.state_event_ids, response.results[0].event_id}
    assert await _blob_names(rs) == set()
