"""``m.room.member``: every membership, every version in which its rule changes."""

from __future__ import annotations

from collections.abc import Callable

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
    cosign,
    create_event,
    expect_rule,
    make_room,
    member,
    outcome,
    run_case,
    versions,
)

KNOCK = versions(lambda r: r.knocking)
NO_KNOCK = versions(lambda r: not r.knocking)
RESTRICTED = versions(lambda r: r.restricted_joins)
NO_RESTRICTED = versions(lambda r: not r.restricted_joins)
KNOCK_RESTRICTED = versions(lambda r: r.knock_restricted_joins)
NO_KNOCK_RESTRICTED = versions(lambda r: not r.knock_restricted_joins)
V12 = versions(lambda r: r.privileged_creators)
BEFORE_V12 = versions(lambda r: not r.privileged_creators)

Built = tuple[RoomBuilder, Event]
Builder = Callable[[str], Built]


# -- join --------------------------------------------------------------------------------------
def creator_first_join(v: str) -> Built:
    b = RoomBuilder(v)
    content = {"room_version": v, **({"creator": ALICE} if b.rules.creator_in_content else {})}
    b.send("m.room.create", ALICE, content, state_key="")
    return b, member(b, ALICE, ALICE, "join")


def other_first_join(v: str) -> Built:
    b = RoomBuilder(v)
    content = {"room_version": v, **({"creator": ALICE} if b.rules.creator_in_content else {})}
    b.send("m.room.create", ALICE, content, state_key="")
    return b, member(b, BOB, BOB, "join")


def creator_rejoins_from_create(v: str) -> Built:
    b = make_room(v, join_rule="invite")
    b.member(ALICE, ALICE, "leave")
    create = create_event(b)
    return b, member(b, ALICE, ALICE, "join", prev_events=[create.event_id])


def creator_first_join_sent_by_another(v: str) -> Built:
    """The spec's rule looks at the state key only (as Synapse and gomatrixserverlib do)."""
    b = RoomBuilder(v)
    content = {"room_version": v, **({"creator": ALICE} if b.rules.creator_in_content else {})}
    b.send("m.room.create", ALICE, content, state_key="")
    return b, member(b, BOB, ALICE, "join")


def creator_first_join_citing_create_twice(sender: str) -> Builder:
    """``prev_events: [create, create]`` is not "the only previous event" (the peers count the
    list's entries), so the ordinary join rules apply."""

    def build(v: str) -> Built:
        b = RoomBuilder(v)
        extra = {"creator": ALICE} if b.rules.creator_in_content else {}
        create = b.send("m.room.create", ALICE, {"room_version": v, **extra}, state_key="")
        twice = [create.event_id, create.event_id]
        return b, member(b, sender, ALICE, "join", prev_events=twice)

    return build


def join_for_someone_else(v: str) -> Built:
    b = make_room(v)
    return b, member(b, ALICE, CAROL, "join")


def banned_rejoins(v: str) -> Built:
    b = make_room(v)
    b.member(ALICE, BOB, "ban")
    return b, member(b, BOB, BOB, "join")


def banned_rejoins_invite_room_after_invite_attempt(v: str) -> Built:
    b = make_room(v, join_rule="invite")
    b.member(ALICE, BOB, "ban")
    return b, member(b, BOB, BOB, "join")


def join_rule_room(join_rule: str, *, invited: bool = False, joined: bool = False) -> Builder:
    def build(v: str) -> Built:
        b = make_room(v, join_rule=join_rule, members=(BOB,) if joined else ())
        if invited:
            b.member(ALICE, BOB, "invite")
        return b, member(b, BOB, BOB, "join")

    return build


def invited_before_join_rules(v: str) -> Built:
    b = RoomBuilder(v)
    content = {"room_version": v, **({"creator": ALICE} if b.rules.creator_in_content else {})}
    b.send("m.room.create", ALICE, content, state_key="")
    b.join(ALICE)
    b.member(ALICE, BOB, "invite")
    return b, member(b, BOB, BOB, "join")


