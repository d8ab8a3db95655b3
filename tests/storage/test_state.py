"""Contract: state snapshots, state at events, deltas and diffs (both backends)."""

from __future__ import annotations

import itertools
import random

import pytest

from roomserver.ports import EventStatus, EventWrite, SnapshotId, StateDelta, StateKey
from roomserver.storage import SqlStorage, state
from roomserver.storage.cache import Caches, TxCache
from roomserver.storage.engine import Tx
from tests.storage.helpers import LinearRoom, make_event

ROOM = "!state:example.org"


def model_diff(
    old: dict[StateKey, str], new: dict[StateKey, str]
) -> tuple[dict[StateKey, str], dict[StateKey, str]]:
    return (
        {k: v for k, v in new.items() if old.get(k) != v},
        {k: v for k, v in old.items() if new.get(k) != v},
    )


async def test_state_at_every_event_of_a_linear_room(store: SqlStorage) -> None:
    room = LinearRoom(store, ROOM)
    await room.create()
    for i in range(120):
        if i % 7 == 0:
            user = f"@u{i % 21}:example.org"
            membership = "join" if i % 2 else "leave"
            event = room.next_event(
                f"m{i}",
                event_type="m.room.member",
                state_key=user,
                content={"membership": membership},
                sender=user,
            )
        elif i % 11 == 0:
            event = room.next_event(f"topic{i}", event_type="m.room.topic", state_key="")
        else:
            event = room.next_event(f"msg{i}")
        await room.send(event)
    snapshots = {r.state_before for r in room.results.values()}
    # Non-state events share their state-before snapshot with the next event.
    assert len(snapshots) < len(room.results) / 3
    for event_id, result in room.results.items():
        expected = room.state_before[event_id]
        assert await store.state_map(result.state_before) == expected
        stored = (await store.get_events([event_id]))[event_id]
        assert stored.state_snapshot == result.state_before
        keys = [("m.room.topic", ""), ("m.room.member", "@u7:example.org"), ("x.unknown", "")]
        want = {k: expected[k] for k in keys if k in expected}
        assert await store.state_entries(result.state_before, keys) == want
    # Returned states are the caller's to change: the cached state is not affected.
    current = await store.state_map(room.current)
    current.clear()
    assert await store.state_map(room.current) == room.state
    ids = list(room.results)
    rng = random.Random(5)
    for _ in range(60):
        a, b = rng.choice(ids), rng.choice(ids)
        got = await store.state_diff(room.results[a].state_before, room.results[b].state_before)
        assert got == model_diff(room.state_before[a], room.state_before[b])


async def test_empty_delta_reuses_the_snapshot(store: SqlStorage) -> None:
    room = LinearRoom(store, ROOM)
    await room.create()
    base = room.current
    same = make_event(ROOM, "same", depth=50)
    power = room.state[("m.room.power_levels", "")]
    result = await store.persist(
        EventWrite(
            event=same,
            status=EventStatus.STATEFUL,
            state_before=StateDelta(base, {("m.room.power_levels", ""): power}),
        )
    )
    assert result.state_before == base
    removed_nothing = make_event(ROOM, "removes nothing", depth=51)
    result = await store.persist(
        EventWrite(
            event=removed_nothing,
            status=EventStatus.STATEFUL,
            state_before=StateDelta(base, {("x.never", "set"): None}),
        )
    )
    assert result.state_before == base
    empty = make_event(ROOM, "empty", depth=52)
    result = await store.persist(
        EventWrite(event=empty, status=EventStatus.STATEFUL, state_before=StateDelta(None, {}))
    )
    assert result.state_before is None
    assert await store.state_map(None) == {}
    assert await store.state_diff(None, base) == (room.state, {})
    assert await store.state_diff(base, None) == ({}, room.state)


async def test_state_refers_only_to_stored_events(store: SqlStorage) -> None:
    event = make_event(ROOM, "e")
    with pytest.raises(Exception, match="not stored"):
        await store.persist(
            EventWrite(
                event=event,
                status=EventStatus.STATEFUL,
                state_before=StateDelta(None, {("m.room.create", ""): "$nope"}),
            )
        )


