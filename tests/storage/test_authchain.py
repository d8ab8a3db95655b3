"""Contract: the auth chain index agrees with walking the DAG (both backends, Hypothesis)."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomserver.core.pdu import Event
from roomserver.ports import EventStatus, EventWrite
from roomserver.storage import SqlStorage
from roomserver.testing.builder import RoomBuilder
from tests.storage.helpers import make_event

_rooms = itertools.count()
KINDS = [
    ("m.room.create", ""),
    ("m.room.power_levels", ""),
    ("m.room.join_rules", ""),
    ("m.room.member", "@a:x.org"),
    ("m.room.member", "@b:x.org"),
    ("m.room.member", "@c:x.org"),
    ("m.room.message", None),
]


def brute_force_chain(events: Mapping[str, Event], start: Collection[str]) -> set[str]:
    seen: set[str] = set()
    todo = [a for e in start if e in events for a in events[e].auth_event_ids]
    while todo:
        current = todo.pop()
        if current in seen or current not in events:
            continue
        seen.add(current)
        todo.extend(events[current].auth_event_ids)
    return seen


def brute_force_difference(
    events: Mapping[str, Event], sets: Sequence[Collection[str]]
) -> set[str]:
    chains = [brute_force_chain(events, s) for s in sets]
    common = set(chains[0]).intersection(*chains[1:])
    return set().union(*chains) - common


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[tuple[int, list[int]]], list[list[int]]]:
    """Events as (kind, auth event indices), and state sets as index lists."""
    n = draw(st.integers(2, 28))
    nodes: list[tuple[int, list[int]]] = []
    for i in range(n):
        kind = draw(st.integers(0, len(KINDS) - 1))
        earlier = [j for j in range(i) if KINDS[nodes[j][0]][1] is not None]
        auth = draw(st.lists(st.sampled_from(earlier), max_size=4, unique=True)) if earlier else []
        nodes.append((kind, auth))
    sets = draw(st.lists(st.lists(st.integers(0, n - 1), max_size=6), min_size=1, max_size=4))
    return nodes, sets


async def _store_dag(
    store: SqlStorage, nodes: list[tuple[int, list[int]]]
) -> tuple[dict[str, Event], list[str]]:
    room_id = f"!dag{next(_rooms)}:x.org"
    ids: list[str] = []
    events: dict[str, Event] = {}
    for i, (kind, auth) in enumerate(nodes):
        event_type, state_key = KINDS[kind]
        event = make_event(
            room_id,
            f"e{i}",
            event_type=event_type,
            state_key=state_key,
            auth=[ids[a] for a in auth],
        )
        await store.persist(EventWrite(event=event, status=EventStatus.OUTLIER))
        ids.append(event.event_id)
        events[event.event_id] = event
    return events, ids


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(dag=dags())
async def test_auth_chain_and_difference_agree_with_brute_force(
    store: SqlStorage, dag: tuple[list[tuple[int, list[int]]], list[list[int]]]
) -> None:
    nodes, set_indices = dag
    events, ids = await _store_dag(store, nodes)
    for event_id in ids:
        assert await store.auth_chain([event_id]) == brute_force_chain(events, [event_id])
    sets = [[ids[i] for i in s] for s in set_indices]
    assert await store.auth_chain(sets[0]) == brute_force_chain(events, sets[0])
    assert await store.auth_chain_difference(sets) == brute_force_difference(events, sets)


async def test_auth_chain_of_a_signed_room(store: SqlStorage) -> None:
    builder = RoomBuilder("10")
    builder.create_room("@alice:example.org")
    for i in range(30):
        builder.join(f"@user{i}:example.org")
        if i % 5 == 0:
            builder.send(
                "m.room.power_levels",
                "@alice:example.org",
                {"users": {"@alice:example.org": 100, f"@user{i}:example.org": 50}},
                state_key="",
            )
        builder.message(f"@user{i}:example.org")
    for event in builder.events.values():
        await store.persist(EventWrite(event=event, status=EventStatus.OUTLIER))
    for event_id in builder.events:
        assert await store.auth_chain([event_id]) == brute_force_chain(builder.events, [event_id])
    members = [e for e in builder.events.values() if e.type == "m.room.member"]
    sets = [[m.event_id for m in members[:10]], [m.event_id for m in members[5:25]]]
    assert await store.auth_chain_difference(sets) == brute_force_difference(builder.events, sets)
    assert await store.auth_chain_difference([]) == set()
    assert await store.auth_chain(["$unknown"]) == set()
