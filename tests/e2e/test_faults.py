"""Fault tests: a roomserver process killed mid-room, and the nats-server restarted under load.

Both check the promise of the design: every submitted event ends processed exactly once, with
the same final state, and no output is duplicated.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roomserver.api import Outcome, OutputNewRoomEvent
from roomserver.app import Roomserver
from roomserver.bus import EmbeddedNatsServer, OutputSubscription
from roomserver.core.base64 import encode_base64
from roomserver.testing.builder import RoomBuilder
from tests.e2e.helpers import ALICE, BOB, drain_outputs, read_outputs, submit, trust
from tests.natsutil import running_nats

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def nats(tmp_path: Path) -> AsyncIterator[EmbeddedNatsServer]:
    async with running_nats(tmp_path / "nats") as server:
        yield server


def _room(messages: int) -> RoomBuilder:
    b = RoomBuilder("10", room_id="!fault:example.org")
    b.create_room(ALICE)
    b.join(BOB)
    for i in range(messages):
        b.message(BOB if i % 3 else ALICE, f"m{i}")
    return b


async def _start_child(config_path: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e.child", str(config_path),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    assert line.strip() == b"ready", line
    return process


def _new_event_ids(outputs: list[object]) -> list[str]:
    return [
        o.payload.event_id  # type: ignore[attr-defined]
        for o in outputs
        if isinstance(o.payload, OutputNewRoomEvent)  # type: ignore[attr-defined]
    ]


async def _check_final(client: Roomserver, b: RoomBuilder, subscription: OutputSubscription,
                       seen: list[object]) -> None:  # fmt: skip
    total = len(b.events)
    seen += await read_outputs(subscription, total - len(seen), timeout=120)
    seen += await drain_outputs(subscription, quiet=2.0)
    ids = _new_event_ids(seen)
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} outputs duplicated"
    assert ids == list(b.events), "outputs out of order or missing"
    assert await client.current_state(b.room_id) == b.state
    assert await client.latest_events(b.room_id) == b.latest
    for event_id in b.events:
        stored = await client.event(event_id)
        assert stored is not None and stored.outcome is Outcome.ACCEPTED, event_id


async def test_sigkill_mid_room_then_restart_processes_everything_once(
    tmp_path: Path, nats: EmbeddedNatsServer, database_url: str
) -> None:
    b = _room(1500)
    config = tmp_path / "child.json"
    config.write_text(json.dumps({
        "data_dir": str(tmp_path / "child"), "nats_url": nats.url, "database_url": database_url,
        "keys": {s: [kid, encode_base64(bytes(k))] for s, (kid, k) in b.keys.items()},
        "max_missing_processing_s": 2.0,
    }))  # fmt: skip
    child = await _start_child(config)
    client = await Roomserver.open(
        data_dir=tmp_path / "client", server_name="rs.test", nats_url=nats.url,
        database_url=database_url, federation=False, run_workers=False,
    )  # fmt: skip
    try:
        subscription = await client.bus.output_subscription("fault-kill")
        pdus = b.pdus()
        for start in range(0, len(pdus), 100):
            await submit(client, pdus[start : start + 100], asynchronous=True)
        seen: list[object] = list(await read_outputs(subscription, 150, timeout=60))
        child.send_signal(signal.SIGKILL)
        await child.wait()
        processed_before = len(seen)
        assert processed_before < len(b.events), "the child finished before it was killed"
        child = await _start_child(config)
        await _check_final(client, b, subscription, seen)
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
            await asyncio.wait_for(child.wait(), timeout=30)
        await client.close(grace=2.0)


async def test_nats_server_restart_under_load_loses_nothing(
    tmp_path: Path, nats: EmbeddedNatsServer, database_url: str
) -> None:
    b = _room(800)
    rs = await Roomserver.open(
        data_dir=tmp_path / "rs", server_name="rs.test", nats_url=nats.url,
        database_url=database_url, federation=False, max_missing_processing_s=2.0,
    )  # fmt: skip
    try:
        trust(rs, b)
        subscription = await rs.bus.output_subscription("fault-restart")
        events = list(b.events.values())
        first, second = events[:600], events[600:]
        for start in range(0, len(first), 100):
            await submit(rs, [e.pdu for e in first[start : start + 100]], asynchronous=True)
        seen: list[object] = list(await read_outputs(subscription, 100, timeout=60))
        await nats.restart()
        for _ in range(50):  # the client reconnects; publishing resumes
            response = await submit(rs, [e.pdu for e in second], asynchronous=True)
            if all(r.outcome is Outcome.QUEUED for r in response.results):
                break
            # Not queued: ERROR with the reason, never an exception; resubmitting is safe.
            assert {r.outcome for r in response.results} == {Outcome.ERROR}, response
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("could not publish after the restart")
        await _check_final(rs, b, subscription, seen)
    finally:
        await rs.close(grace=2.0)
