"""State resolution benchmark: forks in rooms of 1,000 / 10,000 / 100,000 members.

Run everything (setup of .synapse-venv with Synapse included) with one command:

    bash bench/run_stateres.sh            # or: .venv/bin/python bench/bench_stateres.py

For each size, a room is generated with ``RoomBuilder`` (hashed, signed events; cached under
bench/.cache/ after the first run), then forked into two branches of ~15 state changes each:
power level changes, kicks, bans, leaves, joins, a join rules change, topics and names. The two
branch tips' states are resolved:

* ours, "index": the provider answers the auth chain difference (and the v2.1 conflicted
  subgraph) from an answer computed before the clock starts, as storage answers from its
  chain cover index. This is the production path; its time should not grow with the room.
* ours, "memory": a plain mapping of events; the auth chain questions are answered in memory.
* Synapse (``synapse.state.v2.resolve_events_with_store`` from matrix-synapse on PyPI, run in
  .synapse-venv by bench/synapse_stateres.py on the same PDUs), its store answering the auth
  chain difference from an answer computed before the clock starts, as its database does.

Prints median times per size, the Synapse/ours ratio, and checks both results are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from roomserver.core.pdu import Event, parse_event  # noqa: E402
from roomserver.core.stateres import resolve_state  # noqa: E402
from roomserver.testing.builder import RoomBuilder  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
BENCH_PYTHON = ROOT / ".synapse-venv" / "bin" / "python"
ALICE = "@alice:example.org"
MODS = [f"@mod{i}:example.org" for i in range(4)]
PL_KEY = ("m.room.power_levels", "")
StateSet = dict[tuple[str, str], str]
FORMAT_VERSION = 1


def _power_levels(b: RoomBuilder, changes: Mapping[str, int | None]) -> dict[str, Any]:
    content = dict(b.events[b.state[PL_KEY]].content)
    users = dict(content.get("users", {}))
    for user, level in changes.items():
        if level is None:
            users.pop(user, None)
        else:
            users[user] = level
    content["users"] = users
    return content


def build_room(version: str, members: int) -> tuple[list[Event], list[StateSet]]:
    """The room, forked: every event, and the two branch tips' states."""
    b = RoomBuilder(version, room_id=f"!bench{members}:example.org")
    b.create_room(ALICE)
    for mod in MODS:
        b.join(mod)
    admin_users = {} if version == "12" else {ALICE: 100}
    b.send(
        "m.room.power_levels",
        ALICE,
        _power_levels(b, {**admin_users, **{m: 50 + 10 * i for i, m in enumerate(MODS)}}),
        state_key="",
    )
    for i in range(members):
        b.join(f"@m{i}:example.org")
    b.send("m.room.topic", ALICE, {"topic": "before the fork"}, state_key="")
    fork_state, fork_latest = dict(b.state), list(b.latest)

    # Branch A: the admin reshuffles power and the mods act on it.
    b.send("m.room.power_levels", ALICE, _power_levels(b, {MODS[0]: 0, MODS[1]: 80}), state_key="")
    for i in range(0, 10, 2):
        b.member(MODS[1], f"@m{i}:example.org", "ban")
    b.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, state_key="")
    b.send("m.room.topic", MODS[1], {"topic": "branch A"}, state_key="")
    for i in range(10, 14):
        b.member(f"@m{i}:example.org", f"@m{i}:example.org", "leave")
    b.send("m.room.name", MODS[2], {"name": "A"}, state_key="")
    b.send("m.room.power_levels", MODS[1], _power_levels(b, {MODS[3]: 40}), state_key="")
    branch_a = dict(b.state)

    # Branch B: a mod who is demoted in branch A keeps acting; newcomers join.
    b.state, b.latest = dict(fork_state), list(fork_latest)
    for i in range(1, 11, 2):
        b.member(MODS[0], f"@m{i}:example.org", "leave")  # kicks
    b.send("m.room.topic", MODS[0], {"topic": "branch B"}, state_key="")
    for i in range(6):
        b.join(f"@new{i}:example.org")
    b.send("m.room.power_levels", MODS[0], _power_levels(b, {MODS[2]: 55}), state_key="")
    b.send("m.room.name", MODS[0], {"name": "B"}, state_key="")
    b.member(MODS[3], f"@m{20}:example.org", "ban")
    branch_b = dict(b.state)
    return list(b.events.values()), [branch_a, branch_b]