def restricted_join(
    join_rule: str = "restricted",
    *,
    authoriser: str | None = ALICE,
    authoriser_joined: bool = True,
    invite_level: int = 0,
    invited: bool = False,
) -> Builder:
    def build(v: str) -> Built:
        pl_users = {CAROL: 0}
        b = make_room(v, join_rule=join_rule, members=(CAROL,) if authoriser_joined else ())
        if invite_level:
            pl = dict(b.events[b.state[("m.room.power_levels", "")]].content)
            pl["invite"] = invite_level
            pl["users"] = {**pl["users"], **pl_users}
            b.send("m.room.power_levels", ALICE, pl, state_key="")
        if invited:
            b.member(ALICE, BOB, "invite")
        extra = {} if authoriser is None else {"join_authorised_via_users_server": authoriser}
        return b, member(b, BOB, BOB, "join", **extra)

    return build


def restricted_join_unsigned_authoriser(v: str) -> Built:
    b = make_room(v, join_rule="restricted", members=(DAVE,))
    return b, member(b, BOB, BOB, "join", join_authorised_via_users_server=DAVE)


def restricted_join_cosigned_authoriser(v: str) -> Built:
    b, event = restricted_join_unsigned_authoriser(v)
    return b, cosign(b, event, "other.org")


def leave_with_authoriser_unsigned(v: str) -> Built:
    b = make_room(v)
    return b, member(b, BOB, BOB, "leave", join_authorised_via_users_server=DAVE)


def authoriser_not_a_user_id(v: str) -> Built:
    b = make_room(v, join_rule="restricted")
    return b, member(b, BOB, BOB, "join", join_authorised_via_users_server="example.org")


JOIN_CASES = [
    Case("creator-first-join", ALL_VERSIONS, creator_first_join, None),
    Case("other-first-join", ALL_VERSIONS, other_first_join, "join.invite_rule"),
    Case("creator-rejoins-forking-from-create", ALL_VERSIONS, creator_rejoins_from_create, None),
    Case(
        "creator-first-join-sent-by-other", ALL_VERSIONS, creator_first_join_sent_by_another, None
    ),
    Case(
        "creator-join-citing-create-twice-by-other",
        ALL_VERSIONS,
        creator_first_join_citing_create_twice(BOB),
        "join.sender_not_target",
    ),
    Case(
        "creator-join-citing-create-twice",
        ALL_VERSIONS,
        creator_first_join_citing_create_twice(ALICE),
        "join.invite_rule",
    ),
    Case("join-for-someone-else", ALL_VERSIONS, join_for_someone_else, "join.sender_not_target"),
    Case("banned-user-rejoins-public", ALL_VERSIONS, banned_rejoins, "join.banned"),
    Case(
        "banned-user-rejoins-invite",
        ALL_VERSIONS,
        banned_rejoins_invite_room_after_invite_attempt,
        "join.banned",
    ),
    Case("public", ALL_VERSIONS, join_rule_room("public"), None),
    Case("invite-uninvited", ALL_VERSIONS, join_rule_room("invite"), "join.invite_rule"),
    Case("invite-invited", ALL_VERSIONS, join_rule_room("invite", invited=True), None),
    Case("invite-already-joined", ALL_VERSIONS, join_rule_room("invite", joined=True), None),
    Case("no-join-rules-invited", ALL_VERSIONS, invited_before_join_rules, None),
    Case("private", ALL_VERSIONS, join_rule_room("private", invited=True), "join.otherwise"),
    Case("unknown-rule", ALL_VERSIONS, join_rule_room("open", invited=True), "join.otherwise"),
    Case("knock-rule-invited", KNOCK, join_rule_room("knock", invited=True), None),
    Case("knock-rule-uninvited", KNOCK, join_rule_room("knock"), "join.invite_rule"),
    Case(
        "knock-rule-before-knocking",
        NO_KNOCK,
        join_rule_room("knock", invited=True),
        "join.otherwise",
    ),
    Case("restricted-authorised", RESTRICTED, restricted_join(), None),
    Case(
        "restricted-authoriser-lacks-invite-power",
        RESTRICTED,
        restricted_join(authoriser=CAROL, invite_level=50),
        "join.restricted_authoriser",
    ),
    Case(
        "restricted-authoriser-with-invite-power",
        RESTRICTED,
        restricted_join(authoriser=CAROL, invite_level=0),
        None,
    ),
    Case(
        "restricted-authoriser-not-joined",
        RESTRICTED,
        restricted_join(authoriser=CAROL, authoriser_joined=False),
        "join.restricted_authoriser",
    ),
    Case(
        "restricted-no-authoriser",
        RESTRICTED,
        restricted_join(authoriser=None),
        "join.restricted_authoriser",
    ),
    Case(
        "restricted-invited-no-authoriser",
        RESTRICTED,
        restricted_join(authoriser=None, invited=True),
        None,
    ),
    Case(
        "restricted-before-v8",
        NO_RESTRICTED,
        restricted_join(authoriser=None),
        "join.otherwise",
    ),
    Case(
        "restricted-authoriser-unsigned",
        RESTRICTED,
        restricted_join_unsigned_authoriser,
        "member.authorising_signature",
    ),
    Case("restricted-authoriser-cosigned", RESTRICTED, restricted_join_cosigned_authoriser, None),
    Case(
        "leave-with-unsigned-authoriser",
        RESTRICTED,
        leave_with_authoriser_unsigned,
        "member.authorising_signature",
    ),
    Case(
        "authoriser-not-a-user-id",
        RESTRICTED,
        authoriser_not_a_user_id,
        "member.authorising_signature",
    ),
    Case(
        "knock-restricted-authorised",
        KNOCK_RESTRICTED,
        restricted_join("knock_restricted"),
        None,
    ),
    Case(
        "knock-restricted-invited-before-v10",
        NO_KNOCK_RESTRICTED,
        restricted_join("knock_restricted", authoriser=None, invited=True),
        "join.otherwise",
    ),
    Case(
        "knock-restricted-before-v10",
        versions(lambda r: r.restricted_joins and not r.knock_restricted_joins),
        restricted_join("knock_restricted"),
        "join.otherwise",
    ),
]
JOIN_CASES.append(
    Case(
        "knock-restricted-invited-v10",
        KNOCK_RESTRICTED,
        restricted_join("knock_restricted", authoriser=None, invited=True),
        None,
    )
)
JOIN_CASES.append(
    Case(
        "knock-restricted-authoriser-lacks-power",
        KNOCK_RESTRICTED,
        restricted_join("knock_restricted", authoriser=CAROL, invite_level=50),
        "join.restricted_authoriser",
    )
)


