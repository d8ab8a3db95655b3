"""What a room worker hands to its handler, and what the handler answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from roomserver.ports import Disposition as Disposition

#: Header names on input messages (compatible with Dendrite's).
HEADER_ROOM_ID = "room_id"
_HEADER_LINE_BREAKS = str.maketrans({"\r": " ", "\n": " "})


def room_header_value(room_id: str) -> str:
    """The ``room_id`` header as it travels: a header line cannot hold line breaks (the client
    turns them into spaces) nor keep surrounding whitespace. A hostile room ID may have both;
    the subject token carries it exactly, the header in this form."""
    return room_id.translate(_HEADER_LINE_BREAKS).strip()


HEADER_SYNC = "sync"
#: Header on a sync reply: the input stream sequence the reply answers.
HEADER_REPLY_SEQ = "stream_seq"
#: Headers on output messages.
HEADER_OUTPUT_TYPE = "output_room_event_type"
HEADER_MSG_ID = "Nats-Msg-Id"


@dataclass(frozen=True, slots=True)
class HandlerResult:
    """The handler's verdict (``Disposition`` is the input layer's vocabulary too: ACK is
    acked, RETRY negatively acked with a delay, TERMINATE terminated). ``reply`` goes to a
    synchronous caller, right behind the ack."""

    disposition: Disposition
    reply: bytes | None = None
    #: For RETRY: the redelivery delay; ``None`` lets the bus back off by delivery count.
    delay: float | None = None
    #: For TERMINATE: logged, with the stream sequence. For RETRY: the failure, shown to
    #: operators.
    reason: str | None = None

    @classmethod
    def ack(cls, reply: bytes | None = None) -> HandlerResult:
        return cls(Disposition.ACK, reply=reply)

    @classmethod
    def retry(cls, delay: float | None = None, *, reason: str | None = None) -> HandlerResult:
        return cls(Disposition.RETRY, delay=delay, reason=reason)

    @classmethod
    def terminate(cls, reason: str, reply: bytes | None = None) -> HandlerResult:
        return cls(Disposition.TERMINATE, reply=reply, reason=reason)


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    """Where a message sits in the stream."""

    stream_seq: int
    #: 1 on first delivery, 2 on the first redelivery, ...
    num_delivered: int
    #: Messages for this room still queued behind this one.
    num_pending: int
    #: When the stream stored the message (ns since the epoch).
    timestamp_ns: int
    #: The sync caller's reply inbox, if any (the bus replies; this is informational).
    reply_to: str | None


Handler = Callable[[str, bytes, DeliveryInfo], Awaitable[HandlerResult]]

#: Handles several consecutive messages of one room as one unit (``(payload, info)`` in stream
#: order, the head first; later ones have ``num_delivered`` 0: not delivered yet). Returns the
#: results of a prefix of them, the head's first; a message without a result, or whose
#: result is a NAK, is handled on its own when it is delivered. No result at all, or a NAK for
#: the head, makes the worker handle the head alone with ``Handler``.
UnitHandler = Callable[
    [str, Sequence[tuple[bytes, DeliveryInfo]]], Awaitable[Sequence[HandlerResult]]
]


class BusError(RuntimeError):
    """Base of the bus's own errors."""


class SyncReplyTimeout(BusError):
    """Not every reply of a synchronous submit arrived in time. ``replies`` holds the ones that
    did (``None`` for the others), in submission order; every message stays queued."""

    def __init__(self, replies: list[bytes | None], seqs: list[int]) -> None:
        missing = sum(1 for r in replies if r is None)
        super().__init__(f"{missing} of {len(replies)} replies missing")
        self.replies = replies
        self.seqs = seqs
