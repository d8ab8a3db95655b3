"""Signature checks in worker processes (``verify_workers.py``): each event gets exactly what
checking it alone through the key ring gives, a worker that dies leaves its events checked in
our process, and closing stops the workers."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from roomserver.core.pdu import Event
from roomserver.input import verify_workers
from roomserver.input.verify import BatchVerifier
from roomserver.input.verify_workers import VerifyProcesses, WorkerGone
from tests.input.test_verify import _alone, _batched, _CountingKeyRing, _events, _keyring, _taken


async def _room() -> tuple[list[Event], list[str | None], _CountingKeyRing]:
    """``_events()``, what checking each alone gives, and a key ring with the senders' keys in
    memory (nothing counted inline yet)."""
    builder, events = _events()
    expected = await _alone(_keyring(builder), events)
    ring = _keyring(builder)
    await _alone(ring, events[:-14])
    ring.inline = 0
    return events, expected, ring


async def _one_stopped_worker(ring: _CountingKeyRing) -> tuple[BatchVerifier, int]:
    """A verifier with one worker process and no threads, its worker up and then stopped
    (SIGSTOP): it takes checks and never answers. Returns the verifier and the worker's pid."""
    verifier = BatchVerifier(ring, threads=0, processes=1)
    try:
        assert verifier.processes is not None
        assert await verifier.processes.started(timeout_s=30)
        (pid,) = verifier.processes.pids()
        os.kill(pid, signal.SIGSTOP)
    except BaseException:
        await verifier.aclose()
        raise
    return verifier, pid


async def _exited(pids: list[int]) -> bool:
    """Whether every process of ``pids`` is gone (reaped) within a few seconds."""
    for _ in range(100):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            alive.append(pid)
        if not alive:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_workers_give_each_event_what_checking_it_alone_gives() -> None:
    events, expected, ring = await _room()
    verifier = BatchVerifier(ring, threads=0, processes=2)
    try:
        assert verifier.processes is not None
        assert await verifier.processes.started(timeout_s=30)
        assert len(verifier.processes.pids()) == 2
        assert await _batched(verifier, events) == expected
        # Inline: the stranger's event (keys not in memory), and the forged and the unsigned
        # ones, which failed in a worker and were checked again here for their reason.
        assert ring.inline == 3
    finally:
        pids = verifier.processes.pids() if verifier.processes is not None else []
        await verifier.aclose()
    assert await _exited(pids)


async def test_threads_check_while_the_workers_start() -> None:
    events, expected, ring = await _room()
    verifier = BatchVerifier(ring, threads=2, processes=1)
    try:
        # Not started yet: this message's checks go to the threads, and the workers start.
        assert verifier.processes is not None and verifier.processes.pids() == []
        assert await _batched(verifier, events) == expected
        assert await verifier.processes.started(timeout_s=30)
        assert await _batched(verifier, events) == expected
    finally:
        await verifier.aclose()


async def test_a_killed_worker_leaves_its_events_checked_here_and_is_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verify_workers, "RESTART_AFTER_S", 0.0)
    events, expected, ring = await _room()
    verifier, pid = await _one_stopped_worker(ring)  # it takes the checks, and never answers
    try:
        assert verifier.processes is not None
        batch = verifier.start(events)
        assert batch is not None
        os.kill(pid, signal.SIGKILL)
        assert await _taken(verifier, events, batch) == expected
        assert ring.inline == len(events)  # all checked here
        assert await _exited([pid])
        assert await verifier.processes.started(timeout_s=30)
        assert verifier.processes.pids() != [pid]
        assert await _batched(verifier, events) == expected
    finally:
        await verifier.aclose()


async def test_a_hung_worker_is_killed_and_its_events_checked_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verify_workers, "ANSWER_TIMEOUT_S", 0.5)
    events, expected, ring = await _room()
    verifier, pid = await _one_stopped_worker(ring)  # alive, never answers
    try:
        assert verifier.processes is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await _batched(verifier, events) == expected
        assert loop.time() - started < 10  # the timeout, not the message's deadline
        assert ring.inline == len(events)
        assert await _exited([pid])  # killed
        assert verifier.processes.pids() == []
    finally:
        await verifier.aclose()


async def test_a_closed_pool_takes_no_checks() -> None:
    processes = VerifyProcesses(1)
    assert await processes.started(timeout_s=30)
    pids = processes.pids()
    await processes.close()
    assert await _exited(pids)
    assert not processes.ready()
    assert not await processes.started(timeout_s=1)
    with pytest.raises(WorkerGone):
        processes.submit([])
    with pytest.raises(ValueError, match="verify_processes"):
        VerifyProcesses(0)
    with pytest.raises(ValueError, match="verify_processes"):
        BatchVerifier(_keyring(_events()[0]), threads=0, processes=-1)
