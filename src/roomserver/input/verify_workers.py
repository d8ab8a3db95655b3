"""Signature checks in worker processes, fed through pipes that the event loop reads.

Why processes: the GIL. PyNaCl releases it around each ed25519 check, but a thread that
released it gets it back only when the event loop's thread blocks or its switch interval runs
out, so checks in threads wait for the event loop, and slow it down, whenever it computes
(``docs/performance.md``, "The GIL is the saturated resource"). A worker process has a GIL of
its own, and its pipes are read by the event loop like a socket: no thread of ours waits.

``VerifyProcesses`` starts ``count`` workers (``python -m roomserver.verify_worker``)
when first asked, and until they are up says it is not ``ready`` (the caller checks in
threads meanwhile). ``submit`` sends one chunk of checks to the least busy worker and returns
a future of one ``bool`` per check. A worker that exits, breaks or does not answer within
``ANSWER_TIMEOUT_S`` (killed then) fails its pending futures with ``WorkerGone`` (the caller
checks those events itself) and is started again at the next message, at most once per
``RESTART_AFTER_S``.

What a worker is sent and answers is in ``roomserver/verify_worker.py``. Why a check failed
is not sent back: the caller checks a failed event again in its own process, which raises the
exception with its reason (failures are rare, and the answer is then the same by
construction).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

from roomserver.verify_worker import FRAME, Check

log = logging.getLogger(__name__)

#: Seconds before a worker that exited is started again.
RESTART_AFTER_S = 5.0
#: Seconds a worker gets to answer a chunk (a few ms of work) before it is taken for hung:
#: killed, its chunks checked by the caller, and started again.
ANSWER_TIMEOUT_S = 10.0
#: Seconds a closing worker gets to exit once its input is closed, before it is killed.
CLOSE_TIMEOUT_S = 2.0
__all__ = ["Check", "VerifyProcesses", "WorkerGone"]


class WorkerGone(Exception):
    """The worker holding a chunk of checks exited or broke before answering."""


class _Worker:
    __slots__ = ("pending", "process", "queued", "reader")

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        # request ID -> (its answer, how many checks, the timer that gives up on it)
        self.pending: dict[int, tuple[asyncio.Future[list[bool]], int, asyncio.TimerHandle]] = {}
        self.queued = 0  # checks sent, not answered
        self.reader: asyncio.Task[None] | None = None


class VerifyProcesses:
    """A pool of ``count`` signature-checking worker processes (see the module docstring)."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"verify_processes: must be 1 or more here, not {count}")
        self._count = count
        self._workers: list[_Worker] = []
        self._starting: asyncio.Task[None] | None = None
        self._next_start = 0.0  # loop time before which no worker is started again
        self._ids = 0
        self._closed = False

    def ready(self) -> bool:
        """Whether a worker is up (otherwise starts them, when allowed, and answers no)."""
        if self._workers:
            return True
        self._start_soon()
        return False

    async def started(self, timeout_s: float) -> bool:
        """Start the workers if they are not up, and wait until they are (at most
        ``timeout_s``); whether they are."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._next_start = min(self._next_start, loop.time())
        while not self.ready():
            if self._starting is None or loop.time() >= deadline:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._starting), deadline - loop.time())
        return True

    def pids(self) -> list[int]:
        """The process IDs of the workers up now."""
        return [w.process.pid for w in self._workers]

    def submit(self, checks: Sequence[Check]) -> asyncio.Future[list[bool]]:
        """Send ``checks`` to the least busy worker; the future gets one ``bool`` per check,
        or raises ``WorkerGone``. Call only when ``ready()``."""
        if not self._workers:
            raise WorkerGone("no signature worker is running")
        worker = min(self._workers, key=lambda w: w.queued)
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._ids += 1
        body = pickle.dumps((self._ids, list(checks)), protocol=pickle.HIGHEST_PROTOCOL)
        stdin = worker.process.stdin
        if stdin is None or stdin.is_closing():
            self._lost(worker, "its input is closed", kill=True)
            future.set_exception(WorkerGone("the signature worker's input is closed"))
            return future
        overdue = asyncio.get_running_loop().call_later(
            ANSWER_TIMEOUT_S, self._overdue, worker, self._ids
        )
        worker.pending[self._ids] = (future, len(checks), overdue)
        worker.queued += len(checks)
        stdin.write(FRAME.pack(len(body)) + body)
        return future

    def _overdue(self, worker: _Worker, request_id: int) -> None:
        if request_id in worker.pending:
            self._lost(worker, f"it did not answer within {ANSWER_TIMEOUT_S:g} s", kill=True)

    async def close(self) -> None:
        """Stop the workers: their input is closed, they exit (killed if they do not)."""
        self._closed = True
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        workers, self._workers = self._workers, []
        for worker in workers:
            await _stop(worker)
            _fail(worker, "the pool is closed")

    # -- workers ----------------------------------------------------------------------------
    def _start_soon(self) -> None:
        if self._closed or self._starting is not None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_start:
            return
        self._next_start = loop.time() + RESTART_AFTER_S
        self._starting = loop.create_task(self._start())

    async def _start(self) -> None:
        try:
            for _ in range(self._count - len(self._workers)):
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "roomserver.verify_worker",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env=_child_environment(),
                )
                worker = _Worker(process)  # in use at once: a later start may fail
                worker.reader = asyncio.get_running_loop().create_task(self._read(worker))
                self._workers.append(worker)
        except Exception as exc:  # checked in threads meanwhile; tried again later
            log.warning("signature workers could not start: %s: %s", type(exc).__name__, exc)
        finally:
            self._starting = None

    async def _read(self, worker: _Worker) -> None:
        stdout = worker.process.stdout
        assert stdout is not None
        try:
            while True:
                (size,) = FRAME.unpack(await stdout.readexactly(FRAME.size))
                request_id, answers = pickle.loads(await stdout.readexactly(size))
                future, count, overdue = worker.pending.pop(request_id)
                overdue.cancel()
                worker.queued -= count
                if not future.done():
                    future.set_result([a == 1 for a in answers])
        except asyncio.IncompleteReadError:  # its output ended: it is exiting
            self._lost(worker, "it exited")
        except Exception as exc:  # a frame it should not have written: stop it
            self._lost(worker, f"{type(exc).__name__}: {exc}", kill=True)

    def _lost(self, worker: _Worker, why: str, *, kill: bool = False) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
            if not self._closed:
                log.warning("a signature worker stopped (%s); its checks run here", why)
        _fail(worker, why)
        # Not once it exits: signalling polls the process, which would reap it under the
        # event loop's child watcher.
        if kill and worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()


def _fail(worker: _Worker, why: str) -> None:
    pending, worker.pending = worker.pending, {}
    worker.queued = 0
    for future, _, overdue in pending.values():
        overdue.cancel()
        if not future.done():
            future.set_exception(WorkerGone(f"the signature worker stopped: {why}"))
            future.exception()  # retrieved: an event not taken any more must not log it


async def _stop(worker: _Worker) -> None:
    stdin = worker.process.stdin
    if stdin is not None and not stdin.is_closing():
        stdin.close()
    try:
        await asyncio.wait_for(worker.process.wait(), CLOSE_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        await worker.process.wait()
    if worker.reader is not None:
        worker.reader.cancel()
        with contextlib.suppress(BaseException):
            await worker.reader


def _child_environment() -> dict[str, str]:
    """Our environment, with this package importable however we imported it (an installed
    package, or a source tree put on ``sys.path`` by a script)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
