"""Operator actions on a room's queued input: inspect, retry, skip, purge.

A room's input waits on its subject of the input stream; the room's worker holds at most one
message of it (the *head*) at a time. What this module offers:

* :func:`queued_rooms`: the rooms with messages still in the input stream (the stream's
  per-subject counts), each with what this process knows of its head (delivery count, since
  when it is being processed, its last error). A head held by another process shows only the
  count.
* retry / skip of the head (:meth:`roomserver.bus.pool.WorkerPool.intervene`): a head in
  flight has its current attempt cancelled, then is released for redelivery at once (retry) or
  terminated (skip); a head waiting out a retry delay is released at once or terminated
  through its ack subject. Only the process that holds the head can do this.
* :class:`SkipLog`: every skipped message is copied, with its reason, to the stream
  ``<prefix>InputSkipped`` (subject per room, kept 30 days), where it can be listed and, if
  need be, published again by hand.
* :func:`purge_room`: drop the room's queued input (a stream purge filtered on its subject).
* :class:`HeadRelay`: with several processes on one stream, the head may be held by another
  process. Every process running workers answers requests on ``<prefix>RoomserverAdmin.head``
  for the heads it holds (and stays silent otherwise); a process that does not hold the head
  asks there and takes the holder's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from roomserver.bus.config import BusConfig
from roomserver.bus.embedded import DEFAULT_MAX_PAYLOAD
from roomserver.bus.subjects import (
    input_stream_name,
    input_subject,
    room_consumer_name,
    room_id_from_token,
    room_token,
    token_of_subject,
)
from roomserver.bus.types import HEADER_ROOM_ID, BusError

log = logging.getLogger(__name__)

SKIPPED_STREAM = "InputSkipped"
ADMIN_SUBJECT = "RoomserverAdmin.head"
#: How long a process waits for another one to answer for a head it does not hold.
RELAY_TIMEOUT_S = 2.0
SKIP_RETENTION_S = 30 * 24 * 3600.0
_HEADER_REASON = "reason"
_HEADER_SEQ = "stream_seq"
_HEADER_DELIVERED = "num_delivered"
_HEADER_SKIPPED_AT = "skipped_at_ms"
_CONSUMER_DESCRIPTION = "input of room "


class Intervention(enum.Enum):
    """What an operator does to a room's head message."""

    #: Release it for redelivery now (cancelling the attempt in progress).
    RETRY = "retry"
    #: Terminate it: never processed; recorded in the skip log.
    SKIP = "skip"
    #: Its messages were purged: cancel the attempt in progress and release (a no-op for a
    #: message that no longer exists), so the room moves on to new input.
    RELEASE = "release"


class InterventionOutcome(enum.Enum):
    #: The head was being processed: the attempt was cancelled, then the action applied.
    CANCELLED_IN_FLIGHT = "cancelled_in_flight"
    #: The head was waiting out a retry delay: the action was applied through its ack subject.
    APPLIED_WAITING = "applied_waiting"
    #: This process holds no message of the room.
    NOT_HELD = "not_held"


@dataclass(slots=True)
class HeadMessage:
    """What a room worker knows of the message at the head of its room's queue."""

    stream_seq: int
    num_delivered: int
    #: Wall-clock time (s since the epoch) of the first delivery this process saw.
    first_delivered_at: float
    ack_subject: str
    payload: bytes
    in_flight: bool = True
    last_error: str | None = None
    #: Monotonic time until which a released (NAKed) head waits for its redelivery.
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class QueuedRoom:
    room_id: str | None
    #: Input messages of the room still in the stream (the head included).
    pending: int
    #: Known when this process holds the room's head.
    head_seq: int | None = None
    head_delivery_count: int | None = None
    head_in_flight: bool | None = None
    #: Seconds since the head was first delivered (this process's view).
    head_age_s: float | None = None
    last_error: str | None = None
    retry_in_s: float | None = None


@dataclass(frozen=True, slots=True)
class SkippedMessage:
    room_id: str
    stream_seq: int
    num_delivered: int
    reason: str
    skipped_at_ms: int
    payload_bytes: int


