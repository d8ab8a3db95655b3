"""Scale-out on a real 3-node JetStream cluster (R3 streams) with two roomserver processes on
PostgreSQL: SIGKILL one roomserver, then the nats-server node leading the input stream, under
load on 20 rooms. Nothing is lost, nothing is published twice, every room ends as a single
process would leave it, and the killed process's rooms move again within AckWait.

Also: a second process with room workers on one SQLite file is refused with a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
import pytest

from roomserver.api import Outcome, OutputEvent, OutputNewRoomEvent
from roomserver.app import DEFAULT_OUTPUT_DURABLE, Roomserver, SharedSQLiteError
from roomserver.bus import Bus
from roomserver.bus.admin import pending_for_room
from roomserver.bus.embedded import EmbeddedNatsCluster
from roomserver.bus.subjects import input_stream_name, room_consumer_name
from roomserver.ports import OutboxEntry
from roomserver.storage import open_storage
from roomserver.testing.builder import RoomBuilder
from tests.bus.helpers import Recorder, fast_config
from tests.e2e.child import start_child, stop_children, write_child_config
from tests.e2e.helpers import ALICE, BOB, drain_outputs, submit, wait_for
from tests.natsutil import running_nats
from tests.pgutil import fresh_schema_url
from tests.storage.helpers import LinearRoom

ROOMS = 20
MESSAGES = 60
T = TypeVar("T")


def _rooms() -> list[RoomBuilder]:
    builders = []
    for r in range(ROOMS):
        b = RoomBuilder("10", room_id=f"!cluster{r}:example.org")
        b.create_room(ALICE)
        b.join(BOB)
        for i in range(MESSAGES):
            b.message(BOB if i % 3 else ALICE, f"r{r} m{i}")
        builders.append(b)
    return builders


@pytest.mark.slow
async def test_cluster_survives_a_killed_roomserver_and_a_killed_stream_leader(
    tmp_path: Path, pg_database: str
) -> None:
    database_url = await fresh_schema_url(pg_database)
    builders = _rooms()
    keys = builders[0].keys
    async with EmbeddedNatsCluster(tmp_path / "nats") as cluster:
        client = await Roomserver.open(
            data_dir=tmp_path / "client", server_name="rs.test", nats_url=cluster.url,
            database_url=database_url, federation=False, run_workers=False, nats_replicas=3,
        )  # fmt: skip
        children: list[asyncio.subprocess.Process] = []
        try:
            info = await client.bus.js.stream_info(input_stream_name(""))
            assert info.config.num_replicas == 3
            subscription = await _retried(lambda: client.bus.output_subscription("cluster-fault"))
            for n in range(2):
                config = write_child_config(
                    tmp_path / f"child{n}.json", data_dir=tmp_path / f"child{n}",
                    nats_url=cluster.url, database_url=database_url, keys=keys, replicas=3,
                    max_missing_processing_s=5.0, log_file=str(tmp_path / f"child{n}.log"),
                )  # fmt: skip
                children.append(await start_child(config))
            # Interleave the rooms' events so that every room is busy throughout.
            pdus = [b.pdus() for b in builders]
            for start in range(0, max(len(p) for p in pdus), 8):
                batch = [p for room in pdus for p in room[start : start + 8]]
                await _queue_all(client, batch)

            seen: list[OutputEvent] = []
            arrival: list[float] = []
            sequences: set[int] = set()

            async def read_until(count: int, timeout: float) -> None:
                deadline = time.monotonic() + timeout
                while len(seen) < count and time.monotonic() < deadline:
                    try:
                        message = await subscription.next_within(1.0)
                    except (nats.errors.Error, nats.js.errors.Error):
                        await asyncio.sleep(0.2)  # no stream leader for a moment
                        continue
                    if message is None:
                        continue
                    # An ack lost during the leader election brings the output back: count
                    # each stream message once (a duplicate publish has its own sequence).
                    if message.stream_seq not in sequences:
                        sequences.add(message.stream_seq)
                        seen.append(_decode(message.payload))
                        arrival.append(time.monotonic())
                    with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                        await message.ack()

            total = sum(len(b.events) for b in builders)
            await read_until(total // 5, timeout=120)
            killed_at = time.monotonic()
            children[0].send_signal(signal.SIGKILL)
            await children[0].wait()
            progress_at_kill = _per_room(seen)
            await read_until(total // 2, timeout=120)

            # The node leading the input stream goes too (a quorum of two remains).
            leader = (await client.bus.js.stream_info(input_stream_name(""))).cluster
            assert leader is not None and leader.leader is not None
            leader_killed_at = time.monotonic()
            await cluster.node_named(leader.leader).kill()
            await read_until(total, timeout=120)
            await read_until(total + 1, timeout=3.0)  # anything more would be a duplicate

            ids = _per_room_ids(seen)
            # Which rooms lack stored events, and how many (a diagnosis, if any).
            unstored = [
                (b, [e for e in b.events if await client.event(e) is None]) for b in builders
            ]
            stalled = [b.room_id for b, missing in unstored if missing]
            assert not stalled, (
                f"{time.monotonic() - leader_killed_at:.0f} s after the stream leader was "
                "killed, events not stored: "
                + "; ".join(
                    f"{b.room_id}: {len(missing)} of {len(b.events)} (first {missing[0]})"
                    for b, missing in unstored
                    if missing
                )
                + await _diagnosis(
                    client.bus, stalled, [tmp_path / "child0.log", tmp_path / "child1.log"]
                )
            )
            soft_failed: set[str] = set()
            for b in builders:
                room = ids[b.room_id]
                duplicated = [i for i, n in Counter(room).items() if n > 1]
                assert not duplicated, f"{b.room_id}: {len(duplicated)} outputs duplicated"
                for event_id in b.events:
                    stored = await client.event(event_id)
                    assert stored is not None, f"{event_id} lost"
                    if stored.outcome is Outcome.SOFT_FAILED:
                        soft_failed.add(event_id)
                    else:
                        assert stored.outcome is Outcome.ACCEPTED, (event_id, stored.outcome)
                # A soft-failed event has no output; nothing else may be missing.
                expected = [e for e in b.events if e not in soft_failed]
                assert room == expected, f"{b.room_id}: outputs missing or out of order"
            # Time until every room that still had outputs to produce when the process died
            # produced one again.
            resumed: dict[str, float] = {}
            for output, at in zip(seen, arrival, strict=False):
                if at > killed_at and output.room_id not in resumed:
                    resumed[output.room_id] = at - killed_at
            final = _per_room(seen)
            waiting = [
                b.room_id for b in builders if progress_at_kill[b.room_id] < final[b.room_id]
            ]
            failover = max((resumed[room] for room in waiting), default=0.0)
            print(
                f"\nevery room moving again {failover:.1f} s after the SIGKILL (stream leader "
                f"killed at {leader_killed_at - killed_at:.1f} s); per room: "
                + " ".join(f"{resumed[room]:.1f}" for room in sorted(waiting, key=resumed.get))
            )
            assert failover < 30.0
            if soft_failed:
                pytest.xfail(
                    f"{len(soft_failed)} events SOFT_FAILED where one process accepts them: the "
                    "input processor's per-process room cache is not proven fresh (issue 11, "
                    "part 0); nothing was lost or duplicated"
                )
            for b in builders:
                assert await client.current_state(b.room_id) == b.state
                assert await client.latest_events(b.room_id) == b.latest
        finally:
            await stop_children(children)
            await client.close(grace=2.0)


async def test_a_consumer_leader_election_makes_its_waiting_worker_pull_again(
    tmp_path: Path,
) -> None:
    """A pull request held by a consumer leader that died is gone without a reply: on
    JetStream's LEADER_ELECTED advisory for a room consumer (or a discovery consumer), the
    waiting worker (or discovery) pulls again at once, not when its pull would expire."""
    async with running_nats(tmp_path / "nats") as server:
        # Pulls that last a minute: only the advisory can make a worker pull again here.
        config = fast_config(
            pull_expires=60.0, idle_timeout=120.0, consumer_inactive_threshold=600.0
        )
        recorder = Recorder()
        bus = await Bus.connect(server.url, config=config)
        try:
            await bus.start_workers(recorder)
            await bus.publish_input("!elected:x", b"first")
            await recorder.wait_for(lambda: recorder.total_acked() == 1)
            assert bus.pool is not None and bus.shared_discovery is not None
            worker = bus.pool.worker_of("!elected:x")
            assert worker is not None
            await asyncio.sleep(0.5)  # its next pull is out (after the ack)
            requests, discovery_requests = worker._request, bus.shared_discovery._request
            advisory = f"$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{input_stream_name('')}"
            await bus.nc.publish(f"{advisory}.{room_consumer_name('', '!elected:x')}", b"{}")
            await bus.nc.publish(f"{advisory}.{bus.shared_discovery.name}", b"{}")
            await bus.nc.publish(f"{advisory}.{room_consumer_name('', '!other:x')}", b"{}")
            discovery = bus.shared_discovery
            await wait_for(
                lambda: worker._request > requests and discovery._request > discovery_requests,
                timeout=5.0,
            )
            assert worker._request == requests + 1
            assert bus.shared_discovery._request == discovery_requests + 1
            # The room still works, with one message at a time.
            await bus.publish_input("!elected:x", b"second")
            await recorder.wait_for(lambda: recorder.total_acked() == 2)
            assert recorder.by_room["!elected:x"] == [b"first", b"second"]
            assert recorder.overlaps == 0
        finally:
            await bus.close(grace=1.0)


async def _queue_all(client: Roomserver, pdus: list[dict[str, Any]]) -> None:
    """Submit ``pdus`` asynchronously as a caller must: an event answered ``ERROR`` (its message
    could not be queued in time, as during a leader election on a loaded machine) is sent
    again, before anything later of its room, so that the test never waits for an event that
    was not queued."""
    deadline = time.monotonic() + 60
    while True:
        response = await submit(client, pdus, asynchronous=True)
        failed = [
            pdu
            for pdu, result in zip(pdus, response.results, strict=True)
            if result.outcome is Outcome.ERROR
        ]
        if not failed:
            return
        assert time.monotonic() < deadline, f"not queued within 60 s: {response.results[0]}"
        pdus = failed
        await asyncio.sleep(0.2)


async def _retried(call: Callable[[], Awaitable[T]], within: float = 60.0) -> T:
    """``call()``, again while the cluster answers its JetStream API with a timeout: right after
    its start a loaded machine may still be electing the leaders of new streams."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _diagnosis(bus: Bus, room_ids: list[str], logs: list[Path]) -> str:
    """For a failure message: each stalled room's consumer on the input stream (or why it could
    not be read) and the log lines of the surviving processes that name it."""
    lines = []
    stream = input_stream_name("")
    for room_id in room_ids:
        try:
            info = await bus.js.consumer_info(stream, room_consumer_name("", room_id))
            lines.append(
                f"{room_id}: consumer pending {info.num_pending}, ack pending "
                f"{info.num_ack_pending}, redelivered {info.num_redelivered}, waiting "
                f"{info.num_waiting}, delivered {info.delivered}, ack floor {info.ack_floor}, "
                f"leader {info.cluster.leader if info.cluster else None}"
            )
        except Exception as exc:
            lines.append(f"{room_id}: no consumer info ({type(exc).__name__}: {exc})")
        try:
            left = await pending_for_room(bus.js, bus.config, room_id)
            lines.append(f"{room_id}: {left} input messages left in the stream")
        except Exception as exc:
            lines.append(f"{room_id}: stream not read ({type(exc).__name__}: {exc})")
    for log in logs:
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        named = [line for line in text.splitlines() if any(r in line for r in room_ids)]
        lines.append(f"{log.name}: {len(text.splitlines())} lines, naming the rooms:")
        lines.extend(named[-40:])
        lines.append(f"{log.name}, last lines:")
        lines.extend(text.splitlines()[-30:])
    return "\n" + "\n".join(lines)


