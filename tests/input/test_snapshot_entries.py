"""``SnapshotEntries``: entries of a snapshot written as a small delta are answered from its
base's entries and the delta (placeholder, then real ID), never from a stale derivation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from roomserver.api import Outcome
from roomserver.core.ids import EventId, RoomId
from roomserver.core.pdu import Event
from roomserver.input import handle_message
from roomserver.input.store import SnapshotEntries
from roomserver.ports import SnapshotId, StateDelta, StateKey
from tests.input.helpers import ALICE, BOB, HarnessFactory, new_room
from tests.input.test_batches import Info, _batch

ROOM = RoomId("!room:example.org")
CREATE: StateKey = ("m.room.create", "")
TOPIC: StateKey = ("m.room.topic", "")
NAME: StateKey = ("m.room.name", "")


class SnapshotsInStorage:
    """State snapshots as storage holds them, counting ``state_entries`` reads."""

    def __init__(self, snapshots: Mapping[int, Mapping[StateKey, str]]) -> None:
        self.snapshots = snapshots
        self.reads: list[tuple[SnapshotId | None, list[StateKey]]] = []

    async def state_entries(
        self, snapshot: SnapshotId | None, keys: Iterable[StateKey]
    ) -> dict[StateKey, EventId]:
        wanted = list(keys)
        self.reads.append((snapshot, wanted))
        state = self.snapshots.get(snapshot, {}) if snapshot is not None else {}
        return {k: EventId(state[k]) for k in wanted if k in state}

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected storage call {name}")


def _delta(base: int | None, changes: Mapping[StateKey, str | None]) -> StateDelta:
    return StateDelta(
        None if base is None else SnapshotId(base),
        {k: None if v is None else EventId(v) for k, v in changes.items()},
    )


async def test_a_derived_placeholder_is_answered_from_its_base_without_a_read() -> None:
    store = SnapshotsInStorage({10: {CREATE: "$c", TOPIC: "$t1", NAME: "$n"}})
    cache = SnapshotEntries()
    assert await cache.get(store, SnapshotId(10), [CREATE, TOPIC]) == {CREATE: "$c", TOPIC: "$t1"}
    assert len(store.reads) == 1
    cache.derived(SnapshotId(-1), _delta(10, {TOPIC: "$t2", NAME: None}), ROOM)
    got = await cache.get(store, SnapshotId(-1), [CREATE, TOPIC, NAME])
    assert got == {CREATE: "$c", TOPIC: "$t2"}  # the delta wins; a removed key is absent
    assert len(store.reads) == 1  # no read: the base's entries and the delta answered
    # A key the base never loaded is read from the base (not from the placeholder).
    store.snapshots = {10: {CREATE: "$c", TOPIC: "$t1", ("m.room.member", ALICE): "$m"}}
    got = await cache.get(store, SnapshotId(-1), [("m.room.member", ALICE)])
    assert got == {("m.room.member", ALICE): "$m"}
    assert store.reads[-1] == (10, [("m.room.member", ALICE)])


async def test_the_derivation_is_carried_to_the_real_id_when_the_placeholder_settles() -> None:
    store = SnapshotsInStorage({10: {CREATE: "$c", TOPIC: "$t1"}})
    cache = SnapshotEntries()
    await cache.get(store, SnapshotId(10), [CREATE, TOPIC])
    cache.derived(SnapshotId(-1), _delta(10, {TOPIC: "$t2"}), ROOM)
    cache.derived(SnapshotId(-2), _delta(-1, {TOPIC: "$t3"}), ROOM)  # based on a placeholder
    real = {-1: SnapshotId(11), -2: SnapshotId(12)}

    def resolve(snapshot: SnapshotId | None) -> SnapshotId | None:
        return real[snapshot] if snapshot is not None and snapshot < 0 else snapshot

    cache.settle(ROOM, resolve)
    assert await cache.get(store, SnapshotId(12), [CREATE, TOPIC]) == {CREATE: "$c", TOPIC: "$t3"}
    assert await cache.get(store, SnapshotId(11), [CREATE, TOPIC]) == {CREATE: "$c", TOPIC: "$t2"}
    assert len(store.reads) == 1
    # The placeholders' derivations are gone: asked about, storage answers.
    store.snapshots = {-1: {CREATE: "$c", TOPIC: "$t2"}}
    await cache.get(store, SnapshotId(-1), [CREATE])
    assert store.reads[-1] == (-1, [CREATE])


async def test_a_derivation_that_does_not_settle_is_dropped() -> None:
    store = SnapshotsInStorage({10: {TOPIC: "$t1"}, 11: {TOPIC: "$other"}})
    cache = SnapshotEntries()
    cache.derived(SnapshotId(-1), _delta(10, {TOPIC: "$t2"}), ROOM)

    def not_committed(snapshot: SnapshotId | None) -> SnapshotId | None:
        raise KeyError(snapshot)

    cache.settle(ROOM, not_committed)
    assert await cache.get(store, SnapshotId(-1), [TOPIC]) == {}  # storage: no such snapshot
    cache.derived(SnapshotId(-2), _delta(10, {TOPIC: "$t2"}), ROOM)
    cache.forget_room(ROOM)  # the room's buffered writes were dropped
    store.snapshots = {-2: {TOPIC: "$stored"}}
    assert await cache.get(store, SnapshotId(-2), [TOPIC]) == {TOPIC: "$stored"}
    assert [s for s, _ in store.reads] == [-1, -2]


async def test_a_snapshot_that_is_its_base_records_no_derivation() -> None:
    """Storage returns the base's ID when the changes change nothing: the delta must not be
    taken for that snapshot's content (it would name itself as its base)."""
    store = SnapshotsInStorage({10: {TOPIC: "$t1"}})
    cache = SnapshotEntries()
    cache.derived(SnapshotId(10), _delta(10, {TOPIC: "$t1"}), ROOM)
    cache.derived(SnapshotId(11), _delta(10, {}), ROOM)
    assert await cache.get(store, SnapshotId(10), [TOPIC]) == {TOPIC: "$t1"}
    assert store.reads == [(10, [TOPIC])]


