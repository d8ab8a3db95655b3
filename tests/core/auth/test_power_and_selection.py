"""Helpers shared with state resolution (power levels, power events), auth event selection,
redaction application and the soft-fail check."""

from __future__ import annotations

import math
from typing import Any

import pytest

from roomserver.core.auth import (
    CREATE_KEY,
    CREATOR_POWER_LEVEL,
    auth_types_for,
    auth_types_for_event,
    check_redaction_allowed,
    check_soft_fail,
    creators_of,
    is_power_event,
    parse_power_level,
    power_level_of,
    required_power_level,
    select_auth_events,
    sender_power_level,
)
from roomserver.core.errors import Rejected, SoftFailed
from roomserver.core.room_versions import room_version
from tests.core.auth.helpers import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CAROL,
    DAVE,
    candidate,
    create_event,
    make_room,
    member,
    versions,
)

V12 = versions(lambda r: r.privileged_creators)
BEFORE_V12 = versions(lambda r: not r.privileged_creators)


@pytest.mark.parametrize(
    ("value", "v1_5", "v6_9", "v10"),
    [
        (50, 50, 50, 50),
        (-3, -3, -3, -3),
        ("50", 50, 50, None),
        ("  +007 ", 7, 7, None),
        ("-12", -12, -12, None),
        ("1.5", None, None, None),
        ("1_000", None, None, None),
        ("", None, None, None),
        ("٣", None, None, None),  # a non-ASCII digit
        ("9" * 5000, None, None, None),
        (50.9, 50, None, None),
        (-50.9, -50, None, None),
        (5.114698e4, 51146, None, None),
        (math.inf, None, None, None),
        (math.nan, None, None, None),
        (True, None, None, None),
        (None, None, None, None),
        ([50], None, None, None),
    ],
)
def test_parse_power_level(
    value: object, v1_5: int | None, v6_9: int | None, v10: int | None
) -> None:
    for version, expected in (
        ("1", v1_5),
        ("5", v1_5),
        ("6", v6_9),
        ("9", v6_9),
        ("10", v10),
        ("12", v10),
    ):
        assert parse_power_level(value, room_version(version)) == expected, version


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_power_level_of(version: str) -> None:
    b = make_room(version, users={BOB: 50}, members=(BOB, CAROL))
    state = b.state_events()
    rules = b.rules
    expected_alice = CREATOR_POWER_LEVEL if rules.privileged_creators else 100
    assert power_level_of(ALICE, state, rules) == expected_alice
    assert power_level_of(BOB, state, rules) == 50
    assert power_level_of(CAROL, state, rules) == 0
    message = candidate(b, "m.room.message", BOB, {"body": "x"})
    assert sender_power_level(message, state) == 50
    # Without a power levels event: creators 100 (v1-v11) or unlimited (v12), others 0.
    no_pl = {CREATE_KEY: create_event(b)}
    assert power_level_of(ALICE, no_pl, rules) == expected_alice
    assert power_level_of(BOB, no_pl, rules) == 0
    assert required_power_level("m.room.topic", is_state=True, power_levels=None, rules=rules) == 50
    assert (
        required_power_level("m.room.message", is_state=False, power_levels=None, rules=rules) == 0
    )


@pytest.mark.parametrize("version", V12)
def test_v12_creators(version: str) -> None:
    b = make_room(version, create_content={"additional_creators": [CAROL]}, members=(BOB,))
    create = create_event(b)
    assert creators_of(create) == {ALICE, CAROL}
    state = b.state_events()
    assert power_level_of(CAROL, state, b.rules) == CREATOR_POWER_LEVEL
    assert power_level_of(CAROL, state, b.rules) > 2**53
    assert power_level_of(BOB, state, b.rules) == 0


@pytest.mark.parametrize("version", BEFORE_V12)
def test_creators_before_v12(version: str) -> None:
    b = make_room(version, create_content={"additional_creators": [CAROL]})
    assert creators_of(create_event(b)) == {ALICE}
    assert power_level_of(CAROL, b.state_events(), b.rules) == 0


def test_creator_field_is_what_counts_before_v11() -> None:
    b = make_room("10", create_content={"creator": BOB})
    assert creators_of(create_event(b)) == {BOB}
    b11 = make_room("11", create_content={"creator": BOB})
    assert creators_of(create_event(b11)) == {ALICE}


@pytest.mark.parametrize("version", ["2", "10", "12"])
def test_is_power_event(version: str) -> None:
    b = make_room(version, members=(BOB, CAROL))
    assert is_power_event(create_event(b))
    assert is_power_event(b.events[b.state[("m.room.power_levels", "")]])
    assert is_power_event(b.events[b.state[("m.room.join_rules", "")]])
    assert not is_power_event(b.events[b.state[("m.room.member", BOB)]])
    assert is_power_event(member(b, ALICE, BOB, "leave"))
    assert is_power_event(member(b, ALICE, BOB, "ban"))
    assert not is_power_event(member(b, BOB, BOB, "leave"))
    assert not is_power_event(member(b, ALICE, DAVE, "invite"))
    assert not is_power_event(candidate(b, "m.room.topic", ALICE, {}, state_key=""))
    assert not is_power_event(candidate(b, "m.room.power_levels", ALICE, {}))
    assert not is_power_event(candidate(b, "m.room.join_rules", ALICE, {}, state_key="x"))


