"""Reads around the write-behind buffers (``write_behind.py``): what a message's gather read
once, the batched read for a storage with or without ``read_for_input``, the state of
placeholder snapshots (buffered deltas overlaid on a stored base), and the reads that commit
the buffers first."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from roomserver.api import StoredEvent
from roomserver.core.ids import EventId, RoomId, ServerName
from roomserver.input.store import InputStore
from roomserver.ports import (
    BatchPersist,
    InputReadBatch,
    InputReads,
    OutboxEntry,
    RedactionRecord,
    SnapshotId,
    StateDelta,
    StateKey,
)


@dataclass(frozen=True, slots=True)
class MessagePrefetch:
    """``read_for_input`` answered once for a whole message. A flush keeps it true except for
    what the flushed writes change (``without``): it persists what was answered from memory."""

    event_ids: frozenset[EventId]
    found: dict[EventId, StoredEvent]
    referenced_ids: frozenset[EventId]
    referenced: frozenset[EventId]
    redactions_of: frozenset[EventId]
    redactions: tuple[RedactionRecord, ...]

    def answer(
        self, wanted: Sequence[EventId], cited: Sequence[EventId], redactions_of: EventId | None
    ) -> tuple[dict[EventId, StoredEvent], set[EventId], list[RedactionRecord]] | None:
        if not (
            self.event_ids.issuperset(wanted)
            and self.referenced_ids.issuperset(cited)
            and (redactions_of is None or redactions_of in self.redactions_of)
        ):
            return None
        found = {i: self.found[i] for i in wanted if i in self.found}
        records = (
            [r for r in self.redactions if redactions_of in (r.target_id, r.redaction_id)]
            if redactions_of is not None
            else []
        )
        return found, set(self.referenced.intersection(cited)), records

    def without(self, changed: Collection[str], cited: Collection[str]) -> MessagePrefetch:
        """The prefetch left true once writes are committed that store or redact the events
        ``changed`` (their rows and redaction records are read again) and cite ``cited`` as
        prev events (their ``referenced_as_prev`` is read again)."""
        if (
            self.event_ids.isdisjoint(changed)
            and self.redactions_of.isdisjoint(changed)
            and self.referenced_ids.isdisjoint(cited)
        ):
            return self
        return MessagePrefetch(
            self.event_ids.difference(changed),
            {i: e for i, e in self.found.items() if i not in changed},
            self.referenced_ids.difference(cited),
            self.referenced.difference(cited),
            self.redactions_of.difference(changed),
            self.redactions,
        )


async def read_batched(
    store: InputStore,
    room_id: RoomId,
    wanted: Sequence[EventId],
    cited: Sequence[EventId],
    redactions_of: EventId | list[EventId] | None,
    *,
    with_room: bool = False,
) -> InputReads:
    """``InputReadBatch.read_for_input`` of ``store``, or the reads it stands for when
    ``store`` has no batched read."""
    batched = getattr(store, "read_for_input", None)
    if callable(batched):
        reads: InputReads = await batched(
            wanted,
            room_id=room_id,
            referenced_ids=cited,
            redactions_of=redactions_of,
            with_room=with_room,
        )
        return reads
    targets = [redactions_of] if isinstance(redactions_of, str) else redactions_of or []
    records: list[RedactionRecord] = []
    for target in targets:
        records += await store.redactions_for(target)
    return InputReads(
        await store.get_events(wanted) if wanted else {},
        await store.referenced_as_prev(room_id, cited) if cited else set(),
        records,
        await store.room(room_id) if with_room else None,
    )


def placeholder_chain(
    deltas: Mapping[int, StateDelta], snapshot: SnapshotId | None
) -> tuple[list[StateDelta], SnapshotId | None]:
    """The buffered deltas a placeholder snapshot stands for, newest first, and the stored
    snapshot (or placeholder flushed since) they build on."""
    overlays: list[StateDelta] = []
    while snapshot is not None and snapshot < 0 and snapshot in deltas:
        overlays.append(deltas[snapshot])
        snapshot = overlays[-1].base
    return overlays, snapshot


def overlaid_entries(
    deltas: Mapping[int, StateDelta], snapshot: SnapshotId | None, keys: Iterable[StateKey]
) -> tuple[dict[StateKey, EventId], SnapshotId | None, list[StateKey]]:
    """The entries of ``keys`` the buffered deltas of ``snapshot`` answer, the snapshot they
    build on, and the keys left to ask it for."""
    wanted = list(keys)
    out: dict[StateKey, EventId] = {}
    while snapshot is not None and snapshot < 0 and snapshot in deltas and wanted:
        delta = deltas[snapshot]
        rest: list[StateKey] = []
        for key in wanted:
            if key in delta.changes:
                value = delta.changes[key]
                if value is not None:
                    out[key] = value
            else:
                rest.append(key)
        wanted, snapshot = rest, delta.base
    return out, snapshot, wanted


class WriteBehindStore(InputStore, InputReadBatch, BatchPersist, Protocol):
    """What ``WriteBehind`` wraps: the pipeline's storage, with batched reads and writes."""


