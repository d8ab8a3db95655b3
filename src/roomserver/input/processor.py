"""``InputProcessor``: one input event through the pipeline (reference §3, with DESIGN's changes).

    parse for the room version ► skip if already stored ► content hash, signatures, server ACL
    ► auth events (fetch the missing auth chain) ► check against them ► NEW with missing prevs:
    fill the gap ► state before (prev states, resolved; or supplied) ► check against it
    ► NEW: soft-fail check against current state ► one EventWrite (event, state, room update,
    redaction bookkeeping, outbox) ► publish the outbox, mark it sent.

``process`` never raises: failures become ``Outcome.ERROR``. ``process_or_raise`` raises them
instead, for ``disposition.handle_message`` to classify (retry or terminate).

A bus message (a batch of one room's events) is bracketed by ``begin_message`` and
``end_message``: the first proves the cached room row fresh (another process may have handled
the room's previous message) and opens one deadline for the message's fetches; the second
publishes the outputs of the whole message, pipelined, with one wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from roomserver.api import (
    EventResult,
    InputRoomEvent,
    Kind,
    Outcome,
    OutputOldRoomEvent,
    StoredEvent,
    TransactionId,
)
from roomserver.core.auth import (
    check_auth_events,
    check_auth_rules,
)
from roomserver.core.dag import extremities_to_check, missing_prev_events
from roomserver.core.errors import InvalidEvent, Rejected, UnknownRoomVersion
from roomserver.core.identifiers import is_valid_server_name, server_name_of
from roomserver.core.pdu import Event, is_create_event, parse_event
from roomserver.core.redaction import redact_with
from roomserver.core.signatures import check_content_hash
from roomserver.input.acl import ServerAclChecker, StoredAclChecker
from roomserver.input.checks import history_visibility, needed_state_events, soft_fail_reason
from roomserver.input.config import InputConfig
from roomserver.input.errors import (
    MISSING_AUTH,
    MISSING_PREVS,
    REJECTED_BY_STATE_BEFORE,
    InputInvalid,
    MissingData,
)
from roomserver.input.latest import LatestEvents, NewEventContext
from roomserver.input.missing import Budget, FetchedJob, MissingPrevEvents
from roomserver.input.outputs import OutboxBuilder, OutboxSender
from roomserver.input.redactions import RedactionEffects, Redactions
from roomserver.input.state import StateBefore, StateResolver, state_from_prevs, supplied_state
from roomserver.input.store import (
    EventCache,
    InputStore,
    Prefetched,
    SnapshotEntries,
    rejected_for_missing_data,
)
from roomserver.input.verify import BatchVerifier, VerifiedBatch
from roomserver.input.write_behind import BufferedWriteFailed, WriteBehind
from roomserver.ports import (
    ConcurrentUpdate,
    EventStatus,
    EventWrite,
    InputReadBatch,
    KeyRing,
    MissingEventFetcher,
    OutboxEntry,
    OutputPublisher,
    RoomInfo,
    StateDelta,
)

log = logging.getLogger(__name__)

_ROOM_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class _Job:
    """One event to process, with how it relates to the DAG."""

    event: Event
    kind: Kind
    origin: str | None = None
    state_event_ids: tuple[str, ...] | None = None  # supplied state before the event
    rewrites_state: bool = False  # NEW with caller-supplied state
    send_as_server: str | None = None
    transaction_id: TransactionId | None = None
    fetched: bool = False  # fetched by this pipeline: never fetches prev events itself

    @property
    def is_create(self) -> bool:
        return self.event.type == "m.room.create" and self.event.state_key == ""


@dataclass(slots=True)
class _Facts:
    """What the pipeline learns about one event on its way to the write."""

    room: RoomInfo | None
    rejection: str | None = None
    state: StateBefore | None = None
    remote_state: tuple[str, ...] | None = None  # state before, from a remote (gap)
    referenced: frozenset[str] = frozenset()  # cited as prevs by gap events just stored
    gap_procedure_ran: bool = False
    history_visibility: str = "shared"
    soft_failed: str | None = None
    prefetched: Prefetched | None = None  # read with the event; valid while nothing is written
    prefetched_at: int = -1  # budget.writes when read


@dataclass(slots=True)
class _Message:
    """A bus message of one room being processed (between ``begin_message``/``end_message``)."""

    deadline: float  # loop time: the message's fetches share one deadline
    has_outputs: bool = False  # an event queued outputs: end_message publishes them
    # Events parsed when the message began, by id() of their PDU (kept alive by the entry).
    parsed: dict[int, tuple[Mapping[str, Any], Kind, Event]] = field(default_factory=dict)
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
        self._verifier = BatchVerifier(keyring, threads=self.config.verify_threads)
        self._fetcher = fetcher
        self._publisher = publisher
        self._server_name = server_name
        self._events = EventCache(store)
        self._snapshot_entries = SnapshotEntries()
        self._acl: ServerAclChecker = acl or StoredAclChecker(store, self._events)
        self._resolver = StateResolver(store, self._events)
        self._latest = LatestEvents(store, self._events, self._resolver, server_name)
        self._redactions = Redactions(store, self._events)
        # Rooms as this processor last wrote them (per-room exclusivity makes them current; a
        # stale one fails the version check of the next RoomUpdate, which clears the cache).
        self._rooms: OrderedDict[str, RoomInfo] = OrderedDict()
        self._batch: InputReadBatch | None = (
            store if callable(getattr(store, "read_for_input", None)) else None  # type: ignore[assignment]
        )
        self._outbox = OutboxSender(store, publisher, mark_idle_s=self.config.outbox_mark_idle_s)
        self._pending: dict[str, tuple[OutboxEntry, ...]] = {}  # as the last write reported
        self._messages: dict[str, _Message] = {}  # rooms with an open message

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
        self, room_id: str, items: Sequence[InputRoomEvent] = (), *, batched: bool = True
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
        cached = self._rooms.get(room_id)
        loop_time = asyncio.get_running_loop().time()
        message = _Message(loop_time + self.config.max_missing_processing_s)
        self._messages[room_id] = message
        gather = self._write_behind is not None and batched
        if gather:
            assert self._write_behind is not None
            self._write_behind.open(room_id)
        if gather and cached is not None and items:
            stored = await self._gather(cached, items, message)
        else:
            stored = await self._store.room(room_id)
            if gather and stored is not None and items:
                await self._gather(stored, items, message)
        if cached is None or stored is None or cached.version != stored.version:
            self._forget_room(room_id)
        if stored is not None:
            self._remember_room(stored)

    async def _gather(
        self, room: RoomInfo, items: Sequence[InputRoomEvent], message: _Message
    ) -> RoomInfo | None:
        """Parse the message's events once (``room``: for its ID, version and extremities; it
        may be stale), and read at once what each will ask storage first (stored already?
        their prev events; which are cited as prevs; redactions) with the room row as stored,
        which is returned."""
        assert self._write_behind is not None
        ids: list[str] = []
        prevs: set[str] = set()
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
        wanted = [*ids, *sorted(p for p in prevs - in_message if not self._stateful_cached([p]))]
        return await self._write_behind.prefetch(
            room.room_id,
            wanted,
            referenced_ids=sorted(in_message | set(room.forward_extremities)),
            redactions_of=ids,
        )

    async def end_message(self, room_id: str) -> None:
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
                self._pending[room_id] = last.pending_outbox
            self._settle_cached(room_id, written)
        pending = self._pending.pop(room_id, None)
        if message is not None and message.has_outputs:
            await self._outbox.publish(room_id, pending)

    def abort_message(self, room_id: str) -> None:
        """The message of ``room_id`` was cancelled mid-way (its handler timed out, or the
        process is stopping): drop its buffered writes and what was cached from them."""
        self._messages.pop(room_id, None)
        if self._write_behind is not None:
            self._write_behind.discard(room_id)
        self._forget_room(room_id)

    def _forget_room(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)
        self._events.forget_room(room_id)
        self._pending.pop(room_id, None)

    def _settle_cached(self, room_id: str, written: Sequence[str]) -> None:
        """Replace the placeholder snapshot IDs the room's cached rows got from buffered writes
        with the real ones (the message is committed)."""
        assert self._write_behind is not None
        resolve = self._write_behind.resolve
        try:
            room = self._rooms.get(room_id)
            if room is not None and room.current_state is not None and room.current_state < 0:
                self._rooms[room_id] = replace(room, current_state=resolve(room.current_state))
            self._events.settle_snapshots(written, resolve)
        except KeyError:  # not committed after all: start from storage
            self._forget_room(room_id)

    async def flush_outbox(self, room_id: str) -> int:
        """Publish the room's unsent outputs in order and mark them sent; returns how many."""
        self._pending.pop(room_id, None)
        return await self._outbox.flush(room_id)

    async def close(self) -> None:
        """Mark sent every output published but not marked yet (see ``OutboxSender``)."""
        await self._outbox.close()
        self._verifier.close()

    # -- one input event ------------------------------------------------------------------------
    async def _process_item(self, item: InputRoomEvent) -> EventResult:
        try:
            event, room = await self._parse(item)
        except (InvalidEvent, UnknownRoomVersion, InputInvalid) as exc:
            return EventResult(_event_id_hint(item), Outcome.INVALID, str(exc))
        # One read for the event itself and its prev events (usually cached: just processed),
        # with what the write will need to know (which events are cited as prevs; redactions).
        cached_prevs = self._stateful_cached(event.prev_event_ids)
        wanted = [event.event_id, *(p for p in event.prev_event_ids if p not in cached_prevs)]
        prefetched: Prefetched | None = None
        if self._batch is not None:
            cited = _cited_ids(event, room)
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
        if stored is not None and _already_done(stored, item.kind):
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
        job = _Job(
            event=event,
            kind=item.kind,
            origin=item.origin,
            state_event_ids=item.state_event_ids if item.has_state else None,
            rewrites_state=item.has_state and item.kind is Kind.NEW,
            send_as_server=item.send_as_server,
            transaction_id=item.transaction_id,
        )
        message = self._messages.get(event.room_id)
        try:
            budget = Budget(
                self.config.max_missing_processing_s,
                deadline=message.deadline if message is not None else None,
            )
            result, outputs = await self._handle(job, budget, room, prefetched)
            if message is not None:
                message.has_outputs |= bool(outputs or budget.outputs_queued)
            else:
                pending = self._pending.pop(event.room_id, None)
                if outputs or budget.outputs_queued:
                    await self._outbox.publish(event.room_id, pending)
        except InputInvalid as exc:
            return EventResult(event.event_id, Outcome.INVALID, str(exc))
        except Exception as exc:
            exc.input_event_id = event.event_id  # type: ignore[attr-defined]
            raise
        return result

    async def _parse(self, item: InputRoomEvent) -> tuple[Event, RoomInfo | None]:
        """Spec 7.1: a valid event for the room version. The version is the stored room's, the
        create event's ``content.room_version`` (default "1"), or the input's."""
        pdu = item.event
        if not isinstance(pdu, Mapping):
            raise InputInvalid("event: must be a JSON object")
        edge_counts = item.kind is not Kind.OLD  # spec: not applied to backfilled events
        if pdu.get("type") == "m.room.create" and pdu.get("state_key") == "":
            content = pdu.get("content")
            version = content.get("room_version", "1") if isinstance(content, Mapping) else "1"
            if not isinstance(version, str):
                raise InputInvalid("content.room_version: must be a string")
            if item.room_version is not None and item.room_version != version:
                raise InputInvalid(
                    f"room_version {item.room_version!r} differs from the create event's"
                    f" {version!r}"
                )
            event = parse_event(pdu, version, check_edge_counts=edge_counts)
            room = await self._room(event.room_id)
            stored_version = (
                room.room_version
                if room is not None
                else await self._store.room_version_of(event.room_id)
            )
            if stored_version is not None and stored_version != version:
                raise InputInvalid(f"room {event.room_id} already exists with another version")
            return event, room
        room_id = pdu.get("room_id")
        if not isinstance(room_id, str):
            raise InputInvalid("room_id: missing or not a string")
        room = await self._room(room_id)
        message = self._messages.get(room_id)
        parsed = message.parsed.pop(id(pdu), None) if message is not None else None
        if parsed is not None and parsed[0] is pdu and parsed[1] is item.kind and room is not None:
            return parsed[2], room  # parsed for the room's version when the message began
        version = room.room_version if room is not None else None
        if version is None:
            # Known only through outliers or rejected events, maybe: their version holds.
            stored_version = await self._store.room_version_of(room_id)
            if stored_version is not None and item.room_version not in (None, stored_version):
                raise InputInvalid(
                    f"room {room_id} is stored with room version {stored_version}, "
                    f"not {item.room_version}"
                )
            version = stored_version or item.room_version
        if version is None:
            raise InputInvalid(f"room {room_id} is unknown and the input names no room_version")
        return parse_event(pdu, version, check_edge_counts=edge_counts), room

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

    # -- the pipeline ---------------------------------------------------------------------------
    async def _handle(
        self,
        job: _Job,
        budget: Budget,
        room: RoomInfo | None,
        prefetched: Prefetched | None = None,
    ) -> tuple[EventResult, int]:
        """Gather, decide, commit one event; returns its result and how many outputs it queued."""
        facts = _Facts(room=room, prefetched=prefetched, prefetched_at=budget.writes)
        servers = _LazyServers(self, job, room)
        facts.rejection = await self._check_auth_events(job, servers, budget)
        if job.kind is not Kind.OUTLIER:
            await self._gather_state_before(job, facts, servers, budget)
        await self._check_state_before(job, facts)
        if (
            job.kind is Kind.NEW
            and facts.rejection is None
            and not job.is_create
            and not job.rewrites_state
        ):
            facts.soft_failed = await soft_fail_reason(
                self._store,
                self._events,
                self._resolver,
                job.event,
                facts.room,
                facts.state,
                gap_filled=facts.referenced if facts.gap_procedure_ran else None,
            )
        if budget.writes != facts.prefetched_at:
            facts.prefetched = None  # a gap filled or an auth chain stored since it was read
        committed = await self._commit(job, facts)
        budget.writes += 1
        return committed

    async def _gather_state_before(
        self, job: _Job, facts: _Facts, servers: _LazyServers, budget: Budget
    ) -> None:
        """The prev events (filling a gap for NEW events) and the state before the event."""
        event = job.event
        prevs = await self._load_prevs(event.prev_event_ids)
        missing = _missing_prevs(event, prevs)
        if (
            missing
            and job.kind is Kind.NEW
            and job.state_event_ids is None
            and not job.is_create
            and facts.rejection is None
        ):
            facts.remote_state, facts.referenced = await self._fill_gap(
                job, facts.room, await servers.get(), budget
            )
            facts.gap_procedure_ran = True
            facts.room = await self._room(event.room_id)
            prevs = await self._load_prevs(event.prev_event_ids)
            missing = _missing_prevs(event, prevs)
        wrong_room = sorted(p for p, s in prevs.items() if s.event.room_id != event.room_id)
        if wrong_room and facts.rejection is None:
            facts.rejection = f"prev event {wrong_room[0]} is in another room"
        facts.state = await self._state_before(job, facts, prevs, missing)
        if facts.state is None and job.kind is Kind.NEW and facts.rejection is None:
            facts.rejection = f"{MISSING_PREVS} {sorted(missing)} could not be obtained"

    async def _check_state_before(self, job: _Job, facts: _Facts) -> None:
        """Spec 7.5: the rules against the state before the event (its needed entries only)."""
        if facts.state is None or job.is_create:
            return
        state_events = await needed_state_events(
            self._store, self._events, job.event, facts.state, self._snapshot_entries
        )
        facts.history_visibility = history_visibility(state_events)
        if facts.rejection is None:
            try:
                check_auth_rules(job.event, state_events)
            except Rejected as exc:
                facts.rejection = f"{REJECTED_BY_STATE_BEFORE}: {exc.reason}"

    async def _commit(self, job: _Job, facts: _Facts) -> tuple[EventResult, int]:
        """One ``EventWrite``: the event, its state, the room update, redactions, outputs."""
        event, state, room = job.event, facts.state, facts.room
        outbox = OutboxBuilder(event.room_id, event.event_id)
        room_update = None
        effects = RedactionEffects()
        prefetched = facts.prefetched
        if facts.rejection is None:
            if job.kind is Kind.NEW and facts.soft_failed is None and state is not None:
                ctx = NewEventContext(
                    event=event,
                    state_before=state,
                    rewrites_state=job.rewrites_state,
                    history_visibility=facts.history_visibility,
                    send_as_server=job.send_as_server,
                    transaction_id=job.transaction_id,
                    referenced=facts.referenced,
                    prefetched=prefetched,
                )
                room_update = await self._latest.update(ctx, room, outbox)
            elif job.kind is Kind.OLD:
                outbox.add(
                    OutputOldRoomEvent(
                        event=event.pdu,
                        event_id=event.event_id,
                        room_version=event.room_version,
                        history_visibility=facts.history_visibility,
                    )
                )
            effects = await self._redactions.effects(
                event,
                state,
                outbox,
                room_current_state=room.current_state if room is not None else None,
                prefetched=prefetched,
                soft_failed=facts.soft_failed is not None,
            )
        marks = self._outbox.marks_for(event.room_id)
        persisted = await self._store.persist(
            EventWrite(
                event=event,
                status=EventStatus.OUTLIER if state is None else EventStatus.STATEFUL,
                rejection_reason=facts.rejection,
                soft_failed=facts.soft_failed is not None,
                state_before=state.delta if state is not None else None,
                room_update=room_update,
                outbox=tuple(outbox.entries),
                redaction_target=effects.redaction_target,
                apply_redaction=effects.applied,
                outbox_sent=marks,
                expected_room_version=(
                    room.version if facts.soft_failed is not None and room is not None else None
                ),
            )
        )
        if persisted.pending_outbox is not None:
            self._outbox.marked(event.room_id, marks)
            self._pending[event.room_id] = persisted.pending_outbox
        else:
            self._pending.pop(event.room_id, None)
        if room_update is not None:
            self._remember_room(
                RoomInfo(
                    room_id=event.room_id,
                    room_version=room_update.room_version,
                    forward_extremities=tuple(room_update.forward_extremities),
                    current_state=persisted.current_state,
                    last_sent_event_id=room_update.last_sent_event_id,
                    version=(room.version if room is not None else 0) + 1,
                )
            )
        outputs = len(outbox.entries)
        if facts.rejection is not None:
            log.info("rejected %s: %s", event.event_id, facts.rejection)
            return EventResult(event.event_id, Outcome.REJECTED, facts.rejection), outputs
        if effects.applied is None or effects.applied.target_id != event.event_id:
            self._events.remember(
                StoredEvent(
                    event=event,
                    outlier=state is None,
                    soft_failed=facts.soft_failed is not None,
                    state_snapshot=persisted.state_before,
                )
            )
        if facts.soft_failed is not None:
            log.info("soft-failed %s: %s", event.event_id, facts.soft_failed)
            return EventResult(event.event_id, Outcome.SOFT_FAILED, facts.soft_failed), outputs
        return EventResult(event.event_id, Outcome.ACCEPTED), outputs

    async def _check_auth_events(
        self, job: _Job, servers: _LazyServers, budget: Budget
    ) -> str | None:
        """Spec 7.4: load the auth events (fetching a missing auth chain) and check the event
        against them. Returns the rejection reason, or ``None``."""
        event = job.event
        if event.type == "m.room.create" and event.state_key == "":
            try:
                check_auth_events(event, [])
            except Rejected as exc:
                return exc.reason
            return None
        wanted = list(event.auth_event_ids)
        if event.rules.room_id_from_create_event:
            wanted.append("$" + event.room_id[1:])  # v12: the room ID names the create event
        loaded = await self._events.get(wanted)
        missing = _missing_auth(wanted, loaded)
        if missing and not job.fetched and self._fetcher is not None:
            await self._fetch_auth_chain(event, await servers.get(), budget)
            loaded = await self._events.get(wanted)
            missing = _missing_auth(wanted, loaded)
        rejected = {i for i, s in loaded.items() if s.rejected}
        try:
            check_auth_events(event, [s.event for s in loaded.values()], rejected=rejected)
        except Rejected as exc:
            if missing:
                return f"{MISSING_AUTH} {sorted(missing)}: {exc.reason}"
            return exc.reason
        return None

    async def _fetch_auth_chain(self, event: Event, servers: Sequence[str], budget: Budget) -> None:
        """Fetch the event's auth chain and store it as outliers (oldest first). A permanent
        failure leaves the auth events missing (the event is then rejected for lack of them)."""
        assert self._fetcher is not None
        if not servers:
            return
        try:
            chain = await budget.run(
                f"the auth chain of {event.event_id}",
                self._fetcher.fetch_auth_chain(
                    event.room_id, event.room_version, event.event_id, servers, have=self._have_any
                ),
            )
        except MissingData as exc:
            if exc.transient:
                raise
            log.info("auth chain of %s not fetched: %s", event.event_id, exc)
            return
        for fetched in chain:
            if fetched.room_id == event.room_id and fetched.event_id != event.event_id:
                await self._process_fetched(FetchedJob(fetched, Kind.OUTLIER), budget)

    async def _room(self, room_id: str) -> RoomInfo | None:
        room = self._rooms.get(room_id)
        if room is None:
            room = await self._store.room(room_id)
            if room is not None:
                self._remember_room(room)
        return room

    def _remember_room(self, room: RoomInfo) -> None:
        self._rooms[room.room_id] = room
        self._rooms.move_to_end(room.room_id)
        while len(self._rooms) > _ROOM_CACHE_SIZE:
            self._rooms.popitem(last=False)

    def forget_rooms(self) -> None:
        """Drop cached room rows (call after changing rooms outside this processor)."""
        self._rooms.clear()

    def _stateful_cached(self, event_ids: Sequence[str]) -> dict[str, StoredEvent]:
        return {i: s for i, s in self._events.peek(event_ids).items() if not s.outlier}

    async def _load_prevs(self, event_ids: Sequence[str]) -> dict[str, StoredEvent]:
        """Prev events as stored. Cached entries are trusted only once they have state (an
        outlier may have gained state since it was cached)."""
        out = self._stateful_cached(event_ids)
        rest = [i for i in event_ids if i not in out]
        if rest:
            loaded = await self._store.get_events(rest)
            for stored in loaded.values():
                self._events.remember(stored)
            out.update(loaded)
        return out

    async def _have_any(self, event_ids: Sequence[str]) -> set[str]:
        return set(await self._store.get_events(event_ids))

    async def _process_fetched(self, fetched: FetchedJob, budget: Budget) -> None:
        """Run an event a fetcher returned through the pipeline (no prev-event fetching)."""
        event = fetched.event
        stored = (await self._store.get_events([event.event_id])).get(event.event_id)
        if stored is not None and _already_done(stored, fetched.kind):
            return
        if self.config.verify_fetched_events:
            try:
                await self._keyring.verify_event(event.pdu, event.room_version)
            except InvalidEvent as exc:
                log.info("dropping fetched event %s: %s", event.event_id, exc)
                return
        job = _Job(
            event=event,
            kind=fetched.kind,
            state_event_ids=fetched.state_event_ids,
            fetched=True,
        )
        try:
            _, outputs = await self._handle(job, budget, await self._room(event.room_id))
            budget.outputs_queued += outputs
        except InputInvalid as exc:
            log.info("dropping fetched event %s: %s", event.event_id, exc)

    async def _fill_gap(
        self, job: _Job, room: RoomInfo | None, servers: Sequence[str], budget: Budget
    ) -> tuple[tuple[str, ...] | None, frozenset[str]]:
        """The missing-events procedure: returns the state before the event when it came from
        a remote, and the events the gap's events cite as prev events."""
        if self._fetcher is None or not servers:
            return None, frozenset()

        async def process(fetched: FetchedJob) -> None:
            await self._process_fetched(fetched, budget)

        procedure = MissingPrevEvents(
            self._store, self._fetcher, process, limit=self.config.missing_events_limit
        )
        try:
            state = await procedure.fill(job.event, room, servers, budget)
        except MissingData as exc:
            if exc.transient:
                raise
            log.info("gap before %s not filled: %s", job.event.event_id, exc)
            state = None
        return state, frozenset(procedure.referenced)

    async def _state_before(
        self,
        job: _Job,
        facts: _Facts,
        prevs: Mapping[str, StoredEvent],
        missing: Sequence[str],
    ) -> StateBefore | None:
        """Spec 11.1: the state before the event, or ``None`` when it cannot be known."""
        if job.is_create:
            return StateBefore(StateDelta(None, {}), {})
        if job.state_event_ids is not None:
            return await supplied_state(
                self._store, job.state_event_ids, facts.room, strict=not job.fetched
            )
        if facts.remote_state is not None:
            return await supplied_state(self._store, facts.remote_state, facts.room, strict=False)
        if missing or not prevs:
            return None
        ordered = [prevs[p] for p in job.event.prev_event_ids]
        return await state_from_prevs(self._store, self._resolver, job.event.rules, ordered)

    async def servers_for(self, job: _Job, room: RoomInfo | None) -> list[str]:
        """Servers to ask for missing data: the origin, the sender's server, then the servers
        joined to the room; never ourselves, never one the room's server ACL denies."""
        candidates = [job.origin, server_name_of(job.event.sender)]
        allowed = await self._acl.predicate(room)
        if room is not None:
            candidates += sorted(await self._store.joined_servers(room.room_id))
        out: list[str] = []
        for server in candidates:
            if not server or server == self._server_name or server in out:
                continue
            if not is_valid_server_name(server):
                continue
            if allowed(server):
                out.append(server)
        return out


