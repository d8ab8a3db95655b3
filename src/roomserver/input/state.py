"""The state before an event: from its prev events (resolving forks) or as supplied.

``StateBefore`` carries the ``StateDelta`` to store and answers lookups of a few keys without
loading the whole state. ``StateResolver`` runs state resolution over full state maps; the
algorithm is pure and synchronous, so it runs in a worker thread with an event provider that
hands storage reads back to the event loop (after prefetching the likely events in one batch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence

from roomserver.api import StoredEvent
from roomserver.core.decide import parse_rejection
from roomserver.core.pdu import Event
from roomserver.core.room_versions import RoomVersion
from roomserver.core.stateres import resolve_state
from roomserver.input.errors import InputInvalid
from roomserver.input.store import (
    EventCache,
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


class StateBefore:
    """The state before one event: ``delta`` (what is stored) and, when already computed, the
    ``full`` map. Entries looked up are remembered in ``known``."""

    __slots__ = ("delta", "full", "known")

    def __init__(self, delta: StateDelta, full: dict[StateKey, str] | None = None) -> None:
        self.delta = delta
        self.full = full
        self.known: dict[StateKey, str | None] = {}

    async def entries(
        self, store: InputStore, keys: Iterable[StateKey], cache: SnapshotEntries | None = None
    ) -> dict[StateKey, str]:
        wanted = set(keys)
        if self.full is not None:
            found = {k: self.full[k] for k in wanted if k in self.full}
        else:
            found = await state_entries(store, self.delta, wanted, cache)
        for key in wanted:
            self.known[key] = found.get(key)
        return found

    async def full_map(self, store: InputStore) -> dict[StateKey, str]:
        if self.full is None:
            self.full = await full_state(store, self.delta)
        return self.full


class _ThreadedProvider:
    """An event provider for state resolution running in a worker thread.

    Reads missing from the prefetched cache are sent to the event loop and awaited there.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        events: EventCache,
        prefetched: Mapping[str, StoredEvent],
    ) -> None:
        self._loop = loop
        self._events = events
        self._known: dict[str, StoredEvent | None] = dict(prefetched)

    def _stored(self, event_id: str) -> StoredEvent | None:
        if event_id not in self._known:
            future = asyncio.run_coroutine_threadsafe(self._events.get([event_id]), self._loop)
            self._known[event_id] = future.result().get(event_id)
        return self._known[event_id]

    def get_event(self, event_id: str) -> Event | None:
        stored = self._stored(event_id)
        return None if stored is None else stored.event

    def is_rejected(self, event_id: str) -> bool:
        """Rejected against its own auth events (not merely against the state before it)."""
        stored = self._stored(event_id)
        if stored is None or not stored.rejected:
            return False
        return parse_rejection(stored.rejection_reason).kind.rejected_for_state_resolution


class StateResolver:
    """Resolves several full states into one (spec: state resolution of the room version)."""

    def __init__(self, store: InputStore, events: EventCache) -> None:
        self._store = store
        self._events = events

    async def resolve(
        self,
        rules: RoomVersion,
        state_sets: Sequence[Mapping[StateKey, str]],
        *,
        pending: Sequence[Event] = (),
    ) -> dict[StateKey, str]:
        """``pending``: accepted events not stored yet that the state sets may name."""
        if not state_sets:
            return {}
        first = state_sets[0]
        if all(s == first for s in state_sets[1:]):
            return dict(first)
        conflicted: set[str] = set()
        keys = set().union(*(s.keys() for s in state_sets))
        for key in keys:
            values = {s.get(key) for s in state_sets}
            if len(values) > 1:
                conflicted.update(v for v in values if v is not None)
        chain = await self._store.auth_chain(conflicted)
        prefetched = await self._events.get(sorted(conflicted | chain))
        for event in pending:
            prefetched[event.event_id] = StoredEvent(event=event, outlier=False)
        provider = _ThreadedProvider(asyncio.get_running_loop(), self._events, prefetched)
        sets = [dict(s) for s in state_sets]
        resolved = await asyncio.to_thread(resolve_state, rules.identifier, sets, provider)
        return dict(resolved)


async def state_from_prevs(
    store: InputStore, resolver: StateResolver, rules: RoomVersion, prevs: Sequence[StoredEvent]
) -> StateBefore:
    """Spec 11.1: the state before an event is the resolution of the states after its prev
    events. One prev: its snapshot plus itself, as a delta (nothing loaded). ``prevs`` have
    state (outliers count as missing prevs); a rejected prev contributes the state before it,
    a soft-failed one the state after it (``state_after_delta``)."""
    ordered = sorted(prevs, key=lambda s: s.event.event_id)
    if len(ordered) == 1:
        return StateBefore(state_after_delta(ordered[0]))
    base = ordered[0]
    base_map = await store.state_map(snapshot_of(base)) if base.state_snapshot is not None else {}
    sets: list[dict[StateKey, str]] = []
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


async def supplied_state(
    store: InputStore, state_ids: Sequence[str], room: RoomInfo | None, *, strict: bool
) -> StateBefore:
    """State given as event IDs: the stored, accepted state events, one per key, as a delta on
    the room's current state when there is one. ``strict`` (a caller's ``has_state``): every
    ID must be stored and name one event per key, else ``InputInvalid``; otherwise (a remote's
    answer) absent ones are skipped and duplicates resolved by (depth, event ID)."""
    stored = await store.get_events(state_ids)
    absent = [i for i in state_ids if i not in stored]
    if absent and strict:
        raise InputInvalid(f"state event {sorted(absent)[0]} is not stored")
    chosen: dict[StateKey, StoredEvent] = {}
    for event_id in state_ids:
        entry = stored.get(event_id)
        if entry is None or entry.rejected or entry.event.state_key is None:
            continue
        key = entry.event.state_tuple
        other = chosen.get(key)
        if other is not None and other.event.event_id != event_id:
            if strict:
                raise InputInvalid(f"state has two events for {key}")
            if (other.event.depth, other.event.event_id) > (entry.event.depth, event_id):
                continue
        chosen[key] = entry
    full = {k: s.event.event_id for k, s in chosen.items()}
    if room is not None and room.current_state is not None:
        current = await store.state_map(room.current_state)
        return StateBefore(StateDelta(room.current_state, changes_between(current, full)), full)
    return StateBefore(StateDelta(None, dict(full)), full)
