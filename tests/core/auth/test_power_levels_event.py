"""``m.room.power_levels`` (v12 rule 10, v6-v11 rule 9, v1-v5 rule 10), every sub-rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from roomserver.core.pdu import Event
from roomserver.testing.builder import RoomBuilder
from tests.core.auth.helpers import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CAROL,
    DAVE,
    Case,
    candidate,
    case_params,
    default_power_levels,
    make_room,
    raw_event,
    run_case,
    versions,
)

Built = tuple[RoomBuilder, Event]
Builder = Callable[[str], Built]

INTEGER_ONLY = versions(lambda r: r.integer_only_power_levels)
STRINGS_OK = versions(lambda r: r.string_power_levels)
FLOATS_OK = versions(lambda r: r.float_power_levels)
NOTIFICATIONS = versions(lambda r: r.notifications_power_levels)
NO_NOTIFICATIONS = versions(lambda r: not r.notifications_power_levels)
V12 = versions(lambda r: r.privileged_creators)
BEFORE_V12 = versions(lambda r: not r.privileged_creators)

# BOB is a moderator at 50 (enough to send power levels: state_default 50), CAROL at 50 too,
# DAVE at 20. ALICE has 100 (v1-v11) or is the creator (v12).
MODERATED = {BOB: 50, CAROL: 50, DAVE: 20}


def change(
    sender: str,
    update: Callable[[dict[str, Any]], None],
    *,
    start: dict[str, Any] | None = None,
    start_extra: dict[str, Any] | None = None,
    raw: bool = False,
    create_content: dict[str, Any] | None = None,
) -> Builder:
    """``sender`` replaces the power levels with a modified copy (``update`` edits it)."""

    def build(v: str) -> Built:
        pl = start if start is not None else default_power_levels(v, MODERATED)
        pl = {**pl, **(start_extra or {})}
        b = make_room(v, power_levels=pl, members=(BOB, CAROL, DAVE), create_content=create_content)
        content = {k: (dict(x) if isinstance(x, dict) else x) for k, x in pl.items()}
        update(content)
        if raw:
            return b, raw_event(b, "m.room.power_levels", sender, content, state_key="")
        return b, candidate(b, "m.room.power_levels", sender, content, state_key="")

    return build


def first_power_levels(sender: str, content: dict[str, Any], *, raw: bool = False) -> Builder:
    """The room's first power levels event (no previous one)."""

    def build(v: str) -> Built:
        b = RoomBuilder(v)
        create = {"room_version": v, **({"creator": ALICE} if b.rules.creator_in_content else {})}
        b.send("m.room.create", ALICE, create, state_key="")
        b.join(ALICE)
        if raw:
            return b, raw_event(b, "m.room.power_levels", sender, content, state_key="")
        return b, candidate(b, "m.room.power_levels", sender, content, state_key="")

    return build


