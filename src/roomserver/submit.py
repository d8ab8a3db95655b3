"""The submission side: input events onto the input stream, and (synchronous) their outcomes.

``submit_input`` encodes each event (a large ``state_event_ids`` list stored as a blob first,
``input/statelists.py``), groups the events of one room into messages in request order (split
beyond ``MAX_INPUT_MESSAGE_BYTES``), publishes them and, for a synchronous request, waits for
the room workers' replies. ``app.Roomserver.input_room_events`` calls it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from roomserver.api import (
    EventResult,
    InputRoomEvent,
    InputRoomEventsRequest,
    InputRoomEventsResponse,
    Outcome,
    WireFormatError,
    decode_event_results,
    encode_input_item,
    join_input_batch,
    route_room_id,
)
from roomserver.bus import Bus
from roomserver.bus.types import SyncReplyTimeout
from roomserver.input import statelists

log = logging.getLogger(__name__)

#: The most a batched input message carries (its events' encoded size): well under NATS's
#: default 1 MiB ``max_payload``. A larger single event travels alone.
MAX_INPUT_MESSAGE_BYTES = 256 * 1024


async def submit_input(
    bus: Bus,
    request: InputRoomEventsRequest,
    *,
    blobs: statelists.BlobStore | None,
    inline_max_bytes: int,
) -> InputRoomEventsResponse:
    """Queue the events on the input stream; for a synchronous request wait for each event's
    outcome (results in request order). Never raises for bad input or a failing stream (see
    ``Roomserver.input_room_events``). A ``state_event_ids`` list above ``inline_max_bytes``
    travels in ``blobs``."""
    results: list[EventResult | None] = [None] * len(request.events)
    encoded = await _encode_items(request.events, results, blobs, inline_max_bytes)
    batches = _batches(request.events, encoded, results)
    if request.asynchronous:
        await _publish_async(bus, request.events, batches, results)
    elif batches:
        await _submit_sync(bus, request.events, batches, results)
    return InputRoomEventsResponse(results=[r for r in results if r is not None])


class _Batch:
    """The events of one request for one room that travel as one input message."""

    __slots__ = ("encoded", "indexes", "room_id", "size")

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.indexes: list[int] = []  # positions in the request
        self.encoded: list[bytes] = []
        self.size = 0

    def add(self, index: int, encoded: bytes) -> None:
        self.indexes.append(index)
        self.encoded.append(encoded)
        self.size += len(encoded) + 1

    def payload(self) -> bytes:
        return join_input_batch(self.encoded)


async def _encode_items(
    events: Sequence[InputRoomEvent],
    results: list[EventResult | None],
    blobs: statelists.BlobStore | None,
    inline_max_bytes: int,
) -> list[bytes | None]:
    """Each item encoded; a large ``state_event_ids`` list stored as a blob first. An item
    whose blob could not be stored gets an ``ERROR`` result (resubmitting is safe)."""
    out: list[bytes | None] = []
    for index, item in enumerate(events):
        try:
            out.append(await statelists.encode_item(item, blobs, inline_max_bytes=inline_max_bytes))
        except (ValueError, TypeError, RecursionError):
            out.append(None)  # _batches gives the INVALID result
        except Exception as exc:
            log.warning("storing a state list failed: %s: %s", type(exc).__name__, exc)
            results[index] = EventResult(
                item.event_id_hint(),
                Outcome.ERROR,
                f"could not store its state list: {type(exc).__name__}: {exc}",
            )
            out.append(None)
    return out


def _batches(
    events: Sequence[InputRoomEvent],
    encoded_items: Sequence[bytes | None],
    results: list[EventResult | None],
) -> list[_Batch]:
    """Group routable events into messages per room, in request order; the others get their
    ``INVALID`` result in ``results``."""
    open_batches: dict[str, _Batch] = {}
    batches: list[_Batch] = []
    for index, item in enumerate(events):
        if results[index] is not None:
            continue
        try:
            room_id = route_room_id(item)
            encoded = encoded_items[index] or encode_input_item(item)
        except (ValueError, TypeError, RecursionError) as exc:
            results[index] = EventResult(item.event_id_hint(), Outcome.INVALID, str(exc))
            continue
        batch = open_batches.get(room_id)
        if batch is None or batch.size + len(encoded) > MAX_INPUT_MESSAGE_BYTES:
            batch = open_batches[room_id] = _Batch(room_id)
            batches.append(batch)
        batch.add(index, encoded)
    return batches


async def _publish_async(
    bus: Bus,
    events: Sequence[InputRoomEvent],
    batches: Sequence[_Batch],
    results: list[EventResult | None],
) -> None:
    failure: str | None = None
    try:
        await bus.publish_inputs([(b.room_id, b.payload()) for b in batches])
    except Exception as exc:  # some may be stored: resubmitting is idempotent
        log.warning("queueing input failed: %s: %s", type(exc).__name__, exc)
        failure = f"could not queue the event: {type(exc).__name__}: {exc}"
    for batch in batches:
        for index in batch.indexes:
            outcome = Outcome.QUEUED if failure is None else Outcome.ERROR
            results[index] = EventResult(events[index].event_id_hint(), outcome, failure)


async def _submit_sync(
    bus: Bus,
    events: Sequence[InputRoomEvent],
    batches: Sequence[_Batch],
    results: list[EventResult | None],
) -> None:
    replies: Sequence[bytes | None]
    failure = "timed out waiting for the outcome; the event stays queued"
    try:
        replies = await bus.submit_sync([(b.room_id, b.payload()) for b in batches])
    except SyncReplyTimeout as exc:
        replies = exc.replies
    except Exception as exc:  # some may be stored: resubmitting is idempotent
        log.warning("submitting input failed: %s: %s", type(exc).__name__, exc)
        replies = [None] * len(batches)
        failure = f"could not queue the event: {type(exc).__name__}: {exc}"
    for batch, reply in zip(batches, replies, strict=True):
        answers = _decode_replies(reply, len(batch.indexes))
        for index, answer in zip(batch.indexes, answers, strict=True):
            results[index] = answer or EventResult(
                events[index].event_id_hint(), Outcome.ERROR, failure
            )


def _decode_replies(reply: bytes | None, count: int) -> list[EventResult | None]:
    """The results in a sync reply to a message of ``count`` events (``None``: unknown)."""
    if reply is None:
        return [None] * count
    try:
        results: list[EventResult | None] = list(decode_event_results(reply))
    except WireFormatError as exc:
        log.error("undecodable reply to an input message: %s", exc)
        return [None] * count
    if len(results) == 1 and count > 1 and results[0] is not None:
        # The whole message failed as one (undecodable): every event shares its result.
        return results * count
    if len(results) != count:
        log.error("reply to an input message of %d events has %d results", count, len(results))
        return [None] * count
    return results
