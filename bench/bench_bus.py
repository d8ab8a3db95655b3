"""Bus throughput with a no-op handler, against the embedded nats-server.

    .venv/bin/python bench/bench_bus.py [--events 10000] [--rooms 100] [--runs 3]

Reports (median of runs):
* one room: N events published (pipelined) and handled, end to end;
* one room, drain: N events queued first, then workers started (pure consume rate);
* R rooms x N/R events in parallel, end to end;
* sync latency: one ``submit_sync`` of one event on an idle bus (median, p99).

``--idle-consumers 0,1000,3000`` instead measures one room's end-to-end rate while that many
idle room consumers exist on the input stream (the server's cost per message grows with them).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from roomserver.bus import Bus, BusConfig, DeliveryInfo, EmbeddedNatsServer, HandlerResult

_ACK = HandlerResult.ack(reply=b"")


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()

    async def __call__(self, room_id: str, payload: bytes, info: DeliveryInfo) -> HandlerResult:
        self.count += 1
        if self.count >= self.target:
            self.done.set()
        return _ACK

    def expect(self, n: int) -> None:
        self.count = 0
        self.target = n
        self.done.clear()


async def end_to_end(bus: Bus, counter: Counter, items: list[tuple[str, bytes]]) -> float:
    counter.expect(len(items))
    started = time.perf_counter()
    await bus.publish_inputs(items)
    await counter.done.wait()
    return len(items) / (time.perf_counter() - started)


async def drain(url: str, config: BusConfig, items: list[tuple[str, bytes]]) -> float:
    bus = await Bus.connect(url, config=config)
    counter = Counter()
    counter.expect(len(items))
    await bus.start_workers(counter)  # discovery consumer first: nothing is dropped
    await bus.stop_workers(grace=1)
    await bus.publish_inputs(items)
    started = time.perf_counter()
    await bus.start_workers(counter)
    await counter.done.wait()
    rate = len(items) / (time.perf_counter() - started)
    await bus.close()
    return rate


async def sync_latency(bus: Bus, calls: int) -> tuple[float, float]:
    samples = []
    for n in range(calls):
        started = time.perf_counter()
        await bus.submit_sync([("!latency:bench", b"%d" % n)])
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(0.002)
    samples.sort()
    return statistics.median(samples) * 1000, samples[int(len(samples) * 0.99) - 1] * 1000


async def run(events: int, rooms: int, runs: int) -> None:
    config = BusConfig()
    payload = b"x" * 1024
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedNatsServer(Path(tmp)) as server:
            for run_index in range(runs):
                bus = await Bus.connect(server.url, config=config)
                counter = Counter()
                await bus.start_workers(counter)
                one = [(f"!one{run_index}:bench", payload)] * events
                many = [
                    (f"!r{r}x{run_index}:bench", payload)
                    for _ in range(events // rooms)
                    for r in range(rooms)
                ]
                results.setdefault("one room, end to end", []).append(
                    await end_to_end(bus, counter, one)
                )
                results.setdefault(f"{rooms} rooms, end to end", []).append(
                    await end_to_end(bus, counter, many)
                )
                median, p99 = await sync_latency(bus, 300)
                results.setdefault("sync latency median ms", []).append(median)
                results.setdefault("sync latency p99 ms", []).append(p99)
                await bus.close()
                results.setdefault("one room, drain", []).append(
                    await drain(
                        server.url, config, [(f"!drain{run_index}:bench", payload)] * events
                    )
                )
    for name, values in results.items():
        unit = "" if name.endswith(" ms") else " events/s"
        print(
            f"{name:28s} {statistics.median(values):10.1f}{unit}   runs: "
            + ", ".join(f"{v:.1f}" for v in values)
        )


async def idle_consumers(counts: list[int], events: int) -> None:
    from roomserver.bus.pool import WorkerPool

    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedNatsServer(Path(tmp)) as server:
            bus = await Bus.connect(server.url, config=BusConfig())
            counter = Counter()
            await bus.start_workers(counter)
            assert bus.pool is not None
            pool: WorkerPool = bus.pool
            made = 0
            for target in counts:
                while made < target:
                    batch = range(made, min(made + 100, target))
                    await asyncio.gather(*(pool.ensure_consumer(f"!idle{i}:bench") for i in batch))
                    made = batch.stop
                items = [(f"!one{target}:bench", b"x" * 1024)] * events
                rate = await end_to_end(bus, counter, items)
                print(f"{target:6d} idle room consumers: one room {rate:8.1f} events/s")
            await bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-consumers", default="")
    args = parser.parse_args()
    if args.idle_consumers:
        counts = [int(c) for c in args.idle_consumers.split(",")]
        asyncio.run(idle_consumers(counts, min(args.events, 3000)))
    else:
        asyncio.run(run(args.events, args.rooms, args.runs))


if __name__ == "__main__":
    main()