# -- invite ------------------------------------------------------------------------------------
def invite(sender: str, target: str, *, setup: str = "", invite_level: int = 0) -> Builder:
    def build(v: str) -> Built:
        b = make_room(v)
        if invite_level:
            pl = dict(b.events[b.state[("m.room.power_levels", "")]].content)
            b.send("m.room.power_levels", ALICE, {**pl, "invite": invite_level}, state_key="")
        if setup == "target-joined":
            b.join(target)
        elif setup == "target-banned":
            b.member(ALICE, target, "ban")
        return b, member(b, sender, target, "invite")

    return build


INVITE_CASES = [
    Case("invite", ALL_VERSIONS, invite(ALICE, CAROL), None),
    Case("invite-by-default-level", ALL_VERSIONS, invite(BOB, CAROL), None),
    Case("invite-by-outsider", ALL_VERSIONS, invite(DAVE, CAROL), "invite.sender_not_joined"),
    Case(
        "invite-joined",
        ALL_VERSIONS,
        invite(ALICE, CAROL, setup="target-joined"),
        "invite.target_joined_or_banned",
    ),
    Case(
        "invite-banned",
        ALL_VERSIONS,
        invite(ALICE, CAROL, setup="target-banned"),
        "invite.target_joined_or_banned",
    ),
    Case("invite-below-level", ALL_VERSIONS, invite(BOB, CAROL, invite_level=50), "invite.power"),
    Case("invite-at-level", ALL_VERSIONS, invite(ALICE, CAROL, invite_level=50), None),
]


# -- leave, kick, ban --------------------------------------------------------------------------
def self_leave(prior: str | None) -> Builder:
    def build(v: str) -> Built:
        b = make_room(v, join_rule="knock" if prior == "knock" else "public", members=())
        if prior == "join":
            b.join(CAROL)
        elif prior == "invite":
            b.member(ALICE, CAROL, "invite")
        elif prior == "knock":
            b.member(CAROL, CAROL, "knock")
        elif prior == "ban":
            b.member(ALICE, CAROL, "ban")
        elif prior == "leave":
            b.join(CAROL)
            b.member(CAROL, CAROL, "leave")
        return b, member(b, CAROL, CAROL, "leave")

    return build


