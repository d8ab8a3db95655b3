"""The ``m.room.power_levels`` authorization rule (v12 rule 10, v6-v11 rule 9, v1-v5 rule 10).

Content checks first (v10+: every level a JSON integer; all versions: ``users`` maps user IDs
to levels; v12: no creator in ``users``), then, when a power levels event is being replaced,
every change is compared with the sender's power level in the state the event is checked
against. Values the version cannot read are compared as absent on the old side (they read as
defaults) and rejected on the new side when they change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from roomserver.core.auth.numbering import reject
from roomserver.core.auth.power import (
    NAMED_LEVEL_DEFAULTS,
    POWER_LEVELS_KEY,
    PowerLevel,
    StateKey,
    is_creator,
    parse_power_level,
    user_power_level,
)
from roomserver.core.identifiers import is_valid_user_id
from roomserver.core.pdu import Event
from roomserver.core.room_versions import RoomVersion

_EMPTY: Final[Mapping[str, Any]] = {}


def check_power_levels_event(event: Event, state: Mapping[StateKey, Event], create: Event) -> None:
    """Rule "m.room.power_levels", every sub-rule in order."""
    rules = event.rules
    content = event.content
    if rules.integer_only_power_levels:
        check_integer_levels(event)
    check_users_map(event)
    if rules.privileged_creators:
        check_no_creators_in_users(event, create)
    previous = state.get(POWER_LEVELS_KEY)
    if previous is None:
        return
    sender_level = user_power_level(event.sender, power_levels=previous, create=create, rules=rules)
    old = previous.content
    check_top_level_changes(rules, old, content, sender_level)
    maps = ("events", "notifications") if rules.notifications_power_levels else ("events",)
    old_maps = [_mapping(old.get(name)) for name in maps]
    new_maps = [_mapping(content.get(name)) for name in maps]
    for name, old_map, new_map in zip(maps, old_maps, new_maps, strict=True):
        check_map_removals(rules, name, old_map, new_map, sender_level)
    for name, old_map, new_map in zip(maps, old_maps, new_maps, strict=True):
        check_map_additions(rules, name, old_map, new_map, sender_level)
    old_users = _mapping(old.get("users"))
    new_users = _mapping(content.get("users"))
    if old_users != new_users:
        check_user_removals(rules, event.sender, old_users, new_users, sender_level)
        check_user_additions(rules, old_users, new_users, sender_level)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


def check_integer_levels(event: Event) -> None:
    """v10+: the seven levels, and the values of ``events``/``notifications``, are integers."""
    rules = event.rules
    content = event.content
    for name in NAMED_LEVEL_DEFAULTS:
        if name in content and type(content[name]) is not int:
            raise reject(
                rules, "pl.top_level_type", f"m.room.power_levels: {name} is not an integer"
            )
    for name in ("events", "notifications"):
        if name not in content:
            continue
        value = content[name]
        if not isinstance(value, Mapping) or any(type(v) is not int for v in value.values()):
            raise reject(
                rules,
                "pl.maps_type",
                f"m.room.power_levels: {name} is not an object of integers",
            )


def check_users_map(event: Event) -> None:
    """``users``, if present, maps valid user IDs to levels (v1-v9: integer strings too)."""
    content = event.content
    if "users" not in content:
        return
    users = content["users"]
    rules = event.rules
    if not isinstance(users, Mapping):
        raise reject(rules, "pl.users", "m.room.power_levels: users is not an object")
    for user, value in users.items():
        if not is_valid_user_id(user):
            raise reject(rules, "pl.users", f"m.room.power_levels: {user!r} is not a user ID")
        if parse_power_level(value, rules) is None:
            raise reject(
                rules, "pl.users", f"m.room.power_levels: level of {user!r} is not an integer"
            )


def check_no_creators_in_users(event: Event, create: Event) -> None:
    """v12: creators have no entry in ``users`` (their power is unlimited)."""
    users = event.content.get("users")
    if not isinstance(users, Mapping):
        return
    for user in users:
        if is_creator(user, create):
            raise reject(
                event.rules,
                "pl.creators_in_users",
                f"m.room.power_levels: creator {user!r} must not be in users",
            )


def _changed(
    old_raw: object, new_raw: object, rules: RoomVersion
) -> tuple[int | None, int | None, bool]:
    """Old and new values as integers (``None`` when absent/unreadable), and whether it changed."""
    old = None if old_raw is None else parse_power_level(old_raw, rules)
    new = None if new_raw is None else parse_power_level(new_raw, rules)
    if new_raw is not None and new is None:
        return old, None, True  # an unreadable new value is a change the rules cannot allow
    return old, new, old != new


def check_top_level_changes(
    rules: RoomVersion,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    sender_level: PowerLevel,
) -> None:
    """Each of the seven levels added, changed or removed: old and new must not exceed PL."""
    for name in NAMED_LEVEL_DEFAULTS:
        old_raw = old.get(name)
        new_raw = new.get(name)
        if old_raw == new_raw and type(old_raw) is type(new_raw):
            continue
        old_value, new_value, changed = _changed(old_raw, new_raw, rules)
        if not changed:
            continue
        if old_value is not None and old_value > sender_level:
            raise reject(
                rules,
                "pl.top_level_change",
                f"m.room.power_levels: {name} was above the sender's level",
            )
        if new_raw is not None and (new_value is None or new_value > sender_level):
            raise reject(
                rules,
                "pl.top_level_change",
                f"m.room.power_levels: new {name} is above the sender's level or not an integer",
            )


def check_map_removals(
    rules: RoomVersion,
    name: str,
    old_map: Mapping[str, Any],
    new_map: Mapping[str, Any],
    sender_level: PowerLevel,
) -> None:
    """``events``/``notifications`` keys changed or removed: the old value must not exceed PL."""
    if old_map == new_map:
        return
    for key, old_raw in old_map.items():
        old_value, _, changed = _changed(old_raw, new_map.get(key), rules)
        if changed and old_value is not None and old_value > sender_level:
            raise reject(
                rules,
                "pl.maps_old",
                f"m.room.power_levels: {name}[{key!r}] was above the sender's level",
            )


def check_map_additions(
    rules: RoomVersion,
    name: str,
    old_map: Mapping[str, Any],
    new_map: Mapping[str, Any],
    sender_level: PowerLevel,
) -> None:
    """``events``/``notifications`` keys added or changed: the new value must not exceed PL."""
    if old_map == new_map:
        return
    for key, new_raw in new_map.items():
        if new_raw is None:
            continue
        _, new_value, changed = _changed(old_map.get(key), new_raw, rules)
        if changed and (new_value is None or new_value > sender_level):
            raise reject(
                rules,
                "pl.maps_new",
                f"m.room.power_levels: {name}[{key!r}] is above the sender's level"
                " or not an integer",
            )


def check_user_removals(
    rules: RoomVersion,
    sender: str,
    old_users: Mapping[str, Any],
    new_users: Mapping[str, Any],
    sender_level: PowerLevel,
) -> None:
    """``users`` entries changed or removed, other than the sender's: old must be below PL."""
    for user, old_raw in old_users.items():
        if user == sender:
            continue
        old_value, _, changed = _changed(old_raw, new_users.get(user), rules)
        if changed and old_value is not None and old_value >= sender_level:
            raise reject(
                rules,
                "pl.users_old",
                f"m.room.power_levels: cannot change {user!r}, whose level is not below the"
                " sender's",
            )


def check_user_additions(
    rules: RoomVersion,
    old_users: Mapping[str, Any],
    new_users: Mapping[str, Any],
    sender_level: PowerLevel,
) -> None:
    """``users`` entries added or changed: the new value must not exceed PL."""
    for user, new_raw in new_users.items():
        _, new_value, changed = _changed(old_users.get(user), new_raw, rules)
        if changed and (new_value is None or new_value > sender_level):
            raise reject(
                rules,
                "pl.users_new",
                f"m.room.power_levels: level for {user!r} is above the sender's level",
            )
