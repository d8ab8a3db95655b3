"""Fault tests: a roomserver process killed mid-room, and the nats-server restarted under load.

Both check the promise of the design: every submitted event ends processed exactly once, with
the same final state, and no output is duplicated.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from roomserver.api import (
    InputRoomEvent,
    InputRoomEventsRequest,
    Kind,
    Outcome,
    OutputNewRoomEvent,
)
from roomserver.app import Roomserver
from roomserver.bus import EmbeddedNatsServer, OutputSubscription
from roomserver.bus.blobs import JetStreamBlobStore
from roomserver.core.hashes import compute_event_id
from roomserver.testing import procfs
from roomserver.testing.builder import RoomBuilder
from roomserver.testing.joins import build_join_room
from tests.e2e.child import start_child, stop_children, write_child_config
from tests.e2e.helpers import (
    ALICE,
    BOB,
    drain_outputs,
    read_outputs,
    submit,
    trust,
    wait_for,
)
from tests.natsutil import running_nats

pytestmark = pytest.mark.slow


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


async def _child(
    tmp_path: Path, nats: EmbeddedNatsServer, database_url: str,
    keys: Mapping[str, tuple[str, SigningKey | bytes]], **extra: object,
) -> tuple[Path, asyncio.subprocess.Process]:  # fmt: skip
    """The roomserver process of a test (and its config, to start it again) trusting ``keys``;
    ``extra``: ``write_child_config``'s optional settings."""
    config = write_child_config(
        tmp_path / "child.json", data_dir=tmp_path / "child", nats_url=nats.url,
        database_url=database_url, keys=keys, **extra,
    )  # fmt: skip
    return config, await start_child(config, ready_within=60)


async def _client(tmp_path: Path, nats: EmbeddedNatsServer, database_url: str) -> Roomserver:
    """A roomserver without workers: it submits, the child process handles."""
    return await Roomserver.open(
        data_dir=tmp_path / "client", server_name="rs.test", nats_url=nats.url,
        database_url=database_url, federation=False, run_workers=False,
    )  # fmt: skip


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
    config, child = await _child(tmp_path, nats, database_url, b.keys, max_missing_processing_s=2.0)
    client = await _client(tmp_path, nats, database_url)
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
        child = await start_child(config, ready_within=60)
        await _check_final(client, b, subscription, seen)
    finally:
        killed = await stop_children([child], within=30)
        await client.close(grace=2.0)
    assert not killed, "the roomserver process did not stop on SIGTERM within 30 s"


async def test_sigkill_leaves_no_signature_worker_behind(
    tmp_path: Path, nats: EmbeddedNatsServer, database_url: str
) -> None:
    b = _room(200)
    _, child = await _child(tmp_path, nats, database_url, b.keys)
    client = await _client(tmp_path, nats, database_url)
    try:
        pdus = b.pdus()
        for start in range(0, len(pdus), 50):  # messages of 50: checked by the workers
            response = await submit(client, pdus[start : start + 50])
            assert {r.outcome for r in response.results} == {Outcome.ACCEPTED}
        workers = await wait_for(
            lambda: [p for p, _, cmd in procfs.children(child.pid) if b"verify_worker" in cmd],
            timeout=30,
        )
        assert len(workers) == 2
        child.send_signal(signal.SIGKILL)
        await child.wait()
        # Their input closed with the process: they exit (and are reparented, then reaped).
        await wait_for(lambda: not any(map(procfs.running, workers)), timeout=30)
    finally:
        await stop_children([child], within=30)
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


@pytest.mark.parametrize("kill_after_s", [0.0, 0.1, 0.3])
async def test_sigkill_while_a_join_with_a_state_list_blob_is_handled(
    tmp_path: Path, nats: EmbeddedNatsServer, database_url: str, kill_after_s: float
) -> None:
    """The join's state list travels as a blob beside its message. The process is killed 0,
    0.1 or 0.3 s after the join is queued (on a quiet machine: before its handling, during it,
    after its commit; the instant depends on the load) and restarted: the join has one
    outcome (accepted), one output, the state it names, and the blob is deleted once that is
    stored."""
    room = build_join_room(1500, seed=3)
    config, child = await _child(tmp_path, nats, database_url, room.keys)
    client = await _client(tmp_path, nats, database_url)
    client.inline_state_ids_max_bytes = 4 * 1024  # the state list goes as a blob
    assert isinstance(client.blobs, JetStreamBlobStore)
    try:
        subscription = await client.bus.output_subscription("fault-blob")
        outliers = [InputRoomEvent(event=p, kind=Kind.OUTLIER) for p in room.outliers]
        stored = await client.input_room_events(InputRoomEventsRequest(events=outliers))
        assert {r.outcome for r in stored.results} == {Outcome.ACCEPTED}
        join = InputRoomEvent(
            event=room.join, has_state=True, state_event_ids=tuple(room.state_event_ids)
        )
        queued = await client.input_room_events(
            InputRoomEventsRequest(events=[join], asynchronous=True)
        )
        assert queued.results[0].outcome is Outcome.QUEUED
        assert len(await client.blobs.names()) == 1
        await asyncio.sleep(kill_after_s)
        child.send_signal(signal.SIGKILL)
        await child.wait()
        join_id = compute_event_id(room.join, room.room_version)
        child = await start_child(config, ready_within=60)

        async def final() -> bool:
            found = await client.event(join_id)
            return found is not None and not await client.blobs.names()  # type: ignore[union-attr]

        await wait_for(final, timeout=120)
        found = await client.event(join_id)
        assert found is not None and found.outcome is Outcome.ACCEPTED
        state = await client.current_state(room.room_id)
        assert set(state.values()) == {*room.state_event_ids, join_id}
        outputs = _new_event_ids(await drain_outputs(subscription, quiet=3.0))
        assert outputs.count(join_id) == 1, outputs.count(join_id)
    finally:
        killed = await stop_children([child], within=30)
        await client.close(grace=2.0)
    assert not killed, "the roomserver process did not stop on SIGTERM within 30 s"
