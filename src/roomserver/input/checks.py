"""What the rule checks read of state, gathered for ``core.decide``: the needed entries of the
state before an event, and of the room's current state (soft failure). Only the entries the
rules look at are loaded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from roomserver.core.auth import CREATE_KEY, auth_types_for_event
from roomserver.core.pdu import Event
from roomserver.core.state_keys import HISTORY_VISIBILITY_KEY
from roomserver.input.state import StateBefore, StateResolver
from roomserver.input.store import (
    EventCache,
    InputStore,
    SnapshotEntries,
    full_state,
    state_after_delta,
)
from roomserver.ports import RoomInfo, StateKey


async def needed_state_events(
    store: InputStore,
    events: EventCache,
    event: Event,
    state: StateBefore,
    cache: SnapshotEntries | None = None,
) -> dict[StateKey, Event]:
    """The entries of the state before ``event`` that the rules (and outputs) need: its auth
    types, the create event, the history visibility and the event's own key."""
    keys = set(auth_types_for_event(event))
    keys.add(CREATE_KEY)
    keys.add(HISTORY_VISIBILITY_KEY)
    if event.state_key is not None:
        keys.add(event.state_tuple)
    entries = await state.entries(store, keys, cache)
    loaded = await events.get(entries.values())
    return {k: loaded[v].event for k, v in entries.items() if v in loaded}


async def current_for_soft_fail(
    store: InputStore,
    events: EventCache,
    resolver: StateResolver,
    event: Event,
    room: RoomInfo | None,
    state_before: StateBefore | None,
    *,
    gap_filled: frozenset[str] | None,
) -> dict[StateKey, Event] | None:
    """Spec 7.6: the entries of the room's current state the rules read for ``event``, or
    ``None`` when there is nothing to check against.

    Nothing when the event's prev events are exactly the forward extremities: the current
    state then is the state before the event, which it already passed. After the missing-events
    procedure (``gap_filled``: the prev events the gap's events cite), the stored current state
    predates the gap: "current" is then the resolution of the state before the event with the
    states after the extremities the gap does not reach. Extremities are accepted, not
    soft-failed events with state (an outlier among them would be skipped)."""
    if room is None or room.current_state is None:
        return None
    extremities = set(room.forward_extremities)
    if gap_filled is None and set(event.prev_event_ids) == extremities:
        return None
    keys = set(auth_types_for_event(event))
    keys.add(CREATE_KEY)
    if gap_filled is None:
        entries = await store.state_entries(room.current_state, sorted(keys))
    else:
        others = sorted(extremities - gap_filled - set(event.prev_event_ids))
        if not others or state_before is None:
            return None
        stored = await store.get_events(others)
        sets = [await state_before.full_map(store)]
        for extremity in others:
            if extremity in stored and not stored[extremity].outlier:
                sets.append(await full_state(store, state_after_delta(stored[extremity])))
        resolved = await resolver.resolve(event.rules, sets)
        entries = {k: resolved[k] for k in keys if k in resolved}
    loaded = await events.get(entries.values())
    return {k: loaded[v].event for k, v in entries.items() if v in loaded}


def history_visibility(state: Mapping[StateKey, Event]) -> str:
    """``m.room.history_visibility`` in ``state`` ("shared" when absent or malformed)."""
    event = state.get(HISTORY_VISIBILITY_KEY)
    value: Any = event.content.get("history_visibility") if event is not None else None
    return value if isinstance(value, str) else "shared"