class FlushFirstReads:
    """The reads storage can only answer once buffered writes are committed (the auth chain
    index, memberships, joined servers, state differences, the outbox): each first commits
    the buffers the answer depends on, and only those. Room-scoped reads (memberships, joined
    servers, the outbox, ``referenced_as_prev``) depend on the room's own buffer; reads by
    event ID or snapshot ID (auth chains, state differences) on the buffers holding those
    events or snapshots, whatever their room. ``WriteBehind`` provides the flushing."""

    _store: WriteBehindStore

    async def _flush_room(self, room_id: RoomId) -> None:
        raise NotImplementedError

    async def _flush_events(self, event_ids: Iterable[EventId]) -> None:
        raise NotImplementedError

    async def _flush_snapshots(self, *snapshots: SnapshotId | None) -> None:
        raise NotImplementedError

    async def _flush_if_cited(self, room_id: RoomId, event_ids: Collection[EventId]) -> None:
        raise NotImplementedError

    def resolve(self, snapshot: SnapshotId | None) -> SnapshotId | None:
        raise NotImplementedError

    async def referenced_as_prev(
        self, room_id: RoomId, event_ids: Iterable[EventId]
    ) -> set[EventId]:
        """Flushes first when a buffered write of the room cites one of them (whatever that
        write's flags: storage decides which citations count). Only the room's own events
        count as citing, so other rooms' buffers do not matter."""
        wanted = list(event_ids)
        await self._flush_if_cited(room_id, wanted)
        return await self._store.referenced_as_prev(room_id, wanted)

    async def redactions_for(self, event_id: EventId) -> list[RedactionRecord]:
        return await self._store.redactions_for(event_id)  # redaction writes are never buffered

    async def state_diff(
        self, old: SnapshotId | None, new: SnapshotId | None
    ) -> tuple[dict[StateKey, EventId], dict[StateKey, EventId]]:
        await self._flush_snapshots(old, new)  # stored snapshots never change
        return await self._store.state_diff(self.resolve(old), self.resolve(new))

    async def auth_chain(self, event_ids: Iterable[EventId]) -> set[EventId]:
        # A stored event's place in the index is fixed on insert: only buffered events count.
        wanted = list(event_ids)
        await self._flush_events(wanted)
        return await self._store.auth_chain(wanted)

    async def auth_chain_difference(
        self, state_sets: Sequence[Collection[EventId]]
    ) -> set[EventId]:
        await self._flush_events(i for s in state_sets for i in s)
        return await self._store.auth_chain_difference(state_sets)

    async def membership(self, room_id: RoomId, user_id: str) -> str | None:
        await self._flush_room(room_id)
        return await self._store.membership(room_id, user_id)

    async def joined_servers(self, room_id: RoomId) -> list[ServerName]:
        await self._flush_room(room_id)
        return await self._store.joined_servers(room_id)

    async def joined_users(self, room_id: RoomId) -> list[str]:
        await self._flush_room(room_id)
        return await self._store.joined_users(room_id)

    async def pending_outbox(self, room_id: RoomId) -> list[OutboxEntry]:
        await self._flush_room(room_id)
        return await self._store.pending_outbox(room_id)

    async def mark_outbox_sent(self, room_id: RoomId, sequences: Collection[int]) -> None:
        await self._flush_room(room_id)
        await self._store.mark_outbox_sent(room_id, sequences)
