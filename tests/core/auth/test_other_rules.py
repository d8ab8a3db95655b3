"""Rules other than membership and power levels: ``m.federate``, ``m.room.aliases`` (v1-v5),
sender joined, ``m.room.third_party_invite``, required power level, ``@`` state keys, and the
v1-v2 ``m.room.redaction`` rule."""

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
    make_room,
    run_case,
    versions,
)

Built = tuple[RoomBuilder, Event]
Builder = Callable[[str], Built]

ALIASES = versions(lambda r: r.aliases_rule)
NO_ALIASES = versions(lambda r: not r.aliases_rule)
REDACTION_RULE = versions(lambda r: r.redaction_auth_rule)
NO_REDACTION_RULE = versions(lambda r: not r.redaction_auth_rule)


def send(
    sender: str,
    event_type: str,
    content: dict[str, Any] | None = None,
    *,
    state_key: str | None = None,
    members: tuple[str, ...] = (BOB,),
    users: dict[str, int] | None = None,
    pl_extra: dict[str, Any] | None = None,
    create_content: dict[str, Any] | None = None,
) -> Builder:
    def build(v: str) -> Built:
        b = make_room(v, members=members, users=users, create_content=create_content)
        if pl_extra:
            pl = dict(b.events[b.state[("m.room.power_levels", "")]].content)
            b.send("m.room.power_levels", ALICE, {**pl, **pl_extra}, state_key="")
        return b, candidate(b, event_type, sender, content or {}, state_key=state_key)

    return build


def federate_join(user: str, federate: object) -> Builder:
    def build(v: str) -> Built:
        b = make_room(v, create_content={"m.federate": federate})
        return b, candidate(b, "m.room.member", user, {"membership": "join"}, state_key=user)

    return build


def redaction(sender: str, target_sender: str) -> Builder:
    def build(v: str) -> Built:
        b = make_room(v, members=(BOB, DAVE))
        target = b.message(target_sender)
        if b.rules.redacts_in_content:
            return b, candidate(b, "m.room.redaction", sender, {"redacts": target.event_id})
        return b, candidate(b, "m.room.redaction", sender, {}, extra={"redacts": target.event_id})

    return build


NOT_FEDERATED = [
    Case("federate-false-other-server", ALL_VERSIONS, federate_join(DAVE, False), "federate"),
    Case("federate-false-same-server", ALL_VERSIONS, federate_join(CAROL, False), None),
    Case("federate-true", ALL_VERSIONS, federate_join(DAVE, True), None),
    Case("federate-not-a-bool", ALL_VERSIONS, federate_join(DAVE, "false"), None),
    Case(
        "federate-false-message-other-server",
        ALL_VERSIONS,
        send(
            DAVE,
            "m.room.message",
            {"body": "x"},
            members=(DAVE,),
            create_content={"m.federate": False},
        ),
        "federate",
    ),
]

ALIAS_CASES = [
    Case(
        "aliases-own-server",
        ALIASES,
        send(BOB, "m.room.aliases", {"aliases": []}, state_key="example.org"),
        None,
    ),
    Case(
        "aliases-by-non-member",
        ALIASES,
        send(DAVE, "m.room.aliases", {"aliases": []}, state_key="other.org"),
        None,
    ),
    Case(
        "aliases-other-server",
        ALIASES,
        send(BOB, "m.room.aliases", {"aliases": []}, state_key="other.org"),
        "aliases.domain",
    ),
    Case(
        "aliases-no-state-key",
        ALIASES,
        send(BOB, "m.room.aliases", {"aliases": []}),
        "aliases.no_state_key",
    ),
    Case(
        "aliases-as-ordinary-state-from-v6",
        NO_ALIASES,
        send(BOB, "m.room.aliases", {"aliases": []}, state_key="example.org"),
        "required_power",
    ),
    Case(
        "aliases-by-non-member-from-v6",
        NO_ALIASES,
        send(DAVE, "m.room.aliases", {"aliases": []}, state_key="other.org"),
        "sender_joined",
    ),
]

GENERIC_CASES = [
    Case("message", ALL_VERSIONS, send(BOB, "m.room.message", {"body": "x"}), None),
    Case("message-by-non-member", ALL_VERSIONS, send(DAVE, "m.room.message"), "sender_joined"),
    Case(
        "message-by-invitee",
        ALL_VERSIONS,
        send(CAROL, "m.room.message", members=()),
        "sender_joined",
    ),
    Case(
        "message-below-events-level",
        ALL_VERSIONS,
        send(BOB, "m.room.message", pl_extra={"events": {"m.room.message": 10}}),
        "required_power",
    ),
    Case(
        "message-below-events-default",
        ALL_VERSIONS,
        send(BOB, "m.room.message", pl_extra={"events_default": 1}),
        "required_power",
    ),
    Case(
        "topic-below-state-default",
        ALL_VERSIONS,
        send(BOB, "m.room.topic", state_key=""),
        "required_power",
    ),
    Case("topic-by-admin", ALL_VERSIONS, send(ALICE, "m.room.topic", state_key=""), None),
    Case(
        "topic-lowered",
        ALL_VERSIONS,
        send(BOB, "m.room.topic", state_key="", pl_extra={"events": {"m.room.topic": 0}}),
        None,
    ),
    Case(
        "string-levels-read",
        versions(lambda r: r.string_power_levels),
        send(BOB, "m.room.topic", state_key="", users={BOB: "75"}),  # type: ignore[dict-item]
        None,
    ),
    Case(
        "state-key-other-user",
        ALL_VERSIONS,
        send(ALICE, "m.custom", state_key=BOB),
        "state_key_user",
    ),
    Case("state-key-own-user", ALL_VERSIONS, send(ALICE, "m.custom", state_key=ALICE), None),
    Case(
        "state-key-own-user-below-level",
        ALL_VERSIONS,
        send(BOB, "m.custom", state_key=BOB),
        "required_power",
    ),
    Case(
        "third-party-invite-event",
        ALL_VERSIONS,
        send(BOB, "m.room.third_party_invite", {"public_key": "x"}, state_key="tok"),
        None,
    ),
    Case(
        "third-party-invite-event-below-invite-level",
        ALL_VERSIONS,
        send(BOB, "m.room.third_party_invite", state_key="tok", pl_extra={"invite": 50}),
        "third_party_invite",
    ),
    Case(
        "third-party-invite-event-by-non-member",
        ALL_VERSIONS,
        send(DAVE, "m.room.third_party_invite", state_key="tok"),
        "sender_joined",
    ),
    Case("redaction-same-server", ALL_VERSIONS, redaction(BOB, CAROL), None),
    Case("redaction-by-admin", ALL_VERSIONS, redaction(ALICE, DAVE), None),
    Case("redaction-other-server", REDACTION_RULE, redaction(BOB, DAVE), "redaction.otherwise"),
    Case("redaction-other-server-deferred", NO_REDACTION_RULE, redaction(BOB, DAVE), None),
]


@pytest.mark.parametrize(("case", "version"), case_params(NOT_FEDERATED))
def test_federate(case: Case, version: str) -> None:
    run_case(case, version)


@pytest.mark.parametrize(("case", "version"), case_params(ALIAS_CASES))
def test_aliases(case: Case, version: str) -> None:
    run_case(case, version)


@pytest.mark.parametrize(("case", "version"), case_params(GENERIC_CASES))
def test_generic_rules(case: Case, version: str) -> None:
    run_case(case, version)
