"""Resource bounds: a room flooded with events that each cite 20 unknown prev events.

The room is hosted by a fake remote homeserver (tests/federation/remote.py) that knows none of
the cited events and answers slowly. Every hostile event makes the roomserver ask the remote
for the missing events; the test measures, while the flood is processed:

* the requests made to the remote (per hostile event, by endpoint);
* the peak memory allocated by the process (``tracemalloc``);
* the latency of synchronous input to another room meanwhile, against the same room's latency
  with no flood.

``ROOMSERVER_BOUNDS_COUNT`` (default 100) sets the number of hostile events; the figures of a
10,000-event run are in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import string
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from roomserver.api import Outcome
from roomserver.app import Roomserver
from roomserver.bus.subjects import input_stream_name
from roomserver.core.base64 import encode_base64
from roomserver.testing.builder import RoomBuilder
from tests.e2e.helpers import ALICE, BOB, submit, trust, wait_for
from tests.federation.remote import FakeRemote

pytestmark = pytest.mark.slow

COUNT = int(os.environ.get("ROOMSERVER_BOUNDS_COUNT", "100"))
REMOTE_DELAY_S = float(os.environ.get("ROOMSERVER_BOUNDS_DELAY", "0.05"))
UNKNOWN_PREVS = 20
OUR_KEY = SigningKey(b"\x09" * 32)
#: Requests one hostile event may cause: /get_missing_events, then /state_ids at the event.
REQUESTS_PER_EVENT = 2
#: Peak memory the flood may add (bytes traced by tracemalloc).
MEMORY_BOUND = 150 * 1024 * 1024


def _unknown_id(n: int, i: int) -> str:
    seed = f"{n}-{i}".encode().ljust(32, b".")[:32]
    return "$" + encode_base64(seed, url_safe=True)


async def _input_drained(rs: Roomserver) -> bool:
    info = await rs.bus.js.stream_info(input_stream_name(rs.bus.config.prefix))
    return info.state.messages == 0


async def _latencies(rs: Roomserver, room: RoomBuilder, count: int) -> list[float]:
    out = []
    for i in range(count):
        event = room.message(ALICE, f"calm {i}")
        started = time.perf_counter()
        (result,) = (await submit(rs, [event.pdu])).results
        out.append(time.perf_counter() - started)
        assert result.outcome is Outcome.ACCEPTED, result
    return out


async def test_a_flood_of_events_citing_unknown_prev_events_stays_within_bounds(
    tmp_path: Path,
) -> None:
    remote = FakeRemote("remote.test", trusted={"rs.test": {"ed25519:auto": OUR_KEY.verify_key}})
    await remote.start()
    hostile = RoomBuilder(
        "10", server_name="remote.test", keys=remote.builder_keys(), room_id="!flood:remote.test"
    )
    mallory = "@mallory:remote.test"
    hostile.create_room(mallory)
    remote.add_room(hostile)
    calm = RoomBuilder("10", room_id="!calm:example.org")
    calm_setup = [*calm.create_room(ALICE), calm.join(BOB)]

    rs = await Roomserver.open(
        data_dir=tmp_path / "rs",
        server_name="rs.test",
        signing_key=OUR_KEY,
        federation={"remote.test": remote.base_url},
    )
    tracemalloc.start()
    try:
        trust(rs, hostile, calm)
        setup = await submit(rs, [e.pdu for e in hostile.events.values()])
        assert {r.outcome for r in setup.results} == {Outcome.ACCEPTED}
        await submit(rs, [e.pdu for e in calm_setup])
        baseline = await _latencies(rs, calm, 20)

        flood: list[dict[str, Any]] = [
            hostile.make_pdu(
                "m.room.message",
                mallory,
                {"msgtype": "m.text", "body": f"flood {n} " + string.ascii_letters},
                prev_events=[_unknown_id(n, i) for i in range(UNKNOWN_PREVS)],
            )
            for n in range(COUNT)
        ]
        remote.delay = REMOTE_DELAY_S
        remote.requests.clear()
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        started = time.perf_counter()
        queued = await submit(rs, flood, asynchronous=True)
        assert {r.outcome for r in queued.results} == {Outcome.QUEUED}
        during: list[float] = []
        while not await _input_drained(rs):
            during += await _latencies(rs, calm, 5)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        outcomes: Counter[str] = Counter()
        for pdu in flood:
            stored = await rs.event(_event_id(pdu))
            outcomes[stored.outcome.value if stored is not None else "not stored"] += 1
    finally:
        tracemalloc.stop()
        await rs.close(grace=2.0)
        await remote.stop()

    requests = Counter(r.endpoint for r in remote.requests)
    figures = {
        "hostile events": COUNT,
        "unknown prev events each": UNKNOWN_PREVS,
        "remote delay s": REMOTE_DELAY_S,
        "wall time s": round(elapsed, 1),
        "hostile events per s": round(COUNT / elapsed, 1),
        "requests": dict(requests),
        "requests per event": round(sum(requests.values()) / COUNT, 2),
        "peak traced memory MiB": round((peak - before) / 2**20, 1),
        "calm room latency ms (baseline median)": round(statistics.median(baseline) * 1000, 1),
        "calm room latency ms (during median)": round(statistics.median(during) * 1000, 1),
        "calm room latency ms (during max)": round(max(during) * 1000, 1),
        "calm events during the flood": len(during),
        "outcomes": dict(outcomes),
    }
    print("\nresource bound figures:", figures)

    assert outcomes == {"rejected": COUNT}, outcomes  # missing prev events, each one
    assert sum(requests.values()) <= REQUESTS_PER_EVENT * COUNT, requests
    assert set(requests) <= {"get_missing_events", "state_ids"}, requests
    assert peak - before < MEMORY_BOUND
    # The calm room is served between the flood's events: never behind the whole flood.
    assert max(during) < 5.0 and statistics.median(during) < 1.0


def _event_id(pdu: dict[str, Any]) -> str:
    from roomserver.core.hashes import compute_event_id

    return compute_event_id(pdu, "10")


@pytest.fixture(autouse=True)
def _quiet_remote_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR")


async def test_never_answering_remote_is_bounded_by_the_deadline(tmp_path: Path) -> None:
    """A remote that never answers: each hostile event waits at most the missing-data
    deadline, and another room stays responsive meanwhile."""
    remote = FakeRemote("remote.test", trusted={"rs.test": {"ed25519:auto": OUR_KEY.verify_key}})
    await remote.start()
    hostile = RoomBuilder(
        "10", server_name="remote.test", keys=remote.builder_keys(), room_id="!hang:remote.test"
    )
    hostile.create_room("@mallory:remote.test")
    remote.add_room(hostile)
    calm = RoomBuilder("10", room_id="!calm2:example.org")
    calm_setup = [*calm.create_room(ALICE), calm.join(BOB)]
    rs = await Roomserver.open(
        data_dir=tmp_path / "rs",
        server_name="rs.test",
        signing_key=OUR_KEY,
        federation={"remote.test": remote.base_url},
        max_missing_processing_s=2.0,
    )
    try:
        trust(rs, hostile, calm)
        await submit(rs, [e.pdu for e in hostile.events.values()])
        await submit(rs, [e.pdu for e in calm_setup])
        remote.delay = 3600.0
        pdu = hostile.make_pdu(
            "m.room.message",
            "@mallory:remote.test",
            {"msgtype": "m.text", "body": "hang"},
            prev_events=[_unknown_id(0, i) for i in range(UNKNOWN_PREVS)],
        )
        task = asyncio.create_task(submit(rs, [pdu]))
        await wait_for(lambda: len(remote.requests) >= 1, timeout=10.0)
        first = time.perf_counter()
        during = await _latencies(rs, calm, 10)
        assert max(during) < 1.0  # the other room does not wait for the hanging one
        # The attempt is abandoned at the 2 s deadline; the stream retries the event later,
        # after a backoff: a new request, neither at once nor never.
        await wait_for(lambda: len(remote.requests) >= 2, timeout=30.0)
        assert time.perf_counter() - first >= 2.0
        assert not task.done()  # still queued for a retry, not answered with an error
        task.cancel()
    finally:
        await rs.close(grace=1.0)
        await remote.stop()