def _decode(payload: bytes) -> OutputEvent:
    from roomserver.api import decode_output_event

    return decode_output_event(payload)


def _per_room_ids(outputs: list[OutputEvent]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = defaultdict(list)
    for output in outputs:
        if isinstance(output.payload, OutputNewRoomEvent):
            ids[output.room_id].append(output.payload.event_id)
    return ids


def _per_room(outputs: list[OutputEvent]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for output in outputs:
        if isinstance(output.payload, OutputNewRoomEvent):
            counts[output.room_id] += 1
    return counts


async def test_a_second_worker_process_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path}/shared.db"
    first = await Roomserver.open(
        data_dir=tmp_path / "a", server_name="rs.test", database_url=database_url,
        federation=False,
    )  # fmt: skip
    try:
        with pytest.raises(SharedSQLiteError, match="need one PostgreSQL database"):
            await Roomserver.open(
                data_dir=tmp_path / "b", server_name="rs.test", database_url=database_url,
                federation=False,
            )  # fmt: skip
        # A client that only submits and queries may share the file.
        reader = await Roomserver.open(
            data_dir=tmp_path / "c", server_name="rs.test", database_url=database_url,
            federation=False, run_workers=False, nats_url=first.nats_url,
        )  # fmt: skip
        await reader.close()
    finally:
        await first.close(grace=1.0)
    # Once the first is gone, another process may take its place.
    again = await Roomserver.open(
        data_dir=tmp_path / "b", server_name="rs.test", database_url=database_url,
        federation=False,
    )  # fmt: skip
    await again.close(grace=1.0)


async def test_start_up_publishes_the_outputs_a_dead_process_left_unsent(
    tmp_path: Path, database_url: str
) -> None:
    """Outputs committed (and perhaps published) but not marked sent when a process died are
    published on the next start, with their message IDs, and marked sent."""
    store = await open_storage(database_url)
    try:
        rooms = [LinearRoom(store, f"!unsent{i}:example.org") for i in range(3)]
        for n, room in enumerate(rooms):
            await room.create()
            entries = [OutboxEntry(f"unsent-{n}-{i}", "new_room_event", b"{}") for i in range(2)]
            await room.send(room.next_event(f"left unsent {n}"), outbox=entries)
        assert len(await store.rooms_with_unsent_outbox()) == 3
    finally:
        await store.close()
    rs = await Roomserver.open(
        data_dir=tmp_path / "rs", server_name="rs.test", database_url=database_url,
        federation=False,
    )  # fmt: skip
    try:
        subscription = await rs.bus.output_subscription(DEFAULT_OUTPUT_DURABLE)
        got = []
        while (message := await subscription.next_within(2.0)) is not None:
            got.append(message.msg_id)
            await message.ack()
        assert sorted(got) == sorted(f"unsent-{n}-{i}" for n in range(3) for i in range(2))
        assert await rs.storage.rooms_with_unsent_outbox() == []
    finally:
        await rs.close(grace=1.0)


async def _run_processes(
    processes: int, base: Path, database_url: str, builders: list[RoomBuilder]
) -> tuple[dict[str, Outcome], dict[str, list[str]], dict[str, object]]:
    """Submit every room's events asynchronously to ``processes`` roomservers on one
    nats-server; return each event's outcome, each room's new_room_event outputs and state."""
    keys = builders[0].keys
    async with running_nats(base / "nats") as server:
        client = await Roomserver.open(
            data_dir=base / "client", server_name="rs.test", nats_url=server.url,
            database_url=database_url, federation=False, run_workers=False,
        )  # fmt: skip
        children: list[asyncio.subprocess.Process] = []
        try:
            subscription = await client.bus.output_subscription("equivalence")
            for n in range(processes):
                config = write_child_config(
                    base / f"child{n}.json", data_dir=base / f"child{n}", nats_url=server.url,
                    database_url=database_url, keys=keys,
                )  # fmt: skip
                children.append(await start_child(config))
            pdus = [b.pdus() for b in builders]
            for start in range(0, max(len(p) for p in pdus), 5):
                await _queue_all(client, [p for room in pdus for p in room[start : start + 5]])
            event_ids = [e for b in builders for e in b.events]
            outcomes: dict[str, Outcome] = {}
            deadline = time.monotonic() + 180
            while len(outcomes) < len(event_ids) and time.monotonic() < deadline:
                for event_id in event_ids:
                    if event_id not in outcomes:
                        stored = await client.event(event_id)
                        if stored is not None:
                            outcomes[event_id] = stored.outcome
                await asyncio.sleep(0.5)
            outputs = _per_room_ids(await drain_outputs(subscription, quiet=3.0))
            states: dict[str, object] = {
                b.room_id: (
                    await client.current_state(b.room_id),
                    await client.latest_events(b.room_id),
                )
                for b in builders
            }
            return outcomes, dict(outputs), states
        finally:
            await stop_children(children)
            await client.close(grace=2.0)


@pytest.mark.slow
async def test_two_and_three_processes_decide_like_one(tmp_path: Path, pg_database: str) -> None:
    builders = []
    for r in range(8):
        b = RoomBuilder("10", room_id=f"!same{r}:example.org")
        b.create_room(ALICE)
        b.join(BOB)
        for i in range(25):
            b.message(BOB if i % 2 else ALICE, f"r{r} m{i}")
        builders.append(b)
    reference = await _run_processes(
        1, tmp_path / "one", await fresh_schema_url(pg_database), builders
    )
    assert len(reference[0]) == sum(len(b.events) for b in builders)
    only_soft_fail_differs = False
    for processes in (2, 3):
        outcomes, outputs, states = await _run_processes(
            processes, tmp_path / f"n{processes}", await fresh_schema_url(pg_database), builders
        )
        assert outcomes.keys() == reference[0].keys(), "events lost"
        for room, ids in outputs.items():
            assert len(ids) == len(set(ids)), f"{room}: outputs duplicated"
        differing = {e for e in outcomes if outcomes[e] is not reference[0][e]}
        if differing:
            kinds = {(reference[0][e], outcomes[e]) for e in differing}
            assert kinds <= {(Outcome.ACCEPTED, Outcome.SOFT_FAILED)}, kinds
            only_soft_fail_differs = True
            continue
        assert outputs == reference[1]
        assert states == reference[2]
    if only_soft_fail_differs:
        pytest.xfail(
            "events SOFT_FAILED with several processes where one process accepts them: the "
            "input processor's per-process room cache is not proven fresh (issue 11, part 0)"
        )
