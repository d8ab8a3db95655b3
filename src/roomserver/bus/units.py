"""Units: a room worker handles the messages queued behind its room's head together.

The room's consumer keeps one message in flight (the head), which is what keeps a room's
messages in order across processes. When the head's delivery says more of the room's input is
pending, the worker reads the messages right behind it from the stream itself (one batched
direct get: ``$JS.API.DIRECT.GET.<stream>`` with ``next_by_subj`` and ``batch``) and hands the
head and those to the unit handler at once. No other worker can handle them meanwhile: they
are behind the unacknowledged head. Their results are kept (``SettledAhead``) and applied when
the consumer delivers them, one by one, without calling the handler again; a crash before
that redelivers them to a handler, which finds their outcomes recorded. docs/bus.md, "Units".
"""

from __future__ import annotations

import dataclasses
import json
import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from roomserver.bus.types import HEADER_SYNC, DeliveryInfo, HandlerResult

log = logging.getLogger(__name__)

_STATUS = "Status"
_PURGE_TIMEOUT = 5.0
_SEQUENCE = "Nats-Sequence"
_PENDING = "Nats-Num-Pending"
#: At most this many results are kept per room (more than a unit ever has).
_MAX_SETTLED = 4096


def direct_get_request(after_seq: int, subject: str, count: int, max_bytes: int) -> bytes:
    """The batched direct get of up to ``count`` messages of ``subject`` after ``after_seq``."""
    return json.dumps(
        {"seq": after_seq + 1, "next_by_subj": subject, "batch": count, "max_bytes": max_bytes}
    ).encode()


def following_message(msg: Msg) -> tuple[bytes, DeliveryInfo] | None:
    """One message of a batched direct get's answer; ``None`` at its end (a status: 204 end of
    batch, 404 nothing found, or an error)."""
    headers = msg.headers or {}
    seq = headers.get(_SEQUENCE)
    if headers.get(_STATUS) is not None or seq is None:
        return None
    pending = int(headers.get(_PENDING) or 0)
    # Not delivered yet: delivery count 0; the store time is not needed (0).
    return msg.data, DeliveryInfo(int(seq), 0, pending, 0, headers.get(HEADER_SYNC))


async def purge_settled(nc: NATS, stream: str, subject: str, through_seq: int) -> bool:
    """Remove the room's messages up to ``through_seq`` from the stream: a unit settled them
    (the head, acked before this, and the ones behind it). Whether the stream confirmed it."""
    request = json.dumps({"filter": subject, "seq": through_seq + 1}).encode()
    try:
        reply = await nc.request(f"$JS.API.STREAM.PURGE.{stream}", request, timeout=_PURGE_TIMEOUT)
        return bool(json.loads(reply.data).get("success"))
    except Exception as exc:  # the kept results settle them on delivery instead
        log.debug("purging %s through seq %s failed (%r)", subject, through_seq, exc)
        return False


class SettledAhead:
    """Results of messages a unit handled before the consumer delivered them, by stream
    sequence. Taking a sequence forgets every earlier one (handled elsewhere, or purged)."""

    __slots__ = ("_results",)

    def __init__(self) -> None:
        self._results: dict[int, HandlerResult] = {}

    def put(self, seq: int, result: HandlerResult) -> None:
        if len(self._results) < _MAX_SETTLED:
            self._results[seq] = result

    def replied(self, seq: int) -> None:
        """``seq``'s sync caller has its reply: its delivery (if any) must not send another."""
        result = self._results.get(seq)
        if result is not None:
            self._results[seq] = dataclasses.replace(result, reply=None)

    def take(self, seq: int) -> HandlerResult | None:
        results = self._results
        if not results:
            return None
        result = results.pop(seq, None)
        for earlier in [s for s in results if s < seq]:
            del results[earlier]
        return result

    def __len__(self) -> int:
        return len(self._results)
