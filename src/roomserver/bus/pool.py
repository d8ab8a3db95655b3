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
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from roomserver.bus.admin import room_consumer_description
from roomserver.bus.config import BusConfig
from roomserver.bus.deletions import DeletionQueue
from roomserver.bus.subjects import input_stream_name, input_subject, room_consumer_name
from roomserver.bus.types import HEADER_ROOM_ID, Handler, UnitHandler
from roomserver.bus.workers import WAKE, RoomWorker, parse_ack_subject
from roomserver.ports import backoff_delay

log = logging.getLogger(__name__)

_STOP_DELETING_TIME = 2.0


T = TypeVar("T")


class ApiRequestLost(Exception):
    """The connection was re-established while a JetStream API request waited for its answer
    (which went with the old connection); whether the server applied it is unknown."""


class PoolStopping(Exception):
    """The pool stopped before the announced room was admitted (its announcement is not
    safe to ack: the room has no consumer)."""


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
        #: A pull answered at once (404) when the consumer has nothing: a worker that would
        #: give its slot to a waiting room learns without waiting for ``pull_expires``.
        self.no_wait_pull_payload = b'{"batch":1,"no_wait":true}'
        self.stopping = False
        self.processed = 0
        self.redelivered = 0
        self.consumers_deleted = 0
        self._ensuring: dict[str, asyncio.Future[None]] = {}
        #: The pool's JetStream API requests, with the long ``api_timeout``.
        self.api = nc.jetstream(timeout=config.api_timeout)
        self._api_calls = asyncio.Semaphore(config.max_api_requests)
        self._reconnected = asyncio.Event()
        self.api_in_flight = 0
        #: False while this process's discovery consumer is being recreated (see
        #: RoomWorker._delete_consumer_and_retire).
        self.may_delete_consumers = True
        self.ack_waiters: dict[int, asyncio.Future[None]] = {}
        self._workers: dict[str, RoomWorker] = {}
        self._by_id: dict[int, RoomWorker] = {}
        self._by_consumer: dict[str, RoomWorker] = {}
        #: Rooms announced but not admitted yet (no consumer, no worker), oldest first, with
        #: the latest sequence announced; rooms whose consumer is being created for admission;
        #: the future each room's announcers wait on until it is admitted.
        self._waiting: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._admitting: dict[str, int] = {}
        self._pending: dict[str, asyncio.Future[None]] = {}
        self.deletions = DeletionQueue(self)
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
        self.deletions.start()

    # -- announcements ---------------------------------------------------------------------

    def announce_now(self, room_id: str, seq: int) -> bool:
        """``announce`` when it need not wait (the room's worker runs with its consumer)."""
        worker = self._workers.get(room_id)
        if worker is None or not worker.consumer_ready.is_set():
            return False
        worker.note_announced(seq)
        return True

    async def announce(self, room_id: str, seq: int) -> None:
        """Room ``room_id`` has work up to stream sequence ``seq``. Returns once its durable
        consumer exists and a worker runs (so the announcement may be acked): a room that
        must wait for a free slot makes its announcer wait too, since it has no consumer
        until it is admitted. Raises ``PoolStopping`` if the pool stops first."""
        while True:
            if self.announce_now(room_id, seq):
                return
            worker = self._workers.get(room_id)
            if worker is not None:
                # It is deleting the room's consumer: once it noted this announcement, it
                # brings the consumer back (or retires first, and then we admit the room).
                worker.note_announced(seq)
                await worker.consumer_ready.wait()
                continue
            deleting = self.deletions.deleting.get(room_id)
            if deleting is not None:
                # Its consumer is being deleted (deferred): admit the room once that is done.
                await asyncio.shield(deleting)
                continue
            # A deferred deletion not started yet is called off: the room has input again.
            self.deletions.call_off(room_id)
            admitted = self._pending.get(room_id)
            if admitted is None:
                if self.stopping:
                    raise PoolStopping(room_id)
                admitted = asyncio.get_running_loop().create_future()
                self._pending[room_id] = admitted
                self._waiting[room_id] = seq
                self._admit_waiting()
                if room_id in self._waiting:
                    self._wake_one_quiet_worker()
            elif room_id in self._waiting:
                self._waiting[room_id] = max(self._waiting[room_id], seq)
            else:
                self._admitting[room_id] = max(self._admitting[room_id], seq)
            await asyncio.shield(admitted)
            # Admitted: the worker runs (it knows every sequence noted before it started) or
            # is deleting its consumer already; the loop notes ``seq`` or waits as above.

    def rooms_wait(self) -> bool:
        """Whether rooms wait for a worker slot (quiet workers then give theirs up at once)."""
        return bool(self._waiting)

    def _wake_one_quiet_worker(self) -> None:
        """A room must wait for a slot: wake one worker that waits on a pull and may give its
        slot up (``RoomWorker.may_yield``), so that, if its room is quiet, it learns so now
        (its next pull is answered at once) instead of when its pull expires."""
        for worker in self._workers.values():
            if worker.in_flight is None and worker.may_yield and not worker.woken:
                worker.woken = True
                worker.queue.put_nowait(WAKE)
                return

    def _admit_waiting(self) -> None:
        """Give free slots to the rooms that waited longest: create their consumers, then
        start their workers."""
        while (
            self._waiting
            and len(self._workers) + len(self._admitting) < self.config.max_workers
            and not self.stopping
        ):
            room_id, seq = self._waiting.popitem(last=False)
            self._admitting[room_id] = seq
            self._keep(asyncio.create_task(self._admit(room_id)))

    async def _admit(self, room_id: str) -> None:
        admitted = self._pending[room_id]
        try:
            await self._ensure_consumer_once(room_id)
        except Exception as exc:
            # The announcer gets the error and retries (its message stays unacked).
            self._admitting.pop(room_id, None)
            self._pending.pop(room_id, None)
            admitted.set_exception(exc)
            self._admit_waiting()
            return
        seq = self._admitting.pop(room_id)
        self._pending.pop(room_id, None)
        if self.stopping:
            # The consumer exists, so the announcement may be acked; no new worker though.
            admitted.set_result(None)
            return
        self._spawn(room_id, seq)
        admitted.set_result(None)

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def _ensure_consumer_once(self, room_id: str) -> None:
        """``ensure_consumer``, shared by concurrent callers for one room."""
        pending = self._ensuring.get(room_id)
        if pending is None:
            pending = asyncio.ensure_future(self.ensure_consumer(room_id))
            self._ensuring[room_id] = pending
            pending.add_done_callback(lambda _: self._ensuring.pop(room_id, None))
        await asyncio.shield(pending)

    async def api_call(self, request: Awaitable[T]) -> T:
        """A JetStream API request of the pool or a worker: at most ``max_api_requests`` at
        once (the server answers them one at a time, and hundreds at once only make them time
        out), each waiting up to ``api_timeout`` (set on the request) for its answer, unless
        the connection is re-established meanwhile: then the answer is lost with the old
        connection, and ``ApiRequestLost`` is raised at once (callers retry)."""
        try:
            await self._api_calls.acquire()
        except BaseException:
            if isinstance(request, Coroutine):
                request.close()  # never sent
            raise
        self.api_in_flight += 1
        try:
            reconnected = self._reconnected
            task = asyncio.ensure_future(request)
            waiter = asyncio.ensure_future(reconnected.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                task.cancel()
                raise
            finally:
                waiter.cancel()
            if not task.done():
                task.cancel()
                raise ApiRequestLost
            return task.result()
        finally:
            self.api_in_flight -= 1
            self._api_calls.release()

    async def ensure_consumer(self, room_id: str, *, answer_within: float | None = None) -> None:
        """Create the room's consumer (or bring it up to date); ``answer_within``: how long the
        requests wait for their answers (default ``api_timeout``)."""
        timeout = self.config.api_timeout if answer_within is None else answer_within
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
            await self.api_call(self.api.add_consumer(self.stream, config, timeout=timeout))
        except APIError as exc:
            # nats-server 2.15 can fail to update an existing consumer whose store a concurrent
            # delete and create (by two processes) left without its directory ("meta.inf.tmp:
            # no such file or directory"), while the consumer itself works: it exists, so the
            # room has its consumer.
            try:
                info = await self.api_call(
                    self.api.consumer_info(self.stream, config.name or "", timeout=timeout)
                )
            except Exception:
                raise exc from None
            if info.config.filter_subject != config.filter_subject:
                raise
            log.debug("room %s: consumer exists, update refused (%s)", room_id, exc.description)

    async def delete_consumer(self, room_id: str) -> None:
        """Delete the room's consumer (a room with nothing queued); gone already is fine."""
        with contextlib.suppress(NotFoundError):
            name = room_consumer_name(self.config.prefix, room_id)
            await self.api_call(self.api.delete_consumer(self.stream, name))
        self.consumers_deleted += 1

    async def room_input_retained(self, subject: str) -> bool:
        """Whether the stream keeps any message on ``subject`` (or cannot be asked: then
        assume it does)."""
        try:
            info = await self.api_call(self.api.stream_info(self.stream, subjects_filter=subject))
        except Exception:
            return True
        self.deletions.note_stream(info.state.messages, info.state.consumer_count)
        return bool(info.state.subjects and info.state.subjects.get(subject))

    # -- deferred deletion of quiet rooms' consumers (deletions.py) ------------------------------

    def defers_deletions(self) -> bool:
        """Whether a quiet room's consumer is to be queued for deletion (``DeletionQueue``)."""
        return self.deletions.defers()

    def defer_deletion(self, worker: RoomWorker, *, recheck: bool = False) -> None:
        """``worker``'s room is quiet and its consumer may be deleted (docs/bus.md, "No input
        lost", step 4): the worker leaves, the pool deletes the consumer later unless the
        room is announced first. Called in the same event-loop step as the worker's check.
        ``recheck``: the stream still kept processed input of the room; the deletion checks
        the stream again first."""
        self.deletions.queue(worker.room_id, recheck=recheck)
        self.retire(worker)

    def discovery_consumer_checked(self, ok: bool) -> None:
        """This process's own discovery consumer is known to exist (``ok``) or may be gone."""
        if not ok and self.may_delete_consumers:
            self.deletions.discovery_epoch += 1
        self.may_delete_consumers = ok

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
        self._admit_waiting()
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
            self._keep(asyncio.create_task(self._announce_logged(room_id, seq)))

    async def _announce_logged(self, room_id: str, seq: int) -> None:
        """Announce from inside the pool, retrying while JetStream does not answer."""
        attempt = 0
        while not self.stopping:
            try:
                await self.announce(room_id, seq)
                return
            except PoolStopping:
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

        self._keep(asyncio.create_task(later()))

    def wake_all(self) -> None:
        """After a reconnect: pull requests may be gone with the old server; ask again. API
        requests still waiting for an answer give up (``api_call``)."""
        self._reconnected.set()
        self._reconnected = asyncio.Event()
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
        """Until no worker runs (all rooms quiet; queued consumer deletions may remain)."""
        await self._idle.wait()

    async def wait_deletions(self) -> None:
        """Until no queued consumer deletion is left (tests)."""
        await self.deletions.wait()

    async def stop(self, grace: float = 30.0) -> None:
        """Finish the in-flight message of each room (up to ``grace`` seconds), release it
        otherwise, release anything a pull delivers meanwhile, then unsubscribe."""
        self.stopping = True
        self._waiting.clear()
        for room_id, admitted in list(self._pending.items()):
            if room_id not in self._admitting and not admitted.done():
                del self._pending[room_id]
                admitted.set_exception(PoolStopping(room_id))
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
        await self.deletions.stop(min(grace, _STOP_DELETING_TIME))
        if self._sub is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._sub.drain()
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=2)
