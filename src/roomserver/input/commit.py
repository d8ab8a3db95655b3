"""Commit: write one planned ``EventWrite`` and record what it changed in the caches.

Nothing here reads storage to decide anything: the outcome is the decision's, the write is
the plan's. ``persist`` goes to the write-behind buffer inside a message (committed with the
message, ``WriteBehind``) or straight to storage outside one.
"""

from __future__ import annotations

import logging

from roomserver.api import EventResult, Outcome, StoredEvent
from roomserver.core.decide import Verdict
from roomserver.core.ids import RoomId
from roomserver.input.effects import PlannedWrite
from roomserver.input.outputs import OutboxSender
from roomserver.input.rooms import RoomRows
from roomserver.input.store import EventCache, InputStore, SnapshotEntries
from roomserver.ports import OutboxEntry, RoomInfo

log = logging.getLogger(__name__)


class Commit:
    """Writes planned writes. ``pending``: each room's unsent outbox as its last write reported
    it (``PersistResult.pending_outbox``), for the publish step."""

    def __init__(
        self,
        store: InputStore,
        events: EventCache,
        rooms: RoomRows,
        outbox: OutboxSender,
        snapshots: SnapshotEntries | None = None,
    ) -> None:
        self._store = store
        self._events = events
        self._rooms = rooms
        self._outbox = outbox
        self._snapshots = snapshots
        self.pending: dict[RoomId, tuple[OutboxEntry, ...]] = {}

    async def commit(self, planned: PlannedWrite, room: RoomInfo | None) -> tuple[EventResult, int]:
        """Persist the write; return the event's result and how many outputs it queued."""
        write, decision = planned.write, planned.decision
        event = write.event
        persisted = await self._store.persist(write)
        if persisted.pending_outbox is not None:
            self._outbox.marked(event.room_id, write.outbox_sent)
            self.pending[event.room_id] = persisted.pending_outbox
        else:
            self.pending.pop(event.room_id, None)
        update = write.room_update
        if planned.fresh and self._snapshots is not None:
            if write.state_before is not None:
                self._snapshots.derived(persisted.state_before, write.state_before, event.room_id)
            if update is not None:  # after a state event: the next event's state before
                self._snapshots.derived(
                    persisted.current_state, update.current_state, event.room_id
                )
        if update is not None:
            self._rooms.remember(
                RoomInfo(
                    room_id=event.room_id,
                    room_version=update.room_version,
                    forward_extremities=tuple(update.forward_extremities),
                    current_state=persisted.current_state,
                    last_sent_event_id=update.last_sent_event_id,
                    version=(room.version if room is not None else 0) + 1,
                )
            )
        outputs = len(write.outbox)
        if decision.verdict is Verdict.REJECTED:
            log.info("rejected %s: %s", event.event_id, decision.reason)
            return EventResult(event.event_id, Outcome.REJECTED, decision.reason), outputs
        if not planned.redacts_itself:
            self._events.remember(
                StoredEvent(
                    event=event,
                    outlier=not decision.with_state,
                    soft_failed=decision.verdict is Verdict.SOFT_FAILED,
                    state_snapshot=persisted.state_before,
                )
            )
        if decision.verdict is Verdict.SOFT_FAILED:
            log.info("soft-failed %s: %s", event.event_id, decision.reason)
            return EventResult(event.event_id, Outcome.SOFT_FAILED, decision.reason), outputs
        return EventResult(event.event_id, Outcome.ACCEPTED), outputs
