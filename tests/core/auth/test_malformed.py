"""Any content, in the event or in the state it is checked against, is allowed or ``Rejected``:
never another exception (a property test over all room versions)."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomserver.core.auth import check_auth_events, check_auth_rules, select_auth_events
from roomserver.core.errors import Rejected
from roomserver.testing.builder import RoomBuilder
from tests.core.auth.helpers import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CAROL,
    cited_auth_events,
    make_room,
    raw_event,
)

_ROOMS: dict[str, RoomBuilder] = {}


def _room(version: str) -> RoomBuilder:
    if version not in _ROOMS:
        _ROOMS[version] = make_room(version, members=(BOB, CAROL))
    return _ROOMS[version]


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "",
            "50",
            " 7 ",
            "join",
            "invite",
            "leave",
            "ban",
            "knock",
            "public",
            "restricted",
            "knock_restricted",
            ALICE,
            BOB,
            "@x",
            "abc",
        ]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "a",
                    ALICE,
                    BOB,
                    "signed",
                    "mxid",
                    "token",
                    "room",
                    "signatures",
                    "id.example",
                    "ed25519:0",
                ]
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)
KEYS = [
    "membership",
    "join_authorised_via_users_server",
    "third_party_invite",
    "users",
    "users_default",
    "events",
    "events_default",
    "state_default",
    "ban",
    "kick",
    "redact",
    "invite",
    "notifications",
    "join_rule",
    "creator",
    "room_version",
    "additional_creators",
    "m.federate",
    "redacts",
]
contents = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)
TYPES = [
    "m.room.member",
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.create",
    "m.room.third_party_invite",
    "m.room.redaction",
    "m.room.aliases",
    "m.room.message",
]


def _allowed_or_rejected(check: Any) -> None:
    with contextlib.suppress(Rejected):
        check()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(ALL_VERSIONS),
    event_type=st.sampled_from(TYPES),
    sender=st.sampled_from([ALICE, BOB, CAROL, "@dave:other.org"]),
    state_key=st.sampled_from([None, "", BOB, CAROL, "example.org"]),
    content=contents,
    state_content=contents,
    state_type=st.sampled_from(["m.room.power_levels", "m.room.join_rules", "m.room.create"]),
)
def test_any_content_is_allowed_or_rejected(
    version: str,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: dict[str, Any],
    state_content: dict[str, Any],
    state_type: str,
) -> None:
    b = _room(version)
    event = raw_event(b, event_type, sender, content, state_key=state_key)
    _allowed_or_rejected(
        lambda: check_auth_rules(event, select_auth_events(event, b.state_events()))
    )
    _allowed_or_rejected(lambda: check_auth_events(event, cited_auth_events(b, event)))
    # The same event against a state whose power levels / join rules / create are garbage.
    state = dict(b.state_events())
    garbage = raw_event(b, state_type, ALICE, state_content, state_key="")
    state[(state_type, "")] = garbage
    _allowed_or_rejected(lambda: check_auth_rules(event, state))
