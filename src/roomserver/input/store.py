"""What the input pipeline reads from storage, and small helpers over it.

``InputStore`` is the narrow storage Protocol the pipeline needs (``roomserver.ports.Storage``
satisfies it). ``EventCache`` keeps recently used accepted events (auth events, state entries)
so the common path does not reload them for every event. State is handled as ``StateDelta``s:
the state after a stored event is its state-before snapshot plus itself, never a full load.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from roomserver.api import StoredEvent
from roomserver.core.decide import parse_rejection
from roomserver.core.pdu import Event
from roomserver.ports import (
    AuthChainIndex,
    EventStore,
    MembershipStore,
    RedactionRecord,
    SnapshotId,
    StateDelta,
    StateKey,
    StateStore,
)


class InputStore(EventStore, StateStore, AuthChainIndex, MembershipStore, Protocol):
    """The storage the input pipeline uses (a subset of ``roomserver.ports.Storage``)."""


@dataclass(frozen=True, slots=True)
class Prefetched:
    """Answers read together with the event at the start of its processing (one round trip):
    which of ``referenced_ids`` stored events cite as prev events, and the redaction records
    of the event. Valid until the pipeline writes anything else (then asked again)."""

    referenced_ids: frozenset[str]
    referenced: frozenset[str]
    redactions: Sequence[RedactionRecord]

    def cited(self, event_ids: Iterable[str]) -> set[str] | None:
        """``referenced_as_prev(room_id, event_ids)`` of its room if known here, else ``None``."""
        wanted = set(event_ids)
        if not wanted <= self.referenced_ids:
            return None
        return wanted & self.referenced


class EventCache:
    """A bounded LRU of accepted stored events by ID, in front of ``InputStore.get_events``.

    Only events that are not rejected are cached: their JSON changes only when a redaction is
    applied (``evict`` then), and the rejected flag of an accepted event never flips back.
    """

    def __init__(self, store: EventStore, *, capacity: int = 20_000) -> None:
        self._store = store
        self._capacity = capacity
        self._events: OrderedDict[str, StoredEvent] = OrderedDict()
        self._by_room: dict[str, set[str]] = {}

    async def get(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        out: dict[str, StoredEvent] = {}
        missing: list[str] = []
        for event_id in event_ids:
            hit = self._events.get(event_id)
            if hit is None:
                missing.append(event_id)
            else:
                self._events.move_to_end(event_id)
                out[event_id] = hit
        if missing:
            loaded = await self._store.get_events(missing)
            for event_id, stored in loaded.items():
                out[event_id] = stored
                self.remember(stored)
        return out

    def peek(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        """The cached ones among ``event_ids`` (no storage access)."""
        out: dict[str, StoredEvent] = {}
        for event_id in event_ids:
            hit = self._events.get(event_id)
            if hit is not None:
                out[event_id] = hit
        return out

    def remember(self, stored: StoredEvent) -> None:
        if stored.rejected:
            return
        event = stored.event
        self._events[event.event_id] = stored
        self._events.move_to_end(event.event_id)
        self._by_room.setdefault(event.room_id, set()).add(event.event_id)
        while len(self._events) > self._capacity:
            _, oldest = self._events.popitem(last=False)
            self._unindex(oldest.event)

    def evict(self, event_id: str) -> None:
        stored = self._events.pop(event_id, None)
        if stored is not None:
            self._unindex(stored.event)

    def forget_room(self, room_id: str) -> None:
        """Drop the room's cached events (another process may have changed them: applied a
        redaction, given an outlier state)."""
        for event_id in self._by_room.pop(room_id, ()):
            self._events.pop(event_id, None)

    def settle_snapshots(
        self, event_ids: Iterable[str], resolve: Callable[[SnapshotId | None], SnapshotId | None]
    ) -> None:
        """Replace placeholder snapshot IDs (negative: from writes not yet committed when the
        events were cached) of the cached ``event_ids`` with what ``resolve`` says."""
        for event_id in event_ids:
            stored = self._events.get(event_id)
            if stored is None:
                continue
            if stored.state_snapshot is not None and stored.state_snapshot < 0:
                real = resolve(SnapshotId(stored.state_snapshot))
                self._events[event_id] = replace(stored, state_snapshot=real)

    def _unindex(self, event: Event) -> None:
        ids = self._by_room.get(event.room_id)
        if ids is not None:
            ids.discard(event.event_id)
            if not ids:
                del self._by_room[event.room_id]


class SnapshotEntries:
    """A bounded cache of ``(snapshot, key) -> event ID or None`` (snapshots are immutable), so
    consecutive events over the same snapshot do not reload the same auth entries."""

    def __init__(self, *, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[SnapshotId, StateKey], str | None] = OrderedDict()

    async def get(
        self, store: StateStore, snapshot: SnapshotId, keys: Iterable[StateKey]
    ) -> dict[StateKey, str]:
        out: dict[StateKey, str] = {}
        missing: list[StateKey] = []
        for key in keys:
            slot = (snapshot, key)
            if slot in self._entries:
                value = self._entries[slot]
                if value is not None:
                    out[key] = value
            else:
                missing.append(key)
        if missing:
            loaded = await store.state_entries(snapshot, missing)
            for key in missing:
                value = loaded.get(key)
                self._entries[(snapshot, key)] = value
                if value is not None:
                    out[key] = value
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return out


def rejected_for_missing_data(stored: StoredEvent) -> bool:
    """Rejected because auth or prev events were missing (``RejectionKind.waits_for_data``):
    such an event is processed again when it comes back, so it does not count as held."""
    return stored.rejected and parse_rejection(stored.rejection_reason).kind.waits_for_data


def snapshot_of(stored: StoredEvent) -> SnapshotId | None:
    return None if stored.state_snapshot is None else SnapshotId(stored.state_snapshot)


def has_state(stored: StoredEvent) -> bool:
    """Whether the state before ``stored`` is known (it is in the contiguous DAG)."""
    return not stored.outlier


def state_after_delta(stored: StoredEvent) -> StateDelta:
    """Spec 11.1: the state after an event is the state before it, plus the event itself when
    it is a state event that was not rejected."""
    event = stored.event
    if event.state_key is not None and not stored.rejected:
        return StateDelta(snapshot_of(stored), {event.state_tuple: event.event_id})
    return StateDelta(snapshot_of(stored), {})


def with_event(delta: StateDelta, event: Event) -> StateDelta:
    """The state after ``event`` given ``delta``, the state before it (same base)."""
    if event.state_key is None:
        return delta
    return StateDelta(delta.base, {**delta.changes, event.state_tuple: event.event_id})


async def state_entries(
    store: StateStore,
    delta: StateDelta,
    keys: Iterable[StateKey],
    cache: SnapshotEntries | None = None,
) -> dict[StateKey, str]:
    """Only ``keys`` of the state ``delta`` describes (cheap: no full state load)."""
    wanted = sorted(set(keys))
    from_base = [k for k in wanted if k not in delta.changes]
    out: dict[StateKey, str] = {}
    if from_base and delta.base is not None:
        if cache is not None:
            out = await cache.get(store, delta.base, from_base)
        else:
            out = await store.state_entries(delta.base, from_base)
    for key in wanted:
        if key in delta.changes:
            value = delta.changes[key]
            if value is not None:
                out[key] = value
    return out


async def full_state(store: StateStore, delta: StateDelta) -> dict[StateKey, str]:
    """The whole state ``delta`` describes."""
    out = await store.state_map(delta.base) if delta.base is not None else {}
    out = dict(out)
    apply_changes(out, delta.changes)
    return out


def apply_changes(state: dict[StateKey, str], changes: Mapping[StateKey, str | None]) -> None:
    for key, value in changes.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value


def changes_between(
    old: Mapping[StateKey, str], new: Mapping[StateKey, str]
) -> dict[StateKey, str | None]:
    """The changes taking ``old`` to ``new`` (``None``: key removed), in key order."""
    out: dict[StateKey, str | None] = {}
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out[key] = new.get(key)
    return out
