"""Rule 1 (``m.room.create``), v12 rule 2 (room ID is a create event) and the auth event list
checks (v12 rule 3, v1-v11 rule 2), through both public entry points."""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from typing import Any

import pytest

from roomserver.core.auth import check_auth_events, check_auth_rules
from roomserver.core.errors import Rejected
from roomserver.core.pdu import Event
from roomserver.testing.builder import RoomBuilder
from tests.core.auth.helpers import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    DAVE,
    candidate,
    create_event,
    expect_rule,
    make_room,
    raw_event,
    versions,
)

V12 = versions(lambda r: r.room_id_from_create_event)
BEFORE_V12 = versions(lambda r: not r.room_id_from_create_event)
CREATOR_FIELD = versions(lambda r: r.creator_in_content)
NO_CREATOR_FIELD = versions(lambda r: not r.creator_in_content)


def _message(message_fn: Callable[[], None]) -> str | None:
    try:
        message_fn()
    except Rejected as exc:
        return exc.reason
    return None


# -- m.room.create -----------------------------------------------------------------------------
def build_create(
    version: str,
    content: dict[str, Any] | None = None,
    *,
    prev_events: Sequence[str] = (),
    room_id: str | None = None,
    with_creator: bool = True,
) -> Event:
    b = RoomBuilder(version, room_id=room_id)
    full: dict[str, Any] = {"room_version": version}
    if with_creator and b.rules.creator_in_content:
        full["creator"] = ALICE
    full.update(content or {})
    return candidate(b, "m.room.create", ALICE, full, state_key="", prev_events=list(prev_events))


def check_create(event: Event, rule: str | None) -> None:
    expect_rule(event.rules, _message(lambda: check_auth_rules(event, {})), rule)
    expect_rule(event.rules, _message(lambda: check_auth_events(event, [])), rule)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_allowed(version: str) -> None:
    check_create(build_create(version), None)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_with_prev_events(version: str) -> None:
    prev = "$abc:example.org" if version in ("1", "2") else "$" + "A" * 43
    check_create(build_create(version, prev_events=[prev]), "create.prev_events")


@pytest.mark.parametrize("version", BEFORE_V12)
def test_create_room_id_on_another_server(version: str) -> None:
    check_create(build_create(version, room_id="!r:other.org"), "create.room_id")


@pytest.mark.parametrize("version", V12)
def test_v12_create_with_room_id(version: str) -> None:
    b = RoomBuilder(version)
    event = raw_event(
        b,
        "m.room.create",
        ALICE,
        {"room_version": version},
        state_key="",
        pdu_extra={"room_id": "!" + "A" * 43},
    )
    check_create(event, "create.room_id")


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("room_version", ["99", 10, "", None])
def test_create_unknown_room_version(version: str, room_version: object) -> None:
    check_create(build_create(version, {"room_version": room_version}), "create.room_version")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_without_room_version(version: str) -> None:
    b = RoomBuilder(version)
    content = {"creator": ALICE} if b.rules.creator_in_content else {}
    check_create(candidate(b, "m.room.create", ALICE, content, state_key=""), None)


@pytest.mark.parametrize("version", CREATOR_FIELD)
def test_create_without_creator_before_v11(version: str) -> None:
    check_create(build_create(version, with_creator=False), "create.creator")


@pytest.mark.parametrize("version", NO_CREATOR_FIELD)
def test_create_without_creator_from_v11(version: str) -> None:
    check_create(build_create(version, with_creator=False), None)


@pytest.mark.parametrize("version", V12)
@pytest.mark.parametrize(
    "value",
    ["@bob:example.org", ["bob"], [7], ["@bob:example.org", "@carol"], {"@bob:example.org": 1}],
)
def test_v12_bad_additional_creators(version: str, value: object) -> None:
    check_create(
        build_create(version, {"additional_creators": value}), "create.additional_creators"
    )


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_additional_creators_valid_or_ignored(version: str) -> None:
    good = build_create(version, {"additional_creators": [BOB, DAVE]})
    check_create(good, None)
    ignored = build_create(version, {"additional_creators": "not a list"})
    check_create(ignored, "create.additional_creators" if version in V12 else None)


