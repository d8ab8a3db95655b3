"""Where the time of a synchronous single-event call on an idle server goes.

    .venv/bin/python bench/bench_latency.py [--calls 200]

Sends ``--calls`` one-event synchronous ``input_room_events`` calls, one after the other, to
a room whose worker is running (as ``bench_e2e.py``'s latency row does), and prints for each
step the median time since the call started: the delivery to the room worker, the handler and
its input phases (``begin_message`` = the gather, ``process_or_raise`` = verify and decide,
``end_message`` = commit and publish outputs), the discovery announcement (concurrent), the
worker's settling and the reply's arrival. Wall clock, embedded defaults, signatures verified.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import ALICE, build_room, trust

from roomserver.api import InputRoomEvent, InputRoomEventsRequest, Outcome
from roomserver.app import Roomserver
from roomserver.bus import workers
from roomserver.service.gc_tuning import tune_gc

_marks: dict[str, float] = {}


def _mark(name: str) -> None:
    _marks.setdefault(name, time.perf_counter())


def _timed(label: str, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        _mark(f"{label} start")
        try:
            return await inner(*args, **kwargs)
        finally:
            _mark(f"{label} end")

    return timed


async def run(calls: int) -> None:
    room = build_room("!latency:example.org", 0)
    probes = [room.message(ALICE, f"probe {i}") for i in range(calls)]
    with tempfile.TemporaryDirectory() as data_dir:
        async with Roomserver.open(
            data_dir=data_dir, server_name="rs.test", federation=False
        ) as rs:
            trust(rs, [room])
            pool = rs.bus.pool
            assert pool is not None and rs.processor is not None
            pool.handler = _timed("handler", pool.handler)
            pool.announce = _timed("discovery announce", pool.announce)  # type: ignore[method-assign]
            for name in ("begin_message", "process_or_raise", "end_message"):
                setattr(rs.processor, name, _timed(name, getattr(rs.processor, name)))
            process = workers.RoomWorker._process

            async def delivered(self: workers.RoomWorker, msg: Any) -> None:
                _mark("delivered to the worker")
                await process(self, msg)
                _mark("worker settled it")

            workers.RoomWorker._process = delivered  # type: ignore[method-assign]
            setup = [InputRoomEvent(event=e.pdu) for e in list(room.events.values())[:5]]
            await rs.input_room_events(InputRoomEventsRequest(events=setup))
            rows: dict[str, list[float]] = defaultdict(list)
            for probe in probes:
                _marks.clear()
                started = time.perf_counter()
                response = await rs.input_room_events(
                    InputRoomEventsRequest(events=[InputRoomEvent(event=probe.pdu)])
                )
                ended = time.perf_counter()
                assert response.results[0].outcome is Outcome.ACCEPTED, response
                for name, at in _marks.items():
                    rows[name].append(1000 * (at - started))
                rows["reply received"].append(1000 * (ended - started))
            print(f"median ms since the call started ({calls} calls):")
            for name, values in sorted(rows.items(), key=lambda kv: statistics.median(kv[1])):
                print(f"  {name:<28} {statistics.median(values):7.2f}")
            total = sorted(rows["reply received"])
            p99 = total[min(len(total) - 1, int(len(total) * 0.99))]
            print(f"  total: median {statistics.median(total):.2f} ms, p99 {p99:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--python-gc", action="store_true", help="as bench_e2e.py's")
    args = parser.parse_args()
    if not args.python_gc:
        tune_gc()  # as `roomserver serve` does
    asyncio.run(run(args.calls))


if __name__ == "__main__":
    main()
