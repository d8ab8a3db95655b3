"""Discovery: learn which rooms have input waiting, and make sure each has a worker.

One consumer per process over the whole input stream: headers only, deliver-all, ack-all,
pulled in batches. For each batch the rooms are announced to the worker pool (which creates
the room's durable consumer before returning), and only then is the batch acked: under
interest retention the discovery consumer's interest is what keeps a message alive until its
room consumer exists.

The consumer is named but not durable: it is deleted ``discovery_inactive_threshold`` after
this process stops pulling, and it survives a nats-server restart (file storage). When it is
gone, a new one is created; being deliver-all, it announces again every message still
retained, i.e. every room with unprocessed input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from roomserver.bus.config import BusConfig
from roomserver.bus.subjects import (
    input_stream_name,
    room_id_from_token,
    room_token,
    token_of_subject,
)
from roomserver.bus.types import HEADER_ROOM_ID
from roomserver.bus.workers import WorkerPool, parse_ack_subject

log = logging.getLogger(__name__)

_RETRY_DELAY = 1.0
_CONCURRENT_ANNOUNCEMENTS = 32


def room_of_announcement(prefix: str, msg: Msg) -> str | None:
    """The room a message belongs to: its ``room_id`` header, checked against its subject."""
    token = token_of_subject(prefix, msg.subject)
    room_id = (msg.headers or {}).get(HEADER_ROOM_ID)
    if room_id is not None and token is not None and room_token(room_id) == token:
        return room_id
    # No header, or one that does not match the subject: the subject decides, since the
    # room consumer that will deliver this message filters on the subject.
    return room_id_from_token(token) if token is not None else None


class Discovery:
    """The discovery consumer of one process, feeding a :class:`WorkerPool`."""

    def __init__(self, nc: NATS, js: JetStreamContext, config: BusConfig, pool: WorkerPool) -> None:
        self.nc = nc
        self.js = js
        self.config = config
        self.pool = pool
        self.stream = input_stream_name(config.prefix)
        self.name = f"{config.prefix}InputDiscovery{nc._nuid.next().decode()}"
        self.announced = 0
        self._stopping = False
        self._creating = asyncio.Semaphore(_CONCURRENT_ANNOUNCEMENTS)
        self._task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        await self._create()
        self._task = asyncio.create_task(self._run(), name="input discovery")

    async def _create(self) -> None:
        config = ConsumerConfig(
            name=self.name,
            description="roomserver input discovery (headers only)",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.ALL,
            ack_wait=60.0,
            max_ack_pending=self.config.discovery_batch * 4,
            headers_only=True,
            filter_subject=f"{self.stream}.>",
            inactive_threshold=self.config.discovery_inactive_threshold,
        )
        await self.js.add_consumer(self.stream, config)
        if self._sub is None:
            self._sub = await self.js.pull_subscribe_bind(consumer=self.name, stream=self.stream)

    async def _run(self) -> None:
        assert self._sub is not None
        while not self._stopping:
            try:
                msgs = await self._sub.fetch(
                    self.config.discovery_batch, timeout=self.config.pull_expires
                )
            except (TimeoutError, NatsTimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._recover(exc)
                continue
            if not msgs:
                continue
            try:
                await self._announce_batch(msgs)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Unacked announcements come back after the consumer's AckWait.
                log.exception("discovery failed on a batch; continuing")
                await asyncio.sleep(_RETRY_DELAY)

    async def _announce_batch(self, msgs: list[Msg]) -> None:
        latest: dict[str, int] = {}
        for msg in msgs:
            if not msg.reply:
                continue
            seq = parse_ack_subject(msg.reply)[0]
            room_id = room_of_announcement(self.config.prefix, msg)
            if room_id is None:
                log.error("input message seq %s on %r names no room; dropped", seq, msg.subject)
                continue
            latest[room_id] = max(seq, latest.get(room_id, 0))
        remaining = latest
        while remaining:
            rooms = list(remaining.items())
            results = await asyncio.gather(
                *(self._announce(room, seq) for room, seq in rooms), return_exceptions=True
            )
            remaining = {
                room: seq
                for (room, seq), result in zip(rooms, results, strict=True)
                if isinstance(result, BaseException)
            }
            if not remaining:
                break
            if self._stopping:
                return  # unacked: announced again to whoever runs discovery next
            # Without its room consumer a message must not be acked here: retry those.
            log.warning("could not prepare %d room consumers; retrying", len(remaining))
            await asyncio.sleep(_RETRY_DELAY)
        last = msgs[-1]
        if last.reply:
            await self.nc.publish(last.reply, b"+ACK")  # ack-all: covers the whole batch
            self.announced = max(self.announced, parse_ack_subject(last.reply)[0])

    async def _announce(self, room_id: str, seq: int) -> None:
        # Bounded: hundreds of concurrent consumer creations only make the server time out.
        async with self._creating:
            await self.pool.announce(room_id, seq)

    async def _recover(self, exc: Exception) -> None:
        """The consumer may be gone (expired while disconnected, deleted): recreate it."""
        try:
            await self.js.consumer_info(self.stream, self.name)
        except NotFoundError:
            log.warning("discovery consumer %s vanished; recreating it", self.name)
            with contextlib.suppress(APIError, TimeoutError, NatsTimeoutError):
                await self._create()
                return
        except Exception:
            pass
        log.debug("discovery fetch failed: %r", exc)
        await asyncio.sleep(_RETRY_DELAY)

    async def stop(self) -> None:
        # Cooperative first: cancelling the client's fetch can get stuck (a cancellation
        # racing its internal wait_for), so let the current fetch run out.
        self._stopping = True
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=self.config.pull_expires + 2.0)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=2.0)
            self._task = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        # The consumer is not deleted: announcements it has not acked keep their interest
        # until it expires, which covers a restart (the next process replays them).
