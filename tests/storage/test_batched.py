"""Contract: the batched reads and write results the input pipeline's hot path uses
(``read_for_input``, ``PersistResult.pending_outbox``, ``EventWrite.outbox_sent``) answer
exactly what the separate calls answer (both backends); the server key cache."""

from __future__ import annotations

import asyncio
from typing import Any

from roomserver.ports import ConcurrentUpdate, InputReadBatch, OutboxEntry, ServerKeyRecord
from roomserver.storage import SqlStorage
from tests.storage.helpers import LinearRoom

ROOM = "!batched:example.org"


async def test_read_for_input_matches_the_separate_reads(store: SqlStorage) -> None:
    batch: InputReadBatch = store  # checked by mypy
    room = LinearRoom(store, ROOM)
    await room.create()
    target = room.next_event("target")
    await room.send(target)
    redaction = room.next_event("redaction", event_type="m.room.redaction")
    await room.send(redaction, redaction_target=target.event_id)
    first = next(iter(room.results))
    wanted = [first, target.event_id, "$unknown"]
    cited = [first, room.latest[0], "$unknown"]

    reads = await batch.read_for_input(
        wanted, room_id=ROOM, referenced_ids=cited, redactions_of=target.event_id
    )

    assert dict(reads.events) == await store.get_events(wanted)
    assert set(reads.referenced) == await store.referenced_as_prev(ROOM, cited) == {first}
    assert list(reads.redactions) == await store.redactions_for(target.event_id)
    assert [r.redaction_id for r in reads.redactions] == [redaction.event_id]
    empty = await batch.read_for_input([], room_id=ROOM, referenced_ids=[], redactions_of=None)
    assert (dict(empty.events), set(empty.referenced), list(empty.redactions)) == ({}, set(), [])


async def test_persist_reports_pending_outbox_and_marks_outbox_sent(store: SqlStorage) -> None:
    room = LinearRoom(store, ROOM)
    await room.create()
    first = [OutboxEntry(f"a-{i}", "new_room_event", f"a {i}".encode()) for i in range(2)]
    result = await room.send(room.next_event("first"), outbox=first)
    assert result.pending_outbox is not None
    assert [(p.msg_id, p.payload) for p in result.pending_outbox] == [
        (e.msg_id, e.payload) for e in first
    ]
    assert list(result.pending_outbox) == await store.pending_outbox(ROOM)

    # The next write marks what was published (an unknown sequence is ignored) and reports
    # only what is still unsent.
    sent = [result.pending_outbox[0].sequence, 10**9]
    second = [OutboxEntry("b-0", "new_room_event", b"b 0")]
    result = await room.send(room.next_event("second"), outbox=second, outbox_sent=sent)
    assert result.pending_outbox is not None
    assert [p.msg_id for p in result.pending_outbox] == ["a-1", "b-0"]
    assert list(result.pending_outbox) == await store.pending_outbox(ROOM)
    result = await room.send(
        room.next_event("third"), outbox_sent=[p.sequence for p in result.pending_outbox]
    )
    assert result.pending_outbox == ()
    assert await store.pending_outbox(ROOM) == []


async def test_server_keys_cached_and_refreshed_by_put(store: SqlStorage) -> None:
    key = ServerKeyRecord("k.example", "ed25519:1", b"\x01" * 32, 1000)
    assert await store.get_server_keys("k.example") == {}  # an empty answer is cached too
    await store.put_server_keys([key])
    assert await store.get_server_keys("k.example") == {"ed25519:1": key}
    newer = ServerKeyRecord("k.example", "ed25519:1", b"\x01" * 32, 2000, expired_ts=1500)
    await store.put_server_keys([newer])
    assert await store.get_server_keys("k.example", ["ed25519:1"]) == {"ed25519:1": newer}
    assert await store.get_server_keys("k.example", ["ed25519:2"]) == {}
    store.clear_caches()
    assert await store.get_server_keys("k.example") == {"ed25519:1": newer}


async def test_concurrent_writes_commit_alone_or_together(store: SqlStorage) -> None:
    """Writes queued at once (SQLite: one transaction, a savepoint each) stay atomic: a failing
    one is rolled back alone, the others are stored, and fault points inside a write still
    roll back only that write."""
    rooms = [LinearRoom(store, f"!group{i}:example.org") for i in range(5)]
    for room in rooms:
        await room.create()
    batches: list[int] = []
    engine: Any = store.engine
    run_batch = getattr(engine, "_run_batch", None)
    if run_batch is not None:

        def counting(batch: Any) -> Any:
            batches.append(len(batch))
            return run_batch(batch)

        engine._run_batch = counting
    events = [room.next_event("together") for room in rooms]
    rooms[1].version = 99  # stale: ConcurrentUpdate
    calls: list[str] = []

    def injector(point: str) -> None:
        calls.append(point)
        if point == "outbox" and calls.count("outbox") == 2:
            raise RuntimeError("injected")

    store.set_fault_injector(injector)
    results = await asyncio.gather(
        *(room.send(event) for room, event in zip(rooms, events, strict=True)),
        return_exceptions=True,
    )
    store.set_fault_injector(None)
    assert isinstance(results[1], ConcurrentUpdate)
    failed = [i for i, r in enumerate(results) if isinstance(r, RuntimeError)]
    assert len(failed) == 1 and failed[0] != 1
    ok = [i for i in range(5) if i not in (1, failed[0])]
    stored = await store.get_events([e.event_id for e in events])
    assert sorted(stored) == sorted(events[i].event_id for i in ok)
    for i in range(5):
        room = await store.room(rooms[i].room_id)
        assert room is not None
        assert (events[i].event_id in room.forward_extremities) == (i in ok)
    if run_batch is not None:
        assert max(batches) > 1  # they did share a transaction
