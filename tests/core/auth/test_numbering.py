"""Rejection messages cite the rule number the spec gives in the event's own room version."""

from __future__ import annotations

import pytest

from roomserver.core.auth import rule_numbers
from roomserver.core.room_versions import room_version
from tests.core.auth.helpers import ALL_VERSIONS

EXPECTED: dict[str, dict[str, str | None]] = {
    "1": {
        "create.creator": "1.4",
        "auth_events.no_create": "2.4",
        "federate": "3",
        "aliases.domain": "4.2",
        "member.authorising_signature": None,
        "join.banned": "5.2.3",
        "join.otherwise": "5.2.6",
        "invite.power": "5.3.4",
        "leave.self": "5.4.1",
        "ban.power": "5.5.2",
        "knock.join_rule": None,
        "member.unknown": "5.6",
        "sender_joined": "6",
        "third_party_invite": "7",
        "required_power": "8",
        "state_key_user": "9",
        "pl.users": "10.1",
        "pl.no_previous": "10.2",
        "pl.users_new": "10.7",
        "redaction.otherwise": "11.3",
        "otherwise": "12",
    },
    "3": {
        "aliases.domain": "4.2",
        "pl.users_new": "10.7",
        "redaction.otherwise": None,
        "otherwise": "11",
    },
    "6": {
        "aliases.domain": None,
        "join.banned": "4.2.3",
        "member.unknown": "4.6",
        "sender_joined": "5",
        "pl.users_new": "9.7",
        "otherwise": "10",
    },
    "7": {
        "join.invite_rule": "4.2.4",
        "join.public": "4.2.5",
        "leave.self": "4.4.1",
        "knock.join_rule": "4.6.1",
        "knock.membership": "4.6.3",
        "member.unknown": "4.7",
    },
    "8": {
        "member.authorising_signature": "4.2",
        "join.banned": "4.3.3",
        "join.restricted_authoriser": "4.3.5.2",
        "join.public": "4.3.6",
        "invite.third_party.signature": "4.4.1.7",
        "ban.power": "4.6.2",
        "knock.join_rule": "4.7.1",
        "member.unknown": "4.8",
        "pl.users": "9.1",
        "pl.top_level_type": None,
        "pl.users_new": "9.7",
    },
    "10": {
        "create.creator": "1.4",
        "pl.top_level_type": "9.1",
        "pl.maps_type": "9.2",
        "pl.users": "9.3",
        "pl.no_previous": "9.4",
        "pl.top_level_change": "9.5",
        "pl.users_old": "9.8",
        "pl.users_new": "9.9",
        "pl.otherwise": "9.10",
        "otherwise": "10",
    },
    "11": {"create.creator": None, "create.room_version": "1.3", "auth_events.no_create": "2.4"},
    "12": {
        "create.room_id": "1.2",
        "create.additional_creators": "1.4",
        "room_id_is_create": "2",
        "auth_events.duplicate": "3.1",
        "auth_events.same_room": "3.5",
        "auth_events.no_create": None,
        "federate": "4",
        "member.authorising_signature": "5.2",
        "join.banned": "5.3.3",
        "join.restricted_authoriser": "5.3.5.2",
        "invite.third_party.signature": "5.4.1.7",
        "knock.join_rule": "5.7.1",
        "member.unknown": "5.8",
        "sender_joined": "6",
        "pl.creators_in_users": "10.4",
        "pl.no_previous": "10.5",
        "pl.users_new": "10.10",
        "pl.otherwise": "10.11",
        "otherwise": "11",
    },
}


@pytest.mark.parametrize("version", sorted(EXPECTED, key=int))
def test_rule_numbers(version: str) -> None:
    numbers = rule_numbers(room_version(version))
    for rule, expected in EXPECTED[version].items():
        assert numbers.get(rule) == expected, rule


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_numbers_are_unique(version: str) -> None:
    numbers = rule_numbers(room_version(version))
    assert len(set(numbers.values())) == len(numbers)