def kick(
    sender: str,
    target: str,
    *,
    users: dict[str, int] | None = None,
    banned: bool = False,
    ban_level: int = 50,
    sender_joined: bool = True,
) -> Builder:
    def build(v: str) -> Built:
        members = [u for u in (BOB, CAROL) if sender_joined or u != sender]
        b = make_room(v, users=users or {}, members=members)
        if ban_level != 50:
            pl = dict(b.events[b.state[("m.room.power_levels", "")]].content)
            b.send("m.room.power_levels", ALICE, {**pl, "ban": ban_level}, state_key="")
        if banned:
            b.member(ALICE, target, "ban")
        return b, member(b, sender, target, "leave")

    return build


def ban(
    sender: str, target: str, *, users: dict[str, int] | None = None, sender_joined: bool = True
) -> Builder:
    def build(v: str) -> Built:
        members = [u for u in (BOB, CAROL) if sender_joined or u != sender]
        b = make_room(v, users=users or {}, members=members)
        return b, member(b, sender, target, "ban")

    return build


LEAVE_CASES = [
    Case("leave-from-join", ALL_VERSIONS, self_leave("join"), None),
    Case("reject-invite", ALL_VERSIONS, self_leave("invite"), None),
    Case("rescind-knock", KNOCK, self_leave("knock"), None),
    Case("leave-without-membership", ALL_VERSIONS, self_leave(None), "leave.self"),
    Case("leave-from-leave", ALL_VERSIONS, self_leave("leave"), "leave.self"),
    Case("leave-while-banned", ALL_VERSIONS, self_leave("ban"), "leave.self"),
    Case("kick", ALL_VERSIONS, kick(ALICE, BOB), None),
    Case("kick-by-moderator", ALL_VERSIONS, kick(BOB, CAROL, users={BOB: 50}), None),
    Case("kick-without-power", ALL_VERSIONS, kick(BOB, CAROL), "leave.kick_power"),
    Case(
        "kick-equal-power",
        ALL_VERSIONS,
        kick(BOB, CAROL, users={BOB: 50, CAROL: 50}),
        "leave.kick_power",
    ),
    Case(
        "kick-higher-power",
        ALL_VERSIONS,
        kick(BOB, CAROL, users={BOB: 50, CAROL: 60}),
        "leave.kick_power",
    ),
    Case(
        "kick-by-outsider",
        ALL_VERSIONS,
        kick(BOB, CAROL, users={BOB: 100}, sender_joined=False),
        "leave.sender_not_joined",
    ),
    Case("unban", ALL_VERSIONS, kick(ALICE, CAROL, banned=True), None),
    Case(
        "unban-with-kick-but-not-ban-power",
        ALL_VERSIONS,
        kick(BOB, CAROL, users={BOB: 60}, banned=True, ban_level=75),
        "leave.unban_power",
    ),
    Case("ban", ALL_VERSIONS, ban(ALICE, BOB), None),
    Case("ban-outsider", ALL_VERSIONS, ban(ALICE, DAVE), None),
    Case("ban-without-power", ALL_VERSIONS, ban(BOB, CAROL), "ban.power"),
    Case("ban-equal-power", ALL_VERSIONS, ban(BOB, CAROL, users={BOB: 50, CAROL: 50}), "ban.power"),
    Case("ban-the-admin", ALL_VERSIONS, ban(BOB, ALICE, users={BOB: 99}), "ban.power"),
    Case(
        "ban-by-outsider",
        ALL_VERSIONS,
        ban(BOB, CAROL, users={BOB: 100}, sender_joined=False),
        "ban.sender_not_joined",
    ),
]


# -- v12 creators ------------------------------------------------------------------------------
def v12_admin_vs_creator(membership: str, *, additional: bool = False) -> Builder:
    def build(v: str) -> Built:
        create_content = {"additional_creators": [CAROL]} if additional else None
        b = make_room(v, users={BOB: 100}, members=(BOB, CAROL), create_content=create_content)
        target = CAROL if additional else ALICE
        sender = ALICE if additional else BOB
        return b, member(b, sender, target, membership)

    return build


def v11_admin_vs_creator(membership: str) -> Builder:
    def build(v: str) -> Built:
        b = make_room(v, users={BOB: 100}, members=(BOB,))
        pl = dict(b.events[b.state[("m.room.power_levels", "")]].content)
        b.send("m.room.power_levels", ALICE, {**pl, "users": {ALICE: 50, BOB: 100}}, state_key="")
        return b, member(b, BOB, ALICE, membership)

    return build