# -- the auth event list -----------------------------------------------------------------------
def _list_check(
    b: RoomBuilder, event: Event, auth: Sequence[Event], rejected: Container[str] = ()
) -> str | None:
    return _message(lambda: check_auth_events(event, auth, rejected=rejected))


def _with_create(b: RoomBuilder, auth: list[Event]) -> list[Event]:
    return [*auth, create_event(b)] if b.rules.room_id_from_create_event else auth


def _ids(events: Sequence[Event]) -> list[str]:
    return [e.event_id for e in events]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_auth_events_allowed(version: str) -> None:
    b = make_room(version)
    event = candidate(b, "m.room.message", BOB, {"body": "hi"})
    auth = [b.events[i] for i in event.auth_event_ids]
    assert _list_check(b, event, _with_create(b, auth)) is None
    # Order does not matter, and uncited extras are ignored.
    extra = b.events[b.state[("m.room.join_rules", "")]]
    assert _list_check(b, event, _with_create(b, [extra, *reversed(auth)])) is None


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_auth_events_duplicate(version: str) -> None:
    b = make_room(version)
    first_join = b.events[b.state[("m.room.member", BOB)]]
    b.join(BOB, displayname="Bob")
    second_join = b.events[b.state[("m.room.member", BOB)]]
    base = [i for i in b.auth_event_ids_for("m.room.message", BOB, None, {})]
    auth_ids = [*base, first_join.event_id]
    event = candidate(b, "m.room.message", BOB, {"body": "hi"}, auth_events=auth_ids)
    auth = [b.events[i] for i in auth_ids]
    assert second_join in auth
    expect_rule(event.rules, _list_check(b, event, _with_create(b, auth)), "auth_events.duplicate")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_auth_events_unexpected(version: str) -> None:
    b = make_room(version)
    join_rules = b.events[b.state[("m.room.join_rules", "")]]
    auth_ids = [*b.auth_event_ids_for("m.room.message", BOB, None, {}), join_rules.event_id]
    event = candidate(b, "m.room.message", BOB, {"body": "hi"}, auth_events=auth_ids)
    auth = [b.events[i] for i in auth_ids]
    expect_rule(event.rules, _list_check(b, event, _with_create(b, auth)), "auth_events.unexpected")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_auth_events_message_event_cited(version: str) -> None:
    b = make_room(version)
    message = b.message(BOB)
    auth_ids = [*b.auth_event_ids_for("m.room.message", BOB, None, {}), message.event_id]
    event = candidate(b, "m.room.message", BOB, {"body": "hi"}, auth_events=auth_ids)
    auth = [b.events[i] for i in auth_ids]
    expect_rule(event.rules, _list_check(b, event, _with_create(b, auth)), "auth_events.unexpected")


@pytest.mark.parametrize("version", V12)
def test_v12_citing_the_create_event(version: str) -> None:
    b = make_room(version)
    create = create_event(b)
    auth_ids = [*b.auth_event_ids_for("m.room.message", BOB, None, {}), create.event_id]
    event = candidate(b, "m.room.message", BOB, {"body": "hi"}, auth_events=auth_ids)
    auth = [b.events[i] for i in auth_ids]
    expect_rule(event.rules, _list_check(b, event, auth), "auth_events.unexpected")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_auth_events_rejected_entry(version: str) -> None:
    b = make_room(version)
    event = candidate(b, "m.room.message", BOB, {"body": "hi"})
    auth = [b.events[i] for i in event.auth_event_ids]
    power_levels = b.state[("m.room.power_levels", "")]
    message = _list_check(b, event, _with_create(b, auth), rejected={power_levels})
    expect_rule(event.rules, message, "auth_events.rejected")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_auth_events_missing_entry_counts_as_rejected(version: str) -> None:
    b = make_room(version)
    event = candidate(b, "m.room.message", BOB, {"body": "hi"})
    auth = [b.events[i] for i in event.auth_event_ids if b.events[i].type != "m.room.member"]
    expect_rule(event.rules, _list_check(b, event, _with_create(b, auth)), "auth_events.rejected")


