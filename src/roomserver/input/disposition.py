"""What the bus does with an input message once processing ends: one table, at the edge.

| outcome / exception                              | disposition                        |
|--------------------------------------------------|------------------------------------|
| ACCEPTED, SOFT_FAILED, REJECTED, INVALID         | ACK (outcome recorded / reason)    |
| undecodable message (``WireFormatError``)        | TERMINATE (logged with stream seq) |
| ``StaleRead`` (an optimistic read was wrong;     | processed again at once, reading   |
| nothing was written), the first time             | for real                           |
| ``StorageError`` with ``transient`` (database    | RETRY with backoff                 |
| unavailable, ``ConcurrentUpdate``)               |                                    |
| ``MissingData(transient=True)``, timeouts,       | RETRY with backoff                 |
| connection errors, publish failures              |                                    |
| any other exception (a bug, corrupt data)        | RETRY with backoff up to           |
|                                                  | ``max_attempts``, then TERMINATE   |

``Disposition`` is ``roomserver.ports.Disposition``, the bus's vocabulary too; ``handler.py``
translates a ``Decision`` into the bus's ``HandlerResult``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from roomserver.api import (
    WIRE_VERSION,
    EventResult,
    InputRoomEvent,
    Outcome,
    WireFormatError,
    decode_input_message,
    encode_event_result,
    encode_event_results,
    route_room_id,
)
from roomserver.core.ids import RoomId
from roomserver.input.errors import MissingData, event_id_of_failure, is_transient_fetch_error
from roomserver.ports import Disposition as Disposition
from roomserver.ports import StaleRead, StorageError, backoff_delay

log = logging.getLogger(__name__)


_OUTCOME_DISPOSITION: dict[Outcome, Disposition] = {
    Outcome.ACCEPTED: Disposition.ACK,
    Outcome.SOFT_FAILED: Disposition.ACK,
    Outcome.REJECTED: Disposition.ACK,
    Outcome.INVALID: Disposition.ACK,
    Outcome.QUEUED: Disposition.ACK,
    Outcome.ERROR: Disposition.RETRY,
}


def disposition_for_outcome(outcome: Outcome) -> Disposition:
    return _OUTCOME_DISPOSITION[outcome]


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may go away if the same input is processed again later."""
    if isinstance(exc, StorageError):
        return exc.transient
    if isinstance(exc, MissingData):
        return exc.transient
    return is_transient_fetch_error(exc)


def disposition_for_exception(
    exc: BaseException, *, attempt: int, max_attempts: int
) -> Disposition:
    if isinstance(exc, WireFormatError):
        return Disposition.TERMINATE
    if is_transient(exc):
        return Disposition.RETRY
    return Disposition.RETRY if attempt < max_attempts else Disposition.TERMINATE


