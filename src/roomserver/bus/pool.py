"""The room workers of one process: announcements, consumers, routing, progress, stopping.

``WorkerPool`` keeps one ``RoomWorker`` (``workers.py``) per room with work, creates and
deletes room consumers, and routes every worker's pull replies, ack confirmations and direct
get answers, which all come back on one wildcard subscription, by subject:
``<inbox>.<worker>.<request>``, ``<inbox>.<worker>.a`` and ``<inbox>.<worker>.g<request>``.
Delivered messages carry their consumer in their ack subject. docs/bus.md, "Room workers".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from roomserver.bus.admin import room_consumer_description
from roomserver.bus.config import BusConfig
from roomserver.bus.subjects import input_stream_name, input_subject, room_consumer_name
from roomserver.bus.types import HEADER_ROOM_ID, Handler, UnitHandler
from roomserver.bus.workers import WAKE, RoomWorker, parse_ack_subject
from roomserver.ports import backoff_delay

log = logging.getLogger(__name__)

_CONCURRENT_CONSUMER_CALLS = 32


@dataclass(slots=True)
class WorkerStats:
    workers: int
    waiting_rooms: int
    in_flight: int
    processed: int
    redelivered: int



class WorkerPool:
    """The room workers of one process, and the routing of their pull replies."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        config: BusConfig,
        handler: Handler,
        unit_handler: UnitHandler | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.config = config
        self.handler = handler
        self.unit_handler = unit_handler if config.unit_max_messages > 1 else None
        self.stream = input_stream_name(config.prefix)
        self.direct_get_subject = f"$JS.API.DIRECT.GET.{self.stream}"
        self.inbox = nc.new_inbox()
        expires = int(config.pull_expires * 1e9)
        self.pull_payload = b'{"batch":1,"expires":%d}' % expires
        self.stopping = False
        self.processed = 0
        self.redelivered = 0
        self.consumers_deleted = 0
        self._ensuring: dict[str, asyncio.Future[None]] = {}
        self._api_calls = asyncio.Semaphore(_CONCURRENT_CONSUMER_CALLS)
        #: False while this process's discovery consumer is being recreated (see
        #: RoomWorker._delete_consumer_and_retire).
        self.may_delete_consumers = True
        self.ack_waiters: dict[int, asyncio.Future[None]] = {}
        self._workers: dict[str, RoomWorker] = {}
        self._by_id: dict[int, RoomWorker] = {}
        self._by_consumer: dict[str, RoomWorker] = {}
        self._waiting: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._next_id = 0
        self._sub: Any = None
        self._progress_task: asyncio.Task[None] | None = None
        self._orphans: set[asyncio.Task[None]] = set()
        self.last_pull_issued = 0.0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.inbox + ".>", cb=self._route)
        self._progress_task = asyncio.create_task(self._send_progress())

    # -- announcements ---------------------------------------------------------------------

    async def announce(self, room_id: str, seq: int) -> None:
        """Room ``room_id`` has work up to stream sequence ``seq``. Returns once its durable
        consumer exists (so the announcement may be acked) and a worker runs or waits."""
        worker = self._workers.get(room_id)
        while worker is not None and not worker.consumer_ready.is_set():
            # It is deleting the room's consumer: once it noted this announcement, it brings the
            # consumer back (or retires first, and then we create it below).
            worker.note_announced(seq)
            await worker.consumer_ready.wait()
            worker = self._workers.get(room_id)
        if worker is not None:
            worker.note_announced(seq)
            return
        if room_id in self._waiting:
            self._waiting[room_id] = max(self._waiting[room_id], seq)
            return
        await self._ensure_consumer_once(room_id)
        worker = self._workers.get(room_id)  # another announcement may have won the race
        if worker is not None:
            # Spawned while we created the consumer: it knows this sequence before it can
            # decide to delete the consumer; if it is deleting already, wait as above.
            worker.note_announced(seq)
            if not worker.consumer_ready.is_set():
                await self.announce(room_id, seq)
        elif self.stopping:
            return
        elif len(self._workers) >= self.config.max_workers:
            self._waiting[room_id] = max(self._waiting.get(room_id, 0), seq)
        else:
            self._spawn(room_id, seq)

    async def _ensure_consumer_once(self, room_id: str) -> None:
        """``ensure_consumer``, shared by concurrent announcements of one room (both discovery
        consumers announce every room), bounded in concurrency (hundreds of concurrent
        consumer creations only make the server time out)."""
        pending = self._ensuring.get(room_id)
        if pending is None:

            async def create() -> None:
                async with self._api_calls:
                    await self.ensure_consumer(room_id)

            pending = asyncio.ensure_future(create())
            self._ensuring[room_id] = pending
            pending.add_done_callback(lambda _: self._ensuring.pop(room_id, None))
        await asyncio.shield(pending)

    async def ensure_consumer(self, room_id: str) -> None:
        config = ConsumerConfig(
            name=room_consumer_name(self.config.prefix, room_id),
            durable_name=room_consumer_name(self.config.prefix, room_id),
            description=room_consumer_description(room_id),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.config.ack_wait,
            max_ack_pending=1,
            filter_subject=input_subject(self.config.prefix, room_id),
            inactive_threshold=self.config.room_consumer_inactive_threshold,
        )
        # Creating is idempotent, and brings a consumer made with older settings up to date.
        try:
            await self.js.add_consumer(self.stream, config)
        except APIError as exc:
            # nats-server 2.15 can fail to update an existing consumer whose store a concurrent
            # delete and create (by two processes) left without its directory ("meta.inf.tmp:
            # no such file or directory"), while the consumer itself works: it exists, so the
            # room has its consumer.
            try:
                info = await self.js.consumer_info(self.stream, config.name or "")
            except Exception:
                raise exc from None
            if info.config.filter_subject != config.filter_subject:
                raise
            log.debug("room %s: consumer exists, update refused (%s)", room_id, exc.description)

    async def delete_consumer(self, room_id: str) -> None:
        """Delete the room's consumer (a room with nothing queued); gone already is fine."""
        with contextlib.suppress(NotFoundError):
            name = room_consumer_name(self.config.prefix, room_id)
            async with self._api_calls:
                await self.js.delete_consumer(self.stream, name)
        self.consumers_deleted += 1

    def _spawn(self, room_id: str, announced: int) -> None:
        self._next_id += 1
        worker = RoomWorker(self, self._next_id, room_id, announced)
        self._workers[room_id] = worker
        self._by_id[worker.worker_id] = worker
        self._by_consumer[worker.consumer] = worker
        self._idle.clear()
        worker.task = asyncio.create_task(worker.run(), name=f"room-worker {room_id}")

    def retire(self, worker: RoomWorker) -> None:
        """Forget ``worker`` (idempotent) and give its slot to the longest-waiting room."""
        if self._workers.get(worker.room_id) is worker:
            del self._workers[worker.room_id]
        self._by_id.pop(worker.worker_id, None)
        if self._by_consumer.get(worker.consumer) is worker:
            del self._by_consumer[worker.consumer]
        while self._waiting and len(self._workers) < self.config.max_workers and not self.stopping:
            room_id, seq = self._waiting.popitem(last=False)
            self._spawn(room_id, seq)
        if not self._workers:
            self._idle.set()

    # -- routing -----------------------------------------------------------------------------

    async def _route(self, msg: Msg) -> None:
        reply = msg.reply
        if reply and reply.startswith("$JS.ACK."):
            # A message keeps its own subject; its ack subject names the consumer.
            tokens = reply.split(".")
            consumer = tokens[3] if len(tokens) == 9 else tokens[5]
            worker = self._by_consumer.get(consumer)
            if worker is not None:
                worker.queue.put_nowait(msg)
            else:
                await self._release_orphan(msg)
            return
        # Status messages and ack confirmations come on <inbox>.<worker>.<request|a>.
        tail = msg.subject[len(self.inbox) + 1 :]
        worker_part, _, request = tail.partition(".")
        try:
            worker_id = int(worker_part)
        except ValueError:
            return
        if request == "a":
            waiter = self.ack_waiters.get(worker_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        worker = self._by_id.get(worker_id)
        if worker is not None:
            if request.startswith("g"):
                worker.following_replies.put_nowait(msg)
            else:
                worker.queue.put_nowait(msg)

    async def _release_orphan(self, msg: Msg) -> None:
        """A pull that outlived its worker delivered a message: release it now."""
        assert msg.reply is not None
        await self.nc.publish(msg.reply, b"-NAK")
        room_id = (msg.headers or {}).get(HEADER_ROOM_ID)
        if room_id and not self.stopping:
            seq = parse_ack_subject(msg.reply)[0]
            task = asyncio.create_task(self._announce_logged(room_id, seq))
            self._orphans.add(task)
            task.add_done_callback(self._orphans.discard)

    async def _announce_logged(self, room_id: str, seq: int) -> None:
        """Announce from inside the pool, retrying while JetStream does not answer."""
        attempt = 0
        while not self.stopping:
            try:
                await self.announce(room_id, seq)
                return
            except Exception as exc:
                log.warning("could not restart the worker of room %s yet (%r)", room_id, exc)
                attempt += 1
                await asyncio.sleep(backoff_delay(attempt, initial=0.1, maximum=5.0))

    def announce_later(self, room_id: str, seq: int, delay: float = 1.0) -> None:
        """Announce ``room_id`` again after ``delay`` (a worker that failed)."""

        async def later() -> None:
            await asyncio.sleep(delay)
            if not self.stopping:
                await self._announce_logged(room_id, seq)

        task = asyncio.create_task(later())
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    def wake_all(self) -> None:
        """After a reconnect: pull requests may be gone with the old server; ask again."""
        for worker in list(self._workers.values()):
            worker.queue.put_nowait(WAKE)

    def wake_consumer(self, consumer: str) -> None:
        """The room consumer ``consumer`` has a new leader: its worker, if waiting, pulls again."""
        worker = self._by_consumer.get(consumer)
        if worker is not None and worker.in_flight is None:
            worker.queue.put_nowait(WAKE)

    async def _send_progress(self) -> None:
        """In-progress acks for long handlers, so AckWait only bounds a dead process."""
        interval = self.config.progress_interval
        while True:
            await asyncio.sleep(interval / 2)
            now = time.monotonic()
            for worker in list(self._workers.values()):
                msg = worker.in_flight
                if msg is not None and msg.reply and now - worker.in_flight_since >= interval:
                    with contextlib.suppress(Exception):
                        await self.nc.publish(msg.reply, b"+WPI")

    # -- lifecycle ---------------------------------------------------------------------------

    def stats(self) -> WorkerStats:
        in_flight = sum(1 for w in self._workers.values() if w.in_flight is not None)
        return WorkerStats(
            len(self._workers), len(self._waiting), in_flight, self.processed, self.redelivered
        )

    def active_rooms(self) -> list[str]:
        return sorted(self._workers)

    def worker_of(self, room_id: str) -> RoomWorker | None:
        return self._workers.get(room_id)

    async def wait_idle(self) -> None:
        """Until no worker runs (all rooms quiet)."""
        await self._idle.wait()

    async def stop(self, grace: float = 30.0) -> None:
        """Finish the in-flight message of each room (up to ``grace`` seconds), release it
        otherwise, release anything a pull delivers meanwhile, then unsubscribe."""
        self.stopping = True
        self._waiting.clear()
        for worker in list(self._workers.values()):
            if worker.in_flight is None:
                worker.queue.put_nowait(WAKE)
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        # Pull requests still open on the server would deliver until they expire. Draining
        # the subscription removes the interest in their inbox (the server then drops them)
        # and, after one round trip, hands _route whatever the server sent before that, which
        # it releases at once: nothing is left unacknowledged until AckWait.
        if self._progress_task is not None:
            self._progress_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._progress_task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._sub.drain()
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=2)