class _LazyServers:
    """The server list of one job, computed on first use (most events never need it)."""

    def __init__(self, processor: InputProcessor, job: _Job, room: RoomInfo | None) -> None:
        self._processor = processor
        self._job = job
        self._room = room
        self._servers: list[str] | None = None

    async def get(self) -> list[str]:
        if self._servers is None:
            self._servers = await self._processor.servers_for(self._job, self._room)
        return self._servers


def _cited_ids(event: Event, room: RoomInfo | None) -> list[str]:
    """What ``LatestEvents`` will ask ``referenced_as_prev`` about on the common path: the
    event and the old extremities it does not cite."""
    if room is None:
        return [event.event_id]
    return extremities_to_check(room.forward_extremities, event.event_id, event.prev_event_ids)


def _missing_auth(wanted: Sequence[str], loaded: Mapping[str, StoredEvent]) -> list[str]:
    """Auth events unknown, or stored but rejected only for lack of data: the event waits for
    them (rejected for missing auth events, processed again when resubmitted), as it would
    had they arrived in order."""
    return [i for i in wanted if i not in loaded or rejected_for_missing_data(loaded[i])]


def _missing_prevs(event: Event, prevs: Mapping[str, StoredEvent]) -> list[str]:
    """Prev events unknown, or known without state (outliers)."""
    return missing_prev_events(
        event.prev_event_ids, {i: not s.outlier for i, s in prevs.items()}
    )


def _already_done(stored: StoredEvent, kind: Kind) -> bool:
    """Whether re-processing ``stored`` as ``kind`` would change nothing (idempotence).

    An outlier asked for as NEW/OLD gains state; an event rejected for lack of data is tried
    again (we may know more now)."""
    if stored.rejected and (stored.rejection_reason or "").startswith(
        (MISSING_AUTH, MISSING_PREVS)
    ):
        return False
    return kind is Kind.OUTLIER or not stored.outlier


def _stored_result(stored: StoredEvent) -> EventResult:
    reason = stored.rejection_reason if stored.rejected else None
    return EventResult(stored.event.event_id, stored.outcome, reason)


def _event_id_hint(item: InputRoomEvent) -> str | None:
    value = item.event.get("event_id") if isinstance(item.event, Mapping) else None
    return value if isinstance(value, str) else None


def event_id_of_failure(exc: BaseException, item: InputRoomEvent) -> str | None:
    """The ID of the event whose processing raised ``exc``, when known."""
    known = getattr(exc, "input_event_id", None)
    return known if isinstance(known, str) else _event_id_hint(item)
