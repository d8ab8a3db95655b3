"""Throughput of the per-event core checks: ``python -m tests.core.bench_core [versions...]``.

Not a test (no ``test_`` prefix). Prints, per room version, the median and best of 7 runs over
2,000 signed message events of ``parse_event``, ``verify_event``, ``check_content_hash`` and all
three in a row (the pipeline's per-event cost before authorization).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from roomserver.core.pdu import parse_event
from roomserver.core.signatures import check_content_hash, verify_event
from roomserver.testing.builder import RoomBuilder

EVENTS = 2_000
RUNS = 7


def bench(version: str) -> None:
    b = RoomBuilder(version)
    b.create_room("@alice:example.org")
    for i in range(EVENTS):
        b.message("@alice:example.org", f"message {i} " + "x" * 200)
    pdus = [dict(e.pdu) for e in b.events.values()]
    keys = b.verify_keys()

    def all_three(p: dict[str, Any]) -> None:
        parse_event(p, version)
        verify_event(p, room_version=version, verify_keys=keys)
        check_content_hash(p)

    steps: list[tuple[str, Callable[[dict[str, Any]], object]]] = [
        ("parse_event", lambda p: parse_event(p, version)),
        ("verify_event", lambda p: verify_event(p, room_version=version, verify_keys=keys)),
        ("check_content_hash", check_content_hash),
        ("all three", all_three),
    ]
    for name, step in steps:
        samples = []
        for _ in range(RUNS):
            start = time.perf_counter()
            for p in pdus:
                step(p)
            samples.append((time.perf_counter() - start) / len(pdus) * 1e6)
        median = statistics.median(samples)
        print(
            f"v{version:>2} {name:<19} median {median:6.1f} us  best {min(samples):6.1f} us"
            f"  ({1e6 / median:,.0f}/s)"
        )


if __name__ == "__main__":
    for version in sys.argv[1:] or ["1", "10", "12"]:
        bench(version)
