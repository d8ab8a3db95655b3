"""End-to-end throughput and latency of the roomserver on its embedded defaults.

    .venv/bin/python bench/bench_e2e.py [--events 10000] [--rooms 100] [--per-room 100]
                                        [--latency 200] [--database-url URL] [--profile]

Signature verification is on (events are signed by a server whose key is given out of band).
Reports, in one run: events/s for one room of N events; events/s for R rooms x M events in
parallel; and the median and p99 latency of a synchronous ``input_room_events`` of one event
on an idle server. ``--profile`` prints where the time goes (cProfile, cumulative, top 30).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from roomserver.api import InputRoomEvent, InputRoomEventsRequest, Outcome
from roomserver.app import Roomserver
from roomserver.testing.builder import RoomBuilder

ALICE = "@alice:example.org"
BOB = "@bob:example.org"


def build_room(room_id: str, messages: int) -> RoomBuilder:
    b = RoomBuilder("10", room_id=room_id)
    b.create_room(ALICE)
    b.join(BOB)
    for i in range(messages):
        if i % 50 == 49:
            b.send("m.room.topic", ALICE, {"topic": f"topic {i}"}, state_key="")
        else:
            b.message(BOB if i % 2 else ALICE, f"message {i}")
    return b


def trust(rs: Roomserver, builders: list[RoomBuilder]) -> None:
    for b in builders:
        for server, (key_id, key) in b.keys.items():
            rs.keyring.add_verify_key(server, key_id, key.verify_key, 2**62)


async def publish(rs: Roomserver, b: RoomBuilder, batch: int = 500) -> None:
    pdus = b.pdus()
    for start in range(0, len(pdus), batch):
        request = InputRoomEventsRequest(
            events=[InputRoomEvent(event=p) for p in pdus[start : start + batch]],
            asynchronous=True,
        )
        await rs.input_room_events(request)


async def wait_done(rs: Roomserver, builders: list[RoomBuilder], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    pending = list(builders)
    while pending:
        still = []
        for b in pending:
            if await rs.latest_events(b.room_id) != b.latest:
                still.append(b)
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(pending)} rooms not done within {limit_s} s")
            await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> None:
    print(f"generating rooms ({args.events} events; {args.rooms} x {args.per_room})...")
    t = time.perf_counter()
    single = build_room("!single:example.org", args.events - 5)
    many = [build_room(f"!r{i}:example.org", args.per_room - 5) for i in range(args.rooms)]
    latency_room = build_room("!latency:example.org", 0)
    probes = [latency_room.message(ALICE, f"probe {i}") for i in range(args.latency)]
    print(f"  generated in {time.perf_counter() - t:.1f} s")

    with tempfile.TemporaryDirectory() as data_dir:
        async with Roomserver.open(
            data_dir=data_dir,
            server_name="rs.test",
            database_url=args.database_url,
            federation=False,
        ) as rs:
            trust(rs, [single, *many, latency_room])
            profiler = cProfile.Profile() if args.profile else None

            if profiler:
                profiler.enable()
            t = time.perf_counter()
            await publish(rs, single)
            await wait_done(rs, [single], limit_s=600)
            elapsed = time.perf_counter() - t
            if profiler:
                profiler.disable()
            n = len(single.events)
            print(f"one room:         {n} events in {elapsed:.2f} s = {n / elapsed:,.0f} events/s")

            t = time.perf_counter()
            await asyncio.gather(*(publish(rs, b, batch=100) for b in many))
            await wait_done(rs, many, limit_s=600)
            elapsed = time.perf_counter() - t
            n = sum(len(b.events) for b in many)
            print(
                f"{len(many)} rooms parallel: {n} events in {elapsed:.2f} s = "
                f"{n / elapsed:,.0f} events/s"
            )

            setup = InputRoomEventsRequest(
                events=[InputRoomEvent(event=e.pdu) for e in list(latency_room.events.values())[:5]]
            )
            await rs.input_room_events(setup)
            samples = []
            for probe in probes:
                t = time.perf_counter()
                response = await rs.input_room_events(
                    InputRoomEventsRequest(events=[InputRoomEvent(event=probe.pdu)])
                )
                samples.append(time.perf_counter() - t)
                assert response.results[0].outcome is Outcome.ACCEPTED, response
            samples.sort()
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
            print(
                f"sync latency:     median {statistics.median(samples) * 1000:.2f} ms, "
                f"p99 {p99 * 1000:.2f} ms ({len(samples)} calls)"
            )
            if profiler:
                print("\nprofile of the one-room run (cumulative, top 30):")
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--per-room", type=int, default=100)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--profile", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
