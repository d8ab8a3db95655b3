"""Auth event selection (spec: server-server API, "Auth events selection").

Which ``(type, state_key)`` pairs of the room state before an event the event must cite in its
``auth_events``. The rules only forbid citing anything else; they do not require every pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from roomserver.core.auth.power import CREATE_KEY, JOIN_RULES_KEY, POWER_LEVELS_KEY, StateKey
from roomserver.core.pdu import Event
from roomserver.core.room_versions import RoomVersion


def auth_types_for(
    rules: RoomVersion,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
) -> set[StateKey]:
    """The pairs an event of these fields must draw its auth events from (for events being built).

    1. the create event (not in room version 12, where the room ID implies it);
    2. the power levels event; 3. the sender's membership;
    4. for ``m.room.member``: the target's membership; the join rules for ``join``, ``invite``
       and ``knock``; for a third-party ``invite``, the ``m.room.third_party_invite`` named by
       ``signed.token``; for a restricted ``join`` (v8+), the authorising user's membership.
    """
    if event_type == "m.room.create":
        return set()
    wanted: set[StateKey] = {POWER_LEVELS_KEY, ("m.room.member", sender)}
    if rules.create_event_in_auth_events:
        wanted.add(CREATE_KEY)
    if event_type == "m.room.member" and state_key is not None:
        wanted.add(("m.room.member", state_key))
        membership = content.get("membership")
        if membership in ("join", "invite", "knock"):
            wanted.add(JOIN_RULES_KEY)
        if membership == "invite":
            third_party = content.get("third_party_invite")
            if isinstance(third_party, Mapping):
                signed = third_party.get("signed")
                if isinstance(signed, Mapping):
                    token = signed.get("token")
                    if isinstance(token, str):
                        wanted.add(("m.room.third_party_invite", token))
        elif membership == "join" and rules.restricted_joins:
            authoriser = content.get("join_authorised_via_users_server")
            if isinstance(authoriser, str):
                wanted.add(("m.room.member", authoriser))
    return wanted


def auth_types_for_event(event: Event) -> set[StateKey]:
    """The ``(type, state_key)`` pairs ``event`` may cite as auth events."""
    return auth_types_for(event.rules, event.type, event.sender, event.state_key, event.content)


def select_auth_events(event: Event, state: Mapping[StateKey, Event]) -> dict[StateKey, Event]:
    """The part of ``state`` the rules need to check ``event``, ready for ``check_auth_rules``.

    In room version 12 the create event is included too (under ``CREATE_KEY``) when ``state``
    has it: the rules need it although events do not cite it.
    """
    wanted = auth_types_for_event(event)
    if event.type != "m.room.create":
        wanted.add(CREATE_KEY)
    out: dict[StateKey, Event] = {}
    for key in sorted(wanted):
        found = state.get(key)
        if found is not None:
            out[key] = found
    return out