def retry_delay_s(attempt: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff: 1, 2, 4, ... seconds, capped (``attempt`` counts from 1)."""
    return backoff_delay(attempt, initial=base, maximum=cap)


class DeliveryInfo(Protocol):
    """What ``handle_message`` needs to know about a delivery (the bus's message metadata)."""

    @property
    def num_delivered(self) -> int: ...

    @property
    def stream_seq(self) -> int: ...


class MessageProcessor(Protocol):
    """What ``handle_message`` drives (``InputProcessor`` satisfies it): a message is opened,
    its events are processed in order, and it is closed (which publishes its outputs)."""

    async def begin_message(
        self, room_id: RoomId, items: Sequence[InputRoomEvent] = (), *, batched: bool = True
    ) -> None: ...

    async def process_or_raise(self, item: InputRoomEvent) -> EventResult: ...

    async def end_message(self, room_id: RoomId) -> None: ...

    def abort_message(self, room_id: RoomId, *, stale: bool = False) -> None: ...


def is_stale_read(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was caused by, ``StaleRead``: the message assumed what it did
    not read, wrongly, and wrote nothing (``InputConfig.optimistic_reads``)."""
    seen: BaseException | None = exc
    for _ in range(8):  # a failed flush wraps its cause once or twice
        if seen is None:
            return False
        if isinstance(seen, StaleRead):
            return True
        seen = getattr(seen, "cause", None) or seen.__cause__
    return False


class _Stale(Exception):
    """An event of the message failed with a stale read: the message is processed again."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one input message: what to do with it and what to answer a sync caller.

    ``results`` has one entry per event of the message processed so far (all of them unless the
    message is retried). ``reply`` is ``None`` while the message will be retried (the caller
    gets the final answer).
    """

    disposition: Disposition
    results: tuple[EventResult, ...]
    reply: bytes | None
    delay_s: float = 0.0
    reason: str | None = None  # why a message is retried (for operators)
    stale_reads: int = 0  # 1: processed again because an optimistic read proved stale


def _foreign_room(item: InputRoomEvent, room_id: RoomId) -> str | None:
    """The event's room when it is not ``room_id`` (an event naming no usable room is left to
    the pipeline, which says what is wrong with it)."""
    try:
        own = route_room_id(item)
    except ValueError:
        return None
    return None if own == room_id else own


def _reply(version: int, results: Sequence[EventResult]) -> bytes:
    if version == WIRE_VERSION:
        return encode_event_result(results[0])
    return encode_event_results(results)


async def handle_message(
    processor: MessageProcessor,
    room_id: RoomId,
    payload: bytes,
    info: DeliveryInfo,
    *,
    max_attempts: int = 10,
) -> Decision:
    """Decode one input message (version 1: one event; version 2: a batch), process its events
    in order and map the result through the table above.

    A transient failure of one event retries the whole message: the events before it are
    committed already and come back from storage as they were (idempotence). A failure that
    outlasts ``max_attempts`` deliveries gives that event ``ERROR`` and the message goes on
    with the next event, so one broken event never stalls its room. Outputs are published once,
    at the end of the message (pipelined), before the message is acked.
    """
    try:
        version, items = decode_input_message(payload)
    except WireFormatError as exc:
        log.error(
            "terminating undecodable input message room=%s seq=%s: %s",
            room_id, info.stream_seq, exc,
        )  # fmt: skip
        result = EventResult(None, Outcome.INVALID, f"undecodable message: {exc}")
        return Decision(Disposition.TERMINATE, (result,), encode_event_result(result))
    try:
        return await _handle_items(processor, room_id, version, items, info, max_attempts)
    except BaseException:  # cancelled (handler timeout, shutdown): nothing half-done is kept
        processor.abort_message(room_id)
        raise


async def handle_messages(
    processor: MessageProcessor,
    room_id: RoomId,
    messages: Sequence[tuple[bytes, DeliveryInfo]],
    *,
    max_attempts: int = 10,
) -> list[Decision]:
    """Several consecutive input messages of one room as one unit: their events are processed
    in order and committed and published together (the head's delivery count counts the
    attempts). Returns the decisions of a prefix of ``messages``, the first one's at least:
    the unit stops before an undecodable message, and when it is retried the first message
    alone gets the ``RETRY`` (the bus then handles the messages one at a time)."""
    decoded: list[tuple[int, Sequence[InputRoomEvent]]] = []
    for payload, _ in messages:
        try:
            decoded.append(decode_input_message(payload))
        except WireFormatError:
            break
    if len(decoded) < 2:
        payload, info = messages[0]
        return [await handle_message(processor, room_id, payload, info, max_attempts=max_attempts)]
    items = [item for _, message_items in decoded for item in message_items]
    try:
        decision = await _handle_items(
            processor, room_id, decoded[0][0], items, messages[0][1], max_attempts
        )
    except BaseException:
        processor.abort_message(room_id)
        raise
    if decision.disposition is not Disposition.ACK:
        return [decision]
    decisions: list[Decision] = []
    start = 0
    for version, message_items in decoded:
        results = decision.results[start : start + len(message_items)]
        stale = decision.stale_reads if not start else 0  # counted once, with the first
        start += len(message_items)
        decisions.append(
            Decision(Disposition.ACK, results, _reply(version, results), stale_reads=stale)
        )
    return decisions


def _retry(attempt: int, results: Sequence[EventResult], exc: Exception) -> Decision:
    return Decision(
        Disposition.RETRY,
        tuple(results),
        None,
        retry_delay_s(attempt),
        f"{type(exc).__name__}: {exc}",
    )


async def _handle_items(
    processor: MessageProcessor,
    room_id: RoomId,
    version: int,
    items: Sequence[InputRoomEvent],
    info: DeliveryInfo,
    max_attempts: int,
    *,
    batched: bool = True,
    stale_once: bool = False,
) -> Decision:
    """Open the message, process its events, close it. ``batched``: its writes are committed
    together; when that keeps failing for good, the message is processed again with each
    event committed on its own, so the event that cannot be stored fails alone. A message
    whose assumed reads proved stale (nothing of it was written) is processed again at once,
    reading for real (``stale_once``: this is that second time)."""
    attempt = info.num_delivered
    results: list[EventResult] = []
    try:
        await processor.begin_message(room_id, items, batched=batched)
    except Exception as exc:
        log.warning(
            "input for room %s could not start (attempt %d), retrying: %s: %s",
            room_id, attempt, type(exc).__name__, exc,
        )  # fmt: skip
        return _retry(attempt, results, exc)
    try:
        retry = await _process_items(
            processor, room_id, items, results, info, max_attempts, stale_once=stale_once
        )
        await processor.end_message(room_id)
    except Exception as exc:
        if not stale_once and is_stale_read(exc):
            log.info("room %s moved on since it was cached; processing its input again", room_id)
            processor.abort_message(room_id, stale=True)
            again = await _handle_items(
                processor, room_id, version, items, info, max_attempts,
                batched=batched, stale_once=True,
            )  # fmt: skip
            return replace(again, stale_reads=again.stale_reads + 1)
        gives_up = (
            disposition_for_exception(exc, attempt=attempt, max_attempts=max_attempts)
            is not Disposition.RETRY
        )
        if not (batched and gives_up):
            log.warning(
                "committing or publishing the input of room %s failed (attempt %d), "
                "retrying: %s: %s",
                room_id, attempt, type(exc).__name__, exc,
            )  # fmt: skip
            return _retry(attempt, results, exc)
        log.error(
            "committing the input of room %s failed for good after %d attempts (seq=%s): "
            "%s: %s; committing its events one by one",
            room_id, attempt, info.stream_seq, type(exc).__name__, exc,
        )  # fmt: skip
        return await _handle_items(
            processor, room_id, version, items, info, max_attempts, batched=False
        )
    if retry is not None:
        return retry
    return Decision(Disposition.ACK, tuple(results), _reply(version, results))


async def _process_items(
    processor: MessageProcessor,
    room_id: RoomId,
    items: Sequence[InputRoomEvent],
    results: list[EventResult],
    info: DeliveryInfo,
    max_attempts: int,
    *,
    stale_once: bool = False,
) -> Decision | None:
    """Process ``items`` in order, appending to ``results``; a ``RETRY`` decision stops it,
    and a stale read (the first time) is raised as ``_Stale``.

    An event of another room than the message's is not processed (INVALID): a room's worker
    handles its own room's events only, or per-room exclusivity would not hold."""
    attempt = info.num_delivered
    for item in items:
        foreign = _foreign_room(item, room_id)
        if foreign is not None:
            log.error(
                "input message seq=%s for room %s carries an event of room %r: not processed",
                info.stream_seq, room_id, foreign,
            )  # fmt: skip
            results.append(
                EventResult(
                    item.event_id_hint(),
                    Outcome.INVALID,
                    f"the event is of room {foreign!r}, sent as input of room {room_id!r}",
                )
            )
            continue
        try:
            results.append(await processor.process_or_raise(item))
            continue
        except Exception as exc:
            if not stale_once and is_stale_read(exc):
                raise _Stale(str(exc)) from exc
            disposition = disposition_for_exception(exc, attempt=attempt, max_attempts=max_attempts)
            reason = f"{type(exc).__name__}: {exc}"
            failed = EventResult(event_id_of_failure(exc, item), Outcome.ERROR, reason)
        if disposition is Disposition.RETRY:
            log.warning(
                "input for room %s failed (attempt %d), retrying: %s", room_id, attempt, reason
            )
            return Decision(disposition, (*results, failed), None, retry_delay_s(attempt), reason)
        log.error(
            "input event %s of room %s failed for good after %d attempts (seq=%s): %s",
            failed.event_id, room_id, attempt, info.stream_seq, reason,
        )  # fmt: skip
        results.append(failed)
    return None