def describe_head(room_id: str | None, pending: int, head: HeadMessage | None) -> QueuedRoom:
    if head is None:
        return QueuedRoom(room_id=room_id, pending=pending)
    retry_in = None
    if head.retry_at is not None:
        retry_in = max(0.0, head.retry_at - time.monotonic())
    return QueuedRoom(
        room_id=room_id,
        pending=pending,
        head_seq=head.stream_seq,
        head_delivery_count=head.num_delivered,
        head_in_flight=head.in_flight,
        head_age_s=max(0.0, time.time() - head.first_delivered_at),
        last_error=head.last_error,
        retry_in_s=retry_in,
    )


async def pending_by_room(js: JetStreamContext, config: BusConfig) -> dict[str, int]:
    """Room token -> messages still in the input stream, for every room that has some."""
    stream = input_stream_name(config.prefix)
    info = await js.stream_info(stream, subjects_filter=f"{stream}.>")
    out: dict[str, int] = {}
    for subject, count in (info.state.subjects or {}).items():
        token = token_of_subject(config.prefix, subject)
        if token is not None and count > 0:
            out[token] = int(count)
    return out


async def room_of_token(js: JetStreamContext, config: BusConfig, token: str) -> str | None:
    """The room ID behind a subject token (hashed tokens: from the room consumer's
    description, which names the room)."""
    room_id = room_id_from_token(token)
    if room_id is not None:
        return room_id
    try:
        info = await js.consumer_info(
            input_stream_name(config.prefix), f"{config.prefix}RoomInput{token}"
        )
    except Exception:
        return None
    description = info.config.description or ""
    if description.startswith(_CONSUMER_DESCRIPTION):
        candidate = description[len(_CONSUMER_DESCRIPTION) :]
        if room_token(candidate) == token:
            return candidate
    return None


async def pending_for_room(js: JetStreamContext, config: BusConfig, room_id: str) -> int:
    stream = input_stream_name(config.prefix)
    subject = input_subject(config.prefix, room_id)
    info = await js.stream_info(stream, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


async def purge_room(nc: NATS, config: BusConfig, room_id: str) -> int:
    """Drop every queued input message of ``room_id``; returns how many were dropped."""
    stream = input_stream_name(config.prefix)
    request = json.dumps({"filter": input_subject(config.prefix, room_id)}).encode()
    reply = await nc.request(
        f"$JS.API.STREAM.PURGE.{stream}", request, timeout=config.publish_timeout
    )
    body = json.loads(reply.data)
    if "error" in body:
        raise BusError(f"purge of room {room_id}'s input failed: {body['error']}")
    return int(body.get("purged", 0))


def room_consumer_description(room_id: str) -> str:
    return (_CONSUMER_DESCRIPTION + room_id)[:1024]


def _skipped_stream(config: BusConfig) -> str:
    return config.prefix + SKIPPED_STREAM


class SkipLog:
    """Skipped input messages, kept on their own stream (one subject per room)."""

    def __init__(self, nc: NATS, js: JetStreamContext, config: BusConfig) -> None:
        self.nc = nc
        self.js = js
        self.config = config
        self.stream = _skipped_stream(config)
        self._ready = False
        self._lock = asyncio.Lock()

    def subject(self, room_id: str) -> str:
        return f"{self.stream}.{room_token(room_id)}"

    async def _ensure(self) -> None:
        async with self._lock:
            if self._ready:
                return
            config = StreamConfig(
                name=self.stream,
                description="roomserver input messages skipped by an operator",
                subjects=[f"{self.stream}.>"],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.MEMORY if self.config.storage == "memory" else StorageType.FILE,
                max_age=SKIP_RETENTION_S,
                max_msg_size=DEFAULT_MAX_PAYLOAD,
                num_replicas=self.config.replicas,
            )
            try:
                await self.js.stream_info(self.stream)
            except NotFoundError:
                await self.js.add_stream(config)
            self._ready = True

    async def record(
        self, room_id: str, head: HeadMessage, reason: str, *, skipped_at_ms: int
    ) -> None:
        await self._ensure()
        headers = {
            HEADER_ROOM_ID: room_id,
            _HEADER_REASON: reason,
            _HEADER_SEQ: str(head.stream_seq),
            _HEADER_DELIVERED: str(head.num_delivered),
            _HEADER_SKIPPED_AT: str(skipped_at_ms),
        }
        await self.js.publish(
            self.subject(room_id),
            head.payload,
            headers=headers,
            timeout=self.config.publish_timeout,
        )

    async def list(self, room_id: str, *, limit: int = 100) -> list[SkippedMessage]:
        """The room's skipped messages, oldest first (at most ``limit``, the newest ones)."""
        try:
            info = await self.js.stream_info(self.stream, subjects_filter=self.subject(room_id))
        except NotFoundError:
            return []
        total = int((info.state.subjects or {}).get(self.subject(room_id), 0))
        if total == 0:
            return []
        sub = await self.js.pull_subscribe(
            self.subject(room_id),
            stream=self.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.ALL,
                inactive_threshold=30.0,
                mem_storage=True,
            ),
        )
        out: list[SkippedMessage] = []
        try:
            while len(out) < total:
                msgs = await sub.fetch(min(256, total - len(out)), timeout=5.0)
                out.extend(_decode_skipped(room_id, m) for m in msgs)
        except TimeoutError:
            pass  # fewer than counted (expired meanwhile): return what came
        finally:
            await sub.unsubscribe()
        return out[-limit:]