@pytest.mark.parametrize("seed", [1, 2])
async def test_snapshot_tree_matches_a_model(store: SqlStorage, seed: int) -> None:
    """Random deltas on random bases (mostly the newest, sometimes forking) agree with dicts."""
    rng = random.Random(seed)
    values = [make_event(ROOM, f"value{i}", event_type="x.v", state_key=str(i)) for i in range(30)]
    for event in values:
        await store.persist(EventWrite(event=event, status=EventStatus.OUTLIER))
    keys: list[StateKey] = [("m.room.member", f"@u{i}:example.org") for i in range(25)]
    keys += [("m.room.topic", ""), ("m.room.name", ""), ("x.a", "1")]
    model: dict[SnapshotId | None, dict[StateKey, str]] = {None: {}}
    order: list[SnapshotId | None] = [None]
    for step in range(260):
        base = order[-1] if rng.random() < 0.85 else rng.choice(order)
        changes: dict[StateKey, str | None] = {}
        for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
            key = rng.choice(keys)
            changes[key] = None if rng.random() < 0.2 else rng.choice(values).event_id
        if step % 97 == 0:
            changes = {k: model[base].get(k) for k in list(changes)[:1]}  # no real change
        result = await store.persist(
            EventWrite(
                event=make_event(ROOM, f"holder{step}", depth=step + 1),
                status=EventStatus.STATEFUL,
                state_before=StateDelta(base, changes),
            )
        )
        expected = dict(model[base])
        for key, value in changes.items():
            if value is None:
                expected.pop(key, None)
            else:
                expected[key] = value
        snapshot = result.state_before
        if expected == model[base]:
            assert snapshot == base
        if snapshot not in model:
            order.append(snapshot)
        model[snapshot] = expected
    # Whole states: newest first from the database alone, then derived from cached parents.
    for snapshots in (reversed(order), order):
        store.clear_caches()
        for snapshot in snapshots:
            assert await store.state_map(snapshot) == model[snapshot]
    store.clear_caches()  # read paths must work from the database alone too
    for snapshot, expected in model.items():
        probe = rng.sample(keys, 5)
        want = {k: expected[k] for k in probe if k in expected}
        assert await store.state_entries(snapshot, probe) == want
    for _ in range(150):
        a, b = rng.choice(order), rng.choice(order)
        assert await store.state_diff(a, b) == model_diff(model[a], model[b])
    for a, b in itertools.pairwise(order):
        assert await store.state_diff(a, b) == model_diff(model[a], model[b])


async def test_diff_reads_only_keys_touched_between_the_snapshots(store: SqlStorage) -> None:
    """state_diff of nearby snapshots of a large state looks at a handful of keys."""
    room = LinearRoom(store, ROOM)
    await room.create()
    snapshots: list[SnapshotId] = []
    for i in range(300):
        user = f"@member{i}:example.org"
        event = room.next_event(
            f"join{i}",
            event_type="m.room.member",
            state_key=user,
            content={"membership": "join"},
            sender=user,
        )
        await room.send(event)
        snapshots.append(room.current)

    async def touched(old: SnapshotId, new: SnapshotId) -> set[int] | None:
        async def fn(tx: Tx) -> set[int] | None:
            return await state._keys_touched_between(tx, TxCache(Caches()), old, new)

        return await store.engine.run(fn, write=False)

    for i in range(1, len(snapshots)):
        keys = await touched(snapshots[i - 1], snapshots[i])
        assert keys is not None and len(keys) == 1
    for i in range(10, len(snapshots), 7):
        keys = await touched(snapshots[i - 10], snapshots[i])
        assert keys is not None and 10 <= len(keys) <= 40
        added, removed = await store.state_diff(snapshots[i - 10], snapshots[i])
        assert len(added) == 10 and removed == {}
