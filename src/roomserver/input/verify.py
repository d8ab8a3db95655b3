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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nacl.signing import VerifyKey

from roomserver.core import signatures
from roomserver.core.pdu import Event
from roomserver.core.room_versions import RoomVersion
from roomserver.ports import KeyRing

#: Messages of at most this many events to verify are checked inline.
INLINE_AT_MOST = 2
#: Events per hand-off to the pool: small enough that the first event's result comes early.
CHUNK_EVENTS = 8

VerifyKeys = dict[str, dict[str, VerifyKey]]
_CachedKeys = Callable[[Event, RoomVersion], VerifyKeys | None]
_Outcomes = list[BaseException | None]


class VerifiedBatch:
    """The checks started for one message: per event ID, its event, its chunk and its place."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[str, tuple[Event, concurrent.futures.Future[_Outcomes], int]] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, event: Event, future: concurrent.futures.Future[_Outcomes], index: int) -> None:
        self._slots[event.event_id] = (event, future, index)

    def take(self, event: Event) -> tuple[concurrent.futures.Future[_Outcomes], int] | None:
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
    """Verifies event signatures for ``InputProcessor``: a message's in a pool of ``threads``
    threads (``start``), any other inline through ``keyring`` (``verify``)."""

    def __init__(self, keyring: KeyRing, *, threads: int) -> None:
        if threads < 0:
            raise ValueError(f"verify_threads: must be 0 or more, not {threads}")
        self._keyring = keyring
        self._threads = threads
        cached = getattr(keyring, "cached_verify_keys", None)
        self._cached_keys: _CachedKeys | None = cached if callable(cached) else None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def start(self, events: Sequence[Event]) -> VerifiedBatch | None:
        """Start checking the signatures of ``events`` (a message's, in order) in the pool.
        Returns ``None`` when none is started (pool off, too few events, keys not in memory)."""
        if self._threads == 0 or self._cached_keys is None or len(events) <= INLINE_AT_MOST:
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
            if not future.done():
                await asyncio.wrap_future(future)
            if not future.cancelled():  # cancelled: the pool was shut down, check inline
                error = future.result()[index]
                if error is not None:
                    raise error
                return
        await self._keyring.verify_event(event, event.room_version)

    def close(self) -> None:
        """Stop the pool (checks not started are dropped; their events verify inline)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


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
