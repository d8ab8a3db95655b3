"""Publishing input: one message per event on its room's subject, with the ``room_id`` header.

* :meth:`InputPublisher.publish_input` publishes one message and waits for the stream's ack.
* :meth:`InputPublisher.publish_inputs` pipelines many publishes and returns once the stream
  acked them all (the asynchronous mode): stream sequences, in order. Messages of one room keep
  their order (one connection, published in order).
* :meth:`InputPublisher.submit_sync` publishes with a ``sync`` header naming a reply inbox and
  waits for one reply per message (the handler's reply bytes), returned in submission order.
  Replies carry the input stream sequence (header ``stream_seq``), so a reply repeated after a
  redelivery is recognised, and replies arriving in any order are matched to their message.
  All synchronous calls share one inbox subscription (``<inbox>.<call>``). A room worker on
  the same connection hands its reply over in the process (:func:`reply_locally`) instead of
  sending it through the server: one server hop less per synchronous call.

Code running inside a room worker must not call :meth:`submit_sync` for its own room: it would
wait for a reply only it can produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError

from roomserver.bus.config import BusConfig
from roomserver.bus.subjects import input_subject
from roomserver.bus.types import (
    HEADER_REPLY_SEQ,
    HEADER_ROOM_ID,
    HEADER_SYNC,
    SyncReplyTimeout,
    room_header_value,
)


class _SyncCall:
    __slots__ = ("done", "expected", "replies")

    def __init__(self) -> None:
        self.replies: dict[int, bytes] = {}
        self.expected: set[int] | None = None
        self.done = asyncio.Event()

    def check(self) -> None:
        if self.expected is not None and self.expected.issubset(self.replies):
            self.done.set()


_STATUS = "Status"
_NO_RESPONDERS = "503"


class StreamAcks:
    """JetStream publishes and their acknowledgements, pipelined: each publish names a reply
    subject ``<prefix><n>``, and the stream's ack (or error) resolves its future. The acks
    arrive on a subscription of the owner (``resolve``), shared with its other replies: no
    random token, no semaphore and no second subscription per publish, as
    ``JetStreamContext.publish_async`` has."""

    __slots__ = ("_counter", "_nc", "_prefix", "_waiting")

    def __init__(self, nc: NATS, prefix: str) -> None:
        self._nc = nc
        self._prefix = prefix
        self._counter = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[tuple[int, bool]]] = {}

    def owns(self, subject: str) -> bool:
        """Whether ``subject`` is the reply subject of one of these publishes."""
        return subject.startswith(self._prefix)

    async def publish(
        self, messages: Iterable[tuple[str, bytes, dict[str, str]]], within: float
    ) -> list[tuple[int, bool]]:
        """Publish (subject, payload, headers) messages pipelined, in order; returns each
        one's (stream sequence, duplicate) once the stream stored all of them. Raises the
        first failure (a stream error, no stream, or ``TimeoutError`` after ``within`` seconds)."""
        waiting = self._waiting
        loop = asyncio.get_running_loop()
        publish = self._nc.publish
        tickets: list[str] = []
        try:
            for subject, payload, headers in messages:
                ticket = f"{self._prefix}{next(self._counter)}"
                waiting[ticket] = loop.create_future()
                tickets.append(ticket)
                await publish(subject, payload, reply=ticket, headers=headers)
            async with asyncio.timeout(within):
                return [await waiting[t] for t in tickets]
        finally:
            for ticket in tickets:
                future = waiting.pop(ticket)
                if future.done() and not future.cancelled():
                    future.exception()  # retrieved: a later failure after the first one raised

    def resolve(self, ticket: str, msg: Msg) -> None:
        """The stream's answer to ``ticket``'s publish."""
        future = self._waiting.get(ticket)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS:
            future.set_exception(NoStreamResponseError())
            return
        try:
            answer = json.loads(msg.data)
            if "error" in answer:
                APIError.from_error(answer["error"])  # raises the error's own class
            future.set_result((int(answer["seq"]), bool(answer.get("duplicate"))))
        except (APIError, ValueError, TypeError, KeyError) as exc:
            future.set_exception(exc)


#: The started publisher of each connection, for :func:`reply_locally`.
_BY_CONNECTION: weakref.WeakKeyDictionary[NATS, InputPublisher] = weakref.WeakKeyDictionary()


def reply_locally(nc: NATS, reply_to: str, reply: bytes, seq: int) -> bool:
    """Hand a sync reply for input message ``seq`` to its caller if the caller waits on this
    connection's publisher (no trip through the server). Whether it was handed over; if not,
    the reply is published as usual.

    The caller runs in a later event loop step; the worker queues the message's ack on the
    connection before that (in the same step), so the ack goes out ahead of anything the
    caller sends once it has its reply, as when the reply went through the server behind
    the ack."""
    publisher = _BY_CONNECTION.get(nc)
    if publisher is None:
        return False
    return publisher.take_reply(reply_to, reply, seq)


class InputPublisher:
    def __init__(self, nc: NATS, js: JetStreamContext, config: BusConfig) -> None:
        self.nc = nc
        self.js = js
        self.config = config
        self._inbox = nc.new_inbox()
        self._calls: dict[str, _SyncCall] = {}
        self._counter = itertools.count(1)
        self._sub: Any = None
        #: Stream acks come on the same inbox as sync replies, as ``<inbox>.p<n>``.
        self.acks = StreamAcks(nc, f"{self._inbox}.p")

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self._inbox + ".*", cb=self._on_reply)
        _BY_CONNECTION[self.nc] = self

    async def stop(self) -> None:
        if _BY_CONNECTION.get(self.nc) is self:
            del _BY_CONNECTION[self.nc]
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def _headers(self, room_id: str, reply_to: str | None) -> dict[str, str]:
        value = room_header_value(room_id)
        if reply_to is None:
            return {HEADER_ROOM_ID: value}
        return {HEADER_ROOM_ID: value, HEADER_SYNC: reply_to}

    async def publish_input(
        self, room_id: str, payload: bytes, *, reply_to: str | None = None
    ) -> int:
        """Publish one input message; returns its stream sequence once stored."""
        return (await self.publish_inputs([(room_id, payload)], reply_to=reply_to))[0]

    async def publish_inputs(
        self, items: Sequence[tuple[str, bytes]], *, reply_to: str | None = None
    ) -> list[int]:
        """Publish many input messages (pipelined); returns their stream sequences, in order,
        once the stream stored all of them. On failure, the ones already stored stay queued."""
        prefix = self.config.prefix
        acks = await self.acks.publish(
            (
                (input_subject(prefix, room_id), payload, self._headers(room_id, reply_to))
                for room_id, payload in items
            ),
            self.config.publish_timeout,
        )
        return [seq for seq, _ in acks]

    async def submit_sync(
        self, items: Sequence[tuple[str, bytes]], *, reply_timeout: float | None = None
    ) -> list[bytes]:
        """Publish and wait for every message's reply; replies in submission order.

        Raises :class:`SyncReplyTimeout` (with the replies that did arrive) after ``reply_timeout``
        seconds (default ``config.sync_timeout``)."""
        if not items:
            return []
        token = str(next(self._counter))
        call = _SyncCall()
        self._calls[token] = call
        try:
            seqs = await self.publish_inputs(items, reply_to=f"{self._inbox}.{token}")
            call.expected = set(seqs)
            call.check()
            wait = self.config.sync_timeout if reply_timeout is None else reply_timeout
            try:
                async with asyncio.timeout(wait):
                    await call.done.wait()
            except TimeoutError:
                raise SyncReplyTimeout([call.replies.get(s) for s in seqs], seqs) from None
            return [call.replies[s] for s in seqs]
        finally:
            del self._calls[token]

    def take_reply(self, reply_to: str, reply: bytes, seq: int) -> bool:
        """A reply for ``reply_to`` handed over in the process: whether ``reply_to`` is this
        publisher's inbox (a call no longer waiting drops it, as its inbox would)."""
        inbox, _, token = reply_to.rpartition(".")
        if inbox != self._inbox:
            return False
        call = self._calls.get(token)
        if call is not None:
            call.replies[seq] = reply
            call.check()
        return True

    async def _on_reply(self, msg: Msg) -> None:
        ticket = msg.subject
        if self.acks.owns(ticket):
            self.acks.resolve(ticket, msg)
            return
        if not msg.headers:
            return
        try:
            seq = int(msg.headers.get(HEADER_REPLY_SEQ, ""))
        except ValueError:
            return
        self.take_reply(msg.subject, msg.data, seq)
