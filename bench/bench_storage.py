"""Storage benchmark: a linear room of N events, a state change every 10th event.

Run: .venv/bin/python bench/bench_storage.py [--backend sqlite|postgres|both] [--events 50000]
     [--members 100000]

Reports, per backend: events persisted per second; persist latency around the 1,000th event and
over the last 1,000 events (should be about equal); event-loop CPU time per persist; state-at-event
lookups per second (three keys, as auth event selection does; and whole states); database bytes
per event; with --members, auth chain differences over two member state sets of that size.
Events are synthetic (unsigned, IDs given) so generating them costs little.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from typing import Any

import asyncpg

from roomserver.core.pdu import Event, parse_event
from roomserver.ports import (
    EventStatus,
    EventWrite,
    MembershipChange,
    RoomUpdate,
    SnapshotId,
    StateDelta,
)
from roomserver.storage import SqlStorage, open_storage

ROOM = "!bench:example.org"
VERSION = "10"
PG_SERVER = os.environ.get("ROOMSERVER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
FAKE_HASH = "A" * 43
FAKE_SIGNATURE = "B" * 86


def _event_id(i: int) -> str:
    digest = hashlib.sha256(f"bench-{i}".encode()).digest()
    return "$" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def generate(n: int) -> list[Event]:
    """create, creator join, power levels, then messages with a member join every 10th event."""
    creator = "@creator:example.org"
    state: dict[tuple[str, str], str] = {}
    events: list[Event] = []
    prev: list[str] = []
    for i in range(n):
        sender = creator
        state_key: str | None = None
        content: dict[str, Any]
        if i == 0:
            event_type, state_key, content = "m.room.create", "", {"room_version": VERSION}
        elif i == 1:
            event_type, state_key, content = "m.room.member", creator, {"membership": "join"}
        elif i == 2:
            event_type, state_key, content = "m.room.power_levels", "", {"users": {creator: 100}}
        elif i % 10 == 0:
            sender = f"@user{i}:server{i % 97}.example.org"
            event_type, state_key, content = "m.room.member", sender, {"membership": "join"}
        else:
            event_type = "m.room.message"
            content = {"msgtype": "m.text", "body": f"message number {i} in the benchmark room"}
        auth = [
            state[k]
            for k in (("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", sender))
            if k in state
        ]
        pdu: dict[str, Any] = {
            "type": event_type,
            "room_id": ROOM,
            "sender": sender,
            "content": content,
            "origin_server_ts": 1_700_000_000_000 + i,
            "depth": i + 1,
            "prev_events": prev,
            "auth_events": auth,
            "hashes": {"sha256": FAKE_HASH},
            "signatures": {sender.split(":", 1)[1]: {"ed25519:a": FAKE_SIGNATURE}},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        event = parse_event(pdu, VERSION, event_id=_event_id(i))
        events.append(event)
        if state_key is not None:
            state[(event_type, state_key)] = event.event_id
        prev = [event.event_id]
    return events


def write_for(event: Event, version: int | None, current: SnapshotId | None) -> EventWrite:
    changes = {} if event.state_key is None else {event.state_tuple: event.event_id}
    members = []
    if event.type == "m.room.member" and event.state_key is not None:
        members.append(MembershipChange(event.state_key, "join", event.event_id, event.sender))
    return EventWrite(
        event=event,
        status=EventStatus.STATEFUL,
        state_before=StateDelta(current, {}),
        room_update=RoomUpdate(
            expected_version=version,
            room_version=VERSION,
            forward_extremities=(event.event_id,),
            current_state=StateDelta(current, changes),
            last_sent_event_id=event.event_id,
            membership_changes=members,
        ),
    )


def _ms(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[max(0, int(len(values) * 0.99) - 1)]
    return f"median {statistics.median(values) * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms"


async def run(store: SqlStorage, events: list[Event]) -> None:
    n = len(events)
    latencies: list[float] = []
    loop_cpu: list[float] = []
    snapshots: list[SnapshotId | None] = []
    version: int | None = None
    current: SnapshotId | None = None
    started = time.perf_counter()
    for event in events:
        t0, c0 = time.perf_counter(), time.thread_time()
        result = await store.persist(write_for(event, version, current))
        latencies.append(time.perf_counter() - t0)
        loop_cpu.append(time.thread_time() - c0)
        version = (version or 0) + 1
        current = result.current_state
        snapshots.append(result.state_before)
    elapsed = time.perf_counter() - started
    print(f"  persisted {n} events in {elapsed:.1f} s: {n / elapsed:,.0f} events/s")
    early = range(500, 1500) if n >= 3000 else range(n // 2)
    late = range(max(0, n - 1000), n)
    for label, window in (("around event 1,000", early), ("over the last 1,000", late)):
        plain = [latencies[i] for i in window if events[i].state_key is None]
        state = [latencies[i] for i in window if events[i].state_key is not None]
        print(f"  persist {label + ':':<21} all {_ms([latencies[i] for i in window])}")
        print(f"    {'':<27}messages {_ms(plain)}; state events {_ms(state)}")
    print(f"  event-loop CPU per persist:     {_ms(loop_cpu)}")

    rng = random.Random(1)
    keys = [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", "")]
    lookups = 3000
    sample = [rng.randrange(n) for _ in range(lookups)]
    t0 = time.perf_counter()
    for i in sample:
        keys[2] = ("m.room.member", events[i].sender)
        await store.state_entries(snapshots[i], keys)
    rate = lookups / (time.perf_counter() - t0)
    print(f"  state-at-event lookups (3 keys): {rate:,.0f}/s")
    store.clear_caches()
    t0 = time.perf_counter()
    for i in sample[:300]:
        await store.state_entries(snapshots[i], keys)
    rate = 300 / (time.perf_counter() - t0)
    print(f"  same, caches cleared first:      {rate:,.0f}/s")
    t0 = time.perf_counter()
    for i in sample[:100]:
        await store.state_map(snapshots[i])
    rate = 100 / (time.perf_counter() - t0)
    print(f"  whole state at event (avg {n // 20:,} entries): {rate:,.0f}/s")


def _member_event(i: int, seed: str, auth: list[str], membership: str) -> Event:
    user = f"@member{i}:server{i % 50}.example.org"
    pdu: dict[str, Any] = {
        "type": "m.room.member",
        "room_id": "!members:example.org",
        "sender": user,
        "state_key": user,
        "content": {"membership": membership},
        "origin_server_ts": 1_700_000_000_000,
        "depth": 10,
        "prev_events": [],
        "auth_events": auth,
        "hashes": {"sha256": FAKE_HASH},
        "signatures": {},
    }
    return parse_event(pdu, VERSION, event_id=_event_id(-1 - i if seed == "join" else -(10**9) - i))


async def run_members(store: SqlStorage, members: int) -> None:
    """auth_chain_difference of two full member state sets of a large room, 50 leaves apart."""
    base = generate(3)  # create, creator join, power levels (linked by auth events)
    for event in base:
        await store.persist(EventWrite(event=event, status=EventStatus.OUTLIER))
    auth = [base[0].event_id, base[2].event_id]
    joins = [_member_event(i, "join", auth, "join") for i in range(members)]
    leaves = [_member_event(i, "leave", [*auth, joins[i].event_id], "leave") for i in range(50)]
    t0 = time.perf_counter()
    for event in joins + leaves:
        await store.persist(EventWrite(event=event, status=EventStatus.OUTLIER))
    print(f"  {members:,} members stored as outliers in {time.perf_counter() - t0:.1f} s")
    everyone = [e.event_id for e in base + joins]
    some_left = [e.event_id for e in base + leaves + joins[50:]]
    for label in ("warm caches", "cold caches"):
        if label == "cold caches":
            store.clear_caches()
        t0 = time.perf_counter()
        difference = await store.auth_chain_difference([everyone, some_left])
        took = time.perf_counter() - t0
        print(f"  auth_chain_difference, two {members:,}-event sets ({label}): {took:.3f} s")
        assert len(difference) == 50
    t0 = time.perf_counter()
    await store.auth_chain([leaves[0].event_id])
    print(f"  auth_chain of one event: {(time.perf_counter() - t0) * 1e3:.2f} ms")


def print_size(size: int, n: int) -> None:
    print(f"  database size: {size / 1e6:.1f} MB, {size / n:,.0f} bytes per event")


def _file_sizes(path: str) -> int:
    return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))


async def bench_sqlite(events: list[Event], members: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        store = await open_storage(f"sqlite:///{path}")
        print("SQLite (WAL, synchronous=NORMAL)")
        try:
            await run(store, events)
        finally:
            await store.close()  # checkpoints the WAL into the file
        print_size(_file_sizes(path), len(events))
        if members:
            store = await open_storage(f"sqlite:///{path}")
            try:
                await run_members(store, members)
            finally:
                await store.close()


async def _postgres_size(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
        size: int = await conn.fetchval("SELECT pg_database_size(current_database())")
        empty: int = await conn.fetchval("SELECT pg_database_size('template1')")
        return size - empty
    finally:
        await conn.close()


async def bench_postgres(events: list[Event], members: int) -> None:
    name = f"roomserver_bench_{secrets.token_hex(4)}"
    dsn = f"{PG_SERVER}/{name}"
    admin = await asyncpg.connect(f"{PG_SERVER}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        store = await open_storage(dsn)
        print("PostgreSQL (asyncpg pool)")
        try:
            await run(store, events)
            print_size(await _postgres_size(dsn), len(events))
            if members:
                await run_members(store, members)
        finally:
            await store.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument(
        "--members",
        type=int,
        default=0,
        help="also time auth chain differences over a room with this many members",
    )
    args = parser.parse_args()
    t0 = time.perf_counter()
    events = generate(args.events)
    print(f"generated {len(events)} events in {time.perf_counter() - t0:.1f} s")
    if args.backend in ("sqlite", "both"):
        await bench_sqlite(events, args.members)
    if args.backend in ("postgres", "both"):
        await bench_postgres(events, args.members)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
