"""Which buffers a read that needs committed writes flushes, and what a flush keeps.

``WriteBehind`` over the in-memory storage, driven directly: two rooms with a message open
each; storage calls are counted per room."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from roomserver.api import EventResult, InputRoomEvent, Outcome, encode_input_batch
from roomserver.core.pdu import Event
from roomserver.input import Disposition, handle_message
from roomserver.input.write_behind import WriteBehind
from roomserver.ports import (
    EventWrite,
    InputAssumption,
    InputReads,
    MembershipChange,
    PersistResult,
    SnapshotId,
    StateDelta,
)
from roomserver.testing.builder import RoomBuilder
from tests.storage.helpers import linear_write

from .fakes import MemoryStorage
from .helpers import ALICE, BOB, Harness, new_room


class CountingStorage(MemoryStorage):
    """Counts ``persist_many`` calls per room and the batched reads (the prefetch misses)."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes: Counter[str] = Counter()
        self.batched_reads: list[tuple[str, list[str], list[str]]] = []

    async def persist_many(
        self, writes: Sequence[EventWrite], *, expect: InputAssumption | None = None
    ) -> list[PersistResult]:
        for room_id in {w.event.room_id for w in writes}:
            self.flushes[room_id] += 1
        return await super().persist_many(writes, expect=expect)

    async def read_for_input(
        self,
        event_ids: Sequence[str],
        *,
        room_id: str,
        referenced_ids: Sequence[str],
        redactions_of: str | Sequence[str] | None,
        with_room: bool = False,
    ) -> InputReads:
        wanted, cited = list(event_ids), list(referenced_ids)
        if not with_room:
            self.batched_reads.append((room_id, wanted, cited))
        targets = [redactions_of] if isinstance(redactions_of, str) else list(redactions_of or [])
        records = [r for t in targets for r in await self.redactions_for(t)]
        return InputReads(
            await self.get_events(wanted),
            await self.referenced_as_prev(room_id, cited),
            records,
            await self.room(room_id) if with_room else None,
        )


def _write(event: Event, base: SnapshotId | None, version: int | None) -> EventWrite:
    """A state event of a linear room written with its room update (its own state change)."""
    assert event.state_key is not None
    key = (event.type, event.state_key)
    membership = (
        (MembershipChange(event.state_key, "join", event.event_id, event.sender),)
        if event.type == "m.room.member"
        else ()
    )
    return linear_write(
        event,
        expected_version=version,
        state_before=StateDelta(base, {}),
        current_state=StateDelta(base, {key: event.event_id}),
        memberships=membership,
    )


async def _room_with_buffered_create(
    wb: WriteBehind, store: CountingStorage
) -> tuple[RoomBuilder, Event, Event, PersistResult]:
    """A room whose create event is stored and whose creator's join is buffered in an open
    message, prefetched with the join's reads."""
    room = RoomBuilder()
    create = room.send("m.room.create", ALICE, {"room_version": "10"}, state_key="")
    await store.persist(_write(create, None, None))
    join = room.join(ALICE)
    wb.open(room.room_id)
    await wb.prefetch(
        room.room_id,
        [join.event_id, create.event_id],
        referenced_ids=[create.event_id, join.event_id],
        redactions_of=[join.event_id, create.event_id],
    )
    stored_room = store.rooms[room.room_id]
    result = await wb.persist(_write(join, stored_room.current_state, stored_room.version))
    return room, create, join, result


async def test_room_scoped_reads_flush_only_their_room() -> None:
    store = CountingStorage()
    wb = WriteBehind(store)
    a, _, join_a, _ = await _room_with_buffered_create(wb, store)
    b, _, join_b, _ = await _room_with_buffered_create(wb, store)

    assert await wb.membership(a.room_id, ALICE) == "join"
    assert await wb.joined_servers(a.room_id) == ["example.org"]  # ALICE's server
    await wb.pending_outbox(a.room_id)
    await wb.mark_outbox_sent(a.room_id, [1])
    assert store.flushes == Counter({a.room_id: 1})
    assert join_b.event_id not in store.events  # room B's message stays buffered
    # ... and answered from memory meanwhile.
    assert (await wb.get_events([join_b.event_id]))[join_b.event_id].event == join_b

    await wb.close(b.room_id)
    assert store.flushes == Counter({a.room_id: 1, b.room_id: 1})
    assert store.events[join_b.event_id].event == join_b
    assert join_a.event_id in store.events


async def test_referenced_as_prev_flushes_only_the_citing_room() -> None:
    store = CountingStorage()
    wb = WriteBehind(store)
    a, create_a, _, _ = await _room_with_buffered_create(wb, store)
    _, create_b, _, _ = await _room_with_buffered_create(wb, store)

    # Room B's buffer cites B's create; asked in room A, only A's citations count.
    assert await wb.referenced_as_prev(a.room_id, [create_b.event_id]) == set()
    assert store.flushes == Counter()
    assert await wb.referenced_as_prev(a.room_id, [create_a.event_id]) == {create_a.event_id}
    assert store.flushes == Counter({a.room_id: 1})


