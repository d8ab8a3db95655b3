"""Contract: atomicity, concurrent writers, migrations and failures (both backends)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from roomserver.ports import (
    ConcurrentUpdate,
    CorruptData,
    EventStatus,
    EventWrite,
    MembershipChange,
    OutboxEntry,
    RoomUpdate,
    SchemaTooNew,
    StateDelta,
    StorageUnavailable,
)
from roomserver.storage import SqlStorage, open_storage
from roomserver.storage.engine import Tx
from roomserver.storage.migrate import latest_version, schema_version
from tests.pgutil import fresh_schema_url
from tests.storage.helpers import VERSION, LinearRoom

ROOM = "!tx:example.org"
TABLES = (
    "rooms",
    "events",
    "prev_edges",
    "auth_chain_positions",
    "state_keys",
    "state_snapshots",
    "state_deltas",
    "redactions",
    "memberships",
    "outbox",
)
CHECKPOINTS = ("room", "event", "redactions", "room_update", "outbox")


class Injected(Exception):
    pass


async def row_counts(store: SqlStorage) -> dict[str, int]:
    async def count(tx: Tx) -> dict[str, int]:
        out = {}
        for table in TABLES:
            row = await tx.fetchrow(f"SELECT COUNT(*) FROM {table}")
            assert row is not None
            out[table] = int(row[0])
        return out

    return await store.engine.run(count, write=False)


def full_write(room: LinearRoom) -> EventWrite:
    """A write touching every table: new state key, membership, redaction, outbox."""
    user = "@zed:z.example"
    event = room.next_event(
        "everything",
        event_type="m.room.member",
        state_key=user,
        content={"membership": "join"},
        sender=user,
    )
    return EventWrite(
        event=event,
        status=EventStatus.STATEFUL,
        state_before=StateDelta(room.current, {("x.new", "key"): room.latest[0]}),
        room_update=RoomUpdate(
            expected_version=room.version,
            room_version=VERSION,
            forward_extremities=(event.event_id,),
            current_state=StateDelta(room.current, {event.state_tuple: event.event_id}),
            last_sent_event_id=event.event_id,
            membership_changes=[MembershipChange(user, "join", event.event_id, user)],
        ),
        outbox=[OutboxEntry("out-1", "new_room_event", b"{}")],
        redaction_target=room.latest[0],
    )


@pytest.mark.parametrize("point", CHECKPOINTS)
async def test_failure_mid_transaction_leaves_no_trace(store: SqlStorage, point: str) -> None:
    room = LinearRoom(store, ROOM)
    await room.create()
    write = full_write(room)
    before_counts = await row_counts(store)
    before_room = await store.room(ROOM)

    def inject(name: str) -> None:
        if name == point:
            raise Injected(name)

    store.set_fault_injector(inject)
    with pytest.raises(Injected):
        await store.persist(write)
    store.set_fault_injector(None)

    assert await row_counts(store) == before_counts
    assert await store.room(ROOM) == before_room
    assert await store.get_events([write.event.event_id]) == {}
    assert await store.pending_outbox(ROOM) == []
    assert await store.membership(ROOM, "@zed:z.example") is None
    # Nothing learnt inside the failed transaction lingers in the caches either.
    result = await store.persist(write)
    assert (await store.state_map(result.state_before))[("x.new", "key")] == room.latest[0]
    assert await store.membership(ROOM, "@zed:z.example") == "join"


async def test_failure_creating_a_room_leaves_no_room(store: SqlStorage) -> None:
    room = LinearRoom(store, ROOM)
    store.set_fault_injector(lambda name: (_ for _ in ()).throw(Injected(name)))
    with pytest.raises(Injected):
        await room.create()
    store.set_fault_injector(None)
    assert await row_counts(store) == dict.fromkeys(TABLES, 0)


async def test_stale_writer_is_detected(storage_url: str) -> None:
    first = await open_storage(storage_url)
    second = await open_storage(storage_url)  # another process, same database
    try:
        room = LinearRoom(first, ROOM)
        await room.create()
        stale = LinearRoom(second, ROOM)
        stale.version, stale.current, stale.latest = room.version, room.current, room.latest
        stale.state, stale.depth = dict(room.state), room.depth
        await room.send(room.next_event("first writer"))
        loser = stale.next_event("second writer")
        with pytest.raises(ConcurrentUpdate):
            await stale.send(loser)
        assert await second.get_events([loser.event_id]) == {}
        # Creating a room that exists is a conflict too.
        again = LinearRoom(second, ROOM)
        with pytest.raises(ConcurrentUpdate):
            await again.send(again.next_event("create again", event_type="m.room.create"))
    finally:
        await first.close()
        await second.close()


async def test_simultaneous_writers_one_wins(storage_url: str) -> None:
    stores = [await open_storage(storage_url) for _ in range(2)]
    try:
        room = LinearRoom(stores[0], ROOM)
        await room.create()
        contenders = []
        for i, store in enumerate(stores):
            other = LinearRoom(store, ROOM)
            other.version, other.current, other.latest = room.version, room.current, room.latest
            other.state, other.depth = dict(room.state), room.depth
            contenders.append(other.send(other.next_event(f"contender {i}")))
        outcomes: list[Any] = await asyncio.gather(*contenders, return_exceptions=True)
        assert sum(isinstance(o, ConcurrentUpdate) for o in outcomes) == 1
        info = await stores[0].room(ROOM)
        assert info is not None and info.version == (room.version or 0) + 1
    finally:
        for store in stores:
            await store.close()


async def test_simultaneous_room_creators_one_wins(storage_url: str) -> None:
    stores = [await open_storage(storage_url) for _ in range(2)]
    try:
        rooms = [LinearRoom(store, ROOM) for store in stores]
        creates = [
            room.send(room.next_event(f"create {i}", event_type="m.room.create", state_key=""))
            for i, room in enumerate(rooms)
        ]
        outcomes: list[Any] = await asyncio.gather(*creates, return_exceptions=True)
        assert sum(isinstance(o, ConcurrentUpdate) for o in outcomes) == 1, outcomes
        info = await stores[1].room(ROOM)
        assert info is not None and info.version == 1
    finally:
        for store in stores:
            await store.close()


async def test_migrations_from_empty_and_refusal_of_newer_schema(storage_url: str) -> None:
    store = await open_storage(storage_url)
    newest = latest_version(store.dialect)
    assert newest >= 1
    assert await schema_version(store.engine) == newest
    await store.close()
    store = await open_storage(storage_url)  # reopening applies nothing and loses nothing
    room = LinearRoom(store, ROOM)
    await room.create()

    async def bump(tx: Tx) -> None:
        await tx.execute("UPDATE schema_version SET version = ?", newest + 1)

    await store.engine.run(bump, write=True)
    await store.close()
    with pytest.raises(SchemaTooNew, match=rf"version {newest + 1}.*run a newer roomserver"):
        await open_storage(storage_url)


async def test_closed_storage_is_unavailable(store: SqlStorage) -> None:
    await store.close()
    with pytest.raises(StorageUnavailable):
        await store.room(ROOM)


async def test_unreachable_postgres_is_unavailable() -> None:
    with pytest.raises(StorageUnavailable):
        await open_storage("postgresql://postgres@127.0.0.1:1/nowhere")


async def test_sqlite_unreachable_and_damaged_files(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable):
        await open_storage(f"sqlite:///{tmp_path}/no/such/dir/db.sqlite")
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"this is not a database file" * 200)
    with pytest.raises(CorruptData):
        await open_storage(f"sqlite:///{damaged}")


async def test_sqlite_memory_url() -> None:
    store = await open_storage("sqlite://:memory:")
    try:
        room = LinearRoom(store, ROOM)
        await room.create()
        assert await store.state_map(room.current) == room.state
    finally:
        await store.close()


async def test_lost_postgres_connections_are_unavailable_then_recover(
    pg_database: str,
) -> None:
    url = await fresh_schema_url(pg_database)
    store = await open_storage(url)
    try:
        room = LinearRoom(store, ROOM)
        await room.create()
        admin = await asyncpg.connect(pg_database)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        # Each call either fails with the typed, transient error or (once the pool has
        # replaced the dead connection) works; never a raw driver exception.
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append(await store.room(ROOM))
            except StorageUnavailable as exc:
                assert exc.transient
                outcomes.append(None)
        info = outcomes[-1]
        assert info is not None and info.version == room.version
    finally:
        await store.close()


async def test_a_stored_event_with_malformed_json_is_corrupt_data(tmp_path: Path) -> None:
    """Reading facts from a stored event whose JSON was damaged outside the roomserver names
    what is wrong (``CorruptData``, "cannot be decoded"), not a damaged database file."""
    store = await open_storage(f"sqlite:///{tmp_path}/db.sqlite")
    try:
        room = LinearRoom(store, ROOM)
        await room.create()
        event = room.next_event("damaged")
        await room.send(event)
        assert event.event_id in await store.member_facts([event.event_id])

        async def damage(tx: Tx) -> None:
            await tx.execute(
                "UPDATE events SET json = ? WHERE event_id = ?", b"{bad", event.event_id
            )

        await store.engine.run(damage, write=True)
        with pytest.raises(CorruptData, match="cannot be decoded"):
            await store.member_facts([event.event_id])
    finally:
        await store.close()