def _types(
    version: str, event_type: str, content: dict[str, Any], state_key: str | None
) -> set[tuple[str, str]]:
    return auth_types_for(room_version(version), event_type, BOB, state_key, content)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_auth_types(version: str) -> None:
    rules = room_version(version)
    base = {("m.room.power_levels", ""), ("m.room.member", BOB)}
    if rules.create_event_in_auth_events:
        base.add(("m.room.create", ""))
    assert _types(version, "m.room.create", {}, "") == set()
    assert _types(version, "m.room.message", {}, None) == base
    assert _types(version, "m.room.member", {"membership": "join"}, BOB) == base | {
        ("m.room.join_rules", "")
    }
    assert _types(version, "m.room.member", {"membership": "leave"}, CAROL) == base | {
        ("m.room.member", CAROL)
    }
    assert _types(version, "m.room.member", {"membership": "knock"}, BOB) == base | {
        ("m.room.join_rules", "")
    }
    assert _types(version, "m.room.member", {"membership": "ban"}, CAROL) == base | {
        ("m.room.member", CAROL)
    }
    third_party = {"membership": "invite", "third_party_invite": {"signed": {"token": "t"}}}
    assert _types(version, "m.room.member", third_party, CAROL) == base | {
        ("m.room.member", CAROL),
        ("m.room.join_rules", ""),
        ("m.room.third_party_invite", "t"),
    }
    restricted = {"membership": "join", "join_authorised_via_users_server": DAVE}
    expected = base | {("m.room.join_rules", "")}
    if rules.restricted_joins:
        expected.add(("m.room.member", DAVE))
    assert _types(version, "m.room.member", restricted, BOB) == expected
    # Malformed pieces select nothing extra.
    assert _types(
        version, "m.room.member", {"membership": "invite", "third_party_invite": 1}, CAROL
    ) == base | {
        ("m.room.member", CAROL),
        ("m.room.join_rules", ""),
    }


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_auth_types_for_event_and_select(version: str) -> None:
    b = make_room(version)
    event = candidate(b, "m.room.member", BOB, {"membership": "leave"}, state_key=BOB)
    selected = select_auth_events(event, b.state_events())
    assert set(selected) <= auth_types_for_event(event) | {CREATE_KEY}
    assert CREATE_KEY in selected
    assert {
        e.event_id
        for k, e in selected.items()
        if k != CREATE_KEY or b.rules.create_event_in_auth_events
    } == set(event.auth_event_ids)


# -- redaction application ---------------------------------------------------------------------
def _redaction_outcome(version: str, sender: str, target_sender: str) -> str | None:
    b = make_room(version, members=(BOB, DAVE))
    target = b.message(target_sender)
    if b.rules.redacts_in_content:
        redaction = b.send("m.room.redaction", sender, {"redacts": target.event_id})
    else:
        redaction = b.send("m.room.redaction", sender, {}, extra={"redacts": target.event_id})
    try:
        check_redaction_allowed(redaction, target, b.state_events())
    except Rejected as exc:
        return exc.reason
    return None


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_redaction_application(version: str) -> None:
    assert _redaction_outcome(version, BOB, BOB) is None
    assert _redaction_outcome(version, BOB, CAROL) is None  # same server
    assert _redaction_outcome(version, ALICE, DAVE) is None  # redact level
    message = _redaction_outcome(version, BOB, DAVE)
    assert message is not None
    if room_version(version).redaction_auth_rule:
        assert message.endswith("(rule 11.3)")
    else:
        assert message.endswith("(redaction handling)")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_redaction_must_target_the_event(version: str) -> None:
    b = make_room(version, members=(BOB,))
    target = b.message(BOB)
    other = b.message(BOB)
    content = {"redacts": target.event_id} if b.rules.redacts_in_content else {}
    extra = None if b.rules.redacts_in_content else {"redacts": target.event_id}
    redaction = b.send("m.room.redaction", ALICE, content, extra=extra)
    with pytest.raises(Rejected):
        check_redaction_allowed(redaction, other, b.state_events())


# -- soft fail ---------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_soft_fail_against_current_state(version: str) -> None:
    b = make_room(version, members=(BOB,))
    before_ban = b.state_events()
    message = candidate(b, "m.room.message", BOB, {"body": "x"})
    b.member(ALICE, BOB, "ban")
    check_soft_fail(message, before_ban)
    with pytest.raises(SoftFailed, match=r"sender is not joined"):
        check_soft_fail(message, b.state_events())
