"""Write-behind: the writes of one input message, committed together in ONE transaction.

While a message of a room is open (``open(room_id)`` ... ``close(room_id)``), ``persist`` does
not go to storage: the write is kept in the room's buffer and answered at once, with
*placeholder* snapshot IDs (negative ``SnapshotId``s) standing for the snapshots storage will
write. The next events of the message see the buffered writes as if they were stored:

* ``get_events`` / ``read_for_input`` answer buffered events from memory;
* ``room`` answers the room row as the last buffered room update left it;
* ``state_entries`` / ``state_map`` of a placeholder overlay its deltas on the stored base;
* the answers storage could only give after the writes (``referenced_as_prev`` of an event a
  buffered write cites, the auth chain index, memberships, state differences, the outbox)
  first **flush** the buffers they depend on: the writes so far are committed
  (``BatchPersist.persist_many``), then storage is asked. So no answer ever misses a write;
  flushing early costs only speed. A room-scoped read (memberships, joined servers, the
  outbox, ``referenced_as_prev``) flushes its own room's buffer; a read by event or snapshot
  ID (auth chains, state differences) flushes the buffers holding those events or
  placeholders, whatever their room. Other rooms' buffers stay open.
* a flush keeps the room's prefetched reads (``prefetch``): they stay true, except for the
  events the flushed writes store or redact and the prev events they cite, which are read
  from storage again (``MessagePrefetch.without``, applied to every open room's prefetch).

``close`` flushes what is left and returns the room's last ``PersistResult`` (its pending
outbox), so a message of N events costs one write transaction in the common case instead of N.
A crash before the flush loses nothing that was acknowledged: the message is redelivered and
its events are processed again. A failed flush (the room moved on, the database went away)
drops the buffer and is raised, as ``BufferedWriteFailed`` (transient), to the room's next call
and to ``close``: the message is retried, and the caller must drop what it cached from it.

Writes that change another event (applying or recording a redaction) are flushed at once, so
``redactions_for`` and the stored JSON of a redacted event never lag behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from roomserver.api import StoredEvent
from roomserver.core.ids import EventId, RoomId
from roomserver.input.buffered_reads import (
    FlushFirstReads,
    MessagePrefetch,
    WriteBehindStore,
    overlaid_entries,
    placeholder_chain,
    read_batched,
)
from roomserver.input.store import apply_changes
from roomserver.ports import (
    EventFacts,
    EventStatus,
    EventWrite,
    InputAssumption,
    InputReads,
    MemberFacts,
    PersistResult,
    RoomInfo,
    SnapshotId,
    StateDelta,
    StateKey,
    StorageError,
    with_placeholders_resolved,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_RESOLVED_CAPACITY = 200_000


class BufferedWriteFailed(StorageError):
    """Committing a message's buffered writes failed; the message must be processed again.
    Transient as its cause is (``transient``): a write that keeps failing is not."""

    def __init__(self, room_id: RoomId, cause: BaseException) -> None:
        super().__init__(
            f"committing the input of room {room_id} failed: {type(cause).__name__}: {cause}"
        )
        self.cause = cause
        self.transient = bool(getattr(cause, "transient", False)) or isinstance(
            cause, (OSError, TimeoutError)
        )


@dataclass(slots=True)
class _Buffer:
    room_id: RoomId
    writes: list[EventWrite] = field(default_factory=list)
    event_ids: list[EventId] = field(default_factory=list)
    written: list[EventId] = field(default_factory=list)  # every event buffered in the message
    cited: set[EventId] = field(default_factory=set)  # prev events of buffered writes
    room: RoomInfo | None = None  # the room row after the last buffered room update
    last: PersistResult | None = None  # the room's last committed result (real IDs)
    marked: set[int] = field(default_factory=set)  # outbox sequences marked by flushed writes
    failed: BaseException | None = None
    prefetch: MessagePrefetch | None = None
    # What the prefetch assumed instead of reading (``assume``): checked by the first commit.
    expect: InputAssumption | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class WriteBehind(FlushFirstReads):
    """Wraps a storage that has ``persist_many`` (``roomserver.storage.SqlStorage`` does)."""

    def __init__(self, store: WriteBehindStore) -> None:
        self._store = store
        self._buffers: dict[RoomId, _Buffer] = {}
        self._events: dict[EventId, StoredEvent] = {}  # buffered events of every open room
        self._deltas: dict[int, StateDelta] = {}  # unflushed placeholder -> its delta
        self._owners: dict[int, _Buffer] = {}  # unflushed placeholder -> its buffer
        self._resolved: OrderedDict[int, SnapshotId | None] = OrderedDict()
        self._placeholders = itertools.count(1)
        self._prefetched: dict[EventId, _Buffer] = {}  # event ID -> the buffer that prefetched it

    def __getattr__(self, name: str) -> Any:
        # Anything not overridden here reads nothing the buffers could change.
        return getattr(self._store, name)

    # -- messages ---------------------------------------------------------------------------
    def open(self, room_id: RoomId) -> None:
        """Start buffering the writes of ``room_id`` (its message begins). A buffer left by a
        message that neither closed nor aborted is dropped, uncommitted."""
        if room_id in self._buffers:
            log.warning("room %s: dropping the writes of an unfinished message", room_id)
            self.discard(room_id)
        self._buffers[room_id] = _Buffer(room_id)

    async def close(self, room_id: RoomId) -> tuple[PersistResult | None, set[int], list[EventId]]:
        """Commit what is left of the room's message; return its last ``PersistResult`` (None
        if the message wrote nothing), the outbox sequences its writes marked sent, and the
        events it wrote. Raises ``BufferedWriteFailed`` when a flush of this message failed."""
        buffer = self._buffers.get(room_id)
        if buffer is None:
            return None, set(), []
        try:
            await self._flush(buffer)  # with no write left, what was assumed is checked alone
        finally:
            self._drop(buffer)
            del self._buffers[room_id]
            for event_id in [e for e, b in self._prefetched.items() if b is buffer]:
                del self._prefetched[event_id]
        return buffer.last, buffer.marked, buffer.written

    async def prefetch(
        self,
        room_id: RoomId,
        event_ids: Sequence[EventId],
        *,
        referenced_ids: Sequence[EventId],
        redactions_of: Sequence[EventId],
    ) -> RoomInfo | None:
        """Read at once what ``read_for_input`` will be asked for the events of the room's
        message (one storage round trip instead of one per event), and the room row (the
        message just began: nothing is buffered yet)."""
        buffer = self._just_opened(room_id, "prefetch")
        reads = await read_batched(
            self._store, room_id, event_ids, referenced_ids, list(redactions_of), with_room=True
        )
        self._set_prefetch(buffer, event_ids, referenced_ids, redactions_of, reads)
        return reads.room

    def assume(
        self,
        room: RoomInfo,
        event_ids: Sequence[EventId],
        *,
        referenced_ids: Sequence[EventId],
        redactions_of: Sequence[EventId],
    ) -> None:
        """``prefetch`` without reading: answer as storage would if ``room`` (a cached row) is
        the stored one, which holds none of ``event_ids``, no redaction of them, and no event
        of its DAG citing any of ``referenced_ids`` (what a room whose row has not moved since
        this process wrote it holds, unless a redaction came before its target). The first
        commit of the message checks that in its transaction (``InputAssumption``); when it
        does not hold, nothing is written and ``StaleRead`` is raised, wrapped in
        ``BufferedWriteFailed``, as any failed flush is."""
        buffer = self._just_opened(room.room_id, "assume")
        nothing = InputReads({}, frozenset(), ())
        self._set_prefetch(buffer, event_ids, referenced_ids, redactions_of, nothing)
        buffer.expect = InputAssumption(
            room.room_id,
            room.version,
            tuple(event_ids),
            tuple(referenced_ids),
            tuple(redactions_of),
        )

    def _just_opened(self, room_id: RoomId, what: str) -> _Buffer:
        buffer = self._buffers.get(room_id)
        if buffer is None or buffer.writes:
            raise RuntimeError(f"{what} for room {room_id}: its message is not just opened")
        return buffer

    def _set_prefetch(
        self,
        buffer: _Buffer,
        event_ids: Sequence[EventId],
        referenced_ids: Sequence[EventId],
        redactions_of: Sequence[EventId],
        reads: InputReads,
    ) -> None:
        """The message's ``read_for_input`` answers, read or assumed."""
        buffer.prefetch = MessagePrefetch(
            frozenset(event_ids),
            dict(reads.events),
            frozenset(referenced_ids),
            frozenset(reads.referenced),
            frozenset(redactions_of),
            tuple(reads.redactions),
        )
        for event_id in redactions_of:
            self._prefetched[event_id] = buffer

    def discard(self, room_id: RoomId) -> None:
        """Drop the room's buffered writes without committing them (its message was cancelled;
        the redelivery decides again)."""
        buffer = self._buffers.pop(room_id, None)
        if buffer is None:
            return
        buffer.failed = buffer.failed or RuntimeError("discarded")
        self._drop(buffer)
        for event_id in [e for e, b in self._prefetched.items() if b is buffer]:
            del self._prefetched[event_id]

    def resolve(self, snapshot: SnapshotId | None) -> SnapshotId | None:
        """The real ID of a flushed placeholder (other IDs as they are); ``KeyError`` if the
        placeholder is not flushed (or long forgotten)."""
        if snapshot is None or snapshot >= 0:
            return snapshot
        return self._resolved[snapshot]

    # -- writes -----------------------------------------------------------------------------
    async def persist(self, write: EventWrite) -> PersistResult:
        room_id = write.event.room_id
        buffer = self._buffers.get(room_id)
        if buffer is None:
            return await self._store.persist(self._resolved_write(write))
        self._raise_if_failed(buffer)
        update = write.room_update
        placeholders = (
            self._placeholder(buffer, write.state_before),
            self._placeholder(buffer, update.current_state if update is not None else None),
        )
        if placeholders != write.snapshot_placeholders:  # most writes need none
            write = replace(write, snapshot_placeholders=placeholders)
        buffer.writes.append(write)
        before = _snapshot(write.state_before, placeholders[0])
        current = _snapshot(update.current_state if update is not None else None, placeholders[1])
        event = write.event
        buffer.event_ids.append(event.event_id)
        buffer.written.append(event.event_id)
        buffer.cited.update(event.prev_event_ids)
        self._events[event.event_id] = StoredEvent(
            event=event,
            outlier=write.status is EventStatus.OUTLIER,
            rejected=write.rejection_reason is not None,
            rejection_reason=write.rejection_reason,
            soft_failed=write.soft_failed,
            state_snapshot=before,
        )
        if update is not None:
            buffer.room = RoomInfo(
                room_id=room_id,
                room_version=update.room_version,
                forward_extremities=tuple(update.forward_extremities),
                current_state=current,
                last_sent_event_id=update.last_sent_event_id,
                version=(update.expected_version or 0) + 1,
            )
        if write.apply_redaction is not None or write.redaction_target is not None:
            await self._flush(buffer)
            assert buffer.last is not None
            return buffer.last
        return PersistResult(
            state_before=before,
            current_state=current if current is not None else _current(buffer),
            stream_position=0,
            pending_outbox=None,  # known once committed: ``close`` returns it
        )

    def _placeholder(self, buffer: _Buffer, delta: StateDelta | None) -> SnapshotId | None:
        if delta is None or not delta.changes:
            return None  # storage writes nothing either: the snapshot is the base
        placeholder = -next(self._placeholders)
        self._deltas[placeholder] = delta
        self._owners[placeholder] = buffer
        return SnapshotId(placeholder)

    def _resolved_write(self, write: EventWrite) -> EventWrite:
        return with_placeholders_resolved(write, self._resolved)

    async def _flush(self, buffer: _Buffer) -> None:
        """Commit the buffer's writes, after what its prefetch assumed (``assume``), if that
        is not checked yet: with no write, the check alone."""
        async with buffer.lock:
            self._raise_if_failed(buffer)
            if not buffer.writes and buffer.expect is None:
                return
            writes, buffer.writes = buffer.writes, []
            expect, buffer.expect = buffer.expect, None
            self._narrow_prefetches(writes)
            try:
                results = await self._store.persist_many(
                    [with_placeholders_resolved(w, self._resolved, partial=True) for w in writes],
                    expect=expect,
                )
            except BaseException as exc:
                buffer.failed = exc
                buffer.writes = writes  # dropped with the buffer's events and placeholders
                self._drop(buffer)
                if not isinstance(exc, Exception):
                    raise  # cancelled: stays a cancellation
                raise BufferedWriteFailed(buffer.room_id, exc) from exc
            for write, result in zip(writes, results, strict=True):
                before, current = write.snapshot_placeholders
                self._settle(before, result.state_before)
                self._settle(current, result.current_state)
                buffer.marked.update(write.outbox_sent)
                self._events.pop(write.event.event_id, None)
            if not results:
                return
            buffer.last = results[-1]
            # Writes buffered while this flush ran stay buffered.
            buffer.event_ids = [w.event.event_id for w in buffer.writes]
            buffer.cited = {p for w in buffer.writes for p in w.event.prev_event_ids}
            if buffer.room is not None and buffer.room.current_state in self._resolved:
                current = self.resolve(buffer.room.current_state)
                buffer.room = replace(buffer.room, current_state=current)

    def _settle(self, placeholder: SnapshotId | None, real: SnapshotId | None) -> None:
        if placeholder is None:
            return
        self._deltas.pop(placeholder, None)
        self._owners.pop(placeholder, None)
        self._resolved[placeholder] = real
        while len(self._resolved) > _RESOLVED_CAPACITY:
            self._resolved.popitem(last=False)

    def _drop(self, buffer: _Buffer) -> None:
        """Forget the buffered events (committed now, or never to be)."""
        for event_id in buffer.event_ids:
            self._events.pop(event_id, None)
        buffer.event_ids.clear()
        buffer.cited.clear()
        if buffer.failed is not None:
            for write in buffer.writes:
                for placeholder in write.snapshot_placeholders:
                    if placeholder is not None:
                        self._deltas.pop(placeholder, None)
                        self._owners.pop(placeholder, None)
            buffer.writes.clear()
            buffer.room = None

    def _raise_if_failed(self, buffer: _Buffer) -> None:
        if buffer.failed is not None:
            raise BufferedWriteFailed(buffer.room_id, buffer.failed)

    def _narrow_prefetches(self, writes: Sequence[EventWrite]) -> None:
        """Storage is about to hold ``writes``: every open room's prefetch forgets what they
        change (events a room's message references may, wrongly, be another room's)."""
        changed: set[str] = set()
        cited: set[str] = set()
        for write in writes:
            changed.add(write.event.event_id)
            cited.update(write.event.prev_event_ids)
            if write.redaction_target is not None:
                changed.add(write.redaction_target)
            if write.apply_redaction is not None:
                changed.add(write.apply_redaction.target_id)
                changed.add(write.apply_redaction.redaction_id)
        for buffer in self._buffers.values():
            if buffer.prefetch is not None:
                buffer.prefetch = buffer.prefetch.without(changed, cited)

    async def _flush_some(self, buffers: Iterable[_Buffer]) -> None:
        """Before a read that storage can only answer with their writes: commit ``buffers``
        (or wait for their commit under way: its writes are no longer in ``writes``). A
        failure is kept for its own room (raised to that room's next call)."""
        for buffer in list(buffers):
            if buffer.writes or buffer.lock.locked():
                with contextlib.suppress(BufferedWriteFailed):
                    await self._flush(buffer)

    async def _flush_room(self, room_id: RoomId) -> None:
        buffer = self._buffers.get(room_id)
        if buffer is not None:
            await self._flush_some([buffer])

    async def _flush_events(self, event_ids: Iterable[EventId]) -> None:
        rooms = {self._events[i].event.room_id for i in event_ids if i in self._events}
        await self._flush_some(self._buffers[r] for r in sorted(rooms) if r in self._buffers)

    async def _flush_snapshots(self, *snapshots: SnapshotId | None) -> None:
        owners: dict[int, _Buffer] = {}  # by id(): the buffers in the order met, bases last
        for snapshot in snapshots:
            while snapshot is not None and snapshot < 0 and snapshot in self._deltas:
                owner = self._owners.get(snapshot)
                if owner is not None:
                    owners.setdefault(id(owner), owner)
                snapshot = self._deltas[snapshot].base
        await self._flush_some(reversed(list(owners.values())))

    async def _flush_if_cited(self, room_id: RoomId, event_ids: Collection[EventId]) -> None:
        buffer = self._buffers.get(room_id)
        if buffer is not None and not buffer.cited.isdisjoint(event_ids):
            await self._flush_some([buffer])

    # -- reads answered from the buffers --------------------------------------------------------
    async def get_events(self, event_ids: Iterable[EventId]) -> dict[EventId, StoredEvent]:
        return await self._buffered_first(event_ids, lambda s: s, self._store.get_events)

    async def event_facts(self, event_ids: Iterable[EventId]) -> dict[EventId, EventFacts]:
        return await self._buffered_first(event_ids, _event_facts, self._store.event_facts)

    async def member_facts(self, event_ids: Iterable[EventId]) -> dict[EventId, MemberFacts]:
        return await self._buffered_first(event_ids, _member_facts, self._store.member_facts)

    async def _buffered_first(
        self,
        event_ids: Iterable[EventId],
        of: Callable[[StoredEvent], T],
        read: Callable[[list[EventId]], Awaitable[dict[EventId, T]]],
    ) -> dict[EventId, T]:
        """``of`` each buffered event among ``event_ids``; storage's ``read`` of the others."""
        wanted = list(event_ids)
        out = {i: of(self._events[i]) for i in wanted if i in self._events}
        rest = [i for i in wanted if i not in out]
        if rest:
            out.update(await read(rest))
        return out

    async def room_version_of(self, room_id: RoomId) -> str | None:
        buffer = self._buffers.get(room_id)
        if buffer is not None and buffer.event_ids:
            return self._events[buffer.event_ids[0]].event.room_version
        return await self._store.room_version_of(room_id)

    async def room(self, room_id: RoomId) -> RoomInfo | None:
        buffer = self._buffers.get(room_id)
        if buffer is not None:
            self._raise_if_failed(buffer)
            if buffer.room is not None:
                return buffer.room
        return await self._store.room(room_id)

    async def read_for_input(
        self,
        event_ids: Iterable[EventId],
        *,
        room_id: RoomId,
        referenced_ids: Iterable[EventId],
        redactions_of: EventId | Sequence[EventId] | None,
    ) -> InputReads:
        if redactions_of is not None and not isinstance(redactions_of, str):
            wanted, cited = list(event_ids), list(referenced_ids)
            await self._flush_if_cited(room_id, cited)
            await self._flush_events(wanted)  # event lookups are global: any room's buffer
            return await read_batched(self._store, room_id, wanted, cited, list(redactions_of))
        wanted = list(event_ids)
        cited = list(referenced_ids)
        await self._flush_if_cited(room_id, cited)
        found = {i: self._events[i] for i in wanted if i in self._events}
        rest = [i for i in wanted if i not in found]
        buffer = self._prefetched.get(redactions_of) if redactions_of is not None else None
        if buffer is not None and buffer.room_id != room_id:
            buffer = None  # prefetched for another room: its referenced answers do not apply
        prefetched = buffer.prefetch if buffer is not None else None
        answer = prefetched.answer(rest, cited, redactions_of) if prefetched else None
        if answer is not None:
            return InputReads({**answer[0], **found}, answer[1], answer[2])
        reads = await read_batched(self._store, room_id, rest, cited, redactions_of)
        if found:
            return InputReads({**reads.events, **found}, reads.referenced, reads.redactions)
        return reads

    async def state_entries(
        self, snapshot: SnapshotId | None, keys: Iterable[StateKey]
    ) -> dict[StateKey, EventId]:
        out, base, wanted = overlaid_entries(self._deltas, snapshot, keys)
        if wanted:
            out.update(await self._store.state_entries(self.resolve(base), wanted))
        return out

    async def state_map(self, snapshot: SnapshotId | None) -> dict[StateKey, EventId]:
        overlays, base = placeholder_chain(self._deltas, snapshot)
        state = dict(await self._store.state_map(self.resolve(base)))
        for delta in reversed(overlays):
            apply_changes(state, delta.changes)
        return state


def _event_facts(stored: StoredEvent) -> EventFacts:
    event = stored.event
    return EventFacts(event.type, event.state_key, event.depth, stored.rejected)


def _member_facts(stored: StoredEvent) -> MemberFacts:
    return MemberFacts(stored.event.membership, stored.event.sender)


def _current(buffer: _Buffer) -> SnapshotId | None:
    return buffer.room.current_state if buffer.room is not None else None


def _snapshot(delta: StateDelta | None, placeholder: SnapshotId | None) -> SnapshotId | None:
    """The snapshot a buffered write stands for: its placeholder, or its delta's base when the
    delta changes nothing."""
    if placeholder is not None:
        return placeholder
    return None if delta is None else delta.base
