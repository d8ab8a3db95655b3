"""Where the one-room input path spends its time: wall clock and event-loop CPU per phase.

    .venv/bin/python bench/bench_phases.py [--events 10000] [--request 50]

One room (``bench_e2e.build_room``: room version 10, a topic change every 50 events), fed in
synchronous requests of ``--request`` events on embedded defaults (SQLite, embedded
nats-server, signatures verified). Each phase is a wrapped coroutine method; for each, per
event: how often it is called, its wall-clock time and the event loop's CPU time
(``time.thread_time`` of the loop's thread) while it ran. Phases nest: ``process_or_raise``
includes ``pipeline.handle``, which includes ``effects.plan`` and ``commit``; ``end_message``
includes ``write_behind.close`` (the transaction, run in the SQLite writer thread, so its wall
time is mostly not loop CPU) and ``outbox.publish``. What ``bus.submit_sync`` spends beyond the
processor's three steps is the bus: publish, delivery, ack and reply.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import Cpu, build_room, sync_requests, trust

from roomserver.app import Roomserver
from roomserver.service.gc_tuning import tune_gc

_wall: dict[str, float] = collections.defaultdict(float)
_cpu: dict[str, float] = collections.defaultdict(float)
_calls: collections.Counter[str] = collections.Counter()


def _wrap(obj: Any, name: str, label: str) -> None:
    inner: Callable[..., Awaitable[Any]] = getattr(obj, name)

    @functools.wraps(inner)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return await inner(*args, **kwargs)
        finally:
            _wall[label] += time.perf_counter() - wall
            _cpu[label] += time.thread_time() - cpu
            _calls[label] += 1

    setattr(obj, name, timed)


async def run(events: int, request: int) -> None:
    room = build_room("!phases:example.org", events - 5)
    with tempfile.TemporaryDirectory() as data_dir:
        async with Roomserver.open(
            data_dir=data_dir, server_name="rs.test", federation=False
        ) as rs:
            trust(rs, [room])
            p = rs.processor
            assert p is not None
            _wrap(rs.bus, "submit_sync", "1 bus.submit_sync")
            _wrap(p, "begin_message", "2 begin_message")
            _wrap(p, "process_or_raise", "3 process_or_raise")
            _wrap(p._verifier, "verify", "3a verify")
            _wrap(p._pipeline, "handle", "3b pipeline.handle")
            _wrap(p._effects, "plan", "3c effects.plan")
            _wrap(p._commit, "commit", "3d commit")
            _wrap(p, "end_message", "4 end_message")
            _wrap(p._write_behind, "close", "4a write_behind.close")
            _wrap(p._outbox, "publish", "4b outbox.publish")
            cpu = Cpu()
            ours0, nats0 = cpu.sample()
            started, loop0 = time.perf_counter(), time.thread_time()
            await sync_requests(rs, room, request)
            elapsed, loop_cpu = time.perf_counter() - started, time.thread_time() - loop0
            ours1, nats1 = cpu.sample()
    n = len(room.events)
    print(
        f"{n / elapsed:,.0f} ev/s; CPU per event: ours {1e6 * (ours1 - ours0) / n:.0f} µs "
        f"(event loop {1e6 * loop_cpu / n:.0f}), nats-server {1e6 * (nats1 - nats0) / n:.0f} µs;"
        f" wall per event {1e6 * elapsed / n:.0f} µs"
    )
    print(f"  {'phase':<24} {'calls/event':>11} {'wall µs/event':>14} {'loop CPU µs/event':>18}")
    for label in sorted(_wall):
        print(
            f"  {label:<24} {_calls[label] / n:11.2f} {1e6 * _wall[label] / n:14.1f}"
            f" {1e6 * _cpu[label] / n:18.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--request", type=int, default=50, help="events per request")
    parser.add_argument("--python-gc", action="store_true", help="as bench_e2e.py's")
    args = parser.parse_args()
    if not args.python_gc:
        tune_gc()  # as `roomserver serve` does
    asyncio.run(run(args.events, args.request))


if __name__ == "__main__":
    main()
