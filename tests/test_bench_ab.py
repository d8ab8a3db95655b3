"""``bench/ab.py`` reads the figures the benchmark scripts print."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def _ab() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "ab.py"
    spec = importlib.util.spec_from_file_location("bench_ab", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_figures_of_bench_e2e_and_bench_latency() -> None:
    output = (
        "generating rooms (10000 events; 100 x 100; 5000 singles)...\n"
        "one room, sync requests of 50       10000 events in   2.96 s =   3,373 ev/s; "
        "CPU/event: ours   318 µs, nats-server   32 µs\n"
        "  our threads, CPU/event: event loop 184 µs (62% busy)\n"
        "100 rooms, 8 callers                10000 events in   3.41 s =   2,929 ev/s; "
        "CPU/event: ours   401 µs, nats-server   70 µs\n"
        "sync latency, one event, idle:    median 1.65 ms, p99 3.72 ms (200 calls)\n"
        "  delivered to the worker         0.39\n"
        "  total: median 2.00 ms, p99 5.64 ms\n"
    )
    assert _ab().figures(output) == {
        "one room, sync requests of 50 (ev/s)": 3373.0,
        "one room, sync requests of 50 CPU/event ours (µs)": 318.0,
        "one room, sync requests of 50 CPU/event nats-server (µs)": 32.0,
        "one room, sync requests of 50 CPU/event event loop (µs)": 184.0,
        "100 rooms, 8 callers (ev/s)": 2929.0,
        "100 rooms, 8 callers CPU/event ours (µs)": 401.0,
        "100 rooms, 8 callers CPU/event nats-server (µs)": 70.0,
        "sync latency, one event, idle p50 (ms)": 1.65,
        "sync latency, one event, idle p99 (ms)": 3.72,
        "total p50 (ms)": 2.0,
        "total p99 (ms)": 5.64,
    }


def test_report_counts_the_rounds_each_side_did_better(capsys: object) -> None:
    ab = _ab()
    ab.report(
        {
            "now": [{"x (ev/s)": 110.0, "y p50 (ms)": 1.0}, {"x (ev/s)": 90.0, "y p50 (ms)": 1.0}],
            "base": [
                {"x (ev/s)": 100.0, "y p50 (ms)": 2.0},
                {"x (ev/s)": 100.0, "y p50 (ms)": 2.0},
            ],
        }
    )
    printed = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "x (ev/s)\n  now  110, 90  median 100\n  base 100, 100  median 100\n" in printed
    assert "ratio 1.00; now better in 1 of 2" in printed
    assert "ratio 0.50; now better in 2 of 2" in printed
