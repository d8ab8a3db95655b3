"""Publishing input: one message per event on its room's subject, with the ``room_id`` header.

* :meth:`InputPublisher.publish_input` publishes one message and waits for the stream's ack.
* :meth:`InputPublisher.publish_inputs` pipelines many publishes and returns once the stream
  acked them all (the asynchronous mode): stream sequences, in order. Messages of one room keep
  their order (one connection, published in order).
* :meth:`InputPublisher.submit_sync` publishes with a ``sync`` header naming a reply inbox and
  waits for one reply per message (the handler's reply bytes), returned in submission order.
  Replies carry the input stream sequence (header ``stream_seq``), so a reply repeated after a
  redelivery is recognised, and replies arriving in any order are matched to their message.
  All synchronous calls share one inbox subscription (``<inbox>.<call>``).

Code running inside a room worker must not call :meth:`submit_sync` for its own room: it would
wait for a reply only it can produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

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


class InputPublisher:
    def __init__(self, nc: NATS, js: JetStreamContext, config: BusConfig) -> None:
        self.nc = nc
        self.js = js
        self.config = config
        self._inbox = nc.new_inbox()
        self._calls: dict[str, _SyncCall] = {}
        self._counter = itertools.count(1)
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self._inbox + ".*", cb=self._on_reply)

    async def stop(self) -> None:
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
        subject = input_subject(self.config.prefix, room_id)
        ack = await self.js.publish(
            subject,
            payload,
            timeout=self.config.publish_timeout,
            headers=self._headers(room_id, reply_to),
        )
        return int(ack.seq)

    async def publish_inputs(
        self, items: Sequence[tuple[str, bytes]], *, reply_to: str | None = None
    ) -> list[int]:
        """Publish many input messages (pipelined); returns their stream sequences, in order,
        once the stream stored all of them. On failure, the ones already stored stay queued."""
        prefix = self.config.prefix
        futures = []
        for room_id, payload in items:
            futures.append(
                await self.js.publish_async(
                    input_subject(prefix, room_id),
                    payload,
                    headers=self._headers(room_id, reply_to),
                )
            )
        async with asyncio.timeout(self.config.publish_timeout):
            acks = await asyncio.gather(*futures)
        return [int(ack.seq) for ack in acks]

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

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox) + 1 :]
        call = self._calls.get(token)
        if call is None or not msg.headers:
            return
        try:
            seq = int(msg.headers.get(HEADER_REPLY_SEQ, ""))
        except ValueError:
            return
        call.replies[seq] = msg.data
        call.check()
