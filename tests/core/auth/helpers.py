"""Shared builders and assertions for the authorization rule tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from roomserver.core.auth import (
    CREATE_KEY,
    check_auth_events,
    check_auth_rules,
    rule_numbers,
    select_auth_events,
)
from roomserver.core.errors import Rejected
from roomserver.core.pdu import Event, parse_event
from roomserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, room_version
from roomserver.core.signatures import sign_event
from roomserver.testing.builder import RoomBuilder

ALL_VERSIONS: tuple[str, ...] = tuple(KNOWN_ROOM_VERSIONS)

ALICE = "@alice:example.org"  # creates every room
BOB = "@bob:example.org"
CAROL = "@carol:example.org"
DAVE = "@dave:other.org"
EVE = "@eve:evil.example"


def versions(predicate: Callable[[RoomVersion], bool]) -> tuple[str, ...]:
    """The room versions whose rules satisfy ``predicate``."""
    return tuple(v for v in ALL_VERSIONS if predicate(room_version(v)))


def default_power_levels(version: str, users: Mapping[str, Any] | None = None) -> dict[str, Any]:
    base_users: dict[str, Any] = {} if room_version(version).privileged_creators else {ALICE: 100}
    base_users.update(users or {})
    return {
        "users": base_users,
        "users_default": 0,
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "events": {},
    }


def make_room(
    version: str,
    *,
    join_rule: str = "public",
    users: Mapping[str, Any] | None = None,
    power_levels: Mapping[str, Any] | None = None,
    members: Iterable[str] = (BOB,),
    create_content: Mapping[str, Any] | None = None,
    room_id: str | None = None,
) -> RoomBuilder:
    """A room created by ALICE (PL 100, or creator in v12) with ``members`` joined."""
    b = RoomBuilder(version, room_id=room_id)
    pl = dict(power_levels) if power_levels is not None else default_power_levels(version, users)
    b.create_room(ALICE, join_rule=join_rule, power_levels=pl, extra_create_content=create_content)
    for user in members:
        b.join(user)
    return b


def create_event(b: RoomBuilder) -> Event:
    return b.events[b.state[CREATE_KEY]]


def candidate(
    b: RoomBuilder,
    event_type: str,
    sender: str,
    content: Mapping[str, Any],
    *,
    state_key: str | None = None,
    **kwargs: Any,
) -> Event:
    """A signed event built on the room's current state, not added to it."""
    pdu = b.make_pdu(event_type, sender, content, state_key=state_key, **kwargs)
    return parse_event(pdu, b.version)


def member(
    b: RoomBuilder,
    sender: str,
    target: str,
    membership: str,
    *,
    prev_events: Sequence[str] | None = None,
    **content: Any,
) -> Event:
    return candidate(
        b,
        "m.room.member",
        sender,
        {"membership": membership, **content},
        state_key=target,
        prev_events=prev_events,
    )


def raw_event(
    b: RoomBuilder,
    event_type: str,
    sender: str,
    content: Mapping[str, Any],
    *,
    state_key: str | None = None,
    pdu_extra: Mapping[str, Any] | None = None,
) -> Event:
    """An event with arbitrary ``content`` (floats, huge numbers...), unsigned and unparsed."""
    shape_content: dict[str, Any] = {}
    shape_extra: dict[str, Any] = {}
    if event_type == "m.room.redaction":  # a redaction must name a target to parse
        target = b.latest[0]
        if b.rules.redacts_in_content:
            shape_content["redacts"] = target
        else:
            shape_extra["extra"] = {"redacts": target}
    shape = candidate(b, event_type, sender, shape_content, state_key=state_key, **shape_extra)
    pdu = {**shape.pdu, "content": content, **(pdu_extra or {})}
    return Event(
        event_id=shape.event_id,
        room_id=shape.room_id,
        type=event_type,
        state_key=state_key,
        sender=sender,
        content=content,
        prev_event_ids=shape.prev_event_ids,
        auth_event_ids=shape.auth_event_ids,
        depth=shape.depth,
        origin_server_ts=shape.origin_server_ts,
        rules=shape.rules,
        redacts=shape.redacts,
        pdu=pdu,
    )


def cosign(b: RoomBuilder, event: Event, server: str) -> Event:
    """``event`` with a signature of ``server`` added (e.g. a restricted join's authoriser)."""
    key_id, key = b.key_for(server)
    signed = sign_event(
        event.pdu, server_name=server, signing_key=key, key_id=key_id, room_version=b.version
    )
    signatures = {**event.pdu["signatures"], server: signed["signatures"][server]}
    pdu = {**event.pdu, "signatures": signatures}
    return parse_event(pdu, b.version, event_id=event.event_id)


def cited_auth_events(b: RoomBuilder, event: Event) -> list[Event]:
    """The event's cited auth events, plus the create event in room version 12."""
    out = [b.events[i] for i in event.auth_event_ids]
    if event.rules.room_id_from_create_event and event.type != "m.room.create":
        out.append(create_event(b))
    return out


def _outcome(check: Callable[[], None]) -> str | None:
    try:
        check()
    except Rejected as exc:
        return exc.reason
    return None


def outcome(b: RoomBuilder, event: Event) -> str | None:
    """Check ``event`` against the room's state and against its own auth events.

    Both must agree; returns ``None`` when allowed, else the rejection message.
    """
    state = b.state_events()
    against_state = _outcome(lambda: check_auth_rules(event, select_auth_events(event, state)))
    against_auth = _outcome(lambda: check_auth_events(event, cited_auth_events(b, event)))
    assert (against_state is None) == (against_auth is None), (against_state, against_auth)
    if against_state is not None and against_auth is not None:
        assert against_state == against_auth
    return against_state


def expect_rule(rules: RoomVersion, message: str | None, rule: str | None) -> None:
    """``rule`` None: allowed. Otherwise the message must cite ``rule``'s number."""
    if rule is None:
        assert message is None, f"expected allowed, got: {message}"
        return
    assert message is not None, f"expected rejection by {rule}, but it was allowed"
    number = rule_numbers(rules)[rule]
    assert message.endswith(f"(rule {number})"), f"expected rule {rule} ({number}): {message}"


@dataclass(frozen=True)
class Case:
    """One row of a rule table: build a room and an event for a version; expect a rule."""

    name: str
    versions: Sequence[str]
    build: Callable[[str], tuple[RoomBuilder, Event]]
    expect: str | None  # None: allowed; else the symbolic rule name (see rule_numbers)


def case_params(cases: Iterable[Case]) -> list[Any]:
    return [pytest.param(c, v, id=f"{c.name}-v{v}") for c in cases for v in c.versions]


def run_case(case: Case, version: str) -> None:
    b, event = case.build(version)
    expect_rule(event.rules, outcome(b, event), case.expect)
