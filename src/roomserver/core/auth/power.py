"""Power levels as the authorization rules read them (spec: room versions, "Definitions").

Shared with state resolution, which needs a user's power level and the notion of a power event.
All functions read the state they are given and allocate nothing on the common path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

from roomserver.core.pdu import Event
from roomserver.core.room_versions import RoomVersion
from roomserver.core.state_keys import CREATE_KEY as CREATE_KEY
from roomserver.core.state_keys import JOIN_RULES_KEY as JOIN_RULES_KEY
from roomserver.core.state_keys import POWER_LEVELS_KEY as POWER_LEVELS_KEY
from roomserver.core.state_keys import StateKey as StateKey

PowerLevel: TypeAlias = int | float
"""An integer, or ``CREATOR_POWER_LEVEL`` for room version 12 creators."""


CREATOR_POWER_LEVEL: Final[float] = math.inf
"""Room version 12: creators outrank every integer power level (MSC4289)."""

NAMED_LEVEL_DEFAULTS: Final[Mapping[str, int]] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
}
"""The seven top-level levels and their defaults (also used when there is no PL event)."""

# v1-v9: base-10 digits, one optional sign, leading zeros and surrounding whitespace allowed.
_INTEGER_STRING = re.compile(r"[ \t\n\r\f\v]*([+-]?[0-9]+)[ \t\n\r\f\v]*", re.ASCII)


def parse_power_level(value: object, rules: RoomVersion) -> int | None:
    """A power level value as an integer, or ``None`` if the room version does not accept it.

    JSON integers always count (booleans never do). Versions 1-9 also read strings holding an
    integer; versions 1-5 also floats, truncated towards zero, except non-finite ones.
    """
    if type(value) is int:
        return value
    if isinstance(value, str) and rules.string_power_levels:
        match = _INTEGER_STRING.fullmatch(value)
        if match is None:
            return None
        try:
            return int(match.group(1))
        except ValueError:  # more digits than Python converts
            return None
    if type(value) is float and rules.float_power_levels:
        return int(value) if math.isfinite(value) else None
    return None


def named_level(power_levels: Event | None, name: str, rules: RoomVersion) -> int:
    """One of the seven top-level levels (``ban``, ``invite``, ...), with its default.

    A value the room version cannot read counts as absent: the rules never let such a value
    into a power levels event that replaces another one.
    """
    default = NAMED_LEVEL_DEFAULTS[name]
    if power_levels is None:
        return default
    value = power_levels.content.get(name)
    if value is None:
        return default
    parsed = parse_power_level(value, rules)
    return default if parsed is None else parsed


def creators_of(create: Event) -> frozenset[str]:
    """The room's creators (spec: "Room creators").

    v1-v10: ``content.creator``; v11: the create event's sender; v12: the sender plus
    ``content.additional_creators``.
    """
    rules = create.rules
    if rules.creator_in_content:
        creator = create.content.get("creator")
        return frozenset((creator,)) if isinstance(creator, str) else frozenset()
    if not rules.additional_creators:
        return frozenset((create.sender,))
    extra = create.content.get("additional_creators")
    names = [create.sender]
    if isinstance(extra, list):
        names += [u for u in extra if isinstance(u, str)]
    return frozenset(names)


def is_creator(user: str, create: Event) -> bool:
    """Whether ``user`` is one of the room's creators; cheaper than ``creators_of``."""
    rules = create.rules
    if rules.creator_in_content:
        return create.content.get("creator") == user
    if user == create.sender:
        return True
    if not rules.additional_creators:
        return False
    extra = create.content.get("additional_creators")
    return isinstance(extra, list) and user in extra


def user_power_level(
    user: str, *, power_levels: Event | None, create: Event | None, rules: RoomVersion
) -> PowerLevel:
    """PL(user) given the power levels event and create event in force (either may be absent).

    v12 creators: ``CREATOR_POWER_LEVEL``. Otherwise ``users[user]``, else ``users_default``;
    without a power levels event, v1-v11 creators have 100 and everyone else 0.
    """
    if rules.privileged_creators and create is not None and is_creator(user, create):
        return CREATOR_POWER_LEVEL
    if power_levels is not None:
        content = power_levels.content
        users = content.get("users")
        if isinstance(users, Mapping):
            value = users.get(user)
            if value is not None:
                parsed = parse_power_level(value, rules)
                if parsed is not None:
                    return parsed
        return named_level(power_levels, "users_default", rules)
    if not rules.privileged_creators and create is not None and is_creator(user, create):
        return 100
    return 0


def power_level_of(user: str, state: Mapping[StateKey, Event], rules: RoomVersion) -> PowerLevel:
    """PL(user) in ``state`` (auth events, state before, current state: any mapping).

    In room version 12 ``state`` must hold the create event under ``CREATE_KEY`` for creators
    to be recognised.
    """
    return user_power_level(
        user, power_levels=state.get(POWER_LEVELS_KEY), create=state.get(CREATE_KEY), rules=rules
    )


def sender_power_level(event: Event, state: Mapping[StateKey, Event]) -> PowerLevel:
    """PL of ``event.sender`` in ``state``, under the event's own room version."""
    return power_level_of(event.sender, state, event.rules)


def required_power_level(
    event_type: str, *, is_state: bool, power_levels: Event | None, rules: RoomVersion
) -> int:
    """The level needed to send an event of ``event_type`` (spec: "required power level")."""
    if power_levels is None:
        return 50 if is_state else 0
    events = power_levels.content.get("events")
    if isinstance(events, Mapping):
        value = events.get(event_type)
        if value is not None:
            parsed = parse_power_level(value, rules)
            if parsed is not None:
                return parsed
    return named_level(power_levels, "state_default" if is_state else "events_default", rules)


def membership_of(user: str, state: Mapping[StateKey, Event]) -> str | None:
    """The user's membership in ``state``, ``None`` when there is no member event."""
    member = state.get(("m.room.member", user))
    if member is None:
        return None
    value: Any = member.content.get("membership")
    return value if isinstance(value, str) else None


def is_power_event(event: Event) -> bool:
    """A power event (spec: state resolution v2, "Power events").

    Power levels and join rules events, and kicks and bans (a leave or ban membership sent by
    someone other than its target). Like the other implementations, the create event counts too
    and only the ``""`` state key counts for the room-wide types; neither changes an outcome.
    """
    state_key = event.state_key
    if state_key is None:
        return False
    event_type = event.type
    if event_type in ("m.room.power_levels", "m.room.join_rules", "m.room.create"):
        return state_key == ""
    if event_type == "m.room.member":
        return event.sender != state_key and event.content.get("membership") in ("leave", "ban")
    return False
