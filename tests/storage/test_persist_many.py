"""Contract: ``persist_many`` (a message's writes in one transaction, with placeholder snapshots)
on both backends."""

from __future__ import annotations

from typing import Any

import pytest

from roomserver.ports import (
    ConcurrentUpdate,
    EventStatus,
    EventWrite,
    OutboxEntry,
    RoomUpdate,
    SnapshotId,
    StateDelta,
    StorageError,
)
from roomserver.storage import SqlStorage
from tests.storage.helpers import VERSION, LinearRoom, linear_write

ROOM = "!many:example.org"


class _Chain:
    """Writes of a linear room built with placeholders, as the write-behind buffer makes them."""

    def __init__(self, room: LinearRoom) -> None:
        self.room = room
        self.version = room.version
        self.current: Any = room.current
        self.state = dict(room.state)
        self.latest = list(room.latest)
        self.next_placeholder = -1
        self.writes: list[EventWrite] = []
        self.expected_state: dict[str, dict[tuple[str, str], str]] = {}
        self.before: Any = None  # the previous write's state-before placeholder
        self.before_state = dict(room.state)

    def _placeholder(self) -> SnapshotId:
        value = SnapshotId(self.next_placeholder)
        self.next_placeholder -= 1
        return value

    def add(self, seed: str, *, topic: str | None = None, **write: Any) -> EventWrite:
        room = self.room
        room.latest = self.latest
        if topic is None:
            event = room.next_event(seed)
        else:
            event = room.next_event(
                seed, event_type="m.room.topic", state_key="", content={"topic": topic}
            )
        before = self._placeholder()
        current = self._placeholder()
        changes = {event.state_tuple: event.event_id} if event.state_key is not None else {}
        # The state before chains through the previous write's placeholder too.
        marker = {("x.after", ""): self.latest[0]}
        w = linear_write(
            event,
            expected_version=self.version,
            state_before=StateDelta(self.before or self.current, marker),
            current_state=StateDelta(self.current, changes),
            snapshot_placeholders=(before, current),
            **write,
        )
        self.expected_state[event.event_id] = {**self.before_state, **marker}
        self.before, self.before_state = before, {**self.before_state, **marker}
        self.writes.append(w)
        self.version = (self.version or 0) + 1
        self.current = current
        self.state.update(changes)
        self.latest = [event.event_id]
        return w


async def _room(store: SqlStorage) -> LinearRoom:
    room = LinearRoom(store, ROOM)
    await room.create()
    return room


async def test_writes_chained_through_placeholders_land_in_one_call(store: SqlStorage) -> None:
    room = await _room(store)
    chain = _Chain(room)
    outbox = [OutboxEntry(f"m{i}", "new_room_event", b"x") for i in range(3)]
    chain.add("a", outbox=outbox[:1])
    chain.add("b", topic="one", outbox=outbox[1:2])
    chain.add("c", outbox=outbox[2:])
    results = await store.persist_many(chain.writes)
    assert len(results) == 3
    # Only the room's last result reports the outbox; it has the three entries, in order.
    assert [r.pending_outbox is None for r in results] == [True, True, False]
    assert [e.msg_id for e in results[-1].pending_outbox or ()] == ["m0", "m1", "m2"]
    for write, result in zip(chain.writes, results, strict=True):
        assert result.state_before is not None and result.state_before > 0
        state = await store.state_map(result.state_before)
        assert state == chain.expected_state[write.event.event_id]
    info = await store.room(ROOM)
    assert info is not None
    assert info.forward_extremities == (chain.writes[-1].event.event_id,)
    assert info.version == (room.version or 0) + 3
    assert info.current_state == results[-1].current_state
    current = await store.state_map(info.current_state)
    assert current[("m.room.topic", "")] == chain.writes[1].event.event_id


async def test_a_failing_write_rolls_the_whole_call_back(store: SqlStorage) -> None:
    room = await _room(store)
    chain = _Chain(room)
    chain.add("a")
    chain.add("b")
    bad = chain.writes[-1]
    assert bad.room_update is not None
    stale = RoomUpdate(
        expected_version=(bad.room_update.expected_version or 0) + 7,
        room_version=VERSION,
        forward_extremities=bad.room_update.forward_extremities,
        current_state=bad.room_update.current_state,
        last_sent_event_id=bad.room_update.last_sent_event_id,
    )
    chain.writes[-1] = EventWrite(
        event=bad.event,
        status=bad.status,
        state_before=bad.state_before,
        room_update=stale,
        snapshot_placeholders=bad.snapshot_placeholders,
    )
    with pytest.raises(ConcurrentUpdate):
        await store.persist_many(chain.writes)
    found = await store.get_events([w.event.event_id for w in chain.writes])
    assert found == {}, "the first write was committed without the second"
    info = await store.room(ROOM)
    assert info is not None and info.version == room.version


async def test_an_undefined_placeholder_is_refused(store: SqlStorage) -> None:
    room = await _room(store)
    chain = _Chain(room)
    chain.add("a")
    orphan = chain.writes[0]
    assert orphan.room_update is not None
    chain.writes[0] = EventWrite(
        event=orphan.event,
        status=orphan.status,
        state_before=StateDelta(SnapshotId(-99), {}),
        room_update=orphan.room_update,
    )
    with pytest.raises(StorageError, match="placeholder -99"):
        await store.persist_many(chain.writes)
    assert await store.get_events([orphan.event.event_id]) == {}


async def test_a_soft_failed_write_checks_the_room_version(store: SqlStorage) -> None:
    room = await _room(store)
    event = room.next_event("late")
    assert room.version is not None
    write = EventWrite(
        event=event,
        status=EventStatus.STATEFUL,
        soft_failed=True,
        state_before=StateDelta(room.current, {}),
        expected_room_version=room.version - 1,  # decided against an older current state
    )
    with pytest.raises(ConcurrentUpdate):
        await store.persist(write)
    assert await store.get_events([event.event_id]) == {}
    ok = EventWrite(
        event=event,
        status=EventStatus.STATEFUL,
        soft_failed=True,
        state_before=StateDelta(room.current, {}),
        expected_room_version=room.version,
    )
    await store.persist(ok)
    stored = (await store.get_events([event.event_id]))[event.event_id]
    assert stored.soft_failed
