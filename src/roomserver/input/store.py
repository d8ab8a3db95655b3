"""What the input pipeline reads from storage, and small helpers over it.

``InputStore`` is the narrow storage Protocol the pipeline needs (``roomserver.ports.Storage``
satisfies it). The state read model it shares with the queries (``EventCache``,
``state_after_delta``, ``full_state``) lives in ``roomserver.state_view`` and is re-exported here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from roomserver.api import StoredEvent
from roomserver.core.decide import parse_rejection
from roomserver.core.ids import EventId
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
    consecutive events over the same snapshot do not reload the same auth entries."""

    def __init__(self, *, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[SnapshotId, StateKey], EventId | None] = OrderedDict()

    async def get(
        self, store: StateStore, snapshot: SnapshotId, keys: Iterable[StateKey]
    ) -> dict[StateKey, EventId]:
        out: dict[StateKey, EventId] = {}
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