async def test_prefetch_survives_a_flush_and_stays_true() -> None:
    store = CountingStorage()
    wb = WriteBehind(store)
    a, create, join, _ = await _room_with_buffered_create(wb, store)

    await wb.membership(a.room_id, ALICE)  # flushes room A's buffer
    assert store.flushes[a.room_id] == 1
    # The stored create is still answered by the prefetch: no storage read.
    reads = await wb.read_for_input(
        [create.event_id], room_id=a.room_id, referenced_ids=[], redactions_of=create.event_id
    )
    assert reads.events[create.event_id].event == create
    assert store.batched_reads == []
    # What the flush changed is read again, and storage now has it: the join is stored
    # (the prefetch had it missing) and cites the create (the prefetch said nobody did).
    reads = await wb.read_for_input(
        [join.event_id],
        room_id=a.room_id,
        referenced_ids=[create.event_id],
        redactions_of=join.event_id,
    )
    assert reads.events[join.event_id].event == join
    assert reads.referenced == {create.event_id}
    assert store.batched_reads == [(a.room_id, [join.event_id], [create.event_id])]
    # An ID the flush did not touch is still answered from the prefetch.
    reads = await wb.read_for_input(
        [], room_id=a.room_id, referenced_ids=[join.event_id], redactions_of=create.event_id
    )
    assert reads.referenced == set()
    assert len(store.batched_reads) == 1


async def test_other_rooms_flush_narrows_a_prefetch_that_references_its_events() -> None:
    """A message may (wrongly) reference another room's event: once that room commits it, the
    prefetch made before does not hide it."""
    store = CountingStorage()
    wb = WriteBehind(store)
    b, _, join_b, _ = await _room_with_buffered_create(wb, store)
    a = RoomBuilder()
    create_a = a.send("m.room.create", ALICE, {"room_version": "10"}, state_key="")
    await store.persist(_write(create_a, None, None))
    wb.open(a.room_id)
    await wb.prefetch(a.room_id, [join_b.event_id], referenced_ids=[], redactions_of=[])

    found = await wb.read_for_input(
        [join_b.event_id], room_id=a.room_id, referenced_ids=[], redactions_of=None
    )
    assert found.events[join_b.event_id].event == join_b  # buffered in B: from memory
    await wb.close(b.room_id)
    found = await wb.read_for_input(
        [join_b.event_id], room_id=a.room_id, referenced_ids=[], redactions_of=None
    )
    assert found.events[join_b.event_id].event == join_b  # stored now: read again


async def test_cross_room_reads_see_another_rooms_buffered_writes() -> None:
    """Reads by event ID or snapshot ID are global: they flush whichever room holds them."""
    store = CountingStorage()
    wb = WriteBehind(store)
    a, _, _, _ = await _room_with_buffered_create(wb, store)
    b, create_b, join_b, result_b = await _room_with_buffered_create(wb, store)

    # Asked while room A's message is open, about room B's buffered join.
    chain = await wb.auth_chain([join_b.event_id])
    assert create_b.event_id in chain
    assert store.flushes == Counter({b.room_id: 1})
    assert join_b.event_id in store.events

    # A state difference between a stored snapshot and room A's placeholder.
    c, _, join_c, result_c = await _room_with_buffered_create(wb, store)
    assert result_c.current_state is not None and result_c.current_state < 0
    base = store.rooms[c.room_id].current_state
    added, removed = await wb.state_diff(base, result_c.current_state)
    assert added == {("m.room.member", ALICE): join_c.event_id}
    assert removed == {}
    assert store.flushes == Counter({b.room_id: 1, c.room_id: 1})
    # Two stored snapshots: nothing to flush (stored snapshots never change).
    assert result_b.current_state is not None
    await wb.state_diff(base, wb.resolve(result_b.current_state))
    assert store.flushes == Counter({b.room_id: 1, c.room_id: 1})
    assert a.room_id not in store.flushes


async def test_a_message_creating_its_room_is_prefetched() -> None:
    """The message holding a room's create event reads what its events need at once too
    (the room is not stored yet: its version comes from the create event)."""
    builder, events = new_room()
    events += [builder.join(BOB)] + [builder.message(BOB, f"m{i}") for i in range(8)]
    store = CountingStorage()
    h = Harness(builder, store=store)
    batch = encode_input_batch([InputRoomEvent(event=dict(e.pdu)) for e in events])
    decision = await handle_message(h.processor, builder.room_id, batch, _Info())
    assert decision.disposition is Disposition.ACK
    assert decision.results == tuple(EventResult(e.event_id, Outcome.ACCEPTED) for e in events)
    # Only the create event's own read is left (it is not in the gather).
    assert [ids for _, ids, _ in store.batched_reads] == [[events[0].event_id]]
    assert await h.extremities() == {events[-1].event_id}


@dataclass
class _Info:
    num_delivered: int = 1
    stream_seq: int = 1


class _SlowStorage(CountingStorage):
    """Holds every ``persist_many`` until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def persist_many(
        self, writes: Sequence[EventWrite], *, expect: InputAssumption | None = None
    ) -> list[PersistResult]:
        await self.release.wait()
        return await super().persist_many(writes, expect=expect)


async def test_a_read_waits_for_a_commit_under_way_of_the_buffer_it_depends_on() -> None:
    store = _SlowStorage()
    wb = WriteBehind(store)
    a, create, _, result = await _room_with_buffered_create(wb, store)
    closing = asyncio.create_task(wb.close(a.room_id))  # the commit is under way
    await asyncio.sleep(0)
    cited = asyncio.create_task(wb.referenced_as_prev(a.room_id, [create.event_id]))
    diff = asyncio.create_task(wb.state_diff(None, result.current_state))
    await asyncio.sleep(0.01)
    assert not cited.done() and not diff.done()  # neither read storage before the commit
    store.release.set()
    await closing
    assert await cited == {create.event_id}
    added, _ = await diff
    assert ("m.room.member", ALICE) in added
