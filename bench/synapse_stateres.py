"""Runs Synapse's state resolution on inputs written by bench_stateres.py (or the tests).

Runs inside .synapse-venv (matrix-synapse from PyPI), never inside the project's venv. Reads a
JSON document on stdin:

    {"room_version": "10", "pdus": [...], "event_ids": [...] (or "pdus_file": path),
     "rejected": [...],
     "cases": [{"name": ..., "state_sets": [[[type, state_key, event_id], ...], ...]}],
     "repeat": 5, "mode": "index" | "memory"}

and writes, for each case, Synapse's resolved state and the resolution times (seconds) on
stdout as JSON. ``{"rooms": [request, ...]}`` runs several such requests in one process.
Events are converted with ``make_event_from_dict`` from their federation PDUs.

mode "index": the store answers ``get_auth_chain_difference`` from an answer computed before
the clock starts, as Synapse's database answers it from its chain cover index.
mode "memory": the store walks auth chains on every call, as Synapse's own test store does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import synapse.event_auth
import synapse.events
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.state import v1 as synapse_v1
from synapse.state import v2 as synapse_v2
from synapse.storage.databases.main.event_federation import StateDifference


class _Clock:
    async def sleep(self, duration: Any) -> None:
        return None


def _auth_closure(event_ids: set[str], events: dict[str, Any]) -> set[str]:
    """The events and everything reachable from them through auth_events."""
    seen = set(e for e in event_ids if e in events)
    stack = list(seen)
    while stack:
        for auth_id in events[stack.pop()].auth_event_ids():
            if auth_id not in seen and auth_id in events:
                seen.add(auth_id)
                stack.append(auth_id)
    return seen


def _difference(
    state_sets: list[set[str]], conflicted: set[str] | None, events: dict[str, Any]
) -> StateDifference:
    chains = [_auth_closure(s, events) for s in state_sets]
    union = set().union(*chains)
    common = set(chains[0]).intersection(*chains[1:])
    subgraph = None
    if conflicted is not None:
        backwards = _auth_closure(conflicted, events)
        reaches: dict[str, bool] = {}

        def reach(event_id: str) -> bool:
            stack = [(event_id, False)]
            while stack:
                node, done = stack.pop()
                if node in reaches:
                    continue
                auth = [a for a in events[node].auth_event_ids() if a in events]
                if done:
                    reaches[node] = node in conflicted or any(reaches[a] for a in auth)
                    continue
                stack.append((node, True))
                stack.extend((a, False) for a in auth if a not in reaches)
            return reaches[event_id]

        subgraph = {e for e in backwards if reach(e)}
    return StateDifference(auth_difference=union - common, conflicted_subgraph=subgraph)


class _Store:
    def __init__(self, events: dict[str, Any], answer: StateDifference | None) -> None:
        self.events = events
        self.answer = answer

    async def get_events(self, event_ids: Any, allow_rejected: bool = False) -> dict[str, Any]:
        return {e: self.events[e] for e in event_ids if e in self.events}

    async def get_auth_chain_difference(
        self,
        room_id: str,
        state_sets: list[set[str]],
        conflicted_state: set[str] | None,
        additional_backwards_reachable_conflicted_events: set[str] | None,
    ) -> StateDifference:
        if self.answer is not None:
            return StateDifference(
                auth_difference=set(self.answer.auth_difference),
                conflicted_subgraph=None
                if self.answer.conflicted_subgraph is None
                else set(self.answer.conflicted_subgraph),
            )
        return _difference(state_sets, conflicted_state, self.events)


def _pdus(request: dict[str, Any]) -> Any:
    """(pdu, event_id) pairs: inline, or from the benchmark's cache file (JSON lines after a
    header line)."""
    if "pdus_file" not in request:
        yield from zip(request["pdus"], request["event_ids"], strict=True)
        return
    with open(request["pdus_file"]) as lines:
        next(lines)
        for line in lines:
            row = json.loads(line)
            yield row["pdu"], row["event_id"]


def main() -> None:
    request = json.load(sys.stdin)
    if "rooms" in request:  # several independent rooms in one run
        json.dump({"rooms": [resolve_room(room) for room in request["rooms"]]}, sys.stdout)
    else:
        json.dump(resolve_room(request), sys.stdout)


def resolve_room(request: dict[str, Any]) -> dict[str, Any]:
    room_version = KNOWN_ROOM_VERSIONS[request["room_version"]]
    rejected = set(request.get("rejected", []))
    events: dict[str, Any] = {}
    for pdu, event_id in _pdus(request):
        event = synapse.events.make_event_from_dict(
            pdu,
            room_version,
            rejected_reason="rejected" if event_id in rejected else None,
        )
        if event.event_id != event_id:
            raise SystemExit(f"event ID mismatch: ours {event_id}, synapse {event.event_id}")
        events[event_id] = event
    repeat = int(request.get("repeat", 1))
    mode = request.get("mode", "memory")
    loop = asyncio.new_event_loop()
    out = []
    for case in request["cases"]:
        state_sets = [{(t, k): e for t, k, e in s} for s in case["state_sets"]]
        room_id = events[next(iter(state_sets[0].values()))].room_id
        answer = None
        is_v21 = room_version.state_res == synapse_v2.StateResolutionVersions.V2_1
        if mode == "index":
            ids = [set(s.values()) for s in state_sets]
            conflicted: set[str] | None = None
            if is_v21:
                conflicted = set()
                for key in set().union(*state_sets):
                    values = {s.get(key) for s in state_sets}
                    if len(values) > 1:
                        conflicted.update(v for v in values if v is not None)
            answer = _difference(ids, conflicted, events)
        store = _Store(events, answer)
        times = []
        result: Any = None
        for _ in range(repeat):
            start = time.perf_counter()
            if room_version.state_res == synapse_v2.StateResolutionVersions.V1:

                async def factory(ids: Any) -> dict[str, Any]:
                    return {e: events[e] for e in ids if e in events}

                coro = synapse_v1.resolve_events_with_store(
                    room_id, room_version, state_sets, None, factory
                )
            else:
                coro = synapse_v2.resolve_events_with_store(
                    _Clock(), room_id, room_version, state_sets, None, store
                )
            result = loop.run_until_complete(coro)
            times.append(time.perf_counter() - start)
        out.append(
            {
                "name": case.get("name"),
                "state": sorted([t, k, e] for (t, k), e in dict(result).items()),
                "times": times,
            }
        )
    loop.close()
    return {"cases": out}


if __name__ == "__main__":
    main()
