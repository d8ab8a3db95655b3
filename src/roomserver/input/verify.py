"""``BatchVerifier``: the signatures of a message's events, checked in a thread pool while the
room's worker goes on (spec: "Validating hashes and signatures on received events").

When a message begins, ``start`` takes its parsed events, looks up in memory the keys each
needs (``KeyRing.cached_verify_keys``: no await, no fetch) and hands the checks to a small
thread pool, in chunks, in order. PyNaCl releases the GIL during the ed25519 check, so the
checks run beside the event loop, which meanwhile reads what the message needs and decides
the events before. When an event's turn comes, ``verify`` takes its result (waiting for its
chunk only if the pool is behind) and raises what the inline check would have raised, the
same exception with the same reason.

An event whose keys are not all in memory (unknown, stale for its timestamp, a fetch under
way), and every event of a message of one or two events (a thread hand-off would cost more
than it saves), is checked inline at its turn by the key ring, exactly as without the pool.
``threads=0`` turns the pool off. The result of an event is the one ``KeyRing.verify_event``
would give: the same keys, looked up by the same rules, checked by the same function.

With ``processes`` (the service's default), the checks go to that many worker processes
instead (``verify_workers.py``: no thread of ours then waits for the GIL), the first chunk of a
message smaller so that its first events are answered soon; threads check while the workers
start. A worker answers only pass or fail: an event that failed there, or whose worker
stopped, is checked again inline at its turn, which raises the exception with its reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nacl.signing import VerifyKey

from roomserver.core import signatures
from roomserver.core.pdu import Event
from roomserver.core.room_versions import RoomVersion
from roomserver.input.verify_workers import Check, VerifyProcesses
from roomserver.ports import KeyRing

log = logging.getLogger(__name__)

#: Messages of at most this many events to verify are checked inline.
INLINE_AT_MOST = 2
#: Events per hand-off to the pool: small enough that the first event's result comes early.
CHUNK_EVENTS = 8
#: Events of a message's first hand-off to a worker process (the others: ``CHUNK_EVENTS``).
FIRST_PROCESS_CHUNK = 4

VerifyKeys = dict[str, dict[str, VerifyKey]]
_CachedKeys = Callable[[Event, RoomVersion], VerifyKeys | None]
_Outcomes = list[BaseException | None]
# A chunk's checks: in a thread (each event's exception or None), or in a worker process
# (each event passed or not).
_Chunk = concurrent.futures.Future[_Outcomes] | asyncio.Future[list[bool]]


class VerifiedBatch:
    """The checks started for one message: per event ID, its event, its chunk and its place."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[str, tuple[Event, _Chunk, int]] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, event: Event, future: _Chunk, index: int) -> None:
        self._slots[event.event_id] = (event, future, index)

    def take(self, event: Event) -> tuple[_Chunk, int] | None:
        """The check started for this very ``Event`` object (once), or ``None``."""
        slot = self._slots.get(event.event_id)
        if slot is None or slot[0] is not event:
            return None
        del self._slots[event.event_id]
        return slot[1], slot[2]

    def cancel(self) -> None:
        """Drop the checks not taken (those not started yet are not run)."""
        for _, future, _ in self._slots.values():
            future.cancel()
        self._slots.clear()


