"""The outbox on the hot path with real storage: published once, marked sent with the room's
next write (or when idle, or at close), republished with the same IDs after a crash."""

from __future__ import annotations

import asyncio
from pathlib import Path

from roomserver.api import InputRoomEvent, Kind, Outcome
from roomserver.input import InputConfig, InputProcessor
from roomserver.storage import SqlStorage, open_storage
from tests.input.fakes import FakeKeyRing, RecordingPublisher
from tests.input.helpers import ALICE, SERVER, new_room


async def _open(tmp_path: Path) -> SqlStorage:
    return await open_storage(f"sqlite://{tmp_path}/outbox.sqlite")


async def test_marked_with_next_write_and_at_close(tmp_path: Path) -> None:
    builder, events = new_room()
    events = [*events, builder.message(ALICE, "one"), builder.message(ALICE, "two")]
    store = await _open(tmp_path)
    try:
        publisher = RecordingPublisher()
        processor = InputProcessor(
            store, FakeKeyRing(builder), None, publisher, server_name=SERVER,
            config=InputConfig(outbox_mark_idle_s=60.0),
        )  # fmt: skip
        for event in events:
            item = InputRoomEvent(event=dict(event.pdu), kind=Kind.NEW)
            assert (await processor.process(item)).outcome is Outcome.ACCEPTED
        ids = publisher.msg_ids()
        assert len(ids) == len(set(ids)) == len(events)
        # Each write marked the outputs published before it: only the last ones are unmarked.
        pending = await store.pending_outbox(builder.room_id)
        assert [p.msg_id for p in pending] == [f"{events[-1].event_id}:new_room_event:0"]
        # Reprocessing does not publish them again (this process published them already).
        again = InputRoomEvent(event=dict(events[-1].pdu), kind=Kind.NEW)
        assert (await processor.process(again)).outcome is Outcome.ACCEPTED
        assert publisher.msg_ids() == ids
        assert await store.pending_outbox(builder.room_id) == []
        await processor.close()
        assert await store.pending_outbox(builder.room_id) == []
    finally:
        await store.close()


async def test_marked_when_the_room_is_idle(tmp_path: Path) -> None:
    builder, events = new_room()
    store = await _open(tmp_path)
    try:
        processor = InputProcessor(
            store, FakeKeyRing(builder), None, RecordingPublisher(), server_name=SERVER,
            config=InputConfig(outbox_mark_idle_s=0.01),
        )  # fmt: skip
        for event in events:
            await processor.process(InputRoomEvent(event=dict(event.pdu), kind=Kind.NEW))
        assert await store.pending_outbox(builder.room_id) != []
        for _ in range(200):
            if not await store.pending_outbox(builder.room_id):
                break
            await asyncio.sleep(0.01)
        assert await store.pending_outbox(builder.room_id) == []
        await processor.close()
    finally:
        await store.close()


async def test_crash_before_marking_republishes_with_the_same_ids(tmp_path: Path) -> None:
    builder, events = new_room()
    store = await _open(tmp_path)
    try:
        first = RecordingPublisher()
        processor = InputProcessor(
            store, FakeKeyRing(builder), None, first, server_name=SERVER,
            config=InputConfig(outbox_mark_idle_s=60.0),
        )  # fmt: skip
        for event in events:
            await processor.process(InputRoomEvent(event=dict(event.pdu), kind=Kind.NEW))
        # "Crash": the processor goes away without close(); the last outputs stay unmarked.
        unmarked = [p.msg_id for p in await store.pending_outbox(builder.room_id)]
        assert unmarked == [first.msg_ids()[-1]]
        second = RecordingPublisher()
        restarted = InputProcessor(store, FakeKeyRing(builder), None, second, server_name=SERVER)
        redelivered = InputRoomEvent(event=dict(events[-1].pdu), kind=Kind.NEW)
        assert (await restarted.process(redelivered)).outcome is Outcome.ACCEPTED
        assert second.msg_ids() == unmarked  # the bus's duplicate window drops it
        assert await store.pending_outbox(builder.room_id) == []
    finally:
        await store.close()


async def test_marks_for_follows_what_is_published_and_marked() -> None:
    """``marks_for`` is kept between changes: it follows every publish and every mark."""
    from roomserver.core.ids import RoomId
    from roomserver.input.outputs import OutboxSender
    from roomserver.ports import OutboxEntry

    class Marks:
        def __init__(self) -> None:
            self.marked: list[tuple[str, list[int]]] = []

        async def mark_outbox_sent(self, room_id: str, sequences: list[int]) -> None:
            self.marked.append((room_id, list(sequences)))

    room, other = RoomId("!a:x"), RoomId("!b:x")
    store = Marks()
    sender = OutboxSender(store, RecordingPublisher(), mark_idle_s=60.0)  # type: ignore[arg-type]

    def entries(*sequences: int) -> list[OutboxEntry]:
        return [OutboxEntry(f"m{s}", "new_room_event", b"{}", s) for s in sequences]

    assert sender.marks_for(room) == ()
    await sender.publish(room, entries(3, 1))
    assert sender.marks_for(room) == (1, 3)
    assert sender.marks_for(other) == ()
    await sender.publish(room, entries(1, 3, 2))  # 1 and 3 were published already
    assert sender.marks_for(room) == (1, 2, 3)
    sender.marked(room, [1, 3])
    assert sender.marks_for(room) == (2,)
    sender.marked(room, [2])
    assert sender.marks_for(room) == ()
    await sender.publish(room, entries(4))
    assert sender.marks_for(room) == (4,)
    await sender.close()
    assert store.marked == [(room, [4])]
    assert sender.marks_for(room) == ()
