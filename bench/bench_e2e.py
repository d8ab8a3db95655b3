"""End-to-end throughput and latency of the roomserver on its embedded defaults.

    .venv/bin/python bench/bench_e2e.py [--events 10000] [--rooms 100] [--per-room 100]
                                        [--request 50] [--callers 8] [--singles 5000]
                                        [--latency 200] [--database-url URL] [--phases]
                                        [--profile] [--statements] [--python-gc]

Signature verification is on (events are signed by a server whose key is given out of band).
Scenarios, in one run (the issue's table):

* one room of ``--events`` events, synchronous requests of ``--request`` events (the shape of a
  federation transaction), one caller;
* ``--rooms`` rooms x ``--per-room`` events, requests of ``--request`` events of one room,
  ``--callers`` concurrent synchronous callers;
* one room, ``--singles`` single-event asynchronous submissions, until all are processed;
* the median and p99 latency of a synchronous ``input_room_events`` of one event on an idle
  server.

Each throughput line gives events/s and the CPU time per event of this process (roomserver and
the benchmark's own callers, all threads, and its signature-checking worker processes) and of
the embedded nats-server, then that CPU time by thread (the event loop, the SQLite threads, the
signature threads) and for the workers, with how busy each was.
``--phases`` adds wall-clock µs per event of the storage calls, signature checks and output
publishing of the first two scenarios (each its own report); ``--profile`` prints a cProfile of
the first (tottime, top 30); ``--statements`` (SQLite) the statements each storage thread ran
per event, with their wall-clock and CPU time: far more wall than CPU is time spent waiting for
the GIL (see ``docs/performance.md``, "The GIL is the saturated resource"). The garbage
collector is set as ``roomserver serve`` sets it (``service/gc_tuning.py``) unless
``--python-gc``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import os
import pstats
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from roomserver.api import InputRoomEvent, InputRoomEventsRequest, Outcome
from roomserver.app import Roomserver
from roomserver.service.gc_tuning import tune_gc
from roomserver.testing import procfs
from roomserver.testing.builder import RoomBuilder

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
STORAGE_CALLS = (
    "read_for_input", "persist_many", "persist", "state_entries", "get_events", "room",
    "pending_outbox", "mark_outbox_sent",
)  # fmt: skip


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


def _nats_server_pids() -> list[int]:
    """The nats-server processes this process started (the embedded one)."""
    return [pid for pid, comm, _ in procfs.children() if comm == "nats-server"]


class Cpu:
    """CPU seconds of this process (all threads and its signature-checking workers) and of the
    embedded nats-server."""

    def __init__(self) -> None:
        self.nats = _nats_server_pids()

    def sample(self) -> tuple[float, float]:
        ours, nats, _ = self.split()
        return ours, nats

    def split(self) -> tuple[float, float, float]:
        """This process with its workers, nats-server, and the workers alone (started lazily,
        at the first message to check: counted from their start)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        workers = 0.0
        for pid, _, cmdline in procfs.children():
            if b"roomserver.verify_worker" in cmdline:
                with contextlib.suppress(OSError):  # it ended meanwhile
                    workers += procfs.cpu_seconds(pid)
        nats = sum(procfs.cpu_seconds(p) for p in self.nats)
        return usage.ru_utime + usage.ru_stime + workers, nats, workers


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads so far, by role: the event loop (the main
    thread), and each pool by its name (``roomserver-sqlite-write``, ``roomserver-verify``...:
    its threads together)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = defaultdict(float)
    for tid in os.listdir("/proc/self/task"):
        try:
            seconds = procfs.cpu_seconds("self", thread=tid)
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid), "other")
        name = "event loop" if name == "MainThread" else re.sub(r"_\d+$", "", name)
        out[name.removeprefix("roomserver-")] += seconds
    return out