def setter(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An ``update`` that sets ``content[a][b] = value`` for ``path`` "a.b" (or deletes)."""

    def update(content: dict[str, Any]) -> None:
        head, _, tail = path.partition(".")
        target = content
        if tail:
            target = content.setdefault(head, {})
            if not isinstance(target, dict):
                target = content[head] = {}
            head = tail
        if value is _DELETE:
            target.pop(head, None)
        else:
            target[head] = value

    return update


_DELETE = object()

CONTENT_CASES = [
    # v10+: every level must be a JSON integer.
    Case("string-top-level", INTEGER_ONLY, change(ALICE, setter("ban", "50")), "pl.top_level_type"),
    Case("string-top-level-tolerated", STRINGS_OK, change(ALICE, setter("ban", "50")), None),
    Case("bool-top-level", INTEGER_ONLY, change(ALICE, setter("kick", True)), "pl.top_level_type"),
    Case(
        "null-top-level", INTEGER_ONLY, change(ALICE, setter("invite", None)), "pl.top_level_type"
    ),
    Case(
        "string-event-level", INTEGER_ONLY, change(ALICE, setter("events.m.x", "5")), "pl.maps_type"
    ),
    Case(
        "string-event-level-tolerated",
        STRINGS_OK,
        change(ALICE, setter("events.m.x", " 05 ")),
        None,
    ),
    Case("events-not-object", INTEGER_ONLY, change(ALICE, setter("events", [1])), "pl.maps_type"),
    Case(
        "string-notification-level",
        INTEGER_ONLY,
        change(ALICE, setter("notifications.room", "50")),
        "pl.maps_type",
    ),
    Case(
        "string-user-level", INTEGER_ONLY, change(ALICE, setter("users.@x:y.org", "10")), "pl.users"
    ),
    Case(
        "string-user-level-tolerated",
        STRINGS_OK,
        change(ALICE, setter("users.@x:y.org", "+10")),
        None,
    ),
    Case(
        "bad-string-user-level",
        ALL_VERSIONS,
        change(ALICE, setter("users.@x:y.org", "1.5")),
        "pl.users",
    ),
    Case(
        "word-user-level", ALL_VERSIONS, change(ALICE, setter("users.@x:y.org", "ten")), "pl.users"
    ),
    Case(
        "bool-user-level", ALL_VERSIONS, change(ALICE, setter("users.@x:y.org", True)), "pl.users"
    ),
    Case(
        "null-user-level", ALL_VERSIONS, change(ALICE, setter("users.@x:y.org", None)), "pl.users"
    ),
    Case("user-key-not-user-id", ALL_VERSIONS, change(ALICE, setter("users.bob", 10)), "pl.users"),
    Case("users-not-object", ALL_VERSIONS, change(ALICE, setter("users", [BOB])), "pl.users"),
    # v1-v9 first power levels: only users is checked; v10+: every value.
    Case(
        "first-with-unreadable-level",
        STRINGS_OK,
        first_power_levels(ALICE, {"ban": "fifty", "users": {ALICE: 100}}),
        None,
    ),
    Case(
        "first-with-unreadable-level-v10",
        INTEGER_ONLY,
        first_power_levels(ALICE, {"ban": "fifty", "users": {ALICE: 100}}),
        "pl.top_level_type",
    ),
    Case(
        "first-with-bad-users",
        ALL_VERSIONS,
        first_power_levels(ALICE, {"users": {ALICE: "lots"}}),
        "pl.users",
    ),
    Case(
        "first-by-anyone-in-room",
        BEFORE_V12,
        first_power_levels(ALICE, {"users": {ALICE: 100, BOB: 100}}),
        None,
    ),
    # v12: creators have no entry in users.
    Case(
        "creator-in-users",
        V12,
        change(ALICE, setter(f"users.{ALICE}", 100)),
        "pl.creators_in_users",
    ),
    Case(
        "creator-demoted-by-admin",
        V12,
        change(BOB, setter(f"users.{ALICE}", 0), start=default_power_levels("12", {BOB: 100})),
        "pl.creators_in_users",
    ),
    Case(
        "additional-creator-in-users",
        V12,
        change(ALICE, setter(f"users.{CAROL}", 0), create_content={"additional_creators": [CAROL]}),
        "pl.creators_in_users",
    ),
    Case(
        "creator-in-users-before-v12", BEFORE_V12, change(ALICE, setter(f"users.{ALICE}", 90)), None
    ),
    Case(
        "additional-creator-in-users-before-v12",
        BEFORE_V12,
        change(ALICE, setter(f"users.{CAROL}", 0), create_content={"additional_creators": [CAROL]}),
        None,
    ),
]

CHANGE_CASES = [
    # The seven top-level levels.
    Case("raise-ban-to-own-level", ALL_VERSIONS, change(BOB, setter("ban", 50)), None),
    Case(
        "raise-ban-above-own", ALL_VERSIONS, change(BOB, setter("ban", 51)), "pl.top_level_change"
    ),
    Case(
        "add-redact-above-own",
        ALL_VERSIONS,
        change(BOB, setter("redact", 60)),
        "pl.top_level_change",
    ),
    Case("lower-ban", ALL_VERSIONS, change(BOB, setter("ban", 10)), None),
    Case(
        "lower-level-above-own",
        ALL_VERSIONS,
        change(
            BOB,
            setter("kick", 10),
            start_extra={"kick": 75},
        ),
        "pl.top_level_change",
    ),
    Case(
        "remove-level-above-own",
        ALL_VERSIONS,
        change(
            BOB,
            setter("kick", _DELETE),
            start_extra={"kick": 75},
        ),
        "pl.top_level_change",
    ),
    Case("unchanged-levels", ALL_VERSIONS, change(DAVE, setter("ban", 50)), "required_power"),
    Case("any-change-by-creator", ALL_VERSIONS, change(ALICE, setter("ban", 100)), None),
    Case("v12-creator-beyond-100", V12, change(ALICE, setter("ban", 2**53 - 1)), None),
    Case(
        "pre-v12-admin-beyond-100",
        BEFORE_V12,
        change(ALICE, setter("ban", 101)),
        "pl.top_level_change",
    ),
    Case(
        "string-equal-is-not-a-change",
        STRINGS_OK,
        change(BOB, setter("state_default", "50")),
        None,
    ),
    Case(
        "unreadable-new-level",
        STRINGS_OK,
        change(ALICE, setter("ban", "fifty")),
        "pl.top_level_change",
    ),
    # events / notifications.
    Case("add-event-level", ALL_VERSIONS, change(BOB, setter("events.m.room.name", 50)), None),
    Case(
        "add-event-level-above-own",
        ALL_VERSIONS,
        change(BOB, setter("events.m.room.name", 60)),
        "pl.maps_new",
    ),
    Case(
        "change-event-level-above-own",
        ALL_VERSIONS,
        change(
            BOB,
            setter("events.m.room.topic", 10),
            start_extra={"events": {"m.room.topic": 80}},
        ),
        "pl.maps_old",
    ),
    Case(
        "remove-event-level-above-own",
        ALL_VERSIONS,
        change(
            BOB,
            setter("events", {}),
            start_extra={"events": {"m.room.topic": 80}},
        ),
        "pl.maps_old",
    ),
    Case(
        "remove-event-level-below-own",
        ALL_VERSIONS,
        change(
            BOB,
            setter("events", {}),
            start_extra={"events": {"m.room.topic": 40}},
        ),
        None,
    ),
    Case(
        "unreadable-event-level",
        STRINGS_OK,
        change(ALICE, setter("events.m.room.topic", "x")),
        "pl.maps_new",
    ),
    Case(
        "notification-above-own",
        NOTIFICATIONS,
        change(BOB, setter("notifications.room", 75)),
        "pl.maps_new",
    ),
    Case(
        "notification-above-own-unchecked",
        NO_NOTIFICATIONS,
        change(BOB, setter("notifications.room", 75)),
        None,
    ),
    Case(
        "remove-notification-above-own",
        NOTIFICATIONS,
        change(
            BOB,
            setter("notifications", {}),
            start_extra={"notifications": {"room": 90}},
        ),
        "pl.maps_old",
    ),
    Case("notification-at-own", ALL_VERSIONS, change(BOB, setter("notifications.room", 50)), None),
    # users.
    Case("promote-to-own-level", ALL_VERSIONS, change(BOB, setter(f"users.{DAVE}", 50)), None),
    Case(
        "promote-above-own-level",
        ALL_VERSIONS,
        change(BOB, setter(f"users.{DAVE}", 51)),
        "pl.users_new",
    ),
    Case(
        "add-user-above-own-level",
        ALL_VERSIONS,
        change(BOB, setter("users.@new:example.org", 70)),
        "pl.users_new",
    ),
    Case("demote-peer", ALL_VERSIONS, change(BOB, setter(f"users.{CAROL}", 0)), "pl.users_old"),
    Case(
        "remove-peer", ALL_VERSIONS, change(BOB, setter(f"users.{CAROL}", _DELETE)), "pl.users_old"
    ),
    Case("demote-lower-user", ALL_VERSIONS, change(BOB, setter(f"users.{DAVE}", 0)), None),
    Case("demote-self", ALL_VERSIONS, change(BOB, setter(f"users.{BOB}", 10)), None),
    Case("raise-self", ALL_VERSIONS, change(BOB, setter(f"users.{BOB}", 51)), "pl.users_new"),
    Case(
        "demote-admin",
        BEFORE_V12,
        change(BOB, setter(f"users.{ALICE}", 0)),
        "pl.users_old",
    ),
    Case(
        "string-user-level-equal-is-not-a-change",
        STRINGS_OK,
        change(BOB, setter(f"users.{CAROL}", "50")),
        None,
    ),
    # v1-v5: floats are truncated.
    Case("float-level", FLOATS_OK, change(BOB, setter(f"users.{DAVE}", 50.9), raw=True), None),
    Case(
        "float-exponent-level",
        FLOATS_OK,
        change(ALICE, setter(f"users.{DAVE}", 5.114698e4), raw=True),
        "pl.users_new",
    ),
    Case(
        "infinite-level",
        FLOATS_OK,
        change(ALICE, setter(f"users.{DAVE}", float("inf")), raw=True),
        "pl.users",
    ),
    Case(
        "nan-level",
        FLOATS_OK,
        change(ALICE, setter(f"users.{DAVE}", float("nan")), raw=True),
        "pl.users",
    ),
    Case(
        "float-top-level",
        FLOATS_OK,
        change(BOB, setter("ban", 50.7), raw=True),
        None,
    ),
    Case(
        "float-top-level-above",
        FLOATS_OK,
        change(BOB, setter("ban", 51.0), raw=True),
        "pl.top_level_change",
    ),
    Case(
        "float-not-read-from-v6",
        versions(lambda r: not r.float_power_levels),
        change(ALICE, setter(f"users.{DAVE}", 10.0), raw=True),
        "pl.users",
    ),
]


@pytest.mark.parametrize(("case", "version"), case_params(CONTENT_CASES))
def test_power_levels_content(case: Case, version: str) -> None:
    run_case(case, version)


@pytest.mark.parametrize(("case", "version"), case_params(CHANGE_CASES))
def test_power_levels_changes(case: Case, version: str) -> None:
    run_case(case, version)
