"""Discovery: learn which rooms have input waiting, and make sure each has a worker.

Two consumers over the whole input stream feed a process's :class:`WorkerPool`, both headers
only and deliver-all; each room of a chunk of announcements is announced to the pool (which
returns once the room is admitted and its durable consumer exists), and only then are that
room's messages acked. A room whose worker runs with its consumer is announced by the pull loop
itself (``WorkerPool.announce_now``) and its messages acked at once, without a task.
Under interest retention a discovery consumer's interest is what keeps a message alive until
its room consumer exists.

* The **shared** discovery consumer ``<prefix>InputDiscovery`` is durable, never expires, and
  every process pulls from it, so each message reaches one process. It is what keeps input that
  no room consumer holds yet, however long every process is gone (up to the input max age).
  Acks are explicit, per message: an ack-all by one process would ack what another one has
  not announced yet. An announcement taken by a process that dies comes back to another one
  after ``discovery_ack_wait``.
* The **own** discovery consumer ``<prefix>InputDiscovery<nuid>`` of each process sees every
  message, so every process runs a worker for every room with work: when a process dies, the
  others are already pulling its rooms' consumers. Its acks are explicit too: a room waiting
  for a worker slot is acked after later ones. It is deleted when the process stops, and
  expires ``discovery_inactive_threshold`` after a process that died. Its interest
  is also what makes deleting a quiet room consumer safe (docs/bus.md).

Each speaks the pull protocol itself (one request of ``discovery_batch`` messages open at a
time, chunks announced as they arrive), so that stopping does not wait for a pull to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from roomserver.bus.config import BusConfig
from roomserver.bus.pool import WorkerPool
from roomserver.bus.subjects import (
    input_stream_name,
    room_id_from_token,
    room_token,
    token_of_subject,
)
from roomserver.bus.types import HEADER_ROOM_ID
from roomserver.bus.workers import parse_ack_subject
from roomserver.ports import backoff_delay

log = logging.getLogger(__name__)

_RETRY_DELAY = 1.0
_STATUS = "Status"
_DESCRIPTION = "Description"


class _Wake:
    """Queue item: stop waiting (stop, reconnect)."""


_WAKE = _Wake()


def room_of_announcement(prefix: str, msg: Msg) -> str | None:
    """The room a message belongs to: its ``room_id`` header, checked against its subject."""
    token = token_of_subject(prefix, msg.subject)
    room_id = (msg.headers or {}).get(HEADER_ROOM_ID)
    if room_id is not None and token is not None and room_token(room_id) == token:
        return room_id
    # No header, or one that does not match the subject: the subject decides, since the
    # room consumer that will deliver this message filters on the subject.
    return room_id_from_token(token) if token is not None else None


def shared_discovery_name(prefix: str) -> str:
    return f"{prefix}InputDiscovery"


class Discovery:
    """One discovery consumer of a process (shared or its own), feeding a :class:`WorkerPool`."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        config: BusConfig,
        pool: WorkerPool,
        *,
        shared: bool = False,
    ) -> None:
        self.nc = nc
        self.js = js
        self.config = config
        self.pool = pool
        self.shared = shared
        self.stream = input_stream_name(config.prefix)
        base = shared_discovery_name(config.prefix)
        self.name = base if shared else f"{base}{nc._nuid.next().decode()}"
        self.announced = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._chunks: set[asyncio.Task[None]] = set()
        self._sub: Any = None
        self._inbox = nc.new_inbox()
        self._queue: asyncio.Queue[Msg | _Wake] = asyncio.Queue()
        self._request = 0
        self._received = 0  # messages delivered for the current request
        self._last_key: tuple[str, str | None] = ("", None)
        self._last_room: str | None = None
        self._check_consumer = False
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.name}"

    async def start(self) -> None:
        await self._create()
        self._sub = await self.nc.subscribe(self._inbox + ".*", cb=self._on_msg)
        self._task = asyncio.create_task(self._run(), name=f"input discovery {self.name}")

    def consumer_config(self) -> ConsumerConfig:
        if self.shared:
            return ConsumerConfig(
                name=self.name,
                durable_name=self.name,
                description="roomserver input discovery, shared by every process",
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.config.discovery_ack_wait,
                max_ack_pending=self.config.discovery_batch * 8,
                headers_only=True,
                filter_subject=f"{self.stream}.>",
            )
        return ConsumerConfig(
            name=self.name,
            description="roomserver input discovery of one process",
            deliver_policy=DeliverPolicy.ALL,
            # Explicit: a room's messages are acked once it has its consumer, which for a room
            # waiting for a worker slot may be after later rooms'.
            ack_policy=AckPolicy.EXPLICIT,
            # nats-server expires an inactive consumer only once nothing awaits an ack: a dead
            # process's consumer goes ack_wait + discovery_inactive_threshold after it died.
            ack_wait=self.config.discovery_ack_wait,
            max_ack_pending=self.config.discovery_batch * 4,
            headers_only=True,
            filter_subject=f"{self.stream}.>",
            inactive_threshold=self.config.discovery_inactive_threshold,
        )

    async def _create(self) -> None:
        await self.js.add_consumer(self.stream, self.consumer_config())

    async def _on_msg(self, msg: Msg) -> None:
        self._queue.put_nowait(msg)

    def wake(self) -> None:
        """After a reconnect: the open pull request may be gone with the old server, and the
        consumer too if the disconnection outlasted its inactivity threshold: until it is
        checked, this process's workers delete no room consumer."""
        if not self.shared:
            self.pool.discovery_consumer_checked(False)
        self._check_consumer = True
        self._queue.put_nowait(_WAKE)

    def pull_again(self) -> None:
        """The consumer has a new leader: the open pull request went with the old one."""
        self._queue.put_nowait(_WAKE)

    # -- the pull loop -------------------------------------------------------------------------

    async def _pull(self) -> None:
        self._request += 1
        self._received = 0
        expires = int(self.config.pull_expires * 1e9)
        payload = b'{"batch":%d,"expires":%d}' % (self.config.discovery_batch, expires)
        await self.nc.publish(self._next_subject, payload, reply=f"{self._inbox}.{self._request}")

    async def _run(self) -> None:
        need_request = True
        while not self._stopping:
            try:
                if self._check_consumer:
                    self._check_consumer = False
                    await self._recover("reconnected")
                if need_request:
                    await self._pull()
                chunk, need_request = await self._next_chunk()
                if not chunk:
                    continue
                # Rooms whose worker runs are announced here, at once (most messages).
                rest, acks = self._announce_ready(chunk)
                if rest:
                    # Not awaited: rooms of this chunk may wait for worker slots, which rooms
                    # of later chunks free (their input must be acked for them to go quiet).
                    # The consumer's max_ack_pending bounds what is announced at once.
                    task = asyncio.create_task(self._announce_chunk(rest))
                    self._chunks.add(task)
                    task.add_done_callback(self._chunk_done)
                for reply in acks:
                    await self.nc.publish(reply, b"+ACK")
            except asyncio.CancelledError:
                raise
            except Exception:
                # Unacked announcements come back after the consumer's AckWait.
                log.exception("discovery %s failed; continuing", self.name)
                need_request = True
                await asyncio.sleep(_RETRY_DELAY)

    def _chunk_done(self, task: asyncio.Task[None]) -> None:
        self._chunks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Unacked announcements come back after the consumer's AckWait.
            log.error(
                "discovery %s: announcing a chunk failed", self.name, exc_info=task.exception()
            )

    async def _next_chunk(self) -> tuple[list[Msg], bool]:
        """The messages delivered so far (waiting for the first one), and whether the current
        pull request is over (a new one is needed)."""
        try:
            first = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            try:
                async with asyncio.timeout(self.config.pull_expires + 2.0):
                    first = await self._queue.get()
            except TimeoutError:
                return [], True  # the server forgot the request (restart): ask again
        chunk: list[Msg] = []
        item: Msg | _Wake = first
        while True:
            if isinstance(item, _Wake):
                return chunk, True
            if item.reply:
                chunk.append(item)
                self._received += 1
                if self._received >= self.config.discovery_batch:
                    return chunk, True
            elif item.subject == f"{self._inbox}.{self._request}":
                status = (item.headers or {}).get(_STATUS)
                if status == "409" or status == "503":
                    await self._recover(str((item.headers or {}).get(_DESCRIPTION, status)))
                    return chunk, True
                if status is not None and status != "100":
                    return chunk, True  # 408 expired (or 404): the request is over
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return chunk, False

    def _room_of(self, msg: Msg) -> str | None:
        """``room_of_announcement``, remembered for the last subject and header seen (a
        room's messages tend to come in runs)."""
        key = (msg.subject, (msg.headers or {}).get(HEADER_ROOM_ID))
        if key != self._last_key:
            self._last_key = key
            self._last_room = room_of_announcement(self.config.prefix, msg)
        return self._last_room

    def _announce_ready(self, msgs: list[Msg]) -> tuple[list[Msg], list[str]]:
        """Announce the messages of rooms whose worker runs with its consumer
        (``WorkerPool.announce_now``: ``announce`` would not wait); returns the others, for
        ``_announce_chunk``, and the ack subjects of these, which may be acked now."""
        rest: list[Msg] = []
        acks: list[str] = []
        for msg in msgs:
            assert msg.reply is not None
            room_id = self._room_of(msg)
            seq = parse_ack_subject(msg.reply)[0]
            if room_id is not None and self.pool.announce_now(room_id, seq):
                acks.append(msg.reply)
                self.announced = max(self.announced, seq)
            else:
                rest.append(msg)
        return rest, acks

    async def _announce_chunk(self, msgs: list[Msg]) -> None:
        """Announce each room of the chunk; a room's messages are acked as soon as it has its
        consumer (a room may wait for a worker slot first: the others are acked meanwhile, so
        that rooms done with their input are not kept from going quiet)."""
        by_room: dict[str, list[Msg]] = {}
        for msg in msgs:
            assert msg.reply is not None
            seq = parse_ack_subject(msg.reply)[0]
            room_id = self._room_of(msg)
            if room_id is None:
                log.error("input message seq %s on %r names no room; dropped", seq, msg.subject)
                await self.nc.publish(msg.reply, b"+ACK")
                continue
            by_room.setdefault(room_id, []).append(msg)
        waiting = {m.reply for m in msgs if m.reply}
        # Keep the announcements of rooms waiting for a slot from being redelivered
        # meanwhile (a redelivery would only announce the room again, for nothing).
        keep = asyncio.create_task(self._keep_in_progress(waiting))
        try:
            await asyncio.gather(
                *(
                    self._announce_room(room, room_msgs, waiting)
                    for room, room_msgs in by_room.items()
                )
            )
        finally:
            keep.cancel()
        self.announced = max(self.announced, parse_ack_subject(msgs[-1].reply or "")[0])

    async def _keep_in_progress(self, waiting: set[str]) -> None:
        while True:
            await asyncio.sleep(self.config.discovery_ack_wait / 3)
            for reply in list(waiting):
                await self.nc.publish(reply, b"+WPI")

    async def _announce_room(self, room_id: str, msgs: list[Msg], waiting: set[str]) -> None:
        seq = max(parse_ack_subject(m.reply or "")[0] for m in msgs)
        attempt = 0
        while True:
            try:
                await self.pool.announce(room_id, seq)
                break
            except Exception as exc:
                if self._stopping:
                    await self._release(msgs)
                    return
                # Without its room consumer a message must not be acked here: retry.
                attempt += 1
                log.warning(
                    "could not prepare the consumer of room %s (%r %s); retrying",
                    room_id, exc, getattr(exc, "description", ""),
                )  # fmt: skip
                await asyncio.sleep(backoff_delay(attempt, initial=0.1, maximum=_RETRY_DELAY))
        for msg in msgs:
            assert msg.reply is not None
            waiting.discard(msg.reply)
            await self.nc.publish(msg.reply, b"+ACK")

    async def _release(self, msgs: list[Msg]) -> None:
        """Give back announcements not made: another process takes the shared ones now."""
        if not self.shared:
            return  # our own consumer: nobody else would take them
        for msg in msgs:
            if msg.reply:
                with contextlib.suppress(Exception):
                    await self.nc.publish(msg.reply, b"-NAK")

    async def _recover(self, reason: str) -> None:
        """The consumer may be gone (expired while disconnected, deleted): recreate it."""
        try:
            await self.js.consumer_info(self.stream, self.name)
            log.debug("discovery %s: %s; its consumer is there", self.name, reason)
            if not self.shared:
                self.pool.discovery_consumer_checked(True)
            return
        except NotFoundError:
            pass
        except Exception as exc:
            log.debug("discovery %s: cannot check its consumer (%r)", self.name, exc)
            self._check_consumer = True
            await asyncio.sleep(_RETRY_DELAY)
            return
        log.warning("discovery consumer %s vanished; recreating it", self.name)
        if not self.shared:
            self.pool.discovery_consumer_checked(False)
        try:
            await self._create()
        except Exception as exc:
            log.warning("discovery %s: cannot recreate its consumer yet (%r)", self.name, exc)
            self._check_consumer = True
            await asyncio.sleep(_RETRY_DELAY)
            return
        if not self.shared:
            self.pool.discovery_consumer_checked(True)

    async def stop(self) -> None:
        self._stopping = True
        self._queue.put_nowait(_WAKE)
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=10.0)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=2.0)
            self._task = None
        if self._chunks:
            # Rooms still waiting for a slot fail (the pool is stopping): their shared
            # announcements are released.
            _, late = await asyncio.wait(self._chunks, timeout=10.0)
            for task in late:
                task.cancel()
        if self._sub is not None:
            # Removes the interest in the open pull request (the server drops it) and hands us
            # what was already sent.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._sub.drain()
            self._sub = None
        leftovers: list[Msg] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, Msg) and item.reply:
                leftovers.append(item)
        await self._release(leftovers)
        if not self.shared:
            # The shared consumer keeps what nobody announced; ours would only hold messages
            # until it expires.
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(self.stream, self.name)
