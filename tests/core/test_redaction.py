"""Redaction, table-driven: every room version x every event type of the spec's table.

The expected tables are written out here from the spec (matrix-spec-notes §10), independently
of ``roomserver.core.redaction``'s own tables.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from roomserver.core.redaction import redact, redacted_view
from roomserver.core.room_versions import room_version

# Room version -> redaction algorithm, per the spec's version table.
ALGORITHM = {
    "1": "R1", "2": "R1", "3": "R1", "4": "R1", "5": "R1", "6": "R6", "7": "R6", "8": "R8",
    "9": "R9", "10": "R9", "11": "R11", "12": "R11",
}  # fmt: skip

TOP_LEVEL_PRE_R11 = {
    "event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures",
    "depth", "prev_events", "prev_state", "auth_events", "origin", "origin_server_ts",
    "membership",
}  # fmt: skip
TOP_LEVEL = {
    "R1": TOP_LEVEL_PRE_R11,
    "R6": TOP_LEVEL_PRE_R11,
    "R8": TOP_LEVEL_PRE_R11,
    "R9": TOP_LEVEL_PRE_R11,
    "R11": TOP_LEVEL_PRE_R11 - {"origin", "membership", "prev_state"},
}

PL_KEYS = {"ban", "events", "events_default", "kick", "redact", "state_default", "users",
           "users_default"}  # fmt: skip
ALL = "all"

# event type -> algorithm -> content keys kept
CONTENT_KEPT: dict[str, dict[str, Any]] = {
    "m.room.member": {
        "R1": {"membership"},
        "R6": {"membership"},
        "R8": {"membership"},
        "R9": {"membership", "join_authorised_via_users_server"},
        "R11": {"membership", "join_authorised_via_users_server", "third_party_invite"},
    },
    "m.room.create": {
        "R1": {"creator"},
        "R6": {"creator"},
        "R8": {"creator"},
        "R9": {"creator"},
        "R11": ALL,
    },
    "m.room.join_rules": {
        "R1": {"join_rule"},
        "R6": {"join_rule"},
        "R8": {"join_rule", "allow"},
        "R9": {"join_rule", "allow"},
        "R11": {"join_rule", "allow"},
    },
    "m.room.power_levels": {
        "R1": PL_KEYS,
        "R6": PL_KEYS,
        "R8": PL_KEYS,
        "R9": PL_KEYS,
        "R11": PL_KEYS | {"invite"},
    },
    "m.room.aliases": {"R1": {"aliases"}, "R6": set(), "R8": set(), "R9": set(), "R11": set()},
    "m.room.history_visibility": {alg: {"history_visibility"} for alg in TOP_LEVEL},
    "m.room.redaction": {"R1": set(), "R6": set(), "R8": set(), "R9": set(), "R11": {"redacts"}},
    # Types the table does not list keep no content at all.
    "m.room.message": {alg: set() for alg in TOP_LEVEL},
    "m.room.third_party_invite": {alg: set() for alg in TOP_LEVEL},
    "m.room.name": {alg: set() for alg in TOP_LEVEL},
    "m.room.server_acl": {alg: set() for alg in TOP_LEVEL},
    "m.room.tombstone": {alg: set() for alg in TOP_LEVEL},
    "m.room.encryption": {alg: set() for alg in TOP_LEVEL},
    "org.example.custom": {alg: set() for alg in TOP_LEVEL},
}

# Content with every key any algorithm might keep, plus keys no algorithm keeps.
FULL_CONTENT: dict[str, Any] = {
    "membership": "join",
    "join_authorised_via_users_server": "@auth:example.org",
    "third_party_invite": {"display_name": "Bob", "signed": {"mxid": "@b:x", "token": "t"}},
    "displayname": "Alice",
    "avatar_url": "mxc://x/y",
    "reason": "because",
    "creator": "@alice:example.org",
    "room_version": "9",
    "m.federate": False,
    "predecessor": {"room_id": "!old:example.org"},
    "type": "m.space",
    "additional_creators": ["@bob:example.org"],
    "join_rule": "restricted",
    "allow": [{"type": "m.room_membership", "room_id": "!a:example.org"}],
    "ban": 50, "events": {"m.room.name": 50}, "events_default": 0, "kick": 50, "redact": 50,
    "state_default": 50, "users": {"@alice:example.org": 100}, "users_default": 0,
    "invite": 0, "notifications": {"room": 50},
    "aliases": ["#a:example.org"],
    "history_visibility": "shared",
    "redacts": "$target",
    "body": "hello",
    "name": "Room",
    "alias": "#a:example.org",
}  # fmt: skip

TOP_LEVEL_EXTRAS = {
    "event_id": "$e:example.org", "room_id": "!r:example.org", "sender": "@a:example.org",
    "state_key": "", "hashes": {"sha256": "aGFzaA"}, "signatures": {"example.org": {}},
    "depth": 3, "prev_events": [], "prev_state": [], "auth_events": [], "origin": "example.org",
    "origin_server_ts": 7, "membership": "join", "unsigned": {"age": 1}, "redacts": "$t",
    "age_ts": 4, "custom_top_level": {"x": 1}, "user_id": "@a:example.org",
}  # fmt: skip

CASES = [(version, event_type) for version in ALGORITHM for event_type in CONTENT_KEPT]


def _event(event_type: str) -> dict[str, Any]:
    return {"type": event_type, "content": copy.deepcopy(FULL_CONTENT), **TOP_LEVEL_EXTRAS}


@pytest.mark.parametrize(("version", "event_type"), CASES)
def test_redaction_table(version: str, event_type: str) -> None:
    algorithm = ALGORITHM[version]
    pdu = _event(event_type)
    before = copy.deepcopy(pdu)
    redacted = redact(pdu, version)
    assert pdu == before  # the input is untouched

    assert set(redacted) == TOP_LEVEL[algorithm] | {"type"}
    for key in redacted:
        if key != "content":
            assert redacted[key] == pdu[key]

    kept = CONTENT_KEPT[event_type][algorithm]
    if kept == ALL:
        assert redacted["content"] == FULL_CONTENT
        return
    expected = {k: FULL_CONTENT[k] for k in kept}
    if "third_party_invite" in kept:
        expected["third_party_invite"] = {"signed": FULL_CONTENT["third_party_invite"]["signed"]}
    assert redacted["content"] == expected


@pytest.mark.parametrize("version", list(ALGORITHM))
def test_redaction_is_idempotent_and_view_matches(version: str) -> None:
    rules = room_version(version)
    for event_type in CONTENT_KEPT:
        once = redact(_event(event_type), version)
        assert redact(once, version) == once
        assert redacted_view(_event(event_type), rules) == once


@pytest.mark.parametrize("version", list(ALGORITHM))
def test_redact_returns_an_independent_copy(version: str) -> None:
    pdu = _event("m.room.power_levels")
    redacted = redact(pdu, version)
    redacted["content"]["users"]["@mallory:example.org"] = 100
    redacted["hashes"]["sha256"] = "changed"
    assert "@mallory:example.org" not in pdu["content"]["users"]
    assert pdu["hashes"]["sha256"] == "aGFzaA"


@pytest.mark.parametrize(
    ("third_party_invite", "expected"),
    [
        ({"display_name": "B", "signed": {"token": "t"}}, {"signed": {"token": "t"}}),
        ({"display_name": "B"}, {}),  # no signed key: an empty object, as Synapse and ruma
        ({}, {}),
        ("not an object", None),  # not an object: dropped, as Synapse
        (None, None),
        (["signed"], None),
        ({"signed": "odd but kept"}, {"signed": "odd but kept"}),
    ],
)
def test_r11_third_party_invite_keeps_only_signed(third_party_invite: Any, expected: Any) -> None:
    pdu = {
        "type": "m.room.member",
        "content": {"membership": "invite", "third_party_invite": third_party_invite},
    }
    for version in ("11", "12"):
        content = redact(pdu, version)["content"]
        assert content.get("third_party_invite") == expected
        assert content["membership"] == "invite"
    for version in ("1", "9", "10"):
        assert redact(pdu, version)["content"] == {"membership": "invite"}


@pytest.mark.parametrize("version", list(ALGORITHM))
@pytest.mark.parametrize("content", ["text", 5, None, ["membership"]])
def test_non_object_content_becomes_empty(version: str, content: Any) -> None:
    pdu = {"type": "m.room.member", "content": content, "sender": "@a:b"}
    assert redact(pdu, version) == {"type": "m.room.member", "content": {}, "sender": "@a:b"}


@pytest.mark.parametrize("version", list(ALGORITHM))
def test_redacts_survives_only_in_r11_content(version: str) -> None:
    pdu = {"type": "m.room.redaction", "redacts": "$top", "content": {"redacts": "$in"}}
    redacted = redact(pdu, version)
    assert "redacts" not in redacted  # never kept at top level
    expected = {"redacts": "$in"} if ALGORITHM[version] == "R11" else {}
    assert redacted["content"] == expected
