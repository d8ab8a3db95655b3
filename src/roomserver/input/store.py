"""What the input pipeline reads from storage, and small helpers over it.

``InputStore`` is the narrow storage Protocol the pipeline needs (``roomserver.ports.Storage``
satisfies it). The state read model it shares with the queries (``EventCache``,
``state_after_delta``, ``full_state``) lives in ``roomserver.state_view`` and is re-exported here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from roomserver.api import StoredEvent
from roomserver.core.decide import parse_rejection
from roomserver.core.ids import EventId, RoomId
from roomserver.core.pdu import Event
from roomserver.ports import (
    AuthChainIndex,
    EventFactsStore,
    EventStore,
    MembershipStore,
    RedactionRecord,
    SnapshotId,
    StateDelta,
    StateKey,
    StateStore,
)
from roomserver.state_view import EventCache as EventCache
from roomserver.state_view import apply_changes as apply_changes
from roomserver.state_view import full_state as full_state
from roomserver.state_view import snapshot_of as snapshot_of
from roomserver.state_view import state_after_delta as state_after_delta


class InputStore(
    EventStore, StateStore, AuthChainIndex, MembershipStore, EventFactsStore, Protocol
):
    """The storage the input pipeline uses (a subset of ``roomserver.ports.Storage``)."""


@dataclass(frozen=True, slots=True)
class Prefetched:
    """Answers read together with the event at the start of its processing (one round trip):
    which of ``referenced_ids`` stored events cite as prev events, and the redaction records
    of the event. Valid until the pipeline writes anything else (then asked again)."""

    referenced_ids: frozenset[EventId]
    referenced: frozenset[EventId]
    redactions: Sequence[RedactionRecord]

    def cited(self, event_ids: Iterable[EventId]) -> set[EventId] | None:
        """``referenced_as_prev(room_id, event_ids)`` of its room if known here, else ``None``."""
        wanted = set(event_ids)
        if not wanted <= self.referenced_ids:
            return None
        return wanted & self.referenced


class SnapshotEntries:
    """A bounded cache of ``(snapshot, key) -> event ID or None`` (snapshots are immutable), so
    consecutive events over the same snapshot do not reload the same auth entries.

    A snapshot known to have been written as a small ``StateDelta`` (``derived``) is answered
    from its base's entries and the delta, without a storage read: a state event makes a new
    snapshot, first a placeholder of the write-behind buffer, then its real ID (``settle``),
    and both would otherwise miss although they differ from their base by a few keys."""

    def __init__(self, *, capacity: int = 100_000, derivations: int = 10_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[SnapshotId, StateKey], EventId | None] = OrderedDict()
        self._derivations = derivations
        self._derived: OrderedDict[SnapshotId, StateDelta] = OrderedDict()
        self._unsettled: dict[RoomId, list[SnapshotId]] = {}  # placeholders, by room

    def derived(self, snapshot: SnapshotId | None, delta: StateDelta, room_id: RoomId) -> None:
        """``snapshot`` holds exactly ``delta`` (storage wrote it, or it is the write-behind
        placeholder standing for it). Only small deltas are kept; a placeholder is carried over
        to its real ID by ``settle``."""
        if (
            snapshot is None
            or snapshot == delta.base
            or not delta.changes
            or len(delta.changes) > _DERIVED_MAX_CHANGES
            or snapshot in self._derived
        ):
            return
        self._derived[snapshot] = StateDelta(delta.base, dict(delta.changes))
        if snapshot < 0:
            self._unsettled.setdefault(room_id, []).append(snapshot)
        while len(self._derived) > self._derivations:
            self._derived.popitem(last=False)

    def settle(
        self, room_id: RoomId, resolve: Callable[[SnapshotId | None], SnapshotId | None]
    ) -> None:
        """The room's message is committed: its placeholders' derivations now hold for the
        real IDs ``resolve`` gives (``KeyError``: not committed, the derivation is dropped)."""
        for placeholder in self._unsettled.pop(room_id, ()):
            delta = self._derived.pop(placeholder, None)
            if delta is None:
                continue
            try:
                real, base = resolve(placeholder), resolve(delta.base)
            except KeyError:
                continue
            self.derived(real, StateDelta(base, delta.changes), room_id)

    def forget_room(self, room_id: RoomId) -> None:
        """The room's buffered writes were dropped: its placeholders will never settle."""
        for placeholder in self._unsettled.pop(room_id, ()):
            self._derived.pop(placeholder, None)

    async def get(
        self, store: StateStore, snapshot: SnapshotId, keys: Iterable[StateKey], depth: int = 0
    ) -> dict[StateKey, EventId]:
        """``depth``: derivations followed so far to get here."""
        out: dict[StateKey, EventId] = {}
        missing: list[StateKey] = []
        entries = self._entries
        for key in keys:
            slot = (snapshot, key)
            if slot in entries:
                value = entries[slot]
                if value is not None:
                    out[key] = value
            else:
                missing.append(key)
        if missing:
            loaded = await self._load(store, snapshot, missing, depth)
            for key in missing:
                value = loaded.get(key)
                entries[(snapshot, key)] = value
                if value is not None:
                    out[key] = value
            while len(entries) > self._capacity:
                entries.popitem(last=False)
        return out

    async def _load(
        self, store: StateStore, snapshot: SnapshotId, keys: list[StateKey], depth: int
    ) -> dict[StateKey, EventId]:
        delta = self._derived.get(snapshot) if depth < _DERIVED_MAX_DEPTH else None
        if delta is None:
            return await store.state_entries(snapshot, keys)
        changes = delta.changes
        out = {k: v for k in keys if (v := changes.get(k)) is not None}  # None: removed
        from_base = [k for k in keys if k not in changes]
        if from_base and delta.base is not None:
            out.update(await self.get(store, delta.base, from_base, depth + 1))
        return out


_DERIVED_MAX_CHANGES = 64  # larger deltas (a join with state, a reset) are not kept
_DERIVED_MAX_DEPTH = 16  # derivations followed before asking storage


def rejected_for_missing_data(stored: StoredEvent) -> bool:
    """Rejected because auth or prev events were missing (``RejectionKind.waits_for_data``):
    such an event is processed again when it comes back, so it does not count as held."""
    return stored.rejected and parse_rejection(stored.rejection_reason).kind.waits_for_data


def has_state(stored: StoredEvent) -> bool:
    """Whether the state before ``stored`` is known (it is in the contiguous DAG)."""
    return not stored.outlier


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
) -> dict[StateKey, EventId]:
    """Only ``keys`` of the state ``delta`` describes (cheap: no full state load)."""
    wanted = sorted(set(keys))
    from_base = [k for k in wanted if k not in delta.changes]
    out: dict[StateKey, EventId] = {}
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


def changes_between(
    old: Mapping[StateKey, EventId], new: Mapping[StateKey, EventId]
) -> dict[StateKey, EventId | None]:
    """The changes taking ``old`` to ``new`` (``None``: key removed), in key order. Only the
    changed keys are sorted: two 100,000-entry states that differ in a few keys cost no sort
    of 100,000 keys."""
    changed = [k for k in old.keys() | new.keys() if old.get(k) != new.get(k)]
    changed.sort()
    return {k: new.get(k) for k in changed}
