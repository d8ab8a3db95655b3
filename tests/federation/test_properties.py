"""Invariants: parsers raise their one error type, orderings ignore input order."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from roomserver.core.acl import server_allowed
from roomserver.federation.ordering import topological_order
from roomserver.federation.xmatrix import parse_authorization
from roomserver.testing.builder import RoomBuilder

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_any_authorization_header_parses_or_raises_value_error(header: str) -> None:
    try:
        auth = parse_authorization("X-Matrix " + header)
    except ValueError:
        return
    assert isinstance(auth.origin, str) and isinstance(auth.signature, str)


@given(
    st.text(max_size=30),
    st.none()
    | st.dictionaries(st.sampled_from(["allow", "deny", "allow_ip_literals"]), json_values),
)
@settings(max_examples=300)
def test_any_acl_content_gives_a_boolean(server: str, acl: dict[str, Any] | None) -> None:
    assert server_allowed(server, acl) in (True, False)


def test_topological_order_ignores_input_order() -> None:
    builder = RoomBuilder("10")
    builder.create_room("@alice:example.org")
    base = builder.latest[0]
    for branch in range(3):  # three forks from one event, merged at the end
        builder.latest = [base]
        for i in range(4):
            builder.message("@alice:example.org", f"{branch}-{i}")
    builder.send(
        "m.room.message",
        "@alice:example.org",
        {"body": "merge"},
        prev_events=sorted(
            e.event_id for e in builder.events.values() if e.content.get("body", "").endswith("-3")
        ),
    )
    events = list(builder.events.values())
    expected = topological_order(events, lambda e: e.prev_event_ids)
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(events)
        assert topological_order(events, lambda e: e.prev_event_ids) == expected
    position = {e.event_id: i for i, e in enumerate(expected)}
    assert all(position[p] < position[e.event_id] for e in expected for p in e.prev_event_ids)
