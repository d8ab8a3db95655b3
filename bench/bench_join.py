"""Joining a big room: its state and auth chain as outliers, then the join with ``has_state``.

    .venv/bin/python bench/bench_join.py [--members 100000] [--database-url URL]
                                         [--cache-dir DIR] [--request 10000] [--no-bulk]

The room (``roomserver.testing.joins``: ``--members`` joined users of 5 servers, plus its
admin) is generated once and cached under ``--cache-dir`` (default: the system temp
directory), since signing 100,000 events takes about two minutes. Then a roomserver on its
embedded defaults (signatures verified, the signers' keys given out of band) is fed:

1. the outliers in synchronous ``input_room_events`` requests of ``--request`` events (10,000:
   one request of 100,000 outlives the sync reply timeout on a loaded machine); each travels
   as ~256 KiB messages;
2. the join event with ``has_state`` and its ``state_event_ids`` (one request; the list
   travels as a blob beside its message).

Printed: wall time of each step and of the whole join, CPU seconds of this process (all
threads) and of nats-server, peak RSS of both, and the bulk path's phases summed over its
messages (parse, verify, auth, store; store includes index, the auth chain index build, also
shown on its own). ``--no-bulk`` measures the normal path alone (one event at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nacl.signing import SigningKey

from roomserver.api import InputRoomEvent, InputRoomEventsRequest, Kind, Outcome
from roomserver.app import Roomserver
from roomserver.storage import bulk as storage_bulk
from roomserver.testing import procfs
from roomserver.testing.joins import JoinRoom, build_join_room


def load_room(members: int, cache_dir: Path) -> JoinRoom:
    path = cache_dir / f"join-room-{members}-v10.json"
    if path.exists():
        data = json.loads(path.read_text())
        keys = {s: (kid, bytes.fromhex(seed)) for s, (kid, seed) in data["keys"].items()}
        return JoinRoom(
            data["room_id"],
            data["room_version"],
            data["outliers"],
            data["join"],
            data["state_event_ids"],
            keys,
        )
    started = time.perf_counter()
    room = build_join_room(members)
    print(f"generated {len(room.outliers)} events in {time.perf_counter() - started:.1f} s")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "room_id": room.room_id,
                "room_version": room.room_version,
                "outliers": room.outliers,
                "join": room.join,
                "state_event_ids": room.state_event_ids,
                "keys": {s: (kid, seed.hex()) for s, (kid, seed) in room.keys.items()},
            }
        )
    )
    tmp.replace(path)
    return room


def _nats_pids() -> list[int]:
    return [pid for pid, comm, _ in procfs.children() if comm == "nats-server"]


def _status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/PID/status (VmRSS: now, VmHWM: peak) in MB."""
    return procfs.status_kib(pid, field) / 1024


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _timed(label: str, fn: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await fn()
    elapsed = time.perf_counter() - started
    print(f"  {label:<28} {elapsed:7.2f} s")
    return result, elapsed


async def run(args: argparse.Namespace) -> None:
    room = load_room(args.members, Path(args.cache_dir))
    items = [InputRoomEvent(event=p, kind=Kind.OUTLIER) for p in room.outliers]
    # What the benchmark itself holds (the room's events) before the roomserver starts.
    baseline_rss = _status_mb(os.getpid(), "VmRSS")
    index_seconds = 0.0
    original_index = storage_bulk.index_in_bulk

    async def timed_index(*a: Any, **kw: Any) -> None:
        nonlocal index_seconds
        started = time.perf_counter()
        await original_index(*a, **kw)
        index_seconds += time.perf_counter() - started

    storage_bulk.index_in_bulk = timed_index  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        kwargs: dict[str, Any] = {"data_dir": tmp, "server_name": "bench.test", "federation": False}
        if args.database_url:
            kwargs["database_url"] = args.database_url
        rs = await Roomserver.open(**kwargs)
        try:
            if args.no_bulk:
                rs.bulk = None
            for server, (key_id, seed) in room.keys.items():
                rs.keyring.add_verify_key(server, key_id, SigningKey(seed).verify_key, 2**62)
            nats = _nats_pids()
            cpu0, nats0 = _own_cpu(), sum(procfs.cpu_seconds(p) for p in nats)
            print(f"join of a room of {args.members} members ({len(room.outliers)} outliers)")

            async def submit_outliers() -> list[Any]:
                results: list[Any] = []
                for start in range(0, len(items), args.request):
                    part = items[start : start + args.request]
                    response = await rs.input_room_events(InputRoomEventsRequest(events=part))
                    results += response.results
                return results

            results, t_out = await _timed(
                f"outliers (sync requests of {args.request})", submit_outliers
            )
            bad = [r for r in results if r.outcome is not Outcome.ACCEPTED]
            if bad:
                print(f"  {len(bad)} outliers not accepted, first: {bad[0]}")
            join = InputRoomEvent(
                event=room.join,
                kind=Kind.NEW,
                has_state=True,
                state_event_ids=tuple(room.state_event_ids),
            )
            cpu_join = _own_cpu()
            joined, t_join = await _timed(
                "join with has_state",
                lambda: rs.input_room_events(InputRoomEventsRequest(events=[join])),
            )
            print(
                f"  join outcome: {joined.results[0].outcome.value}, "
                f"process CPU {_own_cpu() - cpu_join:.1f} s"
            )
            cpu1, nats1 = _own_cpu(), sum(procfs.cpu_seconds(p) for p in nats)
            total = t_out + t_join
            events = len(room.outliers) + 1
            print(f"  {'total':<28} {total:7.2f} s   ({events / total:.0f} events/s)")
            print(
                f"  CPU: roomserver+bench {cpu1 - cpu0:.1f} s "
                f"({1e6 * (cpu1 - cpu0) / events:.0f} µs/event), "
                f"nats-server {nats1 - nats0:.1f} s ({1e6 * (nats1 - nats0) / events:.0f} µs/event)"
            )
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            nats_rss = sum(_status_mb(p, "VmHWM") for p in nats)
            print(
                f"  peak RSS: roomserver+bench {rss:.0f} MB (the benchmark's room alone: "
                f"{baseline_rss:.0f} MB), nats-server {nats_rss:.0f} MB"
            )
            if rs.bulk is not None:
                totals = rs.bulk.totals
                phases = ", ".join(
                    f"{k} {v:.2f} s ({1e6 * totals.cpu[k] / events:.0f} µs CPU/event)"
                    for k, v in totals.timings.items()
                )
                print(f"  bulk path: {totals.stored} stored, {totals.deferred} deferred")
                print(f"  bulk phases (wall, process CPU per event): {phases}")
                print(f"  of store: auth chain index {index_seconds:.2f} s")
                rest = t_out - sum(totals.timings.values())
                print(
                    f"  outliers outside the bulk phases (bus, normal-path answers): {rest:.2f} s"
                )
        finally:
            await rs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--cache-dir", default=str(Path(tempfile.gettempdir()) / "roomserver-bench")
    )
    parser.add_argument("--no-bulk", action="store_true", help="the normal path alone")
    parser.add_argument(
        "--request", type=int, default=10_000, help="outliers per synchronous request"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
