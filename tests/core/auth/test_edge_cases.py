"""Edge cases of the authorization rules, one table per case.

* ``m.room.create`` is the state event with the empty state key: one without a state key, or
  with another one, is rejected and never serves as the room's create event (auth rules, auth
  event list checks, auth event selection, state resolution's create lookup);
* an ``m.room.member`` event's state key must be a user ID;
* room-wide state types (power levels, join rules, history visibility...) under another state
  key are ordinary state that no rule reads.
"""

from __future__ import annotations

from typing import Any

import pytest

from roomserver.core.auth import (
    CREATE_KEY,
    check_auth_events,
    check_auth_rules,
    is_power_event,
    select_auth_events,
)
from roomserver.core.errors import Rejected
from roomserver.core.hashes import room_id_from_create_event_id
from roomserver.core.pdu import Event, parse_event
from roomserver.core.redaction import redact
from roomserver.core.stateres.provider import EventLookup
from roomserver.testing.builder import RoomBuilder
from tests.core.auth.helpers import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CAROL,
    Case,
    candidate,
    case_params,
    create_event,
    expect_rule,
    make_room,
    member,
    outcome,
    run_case,
    versions,
)

V12 = versions(lambda r: r.room_id_from_create_event)
BEFORE_V12 = versions(lambda r: not r.room_id_from_create_event)
V12_ROOM_ID = "!" + "A" * 42 + "Q"


def _message(check: Any) -> str | None:
    try:
        check()
    except Rejected as exc:
        return exc.reason
    return None


# -- m.room.create needs the empty state key ------------------------------------------------


def _create_with_state_key(version: str, state_key: str | None) -> Event:
    """An otherwise valid first event of type ``m.room.create`` with ``state_key``."""
    b = RoomBuilder(version)
    content: dict[str, Any] = {"room_version": version}
    if b.rules.creator_in_content:
        content["creator"] = ALICE
    extra = {"room_id": V12_ROOM_ID} if b.rules.room_id_from_create_event else None
    if b.rules.room_id_from_create_event and state_key == "":
        extra = None
    return candidate(
        b, "m.room.create", ALICE, content, state_key=state_key, prev_events=[], extra=extra
    )


CREATE_STATE_KEYS = [None, "x", " ", "@alice:example.org", "\u200b"]


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("state_key", CREATE_STATE_KEYS, ids=repr)
def test_create_without_the_empty_state_key_is_rejected(
    version: str, state_key: str | None
) -> None:
    event = _create_with_state_key(version, state_key)
    for check in (
        lambda: check_auth_rules(event, {}),
        lambda: check_auth_events(event, []),
    ):
        expect_rule(event.rules, _message(check), "create.state_key")
    assert select_auth_events(event, {}) == {}


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_with_the_empty_state_key_is_allowed(version: str) -> None:
    event = _create_with_state_key(version, "")
    assert _message(lambda: check_auth_rules(event, {})) is None
    assert _message(lambda: check_auth_events(event, [])) is None


def _bogus_create_in_room(b: RoomBuilder, state_key: str | None) -> Event:
    """An ``m.room.create`` event sent into the room with a state key other than ``""``."""
    content: dict[str, Any] = {"room_version": b.version, "creator": BOB}
    return candidate(b, "m.room.create", BOB, content, state_key=state_key)


@pytest.mark.parametrize("version", BEFORE_V12)
@pytest.mark.parametrize("state_key", [None, "x"], ids=repr)
def test_bogus_create_under_the_create_key_is_not_the_create_event(
    version: str, state_key: str | None
) -> None:
    """Whatever a caller files under ``("m.room.create", "")``, only a real create counts."""
    b = make_room(version)
    bogus = _bogus_create_in_room(b, state_key)
    message = candidate(b, "m.room.message", BOB, {"body": "hi"})
    state = dict(select_auth_events(message, b.state_events()))
    assert _message(lambda: check_auth_rules(message, state)) is None
    state[CREATE_KEY] = bogus
    expect_rule(
        message.rules, _message(lambda: check_auth_rules(message, state)), "auth_events.no_create"
    )


@pytest.mark.parametrize("version", V12)
def test_v12_room_id_of_a_non_create_event_names_no_create_event(version: str) -> None:
    """v12: an event whose room ID is derived from an event that is not a create event (here
    a non-state ``m.room.create``) has no create event, by any path."""
    b = RoomBuilder(version, room_id=V12_ROOM_ID)
    bogus = candidate(
        b, "m.room.create", ALICE, {"room_version": version}, state_key=None, prev_events=[]
    )
    b.room_id = room_id_from_create_event_id(bogus.event_id)
    b.events[bogus.event_id] = bogus
    message = candidate(b, "m.room.message", ALICE, {"body": "hi"}, prev_events=[bogus.event_id])
    # Filed under the create key by a careless caller: still not a create event.
    expect_rule(
        message.rules,
        _message(lambda: check_auth_rules(message, {CREATE_KEY: bogus})),
        "room_id_is_create",
    )
    # Offered to the auth event list check as the implied create event: not taken.
    expect_rule(
        message.rules,
        _message(lambda: check_auth_events(message, [bogus])),
        "room_id_is_create",
    )
    # State resolution's create lookup through the room ID finds nothing.
    assert EventLookup({bogus.event_id: bogus}).create_event_for(message) is None