def _cache_path(version: str, members: int) -> Path:
    return CACHE / f"room-v{version}-{members}-f{FORMAT_VERSION}.jsonl"


def load_or_build(version: str, members: int) -> tuple[Path, dict[str, Event], list[StateSet]]:
    path = _cache_path(version, members)
    if not path.exists():
        started = time.perf_counter()
        events, sets = build_room(version, members)
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as out:
            out.write(
                json.dumps({"state_sets": [sorted([*k, v] for k, v in s.items()) for s in sets]})
            )
            out.write("\n")
            for event in events:
                out.write(json.dumps({"event_id": event.event_id, "pdu": event.pdu}))
                out.write("\n")
        tmp.rename(path)
        print(f"  generated {len(events)} signed events in {time.perf_counter() - started:.1f}s")
    with path.open() as lines:
        header = json.loads(next(lines))
        events = {}
        for line in lines:
            row = json.loads(line)
            events[row["event_id"]] = parse_event(row["pdu"], version, event_id=row["event_id"])
    sets = [{(t, k): e for t, k, e in s} for s in header["state_sets"]]
    return path, events, sets


def _closure(event_ids: AbstractSet[str], events: Mapping[str, Event]) -> set[str]:
    seen = set(event_ids)
    stack = list(seen)
    while stack:
        for auth_id in events[stack.pop()].auth_event_ids:
            if auth_id not in seen:
                seen.add(auth_id)
                stack.append(auth_id)
    return seen


class IndexProvider:
    """Events from memory; the auth chain questions answered as an index would answer them."""

    def __init__(
        self,
        events: Mapping[str, Event],
        difference: AbstractSet[str],
        subgraph: AbstractSet[str],
    ) -> None:
        self.events = events
        self.difference = difference
        self.subgraph = subgraph

    def get_event(self, event_id: str) -> Event | None:
        return self.events.get(event_id)

    def auth_chain_difference(self, state_sets: Sequence[Mapping[Any, str]]) -> AbstractSet[str]:
        return self.difference

    def conflicted_subgraph(self, conflicted_event_ids: AbstractSet[str]) -> AbstractSet[str]:
        return self.subgraph


class SnapshotIndexProvider(IndexProvider):
    """Also answers which keys the state sets disagree on, as storage does from the deltas
    between its deduplicated state snapshots (DESIGN.md, "State storage")."""

    def __init__(
        self,
        events: Mapping[str, Event],
        difference: AbstractSet[str],
        subgraph: AbstractSet[str],
        conflicted_keys: AbstractSet[tuple[str, str]],
    ) -> None:
        super().__init__(events, difference, subgraph)
        self.conflicted_keys = conflicted_keys

    def state_difference(
        self, state_sets: Sequence[Mapping[Any, str]]
    ) -> AbstractSet[tuple[str, str]]:
        return self.conflicted_keys


def index_answers(sets: list[StateSet], events: Mapping[str, Event]) -> tuple[set[str], set[str]]:
    """The auth chain difference and conflicted subgraph, by plain search (not timed)."""
    chains = [_closure(set(s.values()), events) for s in sets]
    difference = set().union(*chains) - set(chains[0]).intersection(*chains[1:])
    keys = set().union(*sets)
    conflicted = {s[k] for k in keys if len({x.get(k) for x in sets}) > 1 for s in sets if k in s}
    subgraph = set(conflicted)
    for event_id in _closure(conflicted, events) - conflicted:
        if (_closure({event_id}, events) - {event_id}) & conflicted:
            subgraph.add(event_id)
    return difference, subgraph


