"""Output events as outbox entries: encoded once, with stable message IDs.

A message ID is ``<event_id>:<output type>:<n>`` where ``n`` numbers the outputs of that type
caused by one event, so reprocessing an event yields the same IDs and the bus drops duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence

from roomserver.api import OutputEvent, OutputPayload, encode_output_event
from roomserver.core.ids import RoomId
from roomserver.ports import EventStore, OutboxEntry, OutputPublisher

log = logging.getLogger(__name__)


class OutboxBuilder:
    """Collects the outputs caused by one event, in publication order."""

    def __init__(self, room_id: RoomId, event_id: str) -> None:
        self._room_id = room_id
        self._event_id = event_id
        self._counts: dict[str, int] = {}
        self.entries: list[OutboxEntry] = []

    def add(self, payload: OutputPayload, *, event_json: bytes | None = None) -> None:
        """``event_json``: the payload's event as JSON already (``Event.canonical_bytes``)."""
        output = OutputEvent(room_id=self._room_id, payload=payload)
        output_type = output.type.value
        n = self._counts.get(output_type, 0)
        self._counts[output_type] = n + 1
        self.entries.append(
            OutboxEntry(
                msg_id=f"{self._event_id}:{output_type}:{n}",
                output_type=output_type,
                payload=encode_output_event(output, event_json=event_json),
            )
        )


class OutboxSender:
    """Publishes a room's unsent outbox entries in sequence order and marks them sent.

    When storage reports the pending entries with each write (``PersistResult.pending_outbox``
    is not ``None``), marking is deferred: the sequences published ride along with the room's
    next ``EventWrite`` (``outbox_sent``), and a room idle for ``mark_idle_s`` has them marked
    in the background (``close`` marks the rest). Entries published but not yet marked are never
    published again by this process; after a crash they are, with the same message IDs, which
    the bus's duplicate window drops. Otherwise every publish is followed by
    ``mark_outbox_sent``, as before.
    """

    def __init__(
        self, store: EventStore, publisher: OutputPublisher, *, mark_idle_s: float = 0.5
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._mark_idle_s = mark_idle_s
        self._unmarked: dict[RoomId, set[int]] = {}  # room -> published, not yet marked sent
        self._marks: dict[RoomId, tuple[int, ...]] = {}  # ``marks_for``, until they change
        self._last_publish: dict[RoomId, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def marks_for(self, room_id: RoomId) -> tuple[int, ...]:
        """Sequences to mark sent with the room's next write."""
        marks = self._marks.get(room_id)
        if marks is None:
            left = self._unmarked.get(room_id)
            if not left:
                return ()
            marks = self._marks[room_id] = tuple(sorted(left))  # kept while ``left`` is
        return marks

    def marked(self, room_id: RoomId, sequences: Iterable[int]) -> None:
        """A committed write (or ``mark_outbox_sent``) marked ``sequences`` sent."""
        left = self._unmarked.get(room_id)
        if left is not None:
            self._marks.pop(room_id, None)
            left.difference_update(sequences)
            if not left:
                del self._unmarked[room_id]
                self._last_publish.pop(room_id, None)

    async def publish(self, room_id: RoomId, pending: Sequence[OutboxEntry] | None) -> int:
        """Publish the room's pending entries (``None``: read them) not published yet."""
        if pending is None:
            return await self.flush(room_id)
        done = self._unmarked.get(room_id, set())
        todo = sorted((e for e in pending if e.sequence not in done), key=lambda e: e.sequence)
        if todo:
            await self._publisher.publish_room_outputs(room_id, todo)
            self._unmarked.setdefault(room_id, set()).update(e.sequence for e in todo)
            self._marks.pop(room_id, None)
            self._last_publish[room_id] = time.monotonic()
            self._schedule()
        return len(todo)

    async def flush(self, room_id: RoomId) -> int:
        """Read the room's unsent entries, publish those not published yet, mark all sent."""
        pending = await self._store.pending_outbox(room_id)
        if not pending:
            return 0
        done = self._unmarked.get(room_id, set())
        todo = sorted((e for e in pending if e.sequence not in done), key=lambda e: e.sequence)
        if todo:
            await self._publisher.publish_room_outputs(room_id, todo)
        sequences = [e.sequence for e in pending]
        await self._store.mark_outbox_sent(room_id, sequences)
        self.marked(room_id, sequences)
        return len(todo)

    async def mark_all(self, *, idle_s: float = 0.0) -> None:
        """Mark sent what was published, for rooms without a publish for ``idle_s``."""
        now = time.monotonic()
        for room_id in sorted(self._unmarked):
            if now - self._last_publish.get(room_id, 0.0) < idle_s:
                continue
            sequences = self.marks_for(room_id)
            if sequences:
                await self._store.mark_outbox_sent(room_id, sequences)
                self.marked(room_id, sequences)

    async def close(self) -> None:
        """Stop the background marking and mark everything published."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.mark_all()

    def _schedule(self) -> None:
        if self._timer is None and self._task is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._mark_idle_s, self._start)

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(self._background())

    async def _background(self) -> None:
        try:
            await self.mark_all(idle_s=self._mark_idle_s)
        except Exception as exc:  # retried after the next publish (or at close)
            self._task = None
            log.warning("marking published outputs sent failed: %s: %s", type(exc).__name__, exc)
            return
        self._task = None
        if self._unmarked:
            self._schedule()