class BatchVerifier:
    """Verifies event signatures for ``InputProcessor``: a message's in ``processes`` worker
    processes when they are up, else in a pool of ``threads`` threads (``start``), any other
    inline through ``keyring`` (``verify``)."""

    def __init__(self, keyring: KeyRing, *, threads: int, processes: int = 0) -> None:
        if threads < 0:
            raise ValueError(f"verify_threads: must be 0 or more, not {threads}")
        if processes < 0:
            raise ValueError(f"verify_processes: must be 0 or more, not {processes}")
        self._keyring = keyring
        self._threads = threads
        self._processes = VerifyProcesses(processes) if processes else None
        cached = getattr(keyring, "cached_verify_keys", None)
        self._cached_keys: _CachedKeys | None = cached if callable(cached) else None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def start(self, events: Sequence[Event]) -> VerifiedBatch | None:
        """Start checking the signatures of ``events`` (a message's, in order) in the pool.
        Returns ``None`` when none is started (pool off, too few events, keys not in memory)."""
        if self._cached_keys is None or len(events) <= INLINE_AT_MOST:
            return None
        remote = self._processes is not None and self._processes.ready()
        if self._threads == 0 and not remote:
            return None
        work: list[tuple[Event, VerifyKeys]] = []
        for event in events:
            try:
                keys = self._cached_keys(event, event.rules)
            except Exception:  # the inline check raises it at the event's turn
                continue
            if keys is not None:
                work.append((event, keys))
        if len(work) <= INLINE_AT_MOST:
            return None
        if remote:
            assert self._processes is not None
            try:
                return _start_in_processes(self._processes, work)
            except Exception as exc:  # not sent (a PDU that cannot be pickled): threads check
                log.warning("signature checks not sent to workers: %s: %s", type(exc).__name__, exc)
                if self._threads == 0:
                    return None
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self._threads, thread_name_prefix="roomserver-verify"
            )
        batch = VerifiedBatch()
        for first in range(0, len(work), CHUNK_EVENTS):
            chunk = work[first : first + CHUNK_EVENTS]
            future = self._pool.submit(_verify_chunk, chunk)
            for index, (event, _) in enumerate(chunk):
                batch.add(event, future, index)
        return batch

    async def verify(self, event: Event, batch: VerifiedBatch | None = None) -> None:
        """Check ``event``'s signatures: its result from ``batch`` if one was started there,
        inline through the key ring otherwise. Raises ``InvalidSignature`` as the key ring
        does (``KeysUnobtainable`` included)."""
        slot = batch.take(event) if batch is not None else None
        if slot is not None:
            future, index = slot
            if isinstance(future, asyncio.Future):  # a worker process's pass or fail
                if not future.done():
                    await asyncio.wait((future,))  # never raises: cancelled or gone, check here
                if not future.cancelled() and future.exception() is None and future.result()[index]:
                    return
                # Failed there (the inline check says why), or the worker stopped (WorkerGone).
            else:
                if not future.done():
                    await asyncio.wrap_future(future)
                if not future.cancelled():  # cancelled: the pool was shut down, check inline
                    error = future.result()[index]
                    if error is not None:
                        raise error
                    return
        await self._keyring.verify_event(event, event.room_version)

    @property
    def processes(self) -> VerifyProcesses | None:
        """The worker processes (``None`` without)."""
        return self._processes

    def close(self) -> None:
        """Stop the pool (checks not started are dropped; their events verify inline)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def aclose(self) -> None:
        """``close``, and stop the worker processes."""
        self.close()
        if self._processes is not None:
            await self._processes.close()


def _start_in_processes(
    processes: VerifyProcesses, work: Sequence[tuple[Event, VerifyKeys]]
) -> VerifiedBatch:
    batch = VerifiedBatch()
    first = 0
    while first < len(work):
        size = FIRST_PROCESS_CHUNK if first == 0 else CHUNK_EVENTS
        chunk = work[first : first + size]
        checks: list[Check] = [
            (
                event.room_version,
                event.canonical_bytes if event.canonical_bytes is not None else event.pdu,
                event.signed_bytes,
                {s: {k: bytes(key) for k, key in by_id.items()} for s, by_id in keys.items()},
            )
            for event, keys in chunk
        ]
        future = processes.submit(checks)
        for index, (event, _) in enumerate(chunk):
            batch.add(event, future, index)
        first += size
    return batch


def _verify_chunk(chunk: Sequence[tuple[Event, Mapping[str, Any]]]) -> _Outcomes:
    """In a pool thread: each event's check, ``None`` or the exception it raised."""
    out: _Outcomes = []
    for event, keys in chunk:
        try:
            signatures.verify_event(event, room_version=event.room_version, verify_keys=keys)
        except Exception as exc:  # raised again at the event's turn
            out.append(exc)
        else:
            out.append(None)
    return out