async def test_messages_after_state_changes_read_no_state_entries(
    harness: HarnessFactory,
) -> None:
    """One room's messages: after the first, the events that follow state changes (new
    snapshots, placeholders then real IDs) read no state entries from storage, and the rules
    see the changed entries (a power-level change decides Bob's topic)."""
    builder, events = new_room()
    h = await harness(builder)
    reads: list[Any] = []
    inner = h.store.state_entries

    async def counted(snapshot: SnapshotId | None, keys: Iterable[StateKey]) -> Any:
        reads.append(snapshot)
        return await inner(snapshot, keys)

    h.store.state_entries = counted

    async def send(batch: list[Event]) -> list[Outcome]:
        decision = await handle_message(h.processor, builder.room_id, _batch(batch), Info())
        return [r.outcome for r in decision.results]

    first = [*events, builder.join(BOB), builder.message(BOB), builder.message(ALICE)]
    assert await send(first) == [Outcome.ACCEPTED] * len(first)
    power = dict(builder.events[builder.state[("m.room.power_levels", "")]].content)
    second = [builder.message(BOB)]
    restricted = {**power, "events": {"m.room.topic": 50}}
    second.append(builder.send("m.room.power_levels", ALICE, restricted, state_key=""))
    second += [builder.message(ALICE), builder.message(BOB)]
    assert await send(second) == [Outcome.ACCEPTED] * 4
    settled = len(reads)
    no = builder.make_pdu("m.room.topic", BOB, {"topic": "no"}, state_key="")
    bobs_topic = builder.add(no, update_state=False)  # rejected: not built upon
    third = [builder.message(ALICE), builder.message(BOB), bobs_topic]
    assert await send(third) == [Outcome.ACCEPTED, Outcome.ACCEPTED, Outcome.REJECTED]
    assert reads[settled:] == []  # all answered from the cache: no storage read
    allowed = {**power, "events": {"m.room.topic": 0}}
    fourth = [builder.send("m.room.power_levels", ALICE, allowed, state_key="")]
    fourth.append(builder.message(ALICE))
    topic = builder.send("m.room.topic", BOB, {"topic": "yes"}, state_key="")
    fourth += [topic, builder.message(BOB)]
    assert await send(fourth) == [Outcome.ACCEPTED] * 4
    assert reads[settled:] == []
    assert (await h.current_state())[TOPIC] == topic.event_id
