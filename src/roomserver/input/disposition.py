"""What the bus does with an input message once processing ends: one table, at the edge.

| outcome / exception                              | disposition                        |
|--------------------------------------------------|------------------------------------|
| ACCEPTED, SOFT_FAILED, REJECTED, INVALID         | ACK (outcome recorded / reason)    |
| undecodable message (``WireFormatError``)        | TERMINATE (logged with stream seq) |
| ``StorageError`` with ``transient`` (database    | RETRY with backoff                 |
| unavailable, ``ConcurrentUpdate``)               |                                    |
| ``MissingData(transient=True)``, timeouts,       | RETRY with backoff                 |
| connection errors, publish failures              |                                    |
| any other exception (a bug, corrupt data)        | RETRY with backoff up to           |
|                                                  | ``max_attempts``, then TERMINATE   |

The bus defines its own ``HandlerResult``; ``app.py`` translates a ``Decision`` into it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from roomserver.api import (
    EventResult,
    InputRoomEvent,
    Outcome,
    WireFormatError,
    decode_input_room_event,
    encode_event_result,
)
from roomserver.input.errors import MissingData, is_transient_fetch_error
from roomserver.ports import StorageError

log = logging.getLogger(__name__)


class Disposition(enum.Enum):
    ACK = "ack"  # done: the outcome is recorded (or the input was dropped with a reason)
    RETRY = "retry"  # transient failure: negative-ack with a delay, redelivered later
    TERMINATE = "terminate"  # never deliverable: stop redelivering


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
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


class DeliveryInfo(Protocol):
    """What ``handle_message`` needs to know about a delivery (the bus's message metadata)."""

    @property
    def num_delivered(self) -> int: ...

    @property
    def stream_seq(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one input message: what to do with it and what to answer a sync caller.

    ``reply`` is ``None`` while the message will be retried (the caller gets the final answer).
    """

    disposition: Disposition
    result: EventResult | None
    reply: bytes | None
    delay_s: float = 0.0


def _event_id_of_failure(exc: BaseException, item: InputRoomEvent) -> str | None:
    known = getattr(exc, "input_event_id", None)
    if isinstance(known, str):
        return known
    value = item.event.get("event_id")
    return value if isinstance(value, str) else None


async def handle_message(
    process: Callable[[InputRoomEvent], Awaitable[EventResult]],
    room_id: str,
    payload: bytes,
    info: DeliveryInfo,
    *,
    max_attempts: int = 10,
) -> Decision:
    """Decode one input message, process it with ``process`` (which raises for failures, e.g.
    ``InputProcessor.process_or_raise``) and map the result through the table above."""
    try:
        item = decode_input_room_event(payload)
    except WireFormatError as exc:
        log.error(
            "terminating undecodable input message room=%s seq=%s: %s",
            room_id, info.stream_seq, exc,
        )  # fmt: skip
        result = EventResult(None, Outcome.INVALID, f"undecodable message: {exc}")
        return Decision(Disposition.TERMINATE, result, encode_event_result(result))
    try:
        result = await process(item)
    except Exception as exc:
        attempt = info.num_delivered
        disposition = disposition_for_exception(exc, attempt=attempt, max_attempts=max_attempts)
        reason = f"{type(exc).__name__}: {exc}"
        result = EventResult(_event_id_of_failure(exc, item), Outcome.ERROR, reason)
        if disposition is Disposition.RETRY:
            log.warning(
                "input for room %s failed (attempt %d), retrying: %s", room_id, attempt, reason
            )
            return Decision(disposition, result, None, retry_delay_s(attempt))
        log.error(
            "input for room %s failed for good after %d attempts (seq=%s): %s",
            room_id, attempt, info.stream_seq, reason,
        )  # fmt: skip
        return Decision(disposition, result, encode_event_result(result))
    return Decision(disposition_for_outcome(result.outcome), result, encode_event_result(result))
