"""A benchmark run back to back against another commit, in alternating rounds.

    .venv/bin/python bench/ab.py --base REV [--rounds 3] [--pg] -- bench_e2e.py [ARGS...]

This machine is shared and its speed drifts within minutes, so a figure is only worth
comparing with one measured beside it. ``ab.py`` checks ``REV`` out in a worktree of its own
(``../<repo>-ab-<rev>``, set up with ``./dev setup`` once and reused), then runs the benchmark
script (``bench/<script>`` with ``ARGS``) in this checkout and in that one, alternating which
goes first each round (ABBA...), so a drift during the run weighs on both sides alike. With
``--pg`` every run gets a fresh PostgreSQL database (``--database-url``), dropped afterwards.

It reads every figure the scripts print as ``<name> ... = <n> ev/s`` (with the CPU per event
that follows it: this process and nats-server, in µs) or ``<name> ... median <n> ms``, and
prints, per figure, each side's values, their medians, the ratio of the medians
(this checkout / base) and in how many rounds this checkout did better (more events/s, fewer
ms or µs): a figure without its neighbour is hard to trust here.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql://postgres@127.0.0.1:5432/{name}"

# "one room, sync requests of 50   10000 events in 2.96 s =   3,373 ev/s; ..."
_RATE = re.compile(r"^\s*(?P<name>.+?)\s+[\d,]+ events in .*?=\s*(?P<value>[\d,.]+) ev/s")
# "...; CPU/event: ours   533 µs, nats-server   64 µs"
_CPU = re.compile(r"CPU/event: ours\s+(?P<ours>[\d,.]+) µs, nats-server\s+(?P<nats>[\d,.]+) µs")
# "  our threads, CPU/event: event loop 184 µs (62% busy), ..." (of the rate line above it)
_LOOP = re.compile(r"^\s+our threads, CPU/event: event loop\s+(?P<loop>[\d,.]+) µs")
# "sync latency, one event, idle:    median 1.65 ms, p99 3.72 ms" / "total: median 2.00 ms"
_LATENCY = re.compile(
    r"^\s*(?P<name>.+?)[:\s]+median (?P<value>[\d.]+) ms(?:, p99 (?P<p99>[\d.]+))?"
)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def figures(output: str) -> dict[str, float]:
    """The figures of one run: ``name (ev/s)``, with ``name CPU/event ours (µs)``, ``name
    CPU/event nats-server (µs)`` and ``name CPU/event event loop (µs)`` where printed; or
    ``name p50 (ms)`` / ``name p99 (ms)``."""
    out: dict[str, float] = {}
    last_rate = ""
    for line in output.splitlines():
        loop = _LOOP.match(line)
        if loop and last_rate:
            out[f"{last_rate} CPU/event event loop (µs)"] = _number(loop["loop"])
            continue
        rate = _RATE.match(line)
        if rate:
            last_rate = rate["name"]
            out[f"{rate['name']} (ev/s)"] = _number(rate["value"])
            cpu = _CPU.search(line)
            if cpu:
                out[f"{rate['name']} CPU/event ours (µs)"] = _number(cpu["ours"])
                out[f"{rate['name']} CPU/event nats-server (µs)"] = _number(cpu["nats"])
            continue
        latency = _LATENCY.match(line)
        if latency:
            out[f"{latency['name']} p50 (ms)"] = float(latency["value"])
            if latency["p99"]:
                out[f"{latency['name']} p99 (ms)"] = float(latency["p99"])
    return out


def worktree(rev: str) -> Path:
    """A checkout of ``rev`` beside this repository, set up once."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    path = REPO.parent / f"{REPO.name}-ab-{commit[:10]}"
    if not path.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), commit], cwd=REPO, check=True
        )
    if not (path / ".venv" / "bin" / "python").exists():
        subprocess.run(["./dev", "setup"], cwd=path, check=True)
    return path


def _psql(sql: str) -> None:
    subprocess.run(["psql", PG_ADMIN, "-qc", sql], check=True, capture_output=True)


def run_once(checkout: Path, script: str, args: list[str], pg: bool) -> str:
    argv = [str(checkout / ".venv" / "bin" / "python"), str(checkout / "bench" / script), *args]
    database = f"ab_{uuid.uuid4().hex[:12]}" if pg else None
    if database is not None:
        _psql(f"CREATE DATABASE {database}")
        argv += ["--database-url", PG_URL.format(name=database)]
    try:
        done = subprocess.run(argv, cwd=checkout, capture_output=True, text=True)
    finally:
        if database is not None:
            _psql(f"DROP DATABASE IF EXISTS {database}")
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{script} failed in {checkout} (exit {done.returncode})")
    return done.stdout


def report(runs: dict[str, list[dict[str, float]]]) -> None:
    names = list(dict.fromkeys(n for side in runs.values() for run in side for n in run))
    for name in names:
        pairs = [
            (now_run[name], base_run[name])
            for now_run, base_run in zip(runs["now"], runs["base"], strict=True)
            if name in now_run and name in base_run
        ]
        if not pairs:
            continue
        now = [a for a, _ in pairs]
        base = [b for _, b in pairs]
        higher_is_better = name.endswith("(ev/s)")
        better = sum((a > b) if higher_is_better else (a < b) for a, b in pairs)
        ratio = statistics.median(now) / statistics.median(base)
        print(f"{name}")
        print(f"  now  {', '.join(f'{v:g}' for v in now)}  median {statistics.median(now):g}")
        print(f"  base {', '.join(f'{v:g}' for v in base)}  median {statistics.median(base):g}")
        print(f"  ratio {ratio:.2f}; now better in {better} of {len(pairs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", action="store_true", help="a fresh PostgreSQL database per run")
    parser.add_argument("script", help="a script in bench/, e.g. bench_e2e.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    options = parser.parse_args()
    base = worktree(options.base)
    sides = {"now": REPO, "base": base}
    runs: dict[str, list[dict[str, float]]] = defaultdict(list)
    for round_ in range(options.rounds):
        order = ["now", "base"] if round_ % 2 == 0 else ["base", "now"]
        for side in order:
            output = run_once(sides[side], options.script, options.args, options.pg)
            runs[side].append(figures(output))
            print(f"round {round_ + 1}, {side}: {len(runs[side][-1])} figures", flush=True)
    report(runs)


if __name__ == "__main__":
    main()
