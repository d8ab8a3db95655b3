"""Iterative auth checks (spec: state res v2, "Iterative auth checks") and the partial state.

For each event in order: build the state its authorization needs from the partial state,
falling back to the event's own auth events for keys the partial state lacks; if the event
passes the authorization rules (``roomserver.core.auth.check_auth_rules``), it becomes the
partial state's entry for its ``(type, state_key)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet

from roomserver.core.errors import Rejected
from roomserver.core.pdu import Event
from roomserver.core.state_keys import CREATE_KEY
from roomserver.core.stateres._rules import auth_types_for_event, check_auth_rules
from roomserver.core.stateres.provider import EventLookup, StateKey


class PartialState:
    """A state map being built on top of a base map, without copying the base.

    v2 builds on the unconflicted state map: ``base`` is one of the input state sets and
    ``hidden`` its conflicted keys. v2.1 builds on the empty map. ``changes`` holds what the
    iterative auth checks admitted.
    """

    __slots__ = ("base", "changes", "hidden")

    def __init__(self, base: Mapping[StateKey, str], hidden: AbstractSet[StateKey]) -> None:
        self.base = base
        self.hidden = hidden
        self.changes: dict[StateKey, str] = {}

    def get(self, key: StateKey) -> str | None:
        changed = self.changes.get(key)
        if changed is not None:
            return changed
        if key in self.hidden:
            return None
        return self.base.get(key)

    def set(self, key: StateKey, event_id: str) -> None:
        self.changes[key] = event_id


def auth_state_for(
    event: Event, partial: PartialState, lookup: EventLookup
) -> dict[StateKey, Event]:
    """The state ``event`` is checked against (spec §11.2, "Iterative auth checks").

    Each key of the auth events selection comes from the partial state; a key it lacks comes
    from the event's own auth events, unless that auth event was rejected. In room version 12
    the create event, which events do not cite, comes from the partial state or the room ID.
    """
    rejected = lookup.rejected
    changes, hidden, base = partial.changes, partial.hidden, partial.base
    own: dict[StateKey, Event] | None = None
    state: dict[StateKey, Event] = {}
    for key in auth_types_for_event(event):
        event_id = changes.get(key)
        if event_id is None and key not in hidden:
            event_id = base.get(key)
        if event_id is not None and (rejected is None or not rejected(event_id)):
            state[key] = lookup.get(event_id)
            continue
        if own is None:
            own = lookup.auth_events_by_key(event)
        fallback = own.get(key)
        if fallback is not None and (rejected is None or not rejected(fallback.event_id)):
            state[key] = fallback
    if CREATE_KEY not in state and event.type != "m.room.create":
        create_id = partial.get(CREATE_KEY)
        create = lookup.get(create_id) if create_id is not None else None
        if create is None:
            create = lookup.create_event_for(event)
        if create is not None and (rejected is None or not rejected(create.event_id)):
            state[CREATE_KEY] = create
    return state


def iterative_auth_checks(
    event_ids: Iterable[str], partial: PartialState, lookup: EventLookup
) -> None:
    """Run the iterative auth checks over ``event_ids`` in order, updating ``partial``.

    Events the provider reports as rejected (against their own auth events) are skipped: the
    spec says they never take part. Events rejected only against the state before them are
    checked like any other.
    """
    for event_id in event_ids:
        if lookup.is_rejected(event_id):
            continue
        event = lookup.get(event_id)
        if event.state_key is None:
            continue
        try:
            check_auth_rules(event, auth_state_for(event, partial, lookup))
        except Rejected:
            continue
        partial.set((event.type, event.state_key), event_id)
