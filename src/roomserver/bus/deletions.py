"""The pool's queue of quiet rooms' consumers to delete later (docs/bus.md, "Deleting the
consumer" and "No input lost", step 4, *Deferred*).

Deleting a consumer of an interest-retention stream makes nats-server check, under the stream's
lock, every message after the consumer's ack floor against every consumer on the stream, so
while the stream holds a backlog (or rooms wait to be admitted) a quiet room's worker leaves
and hands its consumer to this queue instead of deleting it. One task deletes the queue, oldest
first, when that is cheap; an announcement of a queued room calls its deletion off (the room
is admitted again with its consumer), one of a room being deleted waits for the deletion.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from roomserver.bus.subjects import input_subject

if TYPE_CHECKING:
    from roomserver.bus.pool import WorkerPool

log = logging.getLogger(__name__)

_CONCURRENT_DELETES = 8
_BACKLOG_CHECK_INTERVAL = 1.0
_IDLE_API_POLL = 0.1
#: A delete costs the server about this many message x consumer checks at most (tens of ns
#: each, under the stream's lock): while the stream's messages times its consumers exceed it,
#: queued deletions wait (measured: 58 ms per delete at 2,000 messages and 1,000 consumers,
#: 325 ms at 2,000 and 2,000, 0.7 ms with no message).
_DELETE_SCAN_BUDGET = 200_000


class DeletionQueue:
    """Quiet rooms whose consumers are to be deleted, and the task that deletes them."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        #: Rooms queued (with the discovery epoch of their check, -1: check again), and
        #: those being deleted now (announcements of them wait for the future).
        self.to_delete: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.deleting: dict[str, asyncio.Future[None]] = {}
        self.discovery_epoch = 0
        #: The input stream's message and consumer counts, as last seen.
        self.backlog = 0
        self.stream_consumers = 0
        self._queued = asyncio.Event()
        self._done = asyncio.Event()
        self._done.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def note_stream(self, messages: int, consumers: int) -> None:
        self.backlog, self.stream_consumers = messages, consumers

    def defers(self) -> bool:
        """Whether a quiet room's consumer should be queued for deletion instead of being
        deleted now: rooms wait to be admitted, or the input stream holds a backlog (last
        seen), or deletions are queued already (they go in order)."""
        return (
            self.pool.rooms_wait()
            or self.backlog > self.pool.config.delete_backlog
            or bool(self.to_delete)
        )

    def queue(self, room_id: str, *, recheck: bool) -> None:
        self.to_delete[room_id] = -1 if recheck else self.discovery_epoch
        self._done.clear()
        self._queued.set()

    def call_off(self, room_id: str) -> None:
        """The room was announced before its deletion started: its consumer stays."""
        self.to_delete.pop(room_id, None)

    async def wait(self) -> None:
        """Until no queued deletion is left (tests)."""
        await self._done.wait()

    async def _run(self) -> None:
        """Delete queued consumers, oldest first: 8 at a time while the input stream has no
        backlog, else one at a time and only while no other API request is outstanding; none
        while the stream's messages times its consumers exceed ``_DELETE_SCAN_BUDGET``."""
        pool = self.pool
        loop = asyncio.get_running_loop()
        checked = 0.0
        while True:
            if not self.to_delete:
                self._queued.clear()
                self._done.set()
                await self._queued.wait()
                continue
            self._done.clear()
            now = loop.time()
            if now - checked >= _BACKLOG_CHECK_INTERVAL:
                checked = now
                with contextlib.suppress(Exception):
                    info = await pool.api_call(pool.api.stream_info(pool.stream))
                    self.note_stream(info.state.messages, info.state.consumer_count)
            if not pool.may_delete_consumers:
                await asyncio.sleep(_BACKLOG_CHECK_INTERVAL)
                continue
            backlog = pool.rooms_wait() or self.backlog > pool.config.delete_backlog
            if (backlog and pool.api_in_flight) or (
                self.backlog * self.stream_consumers > _DELETE_SCAN_BUDGET
            ):
                # Creations for admitted rooms go first; a delete only when the API is idle,
                # and only while it is cheap for the server (it holds the stream's lock).
                await asyncio.sleep(_IDLE_API_POLL)
                continue
            deletions: list[Coroutine[Any, Any, None]] = []
            while self.to_delete and len(deletions) < (1 if backlog else _CONCURRENT_DELETES):
                deletions.append(self._delete_one(*self._take()))
            await asyncio.gather(*deletions)

    def _take(self) -> tuple[str, int, asyncio.Future[None]]:
        """The oldest queued deletion, registered as in progress in the same step (so that
        an announcement of its room from here on waits for it)."""
        room_id, epoch = self.to_delete.popitem(last=False)
        done = asyncio.get_running_loop().create_future()
        self.deleting[room_id] = done
        return room_id, epoch, done

    async def _delete_one(self, room_id: str, epoch: int, done: asyncio.Future[None]) -> None:
        pool = self.pool
        try:
            if epoch != self.discovery_epoch and await pool.room_input_retained(
                input_subject(pool.config.prefix, room_id)
            ):
                # Our discovery consumer was recreated since the room's check (or the room
                # left with input retained): the check is made again; input found is
                # announced (again) by a discovery consumer, whose room worker deletes the
                # consumer once the stream keeps nothing of the room.
                return
            if not pool.may_delete_consumers:
                return  # step 4 (c): kept; it expires on the server
            await pool.delete_consumer(room_id)
        except Exception as exc:  # the consumer may or may not be gone: both are safe
            log.debug("room %s: deleting its consumer failed (%r)", room_id, exc)
        finally:
            del self.deleting[room_id]
            done.set_result(None)

    async def stop(self, limit: float) -> None:
        """Delete what is queued within ``limit`` seconds regardless of the backlog (what is
        left expires on the server: ``consumer_inactive_threshold``), then stop the task."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if not self.pool.may_delete_consumers:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while self.to_delete:
                    await self._delete_one(*self._take())
        if self.to_delete:
            log.info("%d quiet rooms keep their consumers until they expire", len(self.to_delete))
        self._done.set()