@contextmanager
def measured(label: str, events: int, cpu: Cpu) -> Iterator[None]:
    ours0, nats0, workers0 = cpu.split()
    threads0 = thread_cpu()
    t = time.perf_counter()
    yield
    elapsed = time.perf_counter() - t
    ours1, nats1, workers1 = cpu.split()
    threads1 = thread_cpu()
    threads1["verify processes"] = workers1 - workers0
    if events == 0:
        return
    print(
        f"{label:<34} {events:>6} events in {elapsed:6.2f} s = {events / elapsed:7,.0f} ev/s; "
        f"CPU/event: ours {1e6 * (ours1 - ours0) / events:5.0f} µs, "
        f"nats-server {1e6 * (nats1 - nats0) / events:4.0f} µs"
    )
    used = {k: v - threads0.get(k, 0.0) for k, v in threads1.items()}
    parts = [
        f"{name} {1e6 * seconds / events:.0f} µs ({100 * seconds / elapsed:.0f}% busy)"
        for name, seconds in sorted(used.items(), key=lambda kv: -kv[1])
        if seconds > 0
    ]
    print(f"  our threads, CPU/event: {', '.join(parts)}")


class Phases:
    """Wall-clock time and call counts of wrapped coroutine methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, obj: Any, name: str, label: str) -> None:
        inner: Callable[..., Awaitable[Any]] = getattr(obj, name)

        @functools.wraps(inner)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t
                self.calls[label] += 1

        setattr(obj, name, timed)

    def report_and_reset(self, events: int) -> None:
        print(f"  phases (wall clock, µs per event over {events} events):")
        for name in sorted(self.seconds, key=lambda k: -self.seconds[k]):
            print(
                f"    {name:<28} {self.calls[name] / events:5.2f} calls/event "
                f"{1e6 * self.seconds[name] / events:7.1f} µs/event"
            )
        self.seconds.clear()
        self.calls.clear()


class Statements:
    """SQLite statements run by the storage threads: per thread, how many per event and their
    wall-clock and CPU time (``time.thread_time``). The driver releases the GIL around each
    step of a statement, and a storage thread gets it back only when the event loop lets it
    go: wall far above CPU is time spent waiting for the GIL, not writing."""

    def __init__(self) -> None:
        self.wall: dict[tuple[str, str], float] = defaultdict(float)
        self.cpu: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        from roomserver.storage.sqlite import SqliteTx

        for method in ("execute", "executemany", "fetch", "fetchrow"):
            self._wrap(SqliteTx, method)

    def _wrap(self, cls: Any, method: str) -> None:
        inner: Callable[..., Awaitable[Any]] = getattr(cls, method)

        @functools.wraps(inner)
        async def timed(tx: Any, sql: str, *args: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return await inner(tx, sql, *args)
            finally:
                thread = threading.current_thread().name.removeprefix("roomserver-")
                key = (re.sub(r"_\d+$", "", thread), " ".join(sql.split()[:4]))
                self.wall[key] += time.perf_counter() - wall
                self.cpu[key] += time.thread_time() - cpu
                self.calls[key] += 1

        setattr(cls, method, timed)

    def report_and_reset(self, events: int) -> None:
        threads = sorted({thread for thread, _ in self.calls})
        print(f"  SQLite statements (per event over {events} events):")
        for thread in threads:
            keys = [k for k in self.calls if k[0] == thread]
            wall = sum(self.wall[k] for k in keys)
            cpu = sum(self.cpu[k] for k in keys)
            calls = sum(self.calls[k] for k in keys)
            ratio = wall / max(cpu, 1e-9)
            print(
                f"    {thread:<14} {calls / events:5.2f} statements, "
                f"wall {1e6 * wall / events:6.1f} µs, CPU {1e6 * cpu / events:6.1f} µs "
                f"(wall/CPU {ratio:4.1f})"
            )
            for k in sorted(keys, key=lambda k: -self.wall[k])[:3]:
                print(
                    f"      {k[1]:<40} wall {1e6 * self.wall[k] / self.calls[k]:7.1f} µs, "
                    f"CPU {1e6 * self.cpu[k] / self.calls[k]:6.1f} µs per statement"
                )
        self.wall.clear()
        self.cpu.clear()
        self.calls.clear()


async def sync_requests(rs: Roomserver, b: RoomBuilder, size: int) -> None:
    pdus = b.pdus()
    for start in range(0, len(pdus), size):
        request = InputRoomEventsRequest(
            events=[InputRoomEvent(event=p) for p in pdus[start : start + size]]
        )
        response = await rs.input_room_events(request)
        bad = [r for r in response.results if r.outcome is not Outcome.ACCEPTED]
        if bad:
            raise SystemExit(f"unexpected outcome: {bad[0]}")


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
    print(
        f"generating rooms ({args.events} events; {args.rooms} x {args.per_room}; "
        f"{args.singles} singles)..."
    )
    t = time.perf_counter()
    single = build_room("!single:example.org", args.events - 5)
    many = [build_room(f"!r{i}:example.org", args.per_room - 5) for i in range(args.rooms)]
    singles = build_room("!singles:example.org", args.singles - 5)
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
            trust(rs, [single, *many, singles, latency_room])
            cpu = Cpu()
            phases = Phases() if args.phases else None
            if phases is not None:
                for name in STORAGE_CALLS:
                    phases.wrap(rs.storage, name, f"storage.{name}")
                phases.wrap(rs.keyring, "verify_event", "keyring.verify_event")
                phases.wrap(rs.bus, "publish_room_outputs", "publish outputs")
            statements = Statements() if args.statements and args.database_url is None else None
            profiler = cProfile.Profile(time.process_time) if args.profile else None

            n = len(single.events)
            if profiler:
                profiler.enable()
            with measured(f"one room, sync requests of {args.request}", n, cpu):
                await sync_requests(rs, single, args.request)
            if profiler:
                profiler.disable()
                print(f"\nCPU profile, one-room run (event loop thread; {args.sort}, top 40):")
                pstats.Stats(profiler).sort_stats(args.sort).print_stats(40)
            if phases is not None:
                phases.report_and_reset(n)
            if statements is not None:
                statements.report_and_reset(n)

            n = sum(len(b.events) for b in many)
            queue: asyncio.Queue[RoomBuilder] = asyncio.Queue()
            for b in many:
                queue.put_nowait(b)

            async def caller() -> None:
                while not queue.empty():
                    await sync_requests(rs, queue.get_nowait(), args.request)

            label = f"{len(many)} rooms, {args.callers} callers"
            with measured(label, n, cpu):
                await asyncio.gather(*(caller() for _ in range(args.callers)))
            if phases is not None:
                phases.report_and_reset(n)
            if statements is not None:
                statements.report_and_reset(n)

            n = len(singles.events)
            with measured("one room, single async submissions", n, cpu):
                for pdu in singles.pdus():
                    one = InputRoomEventsRequest([InputRoomEvent(event=pdu)], asynchronous=True)
                    await rs.input_room_events(one)
                await wait_done(rs, [singles], limit_s=600)
            if statements is not None:
                statements.report_and_reset(n)

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
            if samples:
                p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
                print(
                    f"sync latency, one event, idle:    median "
                    f"{statistics.median(samples) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms "
                    f"({len(samples)} calls)"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--per-room", type=int, default=100)
    parser.add_argument("--request", type=int, default=50, help="events per request")
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--singles", type=int, default=5000)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--phases", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--python-gc",
        action="store_true",
        help="keep Python's collector settings (default: as roomserver serve sets them)",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="SQLite: the storage threads' statements, wall and CPU per event",
    )
    parser.add_argument("--sort", default="tottime", help="profile order (tottime, cumulative)")
    args = parser.parse_args()
    if not args.python_gc:
        tune_gc()  # as `roomserver serve` does
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