@pytest.mark.parametrize("version", V12)
def test_v12_create_lookup_finds_the_real_create(version: str) -> None:
    b = make_room(version)
    message = candidate(b, "m.room.message", BOB, {"body": "hi"})
    assert EventLookup(b.events).create_event_for(message) == create_event(b)


# -- m.room.member: the state key is a user ID -----------------------------------------------


def _member_with_target(target: str, membership: str) -> Any:
    def build(version: str) -> tuple[RoomBuilder, Event]:
        b = make_room(version, join_rule="public", members=(BOB,))
        sender = BOB if membership in ("join", "leave", "knock") else ALICE
        return b, member(b, sender, target, membership)

    return build


NOT_USER_IDS = ["", "bob", "@bob", "bob:example.org", "example.org", "!room:example.org"]
MEMBER_TARGET_CASES = [
    Case(
        f"{membership} for {target!r}",
        ALL_VERSIONS,
        _member_with_target(target, membership),
        "member.malformed",
    )
    for target in NOT_USER_IDS
    for membership in ("join", "invite", "leave", "ban")
] + [
    Case(
        "knock for 'bob'",
        versions(lambda r: r.knocking),
        _member_with_target("bob", "knock"),
        "member.malformed",
    ),
    # Controls: real user IDs, historical grammar included.
    Case("invite a user", ALL_VERSIONS, _member_with_target(CAROL, "invite"), None),
    Case(
        "invite a historical user ID",
        ALL_VERSIONS,
        _member_with_target("@Carol[old]:example.org", "invite"),
        None,
    ),
]


@pytest.mark.parametrize(("case", "version"), case_params(MEMBER_TARGET_CASES))
def test_member_state_key_must_be_a_user_id(case: Case, version: str) -> None:
    run_case(case, version)


# -- room-wide state types under another state key are not read -----------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_join_rules_under_another_state_key_do_not_open_the_room(version: str) -> None:
    b = make_room(version, join_rule="invite", members=())
    b.send("m.room.join_rules", ALICE, {"join_rule": "public"}, state_key="x")
    join = member(b, BOB, BOB, "join")
    expect_rule(join.rules, outcome(b, join), "join.invite_rule")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_power_levels_under_another_state_key_grant_nothing(version: str) -> None:
    b = make_room(version, members=(BOB,))
    odd = b.send("m.room.power_levels", ALICE, {"users": {BOB: 100}}, state_key="x")
    assert not is_power_event(odd)
    name = candidate(b, "m.room.name", BOB, {"name": "mine"}, state_key="")
    expect_rule(name.rules, outcome(b, name), "required_power")


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize(
    "event_type", ["m.room.power_levels", "m.room.join_rules", "m.room.create"]
)
def test_room_wide_types_without_empty_state_key_are_not_power_events(
    version: str, event_type: str
) -> None:
    b = make_room(version)
    for state_key in (None, "x"):
        event = candidate(b, event_type, ALICE, {}, state_key=state_key)
        assert not is_power_event(event)


# -- the redacted form of a v1-v2 redaction (no target) -------------------------------------

REDACTION_RULE = versions(lambda r: r.redaction_auth_rule)


@pytest.mark.parametrize("version", REDACTION_RULE)
@pytest.mark.parametrize(("sender", "allowed"), [(ALICE, True), (BOB, False)])
def test_v1_v2_redacted_redaction_needs_the_redact_level(
    version: str, sender: str, allowed: bool
) -> None:
    """Without its target (dropped by redaction), the "same server as the redacted event"
    branch of the v1-v2 rule cannot apply: only the redact level allows it."""
    b = make_room(version, members=(BOB,))
    target = b.message(BOB, "x")
    full = candidate(b, "m.room.redaction", sender, {}, extra={"redacts": target.event_id})
    assert full.redacts == target.event_id
    redacted = parse_event(redact(full.pdu, version), version)
    assert redacted.redacts is None
    message = outcome(b, redacted)
    if allowed:
        assert message is None
    else:
        expect_rule(redacted.rules, message, "redaction.otherwise")
    # The full event of the same server is allowed by the same-server branch.
    assert outcome(b, full) is None
