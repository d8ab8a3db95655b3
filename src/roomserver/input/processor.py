"""``InputProcessor``: input events through gather ► decide ► commit ► publish.

    parse for the room version ► skip if already stored ► content hash, signatures, server ACL
    ► for the event, ``pipeline.py``:
    GATHER (``gather.py``; fetching over federation, ``fetch.py``): auth events, prev events
    and the state before, the entries the rules read ► DECIDE (``core.decide``, pure): the
    rejection rule, soft fail, new extremities, current-state change, outputs ► the write
    (``effects.py``) ► COMMIT (``commit.py``: to the message's write-behind buffer) ► PUBLISH
    the outbox (``end_message``, or at once outside a message).

``process`` never raises: failures become ``Outcome.ERROR``. ``process_or_raise`` raises them
instead, for ``disposition.handle_message`` to classify (retry or terminate).

A bus message (a batch of one room's events) is bracketed by ``begin_message`` and
``end_message``: the first reads what the message's events need at once, with the room row
(another process may have handled the room's previous message, so a cached row is not trusted
unread), and opens one deadline for the message's fetches; the second commits the message's
writes in one transaction and publishes its outputs, pipelined, with one wait. For a cached
room whose prev events are cached, the read is skipped and its answers assumed instead; the
commit's transaction checks them first (``optimistic_reads``, see ``_gather``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from roomserver.api import EventResult, InputRoomEvent, Kind, Outcome, StoredEvent
from roomserver.core.errors import InvalidEvent, UnknownRoomVersion
from roomserver.core.ids import EventId, RoomId, ServerName
from roomserver.core.pdu import Event, is_create_event, parse_event
from roomserver.core.redaction import redact_with
from roomserver.core.signatures import check_content_hash
from roomserver.input.acl import ServerAclChecker, StoredAclChecker
from roomserver.input.commit import Commit
from roomserver.input.config import InputConfig
from roomserver.input.effects import Effects
from roomserver.input.errors import InputInvalid, event_id_of_failure
from roomserver.input.fetch import FetchMissing, already_done
from roomserver.input.gather import Gatherer, Parsed, cited_ids, parse_input
from roomserver.input.job import Job
from roomserver.input.latest import LatestEvents
from roomserver.input.missing import Budget
from roomserver.input.outputs import OutboxSender
from roomserver.input.pipeline import EventPipeline
from roomserver.input.redactions import Redactions
from roomserver.input.rooms import RoomRows
from roomserver.input.state import StateResolver
from roomserver.input.store import EventCache, InputStore, Prefetched, SnapshotEntries
from roomserver.input.verify import BatchVerifier, VerifiedBatch
from roomserver.input.write_behind import BufferedWriteFailed, WriteBehind
from roomserver.ports import (
    ConcurrentUpdate,
    InputReadBatch,
    KeyRing,
    MissingEventFetcher,
    OutputPublisher,
    RoomInfo,
)

log = logging.getLogger(__name__)

#: After a stale optimistic read, how many of the room's next messages read for real.
ASSUME_PAUSE = 16
#: At most this many rooms are remembered as paused (the oldest is forgotten first).
ASSUME_PAUSED_ROOMS = 10_000


@dataclass(slots=True)
class _Message:
    """A bus message of one room being processed (between ``begin_message``/``end_message``)."""

    deadline: float  # loop time: the message's fetches share one deadline
    has_outputs: bool = False  # an event queued outputs: end_message publishes them
    # Events parsed when the message began, by id() of their PDU (kept alive by the entry).
    parsed: Parsed = field(default_factory=dict)
    verified: VerifiedBatch | None = None  # signature checks started when the message began


class InputProcessor:
    """Processes input events of any room, one at a time per room (the bus guarantees that).

    ``store``: storage (``roomserver.ports.Storage`` satisfies ``InputStore``).
    ``keyring``: checks signatures of input events (unless ``verified``) and, with
    ``config.verify_fetched_events``, of fetched ones. ``fetcher``: obtains missing auth events,
    prev events and state; ``None`` reports them missing instead. ``publisher``: the output
    stream. ``server_name``: ours (local users get invite outputs). ``acl``: the origin's
    server ACL check (default: the room's current ``m.room.server_acl`` in ``store``).
    """

    def __init__(
        self,
        store: InputStore,
        keyring: KeyRing,
        fetcher: MissingEventFetcher | None,
        publisher: OutputPublisher,
        *,
        server_name: str,
        acl: ServerAclChecker | None = None,
        config: InputConfig | None = None,
    ) -> None:
        self.config = config or InputConfig()
        # A message's writes are committed together when storage can take them at once.
        self._write_behind: WriteBehind | None = (
            WriteBehind(store)  # type: ignore[arg-type]
            if callable(getattr(store, "persist_many", None))
            else None
        )
        if self._write_behind is not None:
            store = self._write_behind
        self._store = store
        self._keyring = keyring
        self._verifier = BatchVerifier(
            keyring,
            threads=self.config.verify_threads,
            processes=self.config.verify_processes,
        )
        self._publisher = publisher
        self._server_name = server_name
        self._events = EventCache(store)
        self._acl: ServerAclChecker = acl or StoredAclChecker(store, self._events)
        # Rooms as this processor last wrote them (per-room exclusivity makes them current; a
        # stale one fails the version check of the next RoomUpdate, which clears the cache).
        self._rooms = RoomRows(store)
        self._batch: InputReadBatch | None = (
            store if callable(getattr(store, "read_for_input", None)) else None  # type: ignore[assignment]
        )
        self._outbox = OutboxSender(store, publisher, mark_idle_s=self.config.outbox_mark_idle_s)
        self._fetch = FetchMissing(
            store, fetcher, keyring, self._acl, self._rooms, self.config, server_name=server_name
        )
        resolver = StateResolver(store, self._events)
        latest = LatestEvents(store, self._events, resolver, server_name)
        self._snapshots = SnapshotEntries()
        self._gatherer = Gatherer(
            store, self._events, self._snapshots, resolver, latest, self._rooms, self._fetch
        )
        self._effects = Effects(latest, Redactions(store, self._events), self._outbox)
        self._commit = Commit(store, self._events, self._rooms, self._outbox, self._snapshots)
        self._pipeline = EventPipeline(self._gatherer, self._effects, self._commit, self._fetch)
        self._messages: dict[RoomId, _Message] = {}  # rooms with an open message
        #: Messages whose optimistic reads proved stale (``abort_message(stale=True)``).
        self.stale_reads = 0
        self._assume_paused: OrderedDict[RoomId, int] = OrderedDict()  # room -> messages left

    # -- entry points ---------------------------------------------------------------------------
    async def process(self, item: InputRoomEvent) -> EventResult:
        """Process one input event; every failure is reported as ``Outcome.ERROR``."""
        try:
            return await self.process_or_raise(item)
        except Exception as exc:
            log.warning("input event failed: %s: %s", type(exc).__name__, exc)
            return EventResult(
                event_id_of_failure(exc, item), Outcome.ERROR, f"{type(exc).__name__}: {exc}"
            )

    async def process_or_raise(self, item: InputRoomEvent) -> EventResult:
        """Process one input event. Accepted, soft-failed, rejected and invalid inputs return
        their ``EventResult``; transient failures (storage, federation, publishing) raise."""
        for attempt in range(self.config.concurrent_update_retries + 1):
            try:
                return await self._process_item(item)
            except ConcurrentUpdate:
                self._rooms.clear()
                if attempt == self.config.concurrent_update_retries:
                    raise
                log.info("room moved on while processing; retrying (attempt %d)", attempt + 1)
        raise AssertionError("unreachable")

    async def begin_message(
        self, room_id: RoomId, items: Sequence[InputRoomEvent] = (), *, batched: bool = True
    ) -> None:
        """Open a message of ``room_id``: read the room row and use it instead of the cached one.
        ``batched``: its writes are committed together at ``end_message`` (when storage can);
        otherwise each event's on its own.

        Rooms alternate between processes sharing a stream, so a cached row (and the events
        cached with it) may be stale: when the stored row is not the one this processor last
        wrote, the room's cached events are dropped too. Every decision of the message (soft
        fail included) then starts from what is stored; the room row's version check on write
        catches a room that moves on meanwhile.

        With write-behind, the room row is read together with the gather (one round trip) when
        the room is cached (its version, all parsing needs, never changes)."""
        cached = self._rooms.peek(room_id)
        loop_time = asyncio.get_running_loop().time()
        message = _Message(loop_time + self.config.max_missing_processing_s)
        self._messages[room_id] = message
        gather = self._write_behind is not None and batched
        if gather:
            assert self._write_behind is not None
            self._write_behind.open(room_id)
        if gather and cached is not None and items:
            stored = await self._gather(cached, items, message, cached=True)
        else:
            stored = await self._store.room(room_id)
            known = stored if stored is not None else _created_by(room_id, items)
            if gather and known is not None and items:
                await self._gather(known, items, message)
        if cached is None or stored is None or cached.version != stored.version:
            self._forget_room(room_id)
        if stored is not None:
            self._rooms.remember(stored)

    async def _gather(
        self,
        room: RoomInfo,
        items: Sequence[InputRoomEvent],
        message: _Message,
        *,
        cached: bool = False,
    ) -> RoomInfo | None:
        """Parse the message's events once (``room``: for its ID, version and extremities; it
        may be stale), and read at once what each will ask storage first (stored already?
        their prev events; which are cited as prevs; redactions) with the room row as stored,
        which is returned.

        Optimistic reads (``InputConfig.optimistic_reads``): when ``room`` is this process's
        ``cached`` row and every prev event outside the message is cached, nothing is read:
        the answers are assumed to be those of a room that did not move since (``room`` as
        stored, none of the events stored, cited or redacted), and the message's first commit
        checks that in its transaction (``WriteBehind.assume``). When it does not hold, the
        commit raises ``StaleRead``, and ``handle_message`` processes the message again at
        once, with real reads."""
        assert self._write_behind is not None
        ids: list[EventId] = []
        prevs: set[EventId] = set()
        to_verify: list[Event] = []
        for item in items:
            pdu = item.event
            if not isinstance(pdu, Mapping) or pdu.get("type") == "m.room.create":
                continue
            try:
                event = parse_event(
                    pdu, room.room_version, check_edge_counts=item.kind is not Kind.OLD
                )
            except (InvalidEvent, UnknownRoomVersion):
                continue  # reported when the event's turn comes
            if event.room_id != room.room_id:
                continue
            message.parsed[id(pdu)] = (pdu, item.kind, event)
            if not item.verified:
                to_verify.append(event)
            ids.append(event.event_id)
            prevs.update(event.prev_event_ids)
        message.verified = self._verifier.start(to_verify)
        in_message = set(ids)
        wanted = [
            *ids,
            *sorted(p for p in prevs - in_message if not self._gatherer.stateful_cached([p])),
        ]
        if cached and ids and len(wanted) == len(ids) and self._may_assume(room.room_id):
            self._write_behind.assume(
                room,
                ids,
                referenced_ids=sorted(in_message | set(room.forward_extremities)),
                redactions_of=ids,
            )
            return room
        return await self._write_behind.prefetch(
            room.room_id,
            wanted,
            referenced_ids=sorted(in_message | set(room.forward_extremities)),
            redactions_of=ids,
        )

    async def end_message(self, room_id: RoomId) -> None:
        """Close the message of ``room_id``: commit its buffered writes (one transaction), then
        publish the outputs its events queued (pipelined, one wait for the acknowledgements).
        Raises when either fails (the message is then processed again)."""
        message = self._messages.pop(room_id, None)
        if self._write_behind is not None:
            try:
                last, marked, written = await self._write_behind.close(room_id)
            except BufferedWriteFailed:
                self._forget_room(room_id)  # the caches saw writes that were never committed
                raise
            if last is not None and last.pending_outbox is not None:
                self._outbox.marked(room_id, marked)
                self._commit.pending[room_id] = last.pending_outbox
            self._settle_cached(room_id, written)
        pending = self._commit.pending.pop(room_id, None)
        if message is not None and message.has_outputs:
            await self._outbox.publish(room_id, pending)

    def abort_message(self, room_id: RoomId, *, stale: bool = False) -> None:
        """The message of ``room_id`` was cancelled mid-way (its handler timed out, or the
        process is stopping), or (``stale``) what it assumed instead of reading was false:
        drop its buffered writes and what was cached from them. After a stale read the room's
        next ``ASSUME_PAUSE`` messages read for real (another process may be writing it)."""
        self._messages.pop(room_id, None)
        if self._write_behind is not None:
            self._write_behind.discard(room_id)
        self._forget_room(room_id)
        if stale:
            self.stale_reads += 1
            self._assume_paused[room_id] = ASSUME_PAUSE
            self._assume_paused.move_to_end(room_id)
            while len(self._assume_paused) > ASSUME_PAUSED_ROOMS:
                self._assume_paused.popitem(last=False)

    def _may_assume(self, room_id: RoomId) -> bool:
        if not self.config.optimistic_reads:
            return False
        paused = self._assume_paused.get(room_id)
        if paused is None:
            return True
        if paused <= 1:
            del self._assume_paused[room_id]
        else:
            self._assume_paused[room_id] = paused - 1
        return False

    def _forget_room(self, room_id: RoomId) -> None:
        self._rooms.forget(room_id)
        self._events.forget_room(room_id)
        self._snapshots.forget_room(room_id)
        self._commit.pending.pop(room_id, None)

    def _settle_cached(self, room_id: RoomId, written: Sequence[EventId]) -> None:
        """Replace the placeholder snapshot IDs the room's cached rows got from buffered writes
        with the real ones (the message is committed)."""
        assert self._write_behind is not None
        resolve = self._write_behind.resolve
        try:
            room = self._rooms.peek(room_id)
            if room is not None and room.current_state is not None and room.current_state < 0:
                self._rooms.remember(replace(room, current_state=resolve(room.current_state)))
            self._events.settle_snapshots(written, resolve)
            self._snapshots.settle(room_id, resolve)
        except KeyError:  # not committed after all: start from storage
            self._forget_room(room_id)

    async def flush_outbox(self, room_id: RoomId) -> int:
        """Publish the room's unsent outputs in order and mark them sent; returns how many."""
        self._commit.pending.pop(room_id, None)
        return await self._outbox.flush(room_id)

    async def close(self) -> None:
        """Mark sent every output published but not marked yet (see ``OutboxSender``)."""
        await self._outbox.close()
        await self._verifier.aclose()

    # -- one input event ------------------------------------------------------------------------
    async def _process_item(self, item: InputRoomEvent) -> EventResult:
        try:
            event, room = await self._parse(item)
        except (InvalidEvent, UnknownRoomVersion, InputInvalid) as exc:
            return EventResult(item.event_id_hint(), Outcome.INVALID, str(exc))
        # One read for the event itself and its prev events (usually cached: just processed),
        # with what the write will need to know (which events are cited as prevs; redactions).
        cached_prevs = self._gatherer.stateful_cached(event.prev_event_ids)
        wanted = [event.event_id, *(p for p in event.prev_event_ids if p not in cached_prevs)]
        prefetched: Prefetched | None = None
        if self._batch is not None:
            cited = cited_ids(event, room)
            reads = await self._batch.read_for_input(
                wanted, room_id=event.room_id, referenced_ids=cited, redactions_of=event.event_id
            )
            found = dict(reads.events)
            prefetched = Prefetched(
                frozenset(cited), frozenset(reads.referenced), tuple(reads.redactions)
            )
        else:
            found = await self._store.get_events(wanted)
        stored = found.pop(event.event_id, None)
        for prev in found.values():
            self._events.remember(prev)
        if stored is not None and already_done(stored, item.kind):
            await self.flush_outbox(event.room_id)
            return _stored_result(stored)
        if stored is None and room is not None and is_create_event(event):
            return EventResult(
                event.event_id, Outcome.INVALID, f"room {event.room_id} has a create event already"
            )
        if not item.verified:
            try:
                event = await self._verify(event, item.origin, room)
            except (InvalidEvent, InputInvalid) as exc:
                return EventResult(event.event_id, Outcome.INVALID, str(exc))
        job = Job(
            event=event,
            kind=item.kind,
            origin=item.origin,
            state_event_ids=item.state_event_ids if item.has_state else None,
            rewrites_state=item.has_state and item.kind is Kind.NEW,
            send_as_server=item.send_as_server,
            transaction_id=item.transaction_id,
            fresh=stored is None,
        )
        message = self._messages.get(event.room_id)
        try:
            budget = Budget(
                self.config.max_missing_processing_s,
                deadline=message.deadline if message is not None else None,
            )
            result, outputs = await self._pipeline.handle(job, budget, room, prefetched)
            if message is not None:
                message.has_outputs |= bool(outputs or budget.outputs_queued)
            else:
                pending = self._commit.pending.pop(event.room_id, None)
                if outputs or budget.outputs_queued:
                    await self._outbox.publish(event.room_id, pending)
        except InputInvalid as exc:
            return EventResult(event.event_id, Outcome.INVALID, str(exc))
        except Exception as exc:
            exc.input_event_id = event.event_id  # type: ignore[attr-defined]
            raise
        return result

    async def _parse(self, item: InputRoomEvent) -> tuple[Event, RoomInfo | None]:
        """Spec 7.1 (``gather.parse_input``), with the events parsed when the message began."""
        room_id = item.event.get("room_id") if isinstance(item.event, Mapping) else None
        message = self._messages.get(RoomId(room_id)) if isinstance(room_id, str) else None
        parsed = message.parsed if message is not None else None
        return await parse_input(item, self._store, self._rooms, parsed)

    async def _verify(self, event: Event, origin: str | None, room: RoomInfo | None) -> Event:
        """Spec 7.2-7.3 and server ACLs: signatures (on the redacted form), the content hash
        (a mismatch means the event is used redacted), and the origin's server ACL."""
        message = self._messages.get(event.room_id)
        await self._verifier.verify(event, message.verified if message is not None else None)
        if not check_content_hash(event):
            log.info("content hash mismatch for %s: using its redacted form", event.event_id)
            redacted = redact_with(event.pdu, event.rules)
            event = parse_event(redacted, event.room_version, event_id=event.event_id)
        if (
            origin is not None
            and origin != self._server_name
            and not (await self._acl.predicate(room))(origin)
        ):
            raise InputInvalid(f"server ACL of {event.room_id} forbids origin {origin}")
        return event

    async def servers_for(self, job: Job, room: RoomInfo | None) -> list[ServerName]:
        """Servers to ask for missing data (see ``FetchMissing.servers_for``)."""
        return await self._fetch.servers_for(job, room)

    def forget_rooms(self) -> None:
        """Drop cached room rows (call after changing rooms outside this processor)."""
        self._rooms.clear()


def _created_by(room_id: RoomId, items: Sequence[InputRoomEvent]) -> RoomInfo | None:
    """The room a message creates (it holds the room's create event), as far as its gather
    needs it (ID, version, no extremities yet); ``None`` if the message creates no room. The
    create event is checked when its turn comes: an event parsed here for a version the room
    does not get is parsed again then (``gather.parse_input``)."""
    for item in items:
        pdu = item.event
        if not isinstance(pdu, Mapping) or pdu.get("type") != "m.room.create":
            continue
        if pdu.get("state_key") != "" or pdu.get("room_id") not in (None, room_id):
            continue
        content = pdu.get("content")
        version = content.get("room_version", "1") if isinstance(content, Mapping) else "1"
        if isinstance(version, str):
            return RoomInfo(room_id, version, (), None, None, 0)
    return None


def _stored_result(stored: StoredEvent) -> EventResult:
    reason = stored.rejection_reason if stored.rejected else None
    return EventResult(stored.event.event_id, stored.outcome, reason)
