"""``parse_event``: one case per event format rule (matrix-spec-notes §12), per room version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from roomserver.core.canonical_json import canonical_json
from roomserver.core.errors import InvalidEvent, UnknownRoomVersion
from roomserver.core.hashes import compute_content_hash, compute_event_id
from roomserver.core.pdu import MAX_PDU_BYTES, parse_event
from roomserver.core.room_versions import room_version
from tests.core.helpers import V12_ROOM_ID, edges, event_ref, room_id_for, valid_pdu

ALL = [str(n) for n in range(1, 13)]
LAX = [str(n) for n in range(1, 6)]  # no strict canonical JSON
STRICT = [str(n) for n in range(6, 13)]
SERVER_ASSIGNED = ["1", "2"]
HASHED_IDS = [str(n) for n in range(3, 13)]


def assert_invalid(pdu: Any, version: str, field: str, **kwargs: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        parse_event(pdu, version, **kwargs)
    assert info.value.field == field, info.value.reason
    assert str(info.value).startswith(field), str(info.value)
    return info.value


@pytest.mark.parametrize("version", ALL)
def test_valid_event_parses(version: str) -> None:
    pdu = valid_pdu(version)
    event = parse_event(pdu, version)
    assert event.type == "m.room.message"
    assert event.sender == "@alice:example.org"
    assert event.room_id == room_id_for(version)
    assert event.state_key is None and not event.is_state()
    assert event.content == {"body": "hello", "msgtype": "m.text"}
    assert event.depth == 5 and event.origin_server_ts == 1_700_000_000_000
    assert event.prev_event_ids == (event_ref(version, 100),)
    assert event.auth_event_ids == tuple(event_ref(version, 200 + i) for i in range(3))
    assert event.room_version == version and event.rules is room_version(version)
    assert event.redacts is None
    assert event.pdu == pdu
    assert event.event_id == compute_event_id(pdu, version)


# -- the whole-event size limit --------------------------------------------------------------


def _padded_to(version: str, size: int) -> dict[str, Any]:
    pdu = valid_pdu(version, content={"body": ""})
    base = len(canonical_json(pdu))
    pdu["content"]["body"] = "x" * (size - base)
    assert len(canonical_json(pdu)) == size
    return pdu


@pytest.mark.parametrize("version", ALL)
def test_size_limit_exactly_at_boundary(version: str) -> None:
    parse_event(_padded_to(version, MAX_PDU_BYTES), version)
    error = assert_invalid(_padded_to(version, MAX_PDU_BYTES + 1), version, "event")
    assert "65537 bytes" in error.reason


@pytest.mark.parametrize("version", ALL)
def test_size_limit_counts_signatures_unsigned_and_multibyte(version: str) -> None:
    pdu = _padded_to(version, MAX_PDU_BYTES - 2)
    pdu["content"]["body"] = pdu["content"]["body"][:-1] + "é"  # one more byte
    parse_event(pdu, version)
    pdu["unsigned"] = {"age": 500}  # two more digits: 65,537 bytes
    assert_invalid(pdu, version, "event")


# -- 255-byte fields -------------------------------------------------------------------------

MULTIBYTE_255 = "é" * 127 + "a"  # 255 bytes, 128 characters
MULTIBYTE_256 = "é" * 128  # 256 bytes, 128 characters


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("field", ["type", "state_key"])
def test_type_and_state_key_limits_in_bytes(version: str, field: str) -> None:
    for ok in ("t" * 255, MULTIBYTE_255, "💬" * 63 + "abc"):
        parse_event(valid_pdu(version, **{field: ok}), version)
    for bad in ("t" * 256, MULTIBYTE_256, "💬" * 64):
        assert_invalid(valid_pdu(version, **{field: bad}), version, field)


@pytest.mark.parametrize("version", ALL)
def test_sender_limit_in_bytes(version: str) -> None:
    domain = ":example.org"
    ok = ["@" + "a" * 242 + domain, "@" + "é" * 121 + domain]  # 255 bytes
    bad = ["@" + "a" * 243 + domain, "@" + "é" * 121 + "a" + domain]  # 256 bytes
    for user in ok:
        assert len(user.encode()) == 255
        parse_event(valid_pdu(version, sender=user), version)
    for user in bad:
        assert len(user.encode()) == 256
        assert_invalid(valid_pdu(version, sender=user), version, "sender")


@pytest.mark.parametrize("version", ALL[:11])
def test_room_id_limit_in_bytes(version: str) -> None:
    ok = "!" + "r" * (255 - len("!:example.org")) + ":example.org"
    parse_event(valid_pdu(version, room_id=ok), version)
    bad = "!" + "é" * 122 + ":example.org"  # 123 characters, 257 bytes
    assert_invalid(valid_pdu(version, room_id=bad), version, "room_id")


@pytest.mark.parametrize("version", SERVER_ASSIGNED)
def test_event_id_limit_in_bytes(version: str) -> None:
    ok = "$" + "e" * (255 - len("$:example.org")) + ":example.org"
    parse_event(valid_pdu(version, event_id=ok), version)
    assert_invalid(
        valid_pdu(version, event_id="$" + "é" * 122 + ":example.org"), version, "event_id"
    )


# -- identifier grammars ---------------------------------------------------------------------

GOOD_USERS = [
    "@alice:example.org",
    "@:example.org",  # historical: empty localpart
    "@Alice Smith/ü:example.org",  # historical: any code point but ':' and NUL
    "@a:127.0.0.1",
    "@a:[::1]",
    "@a:[2001:db8::1]:8448",
    "@a:example.org:8448",
    "@a:localhost",
]
BAD_USERS = [
    "alice:example.org",  # no sigil
    "!alice:example.org",
    "@alice",  # no server
    "@alice:",  # empty server
    "@al\x00ice:example.org",  # NUL
    "@a:exa_mple.org",  # '_' not allowed in a DNS name
    "@a:example.org:123456",  # port longer than 5 digits
    "@a:example.org:",  # empty port
    "@a:example.org:80a",
    "@a:[::1",  # unterminated IPv6 literal
    "@a:[::1]x",
    "@a:exämple.org",  # non-ASCII host
]


@pytest.mark.parametrize("version", ALL)
def test_user_id_grammar(version: str) -> None:
    for user in GOOD_USERS:
        assert parse_event(valid_pdu(version, sender=user), version).sender == user
    for user in BAD_USERS:
        assert_invalid(valid_pdu(version, sender=user), version, "sender")


@pytest.mark.parametrize("version", ALL[:11])
def test_room_id_grammar_v1_to_v11(version: str) -> None:
    for good in ("!r:example.org", "!ü 1:example.org:8448", "!:example.org"):
        parse_event(valid_pdu(version, room_id=good), version)
    for bad in ("r:example.org", "!r", "!r:", "$r:example.org", V12_ROOM_ID, 5):
        assert_invalid(valid_pdu(version, room_id=bad), version, "room_id")


def test_room_id_grammar_v12() -> None:
    parse_event(valid_pdu("12", room_id=V12_ROOM_ID), "12")
    for bad in (
        "!r:example.org",
        V12_ROOM_ID[:-1],
        V12_ROOM_ID + "A",
        "!" + "+" * 43,
        "$" + "A" * 43,
    ):
        assert_invalid(valid_pdu("12", room_id=bad), "12", "room_id")


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("key", ["prev_events", "auth_events"])
def test_edge_event_id_grammar(version: str, key: str) -> None:
    fmt = room_version(version).event_id_format.value
    others = {
        "server_assigned": ["$" + "A" * 43, "$" + "a-b_" * 10 + "abc"],
        "base64": ["$e:example.org", "$" + "a-b_" * 10 + "abc", "$" + "A" * 42],
        "url_safe_base64": ["$e:example.org", "$" + "a+b/" * 10 + "abc", "$" + "A" * 44],
    }[fmt]
    for bad in [*others, "e:example.org", 5, None]:
        entry: Any = [bad, {"sha256": "x"}] if fmt == "server_assigned" else bad
        assert_invalid(valid_pdu(version, **{key: [entry]}), version, f"{key}[0]")


@pytest.mark.parametrize("version", SERVER_ASSIGNED)
def test_v1_v2_edges_are_id_hash_pairs(version: str) -> None:
    for bad in (["$e:example.org"], [["$e:example.org"]], [["$e:example.org", "hash"]]):
        assert_invalid(valid_pdu(version, prev_events=bad), version, "prev_events[0]")


@pytest.mark.parametrize("version", HASHED_IDS)
def test_v3_plus_edges_are_plain_ids(version: str) -> None:
    pair = [[event_ref(version), {"sha256": "x"}]]
    assert_invalid(valid_pdu(version, auth_events=pair), version, "auth_events[0]")


# -- required keys and their types -----------------------------------------------------------

REQUIRED = ["type", "sender", "content", "origin_server_ts", "depth", "hashes", "signatures",
            "prev_events", "auth_events", "room_id"]  # fmt: skip


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("key", REQUIRED)
def test_required_keys(version: str, key: str) -> None:
    pdu = valid_pdu(version)
    del pdu[key]
    assert_invalid(pdu, version, key)


def test_event_id_required_only_in_v1_v2() -> None:
    for version in SERVER_ASSIGNED:
        pdu = valid_pdu(version)
        del pdu["event_id"]
        assert_invalid(pdu, version, "event_id")
    for version in HASHED_IDS:
        assert "event_id" not in valid_pdu(version)
        parse_event(valid_pdu(version), version)


WRONG_TYPES: list[tuple[str, Any]] = [
    ("type", 5),
    ("type", None),
    ("sender", ["@a:example.org"]),
    ("content", "text"),
    ("content", ["body"]),
    ("content", None),
    ("origin_server_ts", "1700000000000"),
    ("origin_server_ts", True),
    ("origin_server_ts", 1.5),
    ("depth", "5"),
    ("depth", False),
    ("depth", None),
    ("hashes", "aGFzaA"),
    ("signatures", []),
    ("prev_events", {"$a": 1}),
    ("auth_events", "$a"),
    ("room_id", None),
    ("state_key", None),
    ("state_key", 0),
    ("unsigned", []),
]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(("key", "value"), WRONG_TYPES)
def test_wrong_types(version: str, key: str, value: Any) -> None:
    assert_invalid(valid_pdu(version, **{key: value}), version, key)


@pytest.mark.parametrize("version", ALL)
def test_hashes_need_a_sha256_string(version: str) -> None:
    for bad in ({}, {"sha256": 5}, {"sha256": None}, {"sha512": "aGFzaA"}):
        assert_invalid(valid_pdu(version, hashes=bad), version, "hashes.sha256")
    parse_event(valid_pdu(version, hashes={"sha256": "aGFzaA", "other": 1}), version)


@pytest.mark.parametrize("version", ALL)
def test_signatures_must_map_key_ids_to_strings(version: str) -> None:
    for bad in ({"example.org": "sig"}, {"example.org": {"ed25519:a": 5}}):
        assert_invalid(valid_pdu(version, signatures=bad), version, "signatures.example.org")
    parse_event(valid_pdu(version, signatures={}), version)  # emptiness is verify_event's job


@pytest.mark.parametrize("version", ALL)
def test_state_events(version: str) -> None:
    event = parse_event(valid_pdu(version, type="m.room.name", state_key=""), version)
    assert event.is_state() and event.state_tuple == ("m.room.name", "")
    member = valid_pdu(
        version, type="m.room.member", state_key="@bob:example.org", content={"membership": "join"}
    )
    assert parse_event(member, version).membership == "join"


# -- edge counts -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_prev_events_at_most_20(version: str) -> None:
    parse_event(valid_pdu(version, prev_events=edges(version, 20)), version)
    assert_invalid(valid_pdu(version, prev_events=edges(version, 21)), version, "prev_events")
    event = parse_event(
        valid_pdu(version, prev_events=edges(version, 21)), version, check_edge_counts=False
    )
    assert len(event.prev_event_ids) == 21


@pytest.mark.parametrize("version", ALL)
def test_auth_events_at_most_10(version: str) -> None:
    parse_event(valid_pdu(version, auth_events=edges(version, 10)), version)
    assert_invalid(valid_pdu(version, auth_events=edges(version, 11)), version, "auth_events")
    event = parse_event(
        valid_pdu(version, auth_events=edges(version, 11)), version, check_edge_counts=False
    )
    assert len(event.auth_event_ids) == 11


@pytest.mark.parametrize("version", ALL)
def test_repeated_edges(version: str) -> None:
    twice = edges(version, 2) + edges(version, 1)
    event = parse_event(valid_pdu(version, prev_events=twice, auth_events=twice), version)
    # A repeated prev event is one DAG edge; repeated auth events are for the auth rules.
    assert event.prev_event_ids == (event_ref(version, 0), event_ref(version, 1))
    assert event.auth_event_ids == (
        event_ref(version, 0),
        event_ref(version, 1),
        event_ref(version, 0),
    )


# -- integer bounds --------------------------------------------------------------------------


@pytest.mark.parametrize("version", LAX)
def test_depth_bounds_v1_to_v5(version: str) -> None:
    for ok in (0, 1, 2**53, 2**63 - 1):
        assert parse_event(valid_pdu(version, depth=ok), version).depth == ok
    for bad in (-1, 2**63):
        assert_invalid(valid_pdu(version, depth=bad), version, "depth")


@pytest.mark.parametrize("version", STRICT)
def test_depth_bounds_v6_plus(version: str) -> None:
    for ok in (0, 1, 2**53 - 1):
        assert parse_event(valid_pdu(version, depth=ok), version).depth == ok
    for bad in (-1, 2**53, 2**63 - 1):
        assert_invalid(valid_pdu(version, depth=bad), version, "depth")


@pytest.mark.parametrize("version", ALL)
def test_origin_server_ts_bounds(version: str) -> None:
    strict = room_version(version).strict_canonical_json
    high = 2**53 - 1 if strict else 2**63 - 1
    assert parse_event(valid_pdu(version, origin_server_ts=high), version).origin_server_ts == high
    assert_invalid(valid_pdu(version, origin_server_ts=high + 1), version, "origin_server_ts")


@pytest.mark.parametrize("version", ALL)
def test_strict_canonical_json_in_content(version: str) -> None:
    strict = room_version(version).strict_canonical_json
    cases: list[tuple[dict[str, Any], str]] = [
        ({"n": 1.5}, "content.n"),
        ({"n": 2**53}, "content.n"),
        ({"n": -(2**53)}, "content.n"),
        ({"deep": [{"n": 0.25}]}, "content.deep[0].n"),
    ]
    for odd, field in cases:
        pdu = valid_pdu(version, content=odd)
        if strict:
            assert_invalid(pdu, version, field)
        else:
            assert parse_event(pdu, version).content == odd
    # Integral floats too: from v6 other servers refuse every float, and a hash must not depend
    # on how 2.0 is written.
    integral = valid_pdu(version, content={"n": 2.0, "m": 1e10})
    if strict:
        assert_invalid(integral, version, "content.n")
    else:
        assert parse_event(integral, version).content == {"n": 2.0, "m": 1e10}


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"n": float("nan")}, "content.n"),
        ({"n": float("inf")}, "content.n"),
        ({"s": "\ud800"}, "content.s"),
        ({"\udfff": "key"}, "content"),
        ({5: "non-string key"}, "content"),
        ({"b": b"bytes"}, "content.b"),
    ],
)
def test_values_that_are_not_json(version: str, content: Any, field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(valid_pdu(version, content=content), version)
    assert info.value.field == field, info.value.reason


@pytest.mark.parametrize("version", ALL)
def test_deep_nesting_is_invalid_not_a_crash(version: str) -> None:
    deep: Any = "x"
    for _ in range(5_000):
        deep = [deep]
    pdu = valid_pdu(version)
    pdu["content"] = {"d": deep}
    with pytest.raises(InvalidEvent) as info:
        parse_event(pdu, version)
    assert (info.value.field or "").startswith("content.d[0][0]")
    assert "nested deeper than 512 levels" in info.value.reason


# -- room version 12 create events and room IDs ----------------------------------------------


def _v12_create(**overrides: Any) -> dict[str, Any]:
    pdu = valid_pdu(
        "12",
        type="m.room.create",
        state_key="",
        content={"room_version": "12"},
        prev_events=[],
        auth_events=[],
        depth=1,
    )
    del pdu["room_id"]
    pdu.update(overrides)
    return pdu


def test_v12_create_without_room_id() -> None:
    event = parse_event(_v12_create(), "12")
    assert event.room_id == "!" + event.event_id[1:]
    assert event.type == "m.room.create" and event.state_key == ""


def test_v12_create_with_room_id_is_left_to_the_auth_rules() -> None:
    # Authorization rule 1.2 rejects it; it is well-formed, so parsing accepts it.
    event = parse_event(_v12_create(room_id=V12_ROOM_ID), "12")
    assert event.room_id == "!" + event.event_id[1:]
    assert event.pdu["room_id"] == V12_ROOM_ID


def test_v12_other_events_need_a_room_id() -> None:
    pdu = _v12_create(state_key="not-empty")
    assert_invalid(pdu, "12", "room_id")
    no_state_key = _v12_create()
    del no_state_key["state_key"]
    assert_invalid(no_state_key, "12", "room_id")


@pytest.mark.parametrize("version", ALL[:11])
def test_create_needs_room_id_before_v12(version: str) -> None:
    pdu = valid_pdu(version, type="m.room.create", state_key="", content={})
    del pdu["room_id"]
    assert_invalid(pdu, version, "room_id")


# -- event IDs: stray, trusted ---------------------------------------------------------------


@pytest.mark.parametrize("version", HASHED_IDS)
def test_v3_plus_stray_event_id_ignored(version: str) -> None:
    pdu = valid_pdu(version, event_id="$not-even-valid")
    event = parse_event(pdu, version)
    assert "event_id" not in event.pdu
    assert event.event_id == compute_event_id(valid_pdu(version), version)


@pytest.mark.parametrize("version", ALL)
def test_trusted_event_id(version: str) -> None:
    given = event_ref(version, 999)
    assert parse_event(valid_pdu(version), version, event_id=given).event_id == given
    assert_invalid(valid_pdu(version), version, "event_id", event_id="$wrong-shape:x:y:z!")


# -- redactions ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_redacts(version: str) -> None:
    rules = room_version(version)
    target = event_ref(version, 7)
    in_content = rules.redacts_in_content
    pdu = valid_pdu(
        version, type="m.room.redaction", content={"redacts": target} if in_content else {}
    )
    if not in_content:
        pdu["redacts"] = target
    assert parse_event(pdu, version).redacts == target
    # The other place does not count: the target is missing (tests/core/test_edge_cases.py).
    other = valid_pdu(
        version, type="m.room.redaction", content={} if in_content else {"redacts": target}
    )
    if in_content:
        other["redacts"] = target
    other["hashes"] = {"sha256": compute_content_hash(other)}
    assert_invalid(other, version, "content.redacts" if in_content else "redacts")
    # A malformed target makes the event invalid.
    field = "content.redacts" if in_content else "redacts"
    bad = valid_pdu(version, type="m.room.redaction", content={"redacts": 5} if in_content else {})
    if not in_content:
        bad["redacts"] = "not-an-id"
    assert_invalid(bad, version, field)
    # Non-redaction events ignore it.
    assert parse_event(valid_pdu(version, redacts="junk"), version).redacts is None


# -- anything else ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, [], "event", 5, 1.5, True, [("type", "x")]])
def test_non_objects_are_invalid(value: Any) -> None:
    for version in ALL:
        assert_invalid(value, version, "event")


@pytest.mark.parametrize("version", ["0", "13", "", "1.0", "org.example.x", None, 1, ["1"]])
def test_unknown_room_version(version: Any) -> None:
    with pytest.raises(UnknownRoomVersion):
        parse_event(valid_pdu("10"), version)


def test_event_is_immutable_and_compared_by_id() -> None:
    a = parse_event(valid_pdu("10"), "10")
    b = parse_event(valid_pdu("10"), "10")
    c = parse_event(valid_pdu("10", depth=6), "10")
    assert a == b and hash(a) == hash(b) and a != c
    mutate: list[Callable[[], object]] = [
        lambda: setattr(a, "depth", 1),
        lambda: delattr(a, "sender"),
        lambda: setattr(a, "extra", 1),
    ]
    for attempt in mutate:
        with pytest.raises(AttributeError):
            attempt()


def test_mapping_input_that_is_not_a_dict() -> None:
    from types import MappingProxyType

    source = valid_pdu("10")
    event = parse_event(MappingProxyType(source), "10")
    # Kept as a plain dict with the same content (storage and the wire codec encode it).
    assert type(event.pdu) is dict and event.pdu == source
    assert event.event_id == parse_event(source, "10").event_id
