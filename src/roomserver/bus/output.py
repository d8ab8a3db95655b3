"""Output events: publishing with deduplication, and durable subscriptions.

Each output is one message on subject ``<prefix>OutputRoomEvent`` with headers ``room_id``,
``output_room_event_type`` and ``Nats-Msg-Id``. The stream drops a second message with the
same ``Nats-Msg-Id`` within its duplicate window, so republishing the outputs of an event
after a crash (same IDs) does not duplicate them.

An :class:`OutputSubscription` is a durable pull consumer over the output stream: iterate it
to receive outputs from where that durable name last acked, and ack each one. Under interest
retention an output published while no durable output consumer exists is discarded, so create
the subscriptions (or call :meth:`ensure_output_consumer`) before outputs are produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from roomserver.bus.config import BusConfig
from roomserver.bus.publisher import StreamAcks
from roomserver.bus.subjects import check_prefix, output_stream_name
from roomserver.bus.types import HEADER_MSG_ID, HEADER_OUTPUT_TYPE, HEADER_ROOM_ID
from roomserver.bus.workers import parse_ack_subject

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutputItem:
    room_id: str
    event_type: str
    payload: bytes
    msg_id: str


class OutputPublisher:
    """Implements ``roomserver.ports.OutputPublisher``. ``acks``: the connection's
    :class:`~roomserver.bus.publisher.StreamAcks` (the input publisher's, whose inbox
    receives the stream's acks)."""

    def __init__(self, acks: StreamAcks, config: BusConfig) -> None:
        self.acks = acks
        self.config = config
        self.subject = output_stream_name(config.prefix)
        self.duplicates = 0

    @staticmethod
    def _headers(room_id: str, event_type: str, msg_id: str) -> dict[str, str]:
        return {HEADER_ROOM_ID: room_id, HEADER_OUTPUT_TYPE: event_type, HEADER_MSG_ID: msg_id}

    async def publish_output(
        self, room_id: str, output_type: str, payload: bytes, *, msg_id: str
    ) -> None:
        """Publish one output and wait until stored (or recognised as a duplicate)."""
        await self.publish_outputs([OutputItem(room_id, output_type, payload, msg_id)])

    async def publish_outputs(self, items: Sequence[OutputItem]) -> None:
        """Publish several outputs pipelined, in order; returns once all are stored."""
        subject = self.subject
        headers = self._headers
        acks = await self.acks.publish(
            ((subject, i.payload, headers(i.room_id, i.event_type, i.msg_id)) for i in items),
            self.config.publish_timeout,
        )
        for item, (_, duplicate) in zip(items, acks, strict=True):
            if duplicate:
                self.duplicates += 1
                log.debug("output %s was already published", item.msg_id)


@dataclass(slots=True)
class OutputMessage:
    """One output as received by a subscription. Call :meth:`ack` once it is handled."""

    room_id: str
    event_type: str
    payload: bytes
    msg_id: str
    stream_seq: int
    _msg: Msg

    async def ack(self) -> None:
        await self._msg.ack_sync()


def output_consumer_config(config: BusConfig, durable: str) -> ConsumerConfig:
    check_prefix(durable)
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        description="roomserver output subscription",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=60.0,
        max_ack_pending=10_000,
    )


class OutputSubscription:
    """An async iterator over outputs, from the durable position of ``durable``."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, config: BusConfig, durable: str, *, batch: int = 64
    ) -> None:
        self.nc = nc
        self.js = js
        self.config = config
        self.durable = durable
        self.stream = output_stream_name(config.prefix)
        self.batch = batch
        self._buffer: list[Msg] = []
        self._sub: JetStreamContext.PullSubscription | None = None

    async def open(self) -> OutputSubscription:
        await self.js.add_consumer(self.stream, output_consumer_config(self.config, self.durable))
        self._sub = await self.js.pull_subscribe_bind(consumer=self.durable, stream=self.stream)
        return self

    async def close(self) -> None:
        """Release the prefetched outputs not yet handed out (they go to the next reader
        now instead of after AckWait) and unsubscribe."""
        for msg in reversed(self._buffer):  # in stream order, so they come back in order
            with contextlib.suppress(Exception):
                await msg.nak()
        self._buffer = []
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def __aiter__(self) -> OutputSubscription:
        return self

    async def __anext__(self) -> OutputMessage:
        while True:
            item = await self.next_within(self.config.pull_expires)
            if item is not None:
                return item

    async def next_within(self, seconds: float) -> OutputMessage | None:
        """The next output, or ``None`` if none arrives within ``seconds``."""
        if self._sub is None:
            await self.open()
        assert self._sub is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._buffer:
            remaining = deadline - loop.time()
            if remaining <= 0.001:
                return None
            try:
                self._buffer = await self._sub.fetch(self.batch, timeout=remaining)
            except (TimeoutError, NatsTimeoutError):
                continue
            self._buffer.reverse()
        msg = self._buffer.pop()
        headers = msg.headers or {}
        assert msg.reply is not None
        return OutputMessage(
            room_id=headers.get(HEADER_ROOM_ID, ""),
            event_type=headers.get(HEADER_OUTPUT_TYPE, ""),
            payload=msg.data,
            msg_id=headers.get(HEADER_MSG_ID, ""),
            stream_seq=parse_ack_subject(msg.reply)[0],
            _msg=msg,
        )