def time_ours(
    version: str, sets: list[StateSet], events: Any, repeat: int
) -> tuple[float, StateSet]:
    times = []
    result: StateSet = {}
    for _ in range(repeat):
        started = time.perf_counter()
        result = resolve_state(version, sets, events)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def run_synapse(version: str, cache: Path, sets: list[StateSet], repeat: int) -> dict[str, Any]:
    request = {
        "room_version": version,
        "pdus_file": str(cache),
        "cases": [{"name": "fork", "state_sets": [[[*k, v] for k, v in s.items()] for s in sets]}],
        "repeat": repeat,
        "mode": "index",
    }
    done = subprocess.run(
        [str(BENCH_PYTHON), str(ROOT / "bench" / "synapse_stateres.py")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Synapse run failed: {done.stderr[-2000:]}")
    answer: dict[str, Any] = json.loads(done.stdout)["cases"][0]
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--versions", default="10,12")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--synapse-repeat", type=int, default=5)
    parser.add_argument("--no-synapse", action="store_true")
    args = parser.parse_args()
    use_synapse = not args.no_synapse and BENCH_PYTHON.exists()
    if not args.no_synapse and not use_synapse:
        print("(.synapse-venv missing: run bash bench/setup_synapse_venv.sh; comparing skipped)")
    rows = []
    ok = True
    for version in args.versions.split(","):
        for members in (int(s) for s in args.sizes.split(",")):
            print(f"room version {version}, {members} members:")
            cache, events, sets = load_or_build(version, members)
            difference, subgraph = index_answers(sets, events)
            conflicted = {k for k in set().union(*sets) if len({s.get(k) for s in sets}) > 1}
            provider = IndexProvider(events, difference, subgraph)
            snapshots = SnapshotIndexProvider(events, difference, subgraph, conflicted)
            index_time, ours = time_ours(version, sets, provider, args.repeat)
            snapshot_time, ours_snapshots = time_ours(version, sets, snapshots, args.repeat)
            memory_time, ours_memory = time_ours(version, sets, events, max(3, args.repeat // 3))
            row = {
                "version": version,
                "members": members,
                "state": len(sets[0]),
                "conflicted_keys": len(conflicted),
                "auth_difference": len(difference),
                "ours_index_ms": index_time * 1000,
                "ours_snapshots_ms": snapshot_time * 1000,
                "ours_memory_ms": memory_time * 1000,
            }
            same_paths = ours == ours_memory == ours_snapshots
            ok &= same_paths
            if use_synapse:
                synapse = run_synapse(version, cache, sets, args.synapse_repeat)
                synapse_state = {(t, k): e for t, k, e in synapse["state"]}
                row["synapse_ms"] = statistics.median(synapse["times"]) * 1000
                row["ratio"] = row["synapse_ms"] / row["ours_index_ms"]
                row["identical"] = synapse_state == ours
                ok &= bool(row["identical"])
            rows.append(row)
            print(
                "  "
                + json.dumps(
                    {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
                )
            )
            if not same_paths:
                print("  MISMATCH between the index and in-memory paths")
    _print_table(rows)
    return 0 if ok else 1


def _print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print("median milliseconds per resolution; ratio = Synapse / ours (index), same inputs")
    print("index: provider answers the auth chain difference (Synapse's store does the same)")
    print("+snapshots: provider also answers which keys differ; memory: a plain mapping")
    header = (
        f"{'ver':>3} {'members':>8} {'conflicted':>10} {'auth diff':>9} {'ours index':>10} "
        f"{'+snapshots':>10} {'memory':>8} {'synapse':>8} {'ratio':>6} identical"
    )
    print(header)
    for r in rows:
        synapse = f"{r['synapse_ms']:8.2f}" if "synapse_ms" in r else f"{'-':>8}"
        ratio = f"{r['ratio']:5.1f}x" if "ratio" in r else f"{'-':>6}"
        print(
            f"{r['version']:>3} {r['members']:>8} {r['conflicted_keys']:>10} "
            f"{r['auth_difference']:>9} {r['ours_index_ms']:10.2f} "
            f"{r['ours_snapshots_ms']:10.2f} {r['ours_memory_ms']:8.2f} "
            f"{synapse} {ratio} {r.get('identical', '-')}"
        )


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
