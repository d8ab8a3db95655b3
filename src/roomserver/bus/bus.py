"""The bus of one roomserver process: connection, streams, publishers, discovery and workers.

Lifecycle::

    async with await Bus.connect(url, config=BusConfig()) as bus:   # streams ensured
        outputs = await bus.output_subscription("syncapi")            # before outputs flow
        await bus.start_workers(handler)                              # discovery + workers
        replies = await bus.submit_sync([(room_id, payload)])
        ...
    # leaving: workers stopped (in-flight messages finished or released), connection closed
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from roomserver.bus import admin
from roomserver.bus.admin import (
    HeadMessage,
    HeadRelay,
    Intervention,
    InterventionOutcome,
    QueuedRoom,
    SkipLog,
    SkippedMessage,
)
from roomserver.bus.config import BusConfig
from roomserver.bus.discovery import Discovery
from roomserver.bus.output import OutputItem, OutputPublisher, OutputSubscription
from roomserver.bus.pool import WorkerPool, WorkerStats
from roomserver.bus.publisher import InputPublisher
from roomserver.bus.streams import ensure_streams
from roomserver.bus.subjects import input_stream_name
from roomserver.bus.types import Handler, UnitHandler
from roomserver.ports import OutboxEntry

log = logging.getLogger(__name__)

#: JetStream's advisory when a consumer's raft group elects a leader (``.<stream>.<consumer>``).
_CONSUMER_LEADER_ELECTED = "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED"


def server_urls(url: str | Sequence[str]) -> list[str]:
    """The server URLs of ``url``: a list, or one string of comma-separated URLs."""
    parts = [url] if isinstance(url, str) else list(url)
    servers = [u.strip() for part in parts for u in part.split(",") if u.strip()]
    if not servers:
        raise ValueError("no NATS server URL given")
    return servers


class Bus:
    def __init__(self, nc: NATS, config: BusConfig) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.config = config
        self.input = InputPublisher(nc, self.js, config)
        self.output = OutputPublisher(self.input.acks, config)
        self.pool: WorkerPool | None = None
        #: This process's own discovery consumer, then the shared one (see discovery.py).
        self.discovery: Discovery | None = None
        self.shared_discovery: Discovery | None = None
        self._subscriptions: list[OutputSubscription] = []
        self.skip_log = SkipLog(nc, self.js, config)
        self.relay = HeadRelay(nc, config, self._intervene_here)
        self.closing = False
        self._elections: Any = None

    @classmethod
    async def connect(
        cls,
        url: str | Sequence[str],
        *,
        config: BusConfig | None = None,
        name: str = "roomserver",
    ) -> Bus:
        """Connect (reconnecting forever, to any of the servers when ``url`` names several:
        a list, or one comma-separated string), ensure the streams, start the reply inbox."""
        holder: list[Bus] = []
        servers = server_urls(url)

        async def on_error(exc: Exception) -> None:
            log.debug("nats: %r", exc)

        async def on_disconnected() -> None:
            if not (holder and holder[0].closing):
                log.warning("nats: disconnected from %s", ", ".join(servers))

        async def on_reconnected() -> None:
            url = nc.connected_url  # a urllib ParseResult
            log.warning("nats: reconnected to %s", url.geturl() if url is not None else "?")
            if holder:
                holder[0].wake()

        nc = await nats.connect(
            servers,
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            pending_size=64 * 1024 * 1024,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
        bus = cls(nc, config or BusConfig())
        holder.append(bus)
        try:
            await ensure_streams(bus.js, bus.config)
            await bus.input.start()
        except BaseException:
            await nc.close()
            raise
        return bus

    # -- input -------------------------------------------------------------------------------

    async def publish_input(
        self, room_id: str, payload: bytes, *, reply_to: str | None = None
    ) -> int:
        return await self.input.publish_input(room_id, payload, reply_to=reply_to)

    async def publish_inputs(self, items: Sequence[tuple[str, bytes]]) -> list[int]:
        return await self.input.publish_inputs(items)

    async def submit_sync(
        self, items: Sequence[tuple[str, bytes]], *, reply_timeout: float | None = None
    ) -> list[bytes]:
        return await self.input.submit_sync(items, reply_timeout=reply_timeout)

    # -- workers -----------------------------------------------------------------------------

    async def start_workers(
        self, handler: Handler, *, unit_handler: UnitHandler | None = None
    ) -> None:
        """Start the worker pool and the discovery consumer (once). ``unit_handler``: handles
        a room's queued messages several at a time (docs/bus.md, "Units")."""
        if self.pool is not None:
            raise RuntimeError("workers already started")
        self.pool = WorkerPool(self.nc, self.js, self.config, handler, unit_handler)
        await self.pool.start()
        self.discovery = Discovery(self.nc, self.js, self.config, self.pool)
        await self.discovery.start()
        self.shared_discovery = Discovery(self.nc, self.js, self.config, self.pool, shared=True)
        await self.shared_discovery.start()
        self._elections = await self.nc.subscribe(
            f"{_CONSUMER_LEADER_ELECTED}.{input_stream_name(self.config.prefix)}.*",
            cb=self._on_consumer_leader_elected,
        )
        await self.relay.start()

    async def _on_consumer_leader_elected(self, msg: Any) -> None:
        """A consumer of the input stream has a new leader (on a cluster, after a node died or
        stepped down): a pull request the old leader held is gone without a reply. Pull again
        now rather than after the request's expiry: a room of a dead process is redelivered by
        the new leader one AckWait after its election, and a live room would stall meanwhile."""
        consumer = msg.subject.rsplit(".", 1)[-1]
        for discovery in (self.discovery, self.shared_discovery):
            if discovery is not None and discovery.name == consumer:
                discovery.pull_again()
                return
        if self.pool is not None:
            self.pool.wake_consumer(consumer)

    async def stop_workers(self, *, grace: float = 30.0) -> None:
        """Stop discovering; let each room finish its in-flight message (up to ``grace``
        seconds, then release it for redelivery)."""
        if self._elections is not None:
            subscription, self._elections = self._elections, None
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        await self.relay.stop()
        discoveries = [d for d in (self.discovery, self.shared_discovery) if d is not None]
        pool = self.pool
        self.discovery = self.shared_discovery = self.pool = None
        if pool is not None:
            pool.stopping = True  # no new workers from here on
        stops = [d.stop() for d in discoveries]
        stops += [p.stop(grace) for p in (pool,) if p is not None]
        await asyncio.gather(*stops)

    def wake(self) -> None:
        """After a reconnect: pull requests may be gone with the old server; ask again."""
        if self.pool is not None:
            self.pool.wake_all()
        for discovery in (self.discovery, self.shared_discovery):
            if discovery is not None:
                discovery.wake()

    def stats(self) -> WorkerStats:
        if self.pool is None:
            return WorkerStats(0, 0, 0, 0, 0)
        return self.pool.stats()

    # -- operator actions on queued input (see roomserver.bus.admin) --------------------------

    def head_of(self, room_id: str) -> HeadMessage | None:
        """The room's head message, if a worker of this process holds it."""
        worker = self.pool.worker_of(room_id) if self.pool is not None else None
        return worker.head if worker is not None else None

    async def queued_rooms(self) -> list[QueuedRoom]:
        """Every room with input in the stream, most pending first (then by room)."""
        pending = await admin.pending_by_room(self.js, self.config)
        rooms: list[QueuedRoom] = []
        for token, count in pending.items():
            room_id = await admin.room_of_token(self.js, self.config, token)
            head = self.head_of(room_id) if room_id is not None else None
            rooms.append(admin.describe_head(room_id, count, head))
        rooms.sort(key=lambda r: (-r.pending, r.room_id or ""))
        return rooms

    async def queued_room(self, room_id: str) -> QueuedRoom:
        count = await admin.pending_for_room(self.js, self.config, room_id)
        return admin.describe_head(room_id, count, self.head_of(room_id))

    async def intervene(
        self, room_id: str, action: Intervention, reason: str = ""
    ) -> InterventionOutcome:
        """Retry or skip the room's head message, held by this process or another one on the
        stream (asked through the relay). A skipped message is recorded in the skip log before
        it is terminated. NOT_HELD: no process holds the room's head."""
        outcome = await self._intervene_here(room_id, action, reason)
        if outcome is InterventionOutcome.NOT_HELD and await admin.pending_for_room(
            self.js, self.config, room_id
        ):
            outcome = await self.relay.ask_others(room_id, action, reason)
        return outcome

    async def _intervene_here(
        self, room_id: str, action: Intervention, reason: str
    ) -> InterventionOutcome:
        worker = self.pool.worker_of(room_id) if self.pool is not None else None
        head = worker.head if worker is not None else None
        if worker is None or head is None:
            return InterventionOutcome.NOT_HELD
        if action is Intervention.SKIP:
            await self.skip_log.record(room_id, head, reason, skipped_at_ms=int(time.time() * 1000))
        return await worker.intervene(action, reason)

    async def purge_room(self, room_id: str) -> int:
        """Drop the room's queued input; an attempt in progress is cancelled. Returns how many
        messages were dropped."""
        dropped = await admin.purge_room(self.nc, self.config, room_id)
        if dropped:
            await self.intervene(room_id, Intervention.RELEASE, "purged")
        return dropped

    async def skipped(self, room_id: str, *, limit: int = 100) -> list[SkippedMessage]:
        return await self.skip_log.list(room_id, limit=limit)

    # -- output ------------------------------------------------------------------------------

    async def publish_output(
        self, room_id: str, output_type: str, payload: bytes, *, msg_id: str
    ) -> None:
        await self.output.publish_output(room_id, output_type, payload, msg_id=msg_id)

    async def publish_outputs(self, items: Sequence[OutputItem]) -> None:
        await self.output.publish_outputs(items)

    async def publish_room_outputs(self, room_id: str, outputs: Sequence[OutboxEntry]) -> None:
        """``roomserver.ports.OutputPublisher``: a room's outbox entries, pipelined, in order."""
        await self.output.publish_outputs(
            [OutputItem(room_id, o.output_type, o.payload, o.msg_id) for o in outputs]
        )

    async def output_subscription(self, durable: str, *, batch: int = 64) -> OutputSubscription:
        """A durable subscription over the output stream (created if missing)."""
        subscription = OutputSubscription(self.nc, self.js, self.config, durable, batch=batch)
        await subscription.open()
        self._subscriptions.append(subscription)
        return subscription

    # -- lifecycle ---------------------------------------------------------------------------

    async def close(self, *, grace: float = 30.0) -> None:
        await self.stop_workers(grace=grace)
        self.closing = True
        for subscription in self._subscriptions:
            await subscription.close()
        await self.input.stop()
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:  # reconnecting or already failing: just close
                await self.nc.close()

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
