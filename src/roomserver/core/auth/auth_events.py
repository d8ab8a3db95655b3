"""The check of an event against its own auth events (spec: PDU receipt check 4).

First the rules on the list itself (v12 rules 2 and 3, v1-v11 rule 2): the room ID names an
accepted create event (v12); no two entries for one ``(type, state_key)``; nothing the auth
event selection would not pick; nothing rejected; the create event present (v1-v11); every
entry in the event's room. Then the authorization rules over the entries.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from roomserver.core.auth.numbering import reject
from roomserver.core.auth.power import CREATE_KEY, StateKey
from roomserver.core.auth.rules import check_auth_rules, check_create_event
from roomserver.core.auth.selection import auth_types_for_event
from roomserver.core.hashes import room_id_from_create_event_id
from roomserver.core.pdu import Event, is_create_event


def check_auth_events(
    event: Event, auth_events: Sequence[Event], *, rejected: Container[str] = ()
) -> None:
    """Raise ``Rejected`` unless ``event`` passes the rules against its cited auth events.

    ``auth_events`` holds the events ``event.auth_event_ids`` names (in any order); in room
    version 12 it also holds the room's create event, which events do not cite and which is
    told apart from the cited entries by ``event.auth_event_ids``. Entries neither cited nor
    the v12 create event are ignored. ``rejected`` holds the IDs of events known to be
    rejected; a cited event that is missing from ``auth_events`` counts as rejected too.
    """
    if event.type == "m.room.create":
        check_create_event(event)
        return
    rules = event.rules
    cited_ids = event.auth_event_ids
    by_id: dict[str, Event] = {}
    implied_create: Event | None = None
    for entry in auth_events:
        if entry.event_id in cited_ids:
            by_id[entry.event_id] = entry
        if rules.room_id_from_create_event and is_create_event(entry):
            implied_create = entry  # cited or not: a cited one fails the selection check
    if rules.room_id_from_create_event:
        check_room_id_is_create(event, implied_create, rejected)
    cited = [by_id[i] for i in cited_ids if i in by_id]
    check_no_duplicates(event, cited)
    check_only_selected(event, cited)
    check_none_rejected(event, cited, rejected, missing=len(cited) < len(cited_ids))
    state: dict[StateKey, Event] = {e.state_tuple: e for e in cited}
    if rules.create_event_in_auth_events and CREATE_KEY not in state:
        raise reject(rules, "auth_events.no_create", "no m.room.create event in the auth events")
    check_same_room(event, cited)
    if implied_create is not None:
        state[CREATE_KEY] = implied_create
    check_auth_rules(event, state)


def check_room_id_is_create(event: Event, create: Event | None, rejected: Container[str]) -> None:
    """v12 rule 2: the room ID is the ID of an accepted create event (``$`` → ``!``)."""
    if (
        create is None
        or create.event_id in rejected
        or room_id_from_create_event_id(create.event_id) != event.room_id
    ):
        raise reject(
            event.rules, "room_id_is_create", "room_id is not the ID of an accepted create event"
        )


def check_no_duplicates(event: Event, cited: Sequence[Event]) -> None:
    """No two auth events for the same ``(type, state_key)``."""
    seen: set[tuple[str, str | None]] = set()
    for entry in cited:
        key = (entry.type, entry.state_key)
        if key in seen:
            raise reject(
                event.rules,
                "auth_events.duplicate",
                f"two auth events for ({entry.type!r}, {entry.state_key!r})",
            )
        seen.add(key)


def check_only_selected(event: Event, cited: Sequence[Event]) -> None:
    """Every auth event is a state event the auth event selection picks for this event."""
    allowed = auth_types_for_event(event)
    for entry in cited:
        if entry.state_key is None or (entry.type, entry.state_key) not in allowed:
            raise reject(
                event.rules,
                "auth_events.unexpected",
                f"auth event {entry.event_id} ({entry.type!r}, {entry.state_key!r})"
                " is not one the event may cite",
            )


def check_none_rejected(
    event: Event, cited: Sequence[Event], rejected: Container[str], *, missing: bool
) -> None:
    """No auth event was rejected (one the caller could not supply counts as rejected)."""
    if missing:
        absent = [i for i in event.auth_event_ids if all(e.event_id != i for e in cited)]
        raise reject(
            event.rules,
            "auth_events.rejected",
            f"auth event {absent[0]} is unknown or rejected",
        )
    for entry in cited:
        if entry.event_id in rejected:
            raise reject(
                event.rules, "auth_events.rejected", f"auth event {entry.event_id} is rejected"
            )


def check_same_room(event: Event, cited: Sequence[Event]) -> None:
    """Every auth event is in the event's room."""
    for entry in cited:
        if entry.room_id != event.room_id:
            raise reject(
                event.rules,
                "auth_events.same_room",
                f"auth event {entry.event_id} is in another room",
            )