@pytest.mark.parametrize("version", BEFORE_V12)
def test_auth_events_without_create(version: str) -> None:
    b = make_room(version)
    auth_ids = [
        b.state[("m.room.power_levels", "")],
        b.state[("m.room.member", BOB)],
    ]
    event = candidate(b, "m.room.message", BOB, {"body": "hi"}, auth_events=auth_ids)
    auth = [b.events[i] for i in auth_ids]
    expect_rule(event.rules, _list_check(b, event, auth), "auth_events.no_create")
    state = {e.state_tuple: e for e in auth}
    expect_rule(
        event.rules, _message(lambda: check_auth_rules(event, state)), "auth_events.no_create"
    )


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_auth_events_from_another_room(version: str) -> None:
    b = make_room(version)
    other = make_room(version, create_content={"nonce": "other"})
    assert other.room_id != b.room_id
    foreign_pl = other.state[("m.room.power_levels", "")]
    auth_ids = [
        i
        for i in b.auth_event_ids_for("m.room.message", BOB, None, {})
        if b.events[i].type != "m.room.power_levels"
    ] + [foreign_pl]
    b.events[foreign_pl] = other.events[foreign_pl]
    event = candidate(b, "m.room.message", BOB, {"body": "hi"}, auth_events=auth_ids)
    auth = [b.events[i] for i in auth_ids]
    expect_rule(event.rules, _list_check(b, event, _with_create(b, auth)), "auth_events.same_room")


@pytest.mark.parametrize("version", BEFORE_V12)
def test_create_of_another_room_in_state(version: str) -> None:
    b = make_room(version)
    other = make_room(version, create_content={"nonce": "other"})
    event = candidate(b, "m.room.message", BOB, {"body": "hi"})
    state = dict(b.state_events())
    state[("m.room.create", "")] = create_event(other)
    expect_rule(
        event.rules, _message(lambda: check_auth_rules(event, state)), "auth_events.same_room"
    )


@pytest.mark.parametrize("version", V12)
def test_v12_room_id_must_be_an_accepted_create(version: str) -> None:
    b = make_room(version)
    other = make_room(version, create_content={"nonce": "other"})
    event = candidate(b, "m.room.message", BOB, {"body": "hi"})
    cited = [b.events[i] for i in event.auth_event_ids]
    create = create_event(b)
    rule = "room_id_is_create"
    expect_rule(event.rules, _list_check(b, event, cited), rule)
    expect_rule(event.rules, _list_check(b, event, [*cited, create_event(other)]), rule)
    rejected = {create.event_id}
    expect_rule(event.rules, _list_check(b, event, [*cited, create], rejected), rule)
    expect_rule(event.rules, _list_check(b, event, [*cited, create]), None)
    state = {e.state_tuple: e for e in cited}
    expect_rule(event.rules, _message(lambda: check_auth_rules(event, state)), rule)
    state[("m.room.create", "")] = create_event(other)
    expect_rule(event.rules, _message(lambda: check_auth_rules(event, state)), rule)


@pytest.mark.parametrize("version", V12)
def test_v12_creator_first_join_cites_nothing(version: str) -> None:
    b = RoomBuilder(version)
    create = b.send("m.room.create", ALICE, {"room_version": version}, state_key="")
    join = candidate(b, "m.room.member", ALICE, {"membership": "join"}, state_key=ALICE)
    assert join.auth_event_ids == ()
    assert _list_check(b, join, [create]) is None
