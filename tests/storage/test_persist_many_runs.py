"""Contract: ``persist_many`` inserts runs of event rows in one statement (``insert_run``) and
defers the rows nothing reads back; what it stores must equal applying the same writes one by
one with ``persist``. Both backends; a second, fresh storage of the same backend is the
reference."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from roomserver.ports import (
    EventStatus,
    EventWrite,
    MembershipChange,
    OutboxEntry,
    PersistResult,
    RoomUpdate,
    SnapshotId,
    StateDelta,
    record_placeholders,
    with_placeholders_resolved,
)
from roomserver.storage import SqlStorage, dialect, events, open_storage
from tests.pgutil import fresh_schema_url
from tests.storage.helpers import VERSION, LinearRoom, linear_write, make_event
from tests.storage.test_transactions import row_counts

ROOM = "!runs:example.org"


@pytest.fixture
async def reference(storage_url: str, tmp_path: Path) -> AsyncIterator[SqlStorage]:
    """A second, empty storage of the same backend as ``store``."""
    if storage_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/reference-{secrets.token_hex(4)}.db"
    else:
        url = await fresh_schema_url(storage_url.split("?")[0])
    storage = await open_storage(url)
    try:
        yield storage
    finally:
        await storage.close()


class _Message:
    """Writes shaped as the write-behind buffer makes them: the state before an event is the
    current state left by the previous write, and a placeholder stands for each snapshot that
    changes something."""

    def __init__(self, room: LinearRoom) -> None:
        self.room = room
        self.version = room.version
        self.current: Any = room.current
        self.latest = list(room.latest)
        self.next_placeholder = -1
        self.writes: list[EventWrite] = []

    def _placeholder(self) -> SnapshotId:
        value = SnapshotId(self.next_placeholder)
        self.next_placeholder -= 1
        return value

    def add(
        self,
        seed: str,
        *,
        event_type: str = "m.room.message",
        state_key: str | None = None,
        content: dict[str, Any] | None = None,
        rejected: bool = False,
    ) -> EventWrite:
        room = self.room
        room.latest = self.latest
        event = room.next_event(seed, event_type=event_type, state_key=state_key, content=content)
        n = len(self.writes)
        outbox = [OutboxEntry(f"{seed}-out", "new_room_event", seed.encode())]
        if rejected:
            write = EventWrite(
                event=event,
                status=EventStatus.STATEFUL,
                rejection_reason="not allowed",
                state_before=StateDelta(self.current, {}),
                outbox=outbox,
            )
            self.writes.append(write)
            return write
        changes = {event.state_tuple: event.event_id} if event.state_key is not None else {}
        members = (
            [MembershipChange(event.state_key or "", "join", event.event_id, event.sender)]
            if event.type == "m.room.member"
            else []
        )
        current = self._placeholder() if changes else None
        write = linear_write(
            event,
            expected_version=self.version,
            state_before=StateDelta(self.current, {}),
            current_state=StateDelta(self.current, changes),
            memberships=members,
            outbox=outbox,
            snapshot_placeholders=(None, current),
        )
        assert n == len(self.writes)
        self.writes.append(write)
        self.version = (self.version or 0) + 1
        if current is not None:
            self.current = current
        if event.state_key is not None:
            room.state[event.state_tuple] = event.event_id
        self.latest = [event.event_id]
        return write

    def outlier(self, seed: str) -> EventWrite:
        event = self.room.next_event(seed, event_type="m.room.topic", state_key="")
        write = EventWrite(event=event, status=EventStatus.OUTLIER)
        self.writes.append(write)
        return write

    def again(self, write: EventWrite) -> None:
        self.writes.append(write)


async def _one_by_one(store: SqlStorage, writes: list[EventWrite]) -> list[PersistResult]:
    resolved: dict[int, int | None] = {}
    out = []
    for write in writes:
        ready = with_placeholders_resolved(write, resolved)
        result = await store.persist(ready)
        record_placeholders(ready, result, resolved)
        out.append(result)
    return out


async def _same_storage(
    store: SqlStorage,
    reference: SqlStorage,
    writes: list[EventWrite],
    got: list[PersistResult],
    want: list[PersistResult],
) -> None:
    assert [r.stream_position for r in got] == [r.stream_position for r in want]
    assert got[-1].pending_outbox == want[-1].pending_outbox
    for write, mine, theirs in zip(writes, got, want, strict=True):
        assert await store.state_map(mine.state_before) == await reference.state_map(
            theirs.state_before
        ), write.event.event_id
        assert await store.state_map(mine.current_state) == await reference.state_map(
            theirs.current_state
        ), write.event.event_id
        if write.event.state_key is not None:
            ids = [write.event.event_id]
            assert await store.auth_chain(ids) == await reference.auth_chain(ids)
    ids = [w.event.event_id for w in writes]
    assert await store.get_events(ids) == await reference.get_events(ids)
    assert await store.room(ROOM) == await reference.room(ROOM)
    assert await store.joined_users(ROOM) == await reference.joined_users(ROOM)
    assert await store.referenced_as_prev(ROOM, ids) == await reference.referenced_as_prev(
        ROOM, ids
    )
    assert await row_counts(store) == await row_counts(reference)


async def _rooms(store: SqlStorage, reference: SqlStorage) -> tuple[LinearRoom, LinearRoom]:
    a, b = LinearRoom(store, ROOM), LinearRoom(reference, ROOM)
    await a.create()
    await b.create()
    return a, b


def _build(room: LinearRoom, spec: list[tuple[str, str]]) -> list[EventWrite]:
    message = _Message(room)
    for kind, seed in spec:
        if kind == "msg":
            message.add(seed)
        elif kind == "topic":
            message.add(seed, event_type="m.room.topic", state_key="", content={"topic": seed})
        elif kind == "member":
            user = f"@{seed}:example.org"
            message.add(
                seed, event_type="m.room.member", state_key=user, content={"membership": "join"}
            )
        elif kind == "rejected":
            message.add(seed, rejected=True)
        else:
            raise AssertionError(kind)
    return message.writes


SPEC = [
    ("msg", "m1"),
    ("msg", "m2"),
    ("topic", "t1"),
    ("msg", "m3"),
    ("member", "bob"),
    ("member", "carol"),
    ("rejected", "bad"),
    ("msg", "m4"),
    ("topic", "t2"),
    ("topic", "t3"),
    *[("msg", f"n{i}") for i in range(12)],
    ("member", "dave"),
    ("topic", "t4"),
    ("msg", "last"),
]


async def test_a_message_with_many_state_events_equals_one_by_one(
    store: SqlStorage, reference: SqlStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await _rooms(store, reference)
    writes_a, writes_b = _build(a, SPEC), _build(b, SPEC)
    assert writes_a == writes_b
    runs: list[int] = []
    insert_run = events.insert_run

    async def recorded(*args: Any, **kwargs: Any) -> int:
        runs.append(await insert_run(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(events, "insert_run", recorded)
    monkeypatch.setattr(dialect, "SQLITE_ROWS_PER_INSERT", 3)  # several statements per run
    got = await store.persist_many(writes_a)
    # Runs end after each state event (the next write's state is its placeholder); the
    # rejected event and the messages after it share one.
    assert max(runs) >= 12 and sum(runs) >= len(SPEC) - 5, runs
    want = await _one_by_one(reference, writes_b)
    await _same_storage(store, reference, writes_a, got, want)
    # The rejected event is stored, rejected, and in nobody's state.
    bad = writes_a[6].event.event_id
    assert (await store.get_events([bad]))[bad].rejected
    assert bad not in (await store.state_map(got[-1].current_state)).values()
    assert await store.joined_users(ROOM) == [
        "@alice:example.org",
        "@bob:example.org",
        "@carol:example.org",
        "@dave:example.org",
    ]
    # Stream positions follow the order of the writes.
    positions = [r.stream_position for r in got]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


async def test_duplicates_in_one_call_equal_one_by_one(
    store: SqlStorage, reference: SqlStorage
) -> None:
    a, b = await _rooms(store, reference)
    # Stored before the call: a rejected event (accepted on its second write) and a message.
    earlier: list[list[EventWrite]] = []
    for room in (a, b):
        message = _Message(room)
        message.add("was-rejected", rejected=True)
        earlier.append(message.writes)
    for storage, writes in ((store, earlier[0]), (reference, earlier[1])):
        await storage.persist_many(writes)
    for storage in (store, reference):
        storage.clear_caches()  # the stored event is found by its insert's conflict
    calls: list[list[EventWrite]] = []
    for room, old in ((a, earlier[0]), (b, earlier[1])):
        message = _Message(room)
        message.add("m1")
        outlier = message.outlier("o1")
        message.add("m2")
        first = message.writes[0]
        message.again(
            EventWrite(event=first.event, status=first.status, state_before=first.state_before)
        )  # the same event twice: idempotent
        message.writes.append(
            EventWrite(
                event=outlier.event,
                status=EventStatus.STATEFUL,
                state_before=StateDelta(message.current, {}),
            )
        )  # the outlier gains state
        accepted = old[0]
        message.writes.append(
            EventWrite(
                event=accepted.event,
                status=EventStatus.STATEFUL,
                state_before=accepted.state_before,
            )
        )  # the rejection is cleared
        message.add("t1", event_type="m.room.topic", state_key="", content={"topic": "x"})
        message.add("m3")
        calls.append(message.writes)
    assert calls[0] == calls[1]
    got = await store.persist_many(calls[0])
    want = await _one_by_one(reference, calls[1])
    await _same_storage(store, reference, calls[0], got, want)
    stored = await store.get_events([calls[0][1].event.event_id, calls[0][5].event.event_id])
    assert all(not e.outlier and not e.rejected for e in stored.values())
    assert got[3].stream_position == got[0].stream_position  # written again: same row


async def test_a_long_chain_of_state_changes_in_one_call_equals_one_by_one(
    store: SqlStorage, reference: SqlStorage
) -> None:
    """Snapshots written in the call are stored against snapshots written earlier in it (their
    rows are read from the transaction's pending deltas, not the database): 40 state changes
    reach positions whose stored base skips several snapshots of the same call."""
    a, b = await _rooms(store, reference)
    spec = [
        ("member" if i % 5 == 4 else "topic", f"s{i}") if i % 3 else ("msg", f"m{i}")
        for i in range(60)
    ]
    writes_a, writes_b = _build(a, spec), _build(b, spec)
    got = await store.persist_many(writes_a)
    want = await _one_by_one(reference, writes_b)
    await _same_storage(store, reference, writes_a, got, want)
    store.clear_caches()  # read back from the database, not the transaction's overlay
    reference.clear_caches()
    await _same_storage(store, reference, writes_a, got, want)


async def _rows(store: SqlStorage, sql: str) -> list[tuple[Any, ...]]:
    async def read(tx: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await tx.fetch(sql)]

    return await store.engine.run(read, write=False)


async def test_deferred_rows_equal_one_by_one_with_repeats_and_outbox_marks(
    store: SqlStorage, reference: SqlStorage
) -> None:
    """The rows written at the end of the transaction (one statement on PostgreSQL): a user's
    membership changed twice in one call keeps the last change, and outbox entries published
    by an earlier call are marked sent, as writing one by one does."""
    a, b = await _rooms(store, reference)
    spec = [("member", "bob"), ("msg", "m1"), ("member", "bob"), ("topic", "t1")]
    first = []
    for storage, room in ((store, a), (reference, b)):
        message = _Message(room)
        for kind, seed in spec:
            if kind == "msg":
                message.add(seed)
            else:
                key = "" if kind == "topic" else "@bob:example.org"
                etype = "m.room.topic" if kind == "topic" else "m.room.member"
                message.add(seed + str(len(message.writes)), event_type=etype, state_key=key,
                            content={"membership": "join", "topic": seed})  # fmt: skip
        first.append(await storage.persist_many(message.writes))
        room.version, room.latest = message.version, message.latest
        room.current = first[-1][-1].current_state
    sent = tuple(e.sequence for e in first[0][-1].pending_outbox or ())
    assert sent and sent == tuple(e.sequence for e in first[1][-1].pending_outbox or ())
    calls = []
    for room in (a, b):
        message = _Message(room)
        message.add("m2")
        for seed in ("carol", "m3", "carol-again"):  # carol's membership changes twice
            if seed == "m3":
                message.add(seed)
                continue
            message.add(seed, event_type="m.room.member", state_key="@carol:example.org",
                        content={"membership": "join"})  # fmt: skip
        message.writes[0] = EventWrite(**{**_fields(message.writes[0]), "outbox_sent": sent})
        calls.append(message.writes)
    got = await store.persist_many(calls[0])
    want = await _one_by_one(reference, calls[1])
    await _same_storage(store, reference, calls[0], got, want)
    for sql in (
        "SELECT room_nid, user_id, server_name, membership, event_id, sender FROM memberships "
        "ORDER BY user_id",
        "SELECT sequence, msg_id, output_type, payload, sent FROM outbox ORDER BY sequence",
        "SELECT snapshot_id, key_nid, event_nid FROM state_deltas ORDER BY 1, 2",
        "SELECT prev_event_id, event_nid FROM prev_edges ORDER BY 2, 1",
        "SELECT event_nid, chain_id, sequence, reach FROM auth_chain_positions ORDER BY 1",
    ):
        assert await _rows(store, sql) == await _rows(reference, sql), sql
    assert [e.sequence for e in got[-1].pending_outbox or ()] == [
        e.sequence for e in want[-1].pending_outbox or ()
    ]
    assert not set(sent) & {e.sequence for e in got[-1].pending_outbox or ()}


def _fields(write: EventWrite) -> dict[str, Any]:
    return {name: getattr(write, name) for name in EventWrite.__dataclass_fields__}


def test_placeholders_resolve_without_rebuilding_what_stays() -> None:
    """``with_placeholders_resolved(partial=True)`` returns the write itself when none of its
    placeholders is known yet, and ``EncodedWrite.resolve`` resolves on the encoded write
    (the write keeps its placeholders; resolving again from scratch gives the same)."""
    event = make_event(ROOM, "t", event_type="m.room.topic", state_key="")
    write = EventWrite(
        event=event,
        status=EventStatus.STATEFUL,
        state_before=StateDelta(SnapshotId(-1), {}),
        room_update=RoomUpdate(
            expected_version=1,
            room_version=VERSION,
            forward_extremities=(event.event_id,),
            current_state=StateDelta(SnapshotId(-2), {("m.room.topic", ""): event.event_id}),
            last_sent_event_id=event.event_id,
        ),
    )
    assert with_placeholders_resolved(write, {-3: 7}, partial=True) is write
    enc = events.EncodedWrite(write, b"{}", None)
    assert enc.resolve({-1: 5}).unresolved() == -2
    assert enc.state_before == StateDelta(SnapshotId(5), {})
    assert write.room_update is not None
    assert enc.current_state is write.room_update.current_state
    assert enc.resolve({-1: None, -2: 9}).unresolved() is None
    assert enc.state_before == StateDelta(None, {})
    assert enc.current_state == StateDelta(SnapshotId(9), {("m.room.topic", ""): event.event_id})
    assert write.state_before == StateDelta(SnapshotId(-1), {})  # the write is unchanged