CREATOR_CASES = [
    Case("v12-ban-creator", V12, v12_admin_vs_creator("ban"), "ban.power"),
    Case("v12-kick-creator", V12, v12_admin_vs_creator("leave"), "leave.kick_power"),
    Case(
        "v12-creator-bans-additional-creator",
        V12,
        v12_admin_vs_creator("ban", additional=True),
        "ban.power",
    ),
    Case(
        "v12-creator-kicks-additional-creator",
        V12,
        v12_admin_vs_creator("leave", additional=True),
        "leave.kick_power",
    ),
    Case("pre-v12-demoted-creator-banned", BEFORE_V12, v11_admin_vs_creator("ban"), None),
    Case("pre-v12-demoted-creator-kicked", BEFORE_V12, v11_admin_vs_creator("leave"), None),
]


# -- knock and unknown memberships -------------------------------------------------------------
def knock(join_rule: str, *, sender: str = CAROL, prior: str | None = None) -> Builder:
    def build(v: str) -> Built:
        b = make_room(v, join_rule=join_rule)
        if prior == "ban":
            b.member(ALICE, CAROL, "ban")
        elif prior == "invite":
            b.member(ALICE, CAROL, "invite")
        elif prior == "join":
            b.join(CAROL)
        return b, member(b, sender, CAROL, "knock")

    return build


def membership_value(value: object) -> Builder:
    def build(v: str) -> Built:
        b = make_room(v)
        content = {} if value is None else {"membership": value}
        return b, candidate(b, "m.room.member", CAROL, content, state_key=CAROL)

    return build


def member_without_state_key(v: str) -> Built:
    b = make_room(v)
    return b, candidate(b, "m.room.member", CAROL, {"membership": "join"})


KNOCK_CASES = [
    Case("knock", KNOCK, knock("knock"), None),
    Case("knock-before-v7", NO_KNOCK, knock("knock"), "member.unknown"),
    Case("knock-in-public-room", KNOCK, knock("public"), "knock.join_rule"),
    Case("knock-in-invite-room", KNOCK, knock("invite"), "knock.join_rule"),
    Case("knock-for-someone-else", KNOCK, knock("knock", sender=BOB), "knock.sender_not_target"),
    Case("knock-while-banned", KNOCK, knock("knock", prior="ban"), "knock.membership"),
    Case("knock-while-invited", KNOCK, knock("knock", prior="invite"), "knock.membership"),
    Case("knock-while-joined", KNOCK, knock("knock", prior="join"), "knock.membership"),
    Case("knock-restricted", KNOCK_RESTRICTED, knock("knock_restricted"), None),
    Case(
        "knock-restricted-before-v10",
        versions(lambda r: r.knocking and not r.knock_restricted_joins),
        knock("knock_restricted"),
        "knock.join_rule",
    ),
    Case("unknown-membership", ALL_VERSIONS, membership_value("dance"), "member.unknown"),
    Case("membership-not-a-string", ALL_VERSIONS, membership_value(7), "member.unknown"),
    Case("membership-uppercase", ALL_VERSIONS, membership_value("JOIN"), "member.unknown"),
    Case("no-membership", ALL_VERSIONS, membership_value(None), "member.malformed"),
    Case("no-state-key", ALL_VERSIONS, member_without_state_key, "member.malformed"),
]


@pytest.mark.parametrize(("case", "version"), case_params(JOIN_CASES))
def test_join(case: Case, version: str) -> None:
    run_case(case, version)


@pytest.mark.parametrize(("case", "version"), case_params(INVITE_CASES))
def test_invite(case: Case, version: str) -> None:
    run_case(case, version)


@pytest.mark.parametrize(("case", "version"), case_params(LEAVE_CASES))
def test_leave_kick_ban(case: Case, version: str) -> None:
    run_case(case, version)


@pytest.mark.parametrize(("case", "version"), case_params(CREATOR_CASES))
def test_creators(case: Case, version: str) -> None:
    run_case(case, version)


@pytest.mark.parametrize(("case", "version"), case_params(KNOCK_CASES))
def test_knock_and_malformed(case: Case, version: str) -> None:
    run_case(case, version)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_rejection_message_names_the_rule(version: str) -> None:
    b, event = banned_rejoins(version)
    message = outcome(b, event)
    expect_rule(event.rules, message, "join.banned")
    assert message is not None and message.startswith("m.room.member: sender is banned (rule ")
