"""The state before an event: from its prev events (resolving forks) or as supplied.

``StateBefore`` carries the ``StateDelta`` to store and answers lookups of a few keys without
loading the whole state. ``StateResolver`` (state resolution over full state maps, in a worker
thread) belongs to the state read model, ``roomserver.state_view``; it is re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from roomserver.api import StoredEvent
from roomserver.core.ids import EventId
from roomserver.core.room_versions import RoomVersion
from roomserver.input.errors import InputInvalid
from roomserver.input.store import (
    InputStore,
    SnapshotEntries,
    apply_changes,
    changes_between,
    full_state,
    snapshot_of,
    state_after_delta,
    state_entries,
)
from roomserver.ports import RoomInfo, StateDelta, StateKey
from roomserver.state_view import StateResolver as StateResolver


class StateBefore:
    """The state before one event: ``delta`` (what is stored) and, when already computed, the
    ``full`` map. Entries looked up are remembered in ``known``."""

    __slots__ = ("delta", "full", "known")

    def __init__(self, delta: StateDelta, full: dict[StateKey, EventId] | None = None) -> None:
        self.delta = delta
        self.full = full
        self.known: dict[StateKey, EventId | None] = {}

    async def entries(
        self, store: InputStore, keys: Iterable[StateKey], cache: SnapshotEntries | None = None
    ) -> dict[StateKey, EventId]:
        wanted = set(keys)
        if self.full is not None:
            found = {k: self.full[k] for k in wanted if k in self.full}
        else:
            found = await state_entries(store, self.delta, wanted, cache)
        for key in wanted:
            self.known[key] = found.get(key)
        return found

    async def full_map(self, store: InputStore) -> dict[StateKey, EventId]:
        if self.full is None:
            self.full = await full_state(store, self.delta)
        return self.full


async def state_from_prevs(
    store: InputStore,
    resolver: StateResolver,
    rules: RoomVersion,
    prevs: Sequence[StoredEvent],
    room: RoomInfo | None = None,
) -> StateBefore:
    """Spec 11.1: the state before an event is the resolution of the states after its prev
    events. One prev: its snapshot plus itself, as a delta (nothing loaded), or, when it is
    the room's only forward extremity, the room's current state (the snapshot written for the
    state after it: ``room`` as the pipeline read it). ``prevs`` have state (outliers count as
    missing prevs); a rejected prev contributes the state before it, a soft-failed one the
    state after it (``state_after_delta``)."""
    if len(prevs) == 1:
        prev = prevs[0]
        if room is not None and _current_is_after(room, prev):
            return StateBefore(StateDelta(room.current_state, {}))
        return StateBefore(state_after_delta(prev))
    ordered = sorted(prevs, key=lambda s: s.event.event_id)
    base = ordered[0]
    base_map = await store.state_map(snapshot_of(base)) if base.state_snapshot is not None else {}
    sets: list[dict[StateKey, EventId]] = []
    for stored in ordered:
        delta = state_after_delta(stored)
        if stored is base:
            after = dict(base_map)
            apply_changes(after, delta.changes)
        else:
            after = await full_state(store, delta)
        sets.append(after)
    resolved = await resolver.resolve(rules, sets)
    delta = StateDelta(snapshot_of(base), changes_between(base_map, resolved))
    return StateBefore(delta, resolved)


def _current_is_after(room: RoomInfo, prev: StoredEvent) -> bool:
    """Whether the room's current state is the state after ``prev``, an accepted state event:
    current state is the resolution of the states after the forward extremities, so it is when
    ``prev`` is the only one. The next event then reuses that snapshot instead of writing an
    equal one (``state_after_delta`` of ``prev``) as its state before."""
    return (
        room.current_state is not None
        and room.forward_extremities == (prev.event.event_id,)
        and prev.event.state_key is not None
        and not prev.outlier
        and not prev.rejected
        and not prev.soft_failed
    )


async def supplied_state(
    store: InputStore, state_ids: Sequence[EventId], room: RoomInfo | None, *, strict: bool
) -> StateBefore:
    """State given as event IDs: the stored, accepted state events, one per key, as a delta on
    the room's current state when there is one. ``strict`` (a caller's ``has_state``): every
    ID must be stored and name one event per key, else ``InputInvalid``; otherwise (a remote's
    answer) absent ones are skipped and duplicates resolved by (depth, event ID)."""
    # Rows only (``event_facts``), no parsed events: a big room's join names 100,000 of them.
    stored = await store.event_facts(state_ids)
    absent = [i for i in state_ids if i not in stored]
    if absent and strict:
        raise InputInvalid(f"state event {sorted(absent)[0]} is not stored")
    chosen: dict[StateKey, tuple[int, EventId]] = {}  # (depth, event ID)
    for event_id in state_ids:
        entry = stored.get(event_id)
        if entry is None or entry.rejected or entry.state_key is None:
            continue
        key = (entry.type, entry.state_key)
        other = chosen.get(key)
        if other is not None and other[1] != event_id:
            if strict:
                raise InputInvalid(f"state has two events for {key}")
            if other > (entry.depth, event_id):
                continue
        chosen[key] = (entry.depth, event_id)
    full = {k: event_id for k, (_, event_id) in chosen.items()}
    if room is not None and room.current_state is not None:
        current = await store.state_map(room.current_state)
        return StateBefore(StateDelta(room.current_state, changes_between(current, full)), full)
    return StateBefore(StateDelta(None, dict(full)), full)
