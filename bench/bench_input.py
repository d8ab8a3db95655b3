"""In-process cost of the input pipeline plus SQLite storage, without the bus.

    .venv/bin/python bench/bench_input.py [--events 3000] [--rooms 0] [--per-room 50]
                                          [--batch 50] [--repeat 3] [--phases] [--profile]
                                          [--database-url URL]

Drives ``handle_message(InputProcessor, ...)`` directly (the same call the bus handler makes in
``handler.py``: decode the input message, process its events, publish, encode the reply), with
messages of ``--batch`` events of one room (1: one event per message), against
real storage (SQLite in a temp dir by default) with a no-op publisher and the real ``KeyRing``
(signature verification on, the signer's key given out of band, storage as its key cache, as
``startup.py`` wires it). One room of ``--events`` events is processed sequentially, as the bus
delivers them; ``--rooms R`` additionally runs R rooms x ``--per-room`` events, interleaved
round-robin (the order a busy worker pool sees them). Each run uses a fresh database; the
median of ``--repeat`` runs is reported.

``--phases`` prints wall-clock time per phase (µs per event): every storage call (count and
time, including the thread hand-off), signature verification, publishing and the rest.
``--profile`` prints a cProfile of one run (tottime, top 40).
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from roomserver.api import (
    InputRoomEvent,
    Outcome,
    decode_event_results,
    encode_input_batch,
)
from roomserver.federation.keyring import KeyRing
from roomserver.input import InputProcessor, handle_message
from roomserver.ports import OutboxEntry
from roomserver.service.gc_tuning import tune_gc
from roomserver.storage import open_storage
from roomserver.testing.builder import RoomBuilder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import Phases, build_room  # the same room and timing as the end-to-end one


class _NoClient:
    """The keyring never asks remote servers here: every key is given out of band."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected key fetch ({name})")


class NullPublisher:
    def __init__(self) -> None:
        self.published = 0

    async def publish_room_outputs(self, room_id: str, outputs: Sequence[OutboxEntry]) -> None:
        self.published += len(outputs)


class _Delivery:
    num_delivered = 1
    stream_seq = 0


STORE_METHODS = (
    "get_events",
    "room",
    "persist",
    "referenced_as_prev",
    "redactions_for",
    "pending_outbox",
    "mark_outbox_sent",
    "state_entries",
    "state_map",
    "auth_chain",
    "get_server_keys",
    "read_for_input",
    "persist_many",
)


async def run_once(
    rooms: list[RoomBuilder], database_url: str | None, phases: Phases | None, batch: int
) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_storage(database_url or f"sqlite:///{tmp}/bench.db")
        try:
            keyring = KeyRing(_NoClient(), cache=store)  # type: ignore[arg-type]
            for b in rooms:
                for server, (key_id, key) in b.keys.items():
                    keyring.add_verify_key(server, key_id, key.verify_key, 2**62)
            publisher = NullPublisher()
            processor = InputProcessor(store, keyring, None, publisher, server_name="rs.test")
            if phases is not None:
                for name in STORE_METHODS:
                    if hasattr(store, name):
                        phases.wrap(store, name, f"storage.{name}")
                phases.wrap(keyring, "verify_event", "keyring.verify_event")
                phases.wrap(publisher, "publish_room_outputs", "publish_room_outputs")
            # Messages as the bus carries them, interleaved round-robin across rooms.
            queues = []
            events = 0
            for b in rooms:
                items = [InputRoomEvent(event=p) for p in b.pdus()]
                events += len(items)
                queues.append(
                    [
                        (b.room_id, encode_input_batch(items[i : i + batch]))
                        for i in range(0, len(items), batch)
                    ]
                )
            messages = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
            info = _Delivery()
            t = time.perf_counter()
            for room_id, payload in messages:
                decision = await handle_message(processor, room_id, payload, info, max_attempts=10)
                assert decision.reply is not None
                results = decode_event_results(decision.reply) if phases is None else []
                for result in results:
                    if result.outcome is not Outcome.ACCEPTED:
                        raise SystemExit(f"unexpected outcome: {result}")
            elapsed = time.perf_counter() - t
            close = getattr(processor, "close", None)  # absent before deferred marking
            if close is not None:
                await close()
            return elapsed, events
        finally:
            await store.close()


async def measure(label: str, rooms: list[RoomBuilder], args: argparse.Namespace) -> None:
    rates = []
    cpu = []
    for _ in range(args.repeat):
        started = time.process_time()
        elapsed, n = await run_once(rooms, args.database_url, None, args.batch)
        cpu.append(1e6 * (time.process_time() - started) / n)
        rates.append(n / elapsed)
    print(
        f"{label}, {args.batch} events/message: {n} events, median "
        f"{statistics.median(rates):,.0f} events/s "
        f"({statistics.median([1e6 / r for r in rates]):.0f} µs/event wall, "
        f"{statistics.median(cpu):.0f} µs/event CPU incl. storage threads; runs: "
        + ", ".join(f"{r:,.0f}" for r in rates)
        + ")"
    )
    if args.phases:
        phases = Phases()
        elapsed, n = await run_once(rooms, args.database_url, phases, args.batch)
        print(f"  phases ({label}, one run, {1e6 * elapsed / n:.0f} µs/event in all):")
        accounted = 0.0
        for name in sorted(phases.seconds, key=lambda k: -phases.seconds[k]):
            accounted += phases.seconds[name]
            print(
                f"    {name:<28} {phases.calls[name] / n:5.2f} calls/event "
                f"{1e6 * phases.seconds[name] / n:7.1f} µs/event"
            )
        rest = 1e6 * (elapsed - accounted) / n
        print(f"    {'rest (pipeline CPU)':<28} {'':16} {rest:7.1f} µs/event")
    if args.profile:
        profiler = cProfile.Profile(time.process_time)  # CPU time: waits do not count
        profiler.enable()
        await run_once(rooms, args.database_url, None, args.batch)
        profiler.disable()
        print(f"\ncProfile ({label}, CPU tottime of the event loop's thread, top 40):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)


async def run(args: argparse.Namespace) -> None:
    single = [build_room("!single:example.org", args.events - 5)]
    await measure("one room", single, args)
    if args.rooms:
        many = [build_room(f"!r{i}:example.org", args.per_room - 5) for i in range(args.rooms)]
        await measure(f"{args.rooms} rooms interleaved", many, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rooms", type=int, default=0)
    parser.add_argument("--per-room", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50, help="events per input message")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--phases", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument(
        "--python-gc",
        action="store_true",
        help="keep Python's collector settings (default: as roomserver serve sets them)",
    )
    args = parser.parse_args()
    if not args.python_gc:
        tune_gc()  # as `roomserver serve` does
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