LocalIntervention = Callable[[str, Intervention, str], Awaitable[InterventionOutcome]]


class HeadRelay:
    """Operator actions on heads held by other processes (see the module docstring)."""

    def __init__(self, nc: NATS, config: BusConfig, local: LocalIntervention) -> None:
        self.nc = nc
        self.subject = config.prefix + ADMIN_SUBJECT
        self.local = local
        self._sub: Any = None

    async def start(self) -> None:
        """Answer for the heads this process holds."""
        self._sub = await self.nc.subscribe(self.subject, cb=self._answer)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _answer(self, msg: Msg) -> None:
        try:
            body = json.loads(msg.data)
            room_id, action = str(body["room_id"]), Intervention(body["action"])
            reason = str(body.get("reason", ""))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed head request on %s", msg.subject)
            return
        outcome = await self.local(room_id, action, reason)
        if outcome is not InterventionOutcome.NOT_HELD and msg.reply:
            await self.nc.publish(msg.reply, outcome.value.encode())

    async def ask_others(
        self, room_id: str, action: Intervention, reason: str
    ) -> InterventionOutcome:
        """Have the process holding the room's head apply ``action``; NOT_HELD when none
        answers within :data:`RELAY_TIMEOUT_S`."""
        request = json.dumps({"room_id": room_id, "action": action.value, "reason": reason})
        try:
            reply = await self.nc.request(self.subject, request.encode(), timeout=RELAY_TIMEOUT_S)
        except (NatsTimeoutError, NoRespondersError, TimeoutError):
            return InterventionOutcome.NOT_HELD
        try:
            return InterventionOutcome(reply.data.decode())
        except ValueError:
            return InterventionOutcome.NOT_HELD


def _decode_skipped(room_id: str, msg: Msg) -> SkippedMessage:
    headers = msg.headers or {}

    def number(name: str) -> int:
        try:
            return int(headers.get(name, "0"))
        except ValueError:
            return 0

    return SkippedMessage(
        room_id=headers.get(HEADER_ROOM_ID, room_id),
        stream_seq=number(_HEADER_SEQ),
        num_delivered=number(_HEADER_DELIVERED),
        reason=headers.get(_HEADER_REASON, ""),
        skipped_at_ms=number(_HEADER_SKIPPED_AT),
        payload_bytes=len(msg.data),
    )


__all__ = [
    "HeadMessage",
    "HeadRelay",
    "Intervention",
    "InterventionOutcome",
    "QueuedRoom",
    "SkipLog",
    "SkippedMessage",
    "describe_head",
    "pending_by_room",
    "pending_for_room",
    "purge_room",
    "room_consumer_description",
    "room_consumer_name",
    "room_of_token",
]
