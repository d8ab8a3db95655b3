"""Per-room workers: one durable pull consumer and one asyncio task per room with work.

Each room with work has a durable consumer filtered on its subject, with explicit acks, a
short AckWait (the failover time; a live worker keeps its message with in-progress acks) and
at most one unacknowledged message, so a room's messages are handled one at a time and in
order, even when several processes pull from the same consumer; different rooms proceed
independently. A worker whose room has nothing left deletes the consumer as it goes idle.

A worker speaks the JetStream pull protocol itself instead of using one client subscription
per room: every worker's pull requests and ack confirmations come back on one wildcard
subscription of the pool and are routed by subject (``<inbox>.<worker>.<request>`` and
``<inbox>.<worker>.a``). This keeps 10,000 rooms at one subscription, and makes every reply
attributable to the pull request that caused it, which the idle logic relies on.

Idle without a lost wake-up: a worker stops only after a pull request *issued after the
latest announcement for its room* expired empty, and it leaves the pool's registry in the same
event-loop step in which it takes that decision. An announcement that comes earlier makes it
pull again; one that comes later finds no worker and starts a new one. While other rooms wait
for a slot, a worker whose room has nothing left goes at once instead of after idle_timeout
(docs/bus.md, "Giving a slot up"). A message delivered to a worker that no longer exists (a
pull that outlived it) is released at once (NAK) and its room is announced again, so it never
waits for AckWait.

Deleting without losing input: a worker deletes its room's consumer only when it would go idle
(the check above, and the consumer holds nothing), and stays registered while the delete is in
flight. An announcement that reaches it meanwhile waits until the worker has either brought the
consumer back or left the registry, so the discovery consumer that announced it acks nothing
while the room has no consumer; docs/bus.md has the whole argument.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from nats.aio.msg import Msg

from roomserver.bus.admin import (
    HeadMessage,
    Intervention,
    InterventionOutcome,
)
from roomserver.bus.config import BusConfig
from roomserver.bus.publisher import reply_locally
from roomserver.bus.subjects import input_subject, room_consumer_name
from roomserver.bus.types import (
    HEADER_REPLY_SEQ,
    HEADER_ROOM_ID,
    HEADER_SYNC,
    DeliveryInfo,
    Disposition,
    HandlerResult,
    UnitHandler,
    room_header_value,
)
from roomserver.bus.units import (
    SettledAhead,
    direct_get_request,
    following_message,
    purge_settled,
)
from roomserver.ports import backoff_delay

if TYPE_CHECKING:
    from roomserver.bus.pool import WorkerPool

log = logging.getLogger(__name__)

_ACK = b"+ACK"
# Waits for an ack's confirmation: 1 s, doubling up to 10 s (a busy server is not flooded
# with resends), about two minutes in all.
_ACK_CONFIRM_TIMEOUT = 1.0
_ACK_CONFIRM_TIMEOUT_MAX = 10.0
_ACK_ATTEMPTS = 15
_STATUS = "Status"
_DESCRIPTION = "Description"
_DIRECT_GET_TIMEOUT = 2.0


class _Wake:
    """Queue item: stop waiting for the current pull (reconnect or stop)."""


WAKE = _Wake()


def parse_ack_subject(reply: str) -> tuple[int, int, int, int]:
    """(stream sequence, delivery count, pending, timestamp ns) from a JetStream ack subject."""
    tokens = reply.split(".")
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (v1), or with a
    # domain and an account hash after ACK and a random token at the end (v2).
    offset = 2 if len(tokens) == 9 else 4
    return (
        int(tokens[offset + 3]),
        int(tokens[offset + 2]),
        int(tokens[offset + 6]),
        int(tokens[offset + 5]),
    )


def retry_delay(config: BusConfig, num_delivered: int) -> float:
    """The configured backoff by delivery count (``ports.backoff_delay``)."""
    return backoff_delay(
        num_delivered, initial=config.retry_initial_delay, maximum=config.retry_max_delay
    )


class RoomWorker:
    """The actor of one room: pulls one message, handles it, acks, pulls the next."""

    def __init__(self, pool: WorkerPool, worker_id: int, room_id: str, announced: int) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.room_id = room_id
        self.consumer = room_consumer_name(pool.config.prefix, room_id)
        self.subject = input_subject(pool.config.prefix, room_id)
        self.announced = announced
        self.queue: asyncio.Queue[Msg | _Wake] = asyncio.Queue()
        self.in_flight: Msg | None = None
        self.in_flight_since = 0.0
        #: The message at the head of the room's queue, while this worker holds it (in flight
        #: or released for a delayed redelivery); operators inspect and act on it.
        self.head: HeadMessage | None = None
        self._in_handler = False
        self._intervention: tuple[HandlerResult, asyncio.Future[None]] | None = None
        self.task: asyncio.Task[None] | None = None
        self._request = 0
        self._covered = announced
        self._unconfirmed: tuple[str, bytes, int] | None = None
        self._retry_until = 0.0
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{pool.stream}.{self.consumer}"
        self._inbox = f"{pool.inbox}.{worker_id}"
        #: Cleared while this worker deletes its consumer (and has not brought it back or left
        #: the registry): an announcement must not be acked meanwhile.
        self.consumer_ready = asyncio.Event()
        self.consumer_ready.set()
        #: Results of messages behind the head that a unit handled already (docs/bus.md,
        #: "Units"): settled without the handler when they are delivered.
        self._ahead = SettledAhead()
        self.following_replies: asyncio.Queue[Msg] = asyncio.Queue()
        self._get_request = 0
        #: The last message a unit settled behind the head, and the replies its sync callers
        #: wait for: purged from the stream once the head is acked (see ``_finish_unit``).
        self._settled_behind: tuple[int, list[tuple[str, bytes, int]]] | None = None
        #: Whether this worker may give its slot up to a waiting room before idle_timeout
        #: (cleared when its room's input was found retained: it then waits as usual).
        self.may_yield = True
        #: Set when the pool woke this worker from a waiting pull for a waiting room (once per
        #: pull: cleared by the next pull).
        self.woken = False

    def note_announced(self, seq: int) -> None:
        if seq > self.announced:
            self.announced = seq

    async def run(self) -> None:
        pool = self.pool
        loop = asyncio.get_running_loop()
        last_activity = loop.time()
        try:
            await self._request_next()
            while True:
                covered = self._covered
                item = await self._await_next()
                if isinstance(item, Msg):
                    # A delivery proves the previous ack was applied (one message in flight).
                    self._unconfirmed = None
                    await self._process(item)
                    last_activity = loop.time()
                    self.may_yield = True
                    if pool.stopping:
                        return
                    continue
                if self._unconfirmed is not None:
                    # Nothing came: perhaps because the last ack was lost with a connection
                    # (the message would then wait for AckWait). Resend it, confirmed.
                    ack_subject, payload, seq = self._unconfirmed
                    self._unconfirmed = None
                    await self._settle(ack_subject, payload, seq, request_next=False)
                    if not pool.stopping:
                        await self._request_next()
                        continue
                if pool.stopping:
                    return
                now = loop.time()
                idle = now - last_activity >= pool.config.idle_timeout
                quiet = (
                    item == "empty"
                    and self.announced <= covered
                    and now >= self._retry_until
                    and (idle or self._yields_slot())
                )
                if quiet and await self._room_input_retained():
                    # Giving the slot up early needs the stream to keep nothing of the room
                    # (on a cluster an empty no_wait pull may come from a consumer replica
                    # that has not stored the latest message yet).
                    if idle and await self._consumer_holds_nothing() and self.announced <= covered:
                        # Only processed input is retained, by a discovery consumer that has
                        # not announced it yet (rooms waiting for a slot may hold it back):
                        # give the slot up, keep the consumer; the pool deletes it once the
                        # stream keeps nothing of the room (or that announcement comes first).
                        pool.defer_deletion(self, recheck=True)
                        return
                    # The stream still holds input of this room although our pulls came back
                    # empty. Either another process holds the in-flight message (if it died,
                    # the message is redelivered after AckWait, and someone must be pulling
                    # then: no new announcement will come), or processed input is still kept
                    # by a discovery consumer that has not acked it yet (a consumer created
                    # again would deliver it a second time). Keep pulling either way (with
                    # waiting pulls, checking again only after idle_timeout).
                    last_activity = loop.time()
                    self.may_yield = False
                    quiet = False
                if quiet and self.announced <= covered:
                    if await self._delete_consumer_and_retire(covered):
                        return
                    last_activity = loop.time()
                if item == "gone":
                    await self._recreate_consumer()
                await self._request_next()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("room worker for %s failed; restarting it", self.room_id)
            pool.retire(self)
            pool.announce_later(self.room_id, self.announced)
        finally:
            pool.retire(self)
            self.consumer_ready.set()

    def _yields_slot(self) -> bool:
        """Whether this worker may give its slot up before ``idle_timeout``: rooms wait for
        admission and no check since its last message found the room's input retained
        (docs/bus.md, "Bounds"). It still needs an empty pull issued after the latest
        announcement it has seen, no retry of its own due, and a stream keeping nothing of
        the room."""
        return self.may_yield and self.pool.rooms_wait()

    def next_pull_payload(self) -> bytes:
        """The next pull request: one answered at once when the consumer has nothing
        (``no_wait``) while this worker may give its slot up (``_yields_slot``) and no retry
        of its own is due; else one that waits up to ``pull_expires``."""
        self.woken = False
        if self._yields_slot() and asyncio.get_running_loop().time() >= self._retry_until:
            return self.pool.no_wait_pull_payload
        return self.pool.pull_payload

    async def _delete_consumer_and_retire(self, covered: int) -> bool:
        """The room is quiet: delete its consumer and leave the registry, unless an
        announcement arrives meanwhile (then the consumer is brought back and the worker goes
        on). Returns whether the worker retired."""
        pool = self.pool
        if not pool.may_delete_consumers:
            # Our own discovery consumer is being recreated: it may not hold the input it has
            # not announced yet, so the room consumer keeps it (it expires on the server).
            pool.retire(self)
            return True
        if pool.defers_deletions():
            # The stream holds a backlog: deleting now would slow the server down for every
            # room; the pool deletes the consumer later unless the room is announced first.
            pool.defer_deletion(self)
            return True
        self.consumer_ready.clear()
        try:
            await pool.delete_consumer(self.room_id)
        except Exception as exc:  # the consumer may or may not be gone: both are safe
            log.debug("room %s: deleting its consumer failed (%r)", self.room_id, exc)
        if self.announced <= covered or pool.stopping:
            # Decided and deregistered in one step: an announcement that comes later finds no
            # worker, and creates the consumer again before it is acked.
            pool.retire(self)
            self.consumer_ready.set()
            return True
        # Announced while we deleted: the announcer waits for the consumer to be back.
        await self._recreate_consumer()
        self.consumer_ready.set()
        return False

    async def _recreate_consumer(self) -> None:
        """The consumer is gone or JetStream is not answering (a restart): retry until the
        consumer exists again, or the pool stops."""
        attempt = 0
        while not self.pool.stopping:
            try:
                await self.pool.ensure_consumer(
                    self.room_id, answer_within=self.pool.config.recreate_timeout
                )
                return
            except Exception as exc:
                log.warning(
                    "room %s: cannot recreate its consumer yet (%r %s)",
                    self.room_id,
                    exc,
                    getattr(exc, "description", ""),
                )
                attempt += 1
                await asyncio.sleep(backoff_delay(attempt, initial=0.1, maximum=5.0))

    async def _room_input_retained(self) -> bool:
        """Whether the stream keeps any message of this room (or cannot be asked: then keep
        pulling). Nothing kept means nothing pending or in flight, and that a consumer created
        again later delivers only input that arrives later."""
        return await self.pool.room_input_retained(self.subject)

    async def _consumer_holds_nothing(self) -> bool:
        """Whether the room's consumer has nothing to deliver and nothing unacknowledged (no
        other process holds a message of the room)."""
        pool = self.pool
        try:
            info = await pool.api_call(
                pool.api.consumer_info(pool.stream, self.consumer, timeout=pool.config.api_timeout)
            )
        except Exception:
            return False
        return not info.num_pending and not info.num_ack_pending

    async def _request_next(self) -> None:
        self._request += 1
        self._covered = self.announced
        self.pool.last_pull_issued = time.monotonic()
        await self.pool.nc.publish(
            self._next_subject, self.next_pull_payload(), reply=f"{self._inbox}.{self._request}"
        )

    async def _await_next(self) -> Msg | str:
        """The next message, or "empty" (expired pull), "gone" (no consumer), "lost"."""
        timeout = self.pool.config.pull_expires + 2.0
        current = f"{self._inbox}.{self._request}"
        while True:
            try:
                async with asyncio.timeout(timeout):
                    item = await self.queue.get()
            except TimeoutError:
                return "lost"  # the server forgot the request (restart): ask again
            if isinstance(item, _Wake):
                return "lost"
            if item.reply:
                return item
            status = item.headers.get(_STATUS) if item.headers else None
            if status is None:
                continue
            if item.subject != current:
                continue  # the end of an earlier request
            if status in ("408", "404"):
                return "empty"
            if status == "409":
                description = (item.headers or {}).get(_DESCRIPTION, "")
                if "Deleted" in description:
                    return "gone"
                return "empty"
            if status == "100":
                continue
            if status == "503":
                return "gone"
            log.warning("room %s: pull status %s %s", self.room_id, status, item.headers)
            return "empty"

    async def _process(self, msg: Msg) -> None:
        pool = self.pool
        assert msg.reply is not None
        seq, delivered, pending, timestamp = parse_ack_subject(msg.reply)
        headers = msg.headers or {}
        reply_to = headers.get(HEADER_SYNC)
        info = DeliveryInfo(seq, delivered, pending, timestamp, reply_to)
        if delivered > 1:
            pool.redelivered += 1
        self.in_flight = msg
        self.in_flight_since = time.monotonic()
        self._note_head(msg, seq, delivered)
        try:
            result = (
                self._ahead.take(seq)
                or self._check_room_header(headers)
                or await self._call_handler(msg, info)
            )
        except asyncio.CancelledError:
            # Stopping after the grace period: release the message for whoever comes next.
            await pool.nc.publish(msg.reply, b"-NAK")
            self.in_flight = None
            self.head = None
            if self._intervention is not None and not self._intervention[1].done():
                self._intervention[1].set_result(None)  # released: nothing left to act on
            raise
        self.in_flight = None
        pool.processed += 1
        intervention, self._intervention = self._intervention, None
        payload = self._ack_payload(result, info)
        wants_reply = (
            reply_to is not None
            and result.reply is not None
            and result.disposition is not Disposition.RETRY
        )
        self._note_result(result, delivered)
        if pool.stopping or intervention is not None:
            # A stopping worker pulls no more; an operator waits for the applied action. The
            # results a unit kept settle its other messages on delivery.
            self._settled_behind = None
            await self._settle(msg.reply, payload, seq, request_next=not pool.stopping)
            if wants_reply:
                await self._reply(reply_to, result.reply, seq)
        else:
            # Fast path: no confirmation round trip. The next delivery confirms it; an
            # empty pull makes run() resend it with a confirmation. A sync caller's reply goes
            # right behind the ack on the same connection, so the server has the ack first.
            if self._settled_behind is not None:
                # Before the ack: the head keeps the room's messages from anybody else's
                # pull until the unit's others are gone (see _finish_unit).
                await self._finish_unit(self._settled_behind)
            # A caller on this connection has its reply first (it runs in a later loop step;
            # the ack is queued in this one, so it still leaves ahead of the caller's sends).
            local = wants_reply and reply_locally(pool.nc, reply_to or "", result.reply or b"", seq)
            await pool.nc.publish(msg.reply, payload)
            self._unconfirmed = (msg.reply, payload, seq)
            if wants_reply and not local:
                await self._reply(reply_to, result.reply, seq)
            await self._request_next()
        if intervention is not None and not intervention[1].done():
            intervention[1].set_result(None)
        if result.disposition is Disposition.RETRY:
            delay = (
                result.delay if result.delay is not None else retry_delay(pool.config, delivered)
            )
            self._retry_until = asyncio.get_running_loop().time() + delay + pool.config.pull_expires

    async def _finish_unit(self, settled: tuple[int, list[tuple[str, bytes, int]]]) -> None:
        """A unit is done: remove the messages it settled, the head included, from the stream
        (one purge instead of one delivery round trip each) and answer the sync callers of
        those behind the head; the head's ack and reply follow. This runs while the head is
        still the consumer's unacknowledged message, so no other process's pull can get one
        of them meanwhile (acking first would let one have the next message, which the purge
        would then take from under it, and the consumer would hand out the one after while it
        is still being handled). If the purge fails, the kept results settle the messages on
        delivery (docs/bus.md, "Units")."""
        self._settled_behind = None
        last_seq, replies = settled
        pool = self.pool
        try:
            purge = purge_settled(pool.nc, pool.stream, self.subject, last_seq)
            purged = await pool.api_call(purge)
        except Exception:
            purged = False  # the results kept settle the messages on delivery
        if not purged:
            return
        for reply_to, reply, seq in replies:
            await self._reply(reply_to, reply, seq)
            self._ahead.replied(seq)

    async def _reply(self, reply_to: str | None, reply: bytes | None, seq: int) -> None:
        """Answer a sync caller: in the process if it waits on this connection, else through
        the server."""
        assert reply_to is not None and reply is not None
        if not reply_locally(self.pool.nc, reply_to, reply, seq):
            await self.pool.nc.publish(reply_to, reply, headers={HEADER_REPLY_SEQ: str(seq)})

    async def _settle(
        self, ack_subject: str, payload: bytes, seq: int, *, request_next: bool
    ) -> None:
        """Send the ack (or nak, term) and wait for the server to confirm it; the next pull
        (if asked for) goes right behind it (the server handles the ack first). An ack lost
        with a connection is sent again: unconfirmed, the room would wait for AckWait."""
        pool = self.pool
        for attempt in range(_ACK_ATTEMPTS):
            confirm: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            pool.ack_waiters[self.worker_id] = confirm
            try:
                await pool.nc.publish(ack_subject, payload, reply=f"{self._inbox}.a")
                if attempt == 0 and request_next:
                    await self._request_next()
                wait = min(_ACK_CONFIRM_TIMEOUT * 2**attempt, _ACK_CONFIRM_TIMEOUT_MAX)
                async with asyncio.timeout(wait):
                    await confirm
                return
            except TimeoutError:
                log.warning("room %s: ack of seq %s unconfirmed; resending", self.room_id, seq)
            finally:
                pool.ack_waiters.pop(self.worker_id, None)
        log.error("room %s: ack of seq %s never confirmed", self.room_id, seq)

    def _check_room_header(self, headers: Mapping[str, str]) -> HandlerResult | None:
        """A message whose ``room_id`` header is missing or names another room than its subject
        did not come from ``InputPublisher``: which room it is for cannot be trusted, so it is
        terminated (``_ack_payload`` logs it with its stream sequence), never handled."""
        named = headers.get(HEADER_ROOM_ID)
        if named == room_header_value(self.room_id):
            return None
        if named is None:
            return HandlerResult.terminate("no room_id header")
        return HandlerResult.terminate(f"room_id header {named[:300]!r} does not match the subject")

    async def _call_handler(self, msg: Msg, info: DeliveryInfo) -> HandlerResult:
        pool = self.pool
        self._in_handler = True
        try:
            async with asyncio.timeout(pool.config.handler_timeout):
                if pool.unit_handler is not None and info.num_delivered == 1 and info.num_pending:
                    result = await self._call_unit(pool.unit_handler, msg, info)
                    if result is not None:
                        return result
                return await pool.handler(self.room_id, msg.data, info)
        except TimeoutError:
            log.error(
                "room %s: handler exceeded %ss on seq %s; retrying later",
                self.room_id,
                pool.config.handler_timeout,
                info.stream_seq,
            )
            error = f"processing exceeded {pool.config.handler_timeout:g} s"
        except asyncio.CancelledError:
            if self._intervention is None:
                raise
            # An operator cancelled this attempt (see intervene): the cancellation was ours.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return self._intervention[0]
        except Exception as exc:
            log.exception(
                "room %s: handler failed on seq %s; retrying later", self.room_id, info.stream_seq
            )
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._in_handler = False
        return HandlerResult.retry(reason=error)

    async def _call_unit(
        self, unit_handler: UnitHandler, msg: Msg, info: DeliveryInfo
    ) -> HandlerResult | None:
        """Handle the head and the messages queued behind it as one unit; ``None``: handle
        the head alone (nothing behind it could be read, or the unit failed)."""
        following = await self._read_following(info)
        if not following:
            return None
        try:
            results = await unit_handler(self.room_id, [(msg.data, info), *following])
        except Exception:
            log.exception(
                "room %s: unit of %d messages from seq %s failed; handling them one at a time",
                self.room_id, len(following) + 1, info.stream_seq,
            )  # fmt: skip
            return None
        if not results or results[0].disposition is Disposition.RETRY:
            return None
        last_seq = 0
        replies: list[tuple[str, bytes, int]] = []
        for (_, later), result in zip(following, results[1:], strict=False):
            if result.disposition is Disposition.RETRY:
                break
            self._ahead.put(later.stream_seq, result)
            last_seq = later.stream_seq
            if later.reply_to is not None and result.reply is not None:
                replies.append((later.reply_to, result.reply, later.stream_seq))
        if last_seq:
            self._settled_behind = (last_seq, replies)
        return results[0]

    async def _read_following(self, info: DeliveryInfo) -> list[tuple[bytes, DeliveryInfo]]:
        """The room's messages right behind the head, read from the stream (one batched
        direct get), up to the unit's limits; stops before one that must be handled alone."""
        config = self.pool.config
        count = min(info.num_pending, config.unit_max_messages - 1)
        if count < 1:
            return []
        self._get_request += 1
        reply = f"{self._inbox}.g{self._get_request}"
        request = direct_get_request(info.stream_seq, self.subject, count, config.unit_max_bytes)
        await self.pool.nc.publish(self.pool.direct_get_subject, request, reply=reply)
        following: list[tuple[bytes, DeliveryInfo]] = []
        stop = False
        try:
            async with asyncio.timeout(_DIRECT_GET_TIMEOUT):
                while True:
                    msg = await self.following_replies.get()
                    if msg.subject != reply:
                        continue  # the end of an earlier, abandoned read
                    item = following_message(msg)
                    if item is None:
                        return following
                    if not stop and self._check_room_header(msg.headers or {}) is None:
                        following.append(item)
                    else:
                        stop = True  # terminated on its own when it is delivered
        except TimeoutError:
            log.debug("room %s: reading the messages behind seq %s timed out", self.room_id,
                      info.stream_seq)  # fmt: skip
            return []

    # -- the head message and operator actions -------------------------------------------------

    def _note_head(self, msg: Msg, seq: int, delivered: int) -> None:
        assert msg.reply is not None
        head = self.head
        if head is not None and head.stream_seq == seq:
            head.num_delivered = delivered
            head.ack_subject = msg.reply
            head.in_flight = True
            head.retry_at = None
        else:
            self.head = HeadMessage(seq, delivered, time.time(), msg.reply, msg.data)

    def _note_result(self, result: HandlerResult, delivered: int) -> None:
        head = self.head
        if head is None:
            return
        if result.disposition is not Disposition.RETRY:
            self.head = None
            return
        delay = result.delay
        if delay is None:
            delay = retry_delay(self.pool.config, delivered)
        head.in_flight = False
        head.retry_at = time.monotonic() + delay
        if result.reason:
            head.last_error = result.reason

    async def intervene(self, action: Intervention, reason: str) -> InterventionOutcome:
        """Apply ``action`` to the head message (see ``roomserver.bus.admin``). Returns once
        the stream has applied it."""
        while self._intervention is not None:  # one at a time: let the pending one finish
            await asyncio.shield(self._intervention[1])
        head = self.head
        if head is None:
            return InterventionOutcome.NOT_HELD
        if action is Intervention.SKIP:
            result = HandlerResult.terminate(f"skipped by an operator: {reason}")
        else:
            result = HandlerResult.retry(0.0, reason=head.last_error)
        if self._in_handler and self.task is not None:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._intervention = (result, done)
            self.task.cancel()
            await done
            return InterventionOutcome.CANCELLED_IN_FLIGHT
        if action is Intervention.RELEASE:
            self.head = None  # its message is gone; nothing to release
            return InterventionOutcome.APPLIED_WAITING
        payload = (
            b"-NAK"
            if action is Intervention.RETRY
            else self._ack_payload(
                result, DeliveryInfo(head.stream_seq, head.num_delivered, 0, 0, None)
            )
        )
        await self.pool.nc.request(head.ack_subject, payload, timeout=10.0)
        if action is Intervention.SKIP:
            self.head = None
        else:
            head.retry_at = None
        self._retry_until = 0.0
        return InterventionOutcome.APPLIED_WAITING

    def _ack_payload(self, result: HandlerResult, info: DeliveryInfo) -> bytes:
        if result.disposition is Disposition.ACK:
            return _ACK
        if result.disposition is Disposition.TERMINATE:
            log.error(
                "room %s: terminating input message seq %s: %s",
                self.room_id,
                info.stream_seq,
                result.reason,
            )
            return b"+TERM " + (result.reason or "").encode()[:200]
        delay = result.delay
        if delay is None:
            delay = retry_delay(self.pool.config, info.num_delivered)
        return b'-NAK {"delay": %d}' % int(delay * 1e9)
