"""What a decision writes: the event's ``EventWrite`` (its row and flags, the state before it,
the room update, redaction bookkeeping and the outbox).

The decision (``core.decide``) says what happens; building the write may still read what only
its consequences need: the states to resolve when the new current state is not a one-entry
change, the members whose invites change, the redactions the event completes. Nothing here
decides an outcome again, and nothing is written: ``commit.py`` writes.
"""

from __future__ import annotations

from typing import NamedTuple

from roomserver.api import OutputOldRoomEvent
from roomserver.core.decide import Decision, OutputKind, Verdict
from roomserver.input.gather import StateGathered
from roomserver.input.job import Job
from roomserver.input.latest import LatestEvents, NewEventContext
from roomserver.input.outputs import OutboxBuilder, OutboxSender
from roomserver.input.redactions import RedactionEffects, Redactions
from roomserver.input.store import Prefetched
from roomserver.ports import EventStatus, EventWrite


class PlannedWrite(NamedTuple):
    """The write of one decision, with what the commit needs to know about it."""

    write: EventWrite
    decision: Decision
    redacts_itself: bool  # the write applies a redaction to the event itself
    fresh: bool = False  # the event was not stored: its state before is written as given


class Effects:
    def __init__(self, latest: LatestEvents, redactions: Redactions, outbox: OutboxSender) -> None:
        self._latest = latest
        self._redactions = redactions
        self._outbox = outbox

    async def plan(
        self,
        job: Job,
        decision: Decision,
        gathered: StateGathered,
        *,
        history_visibility: str,
        prefetched: Prefetched | None,
    ) -> PlannedWrite:
        event, state, room = job.event, gathered.state, gathered.room
        outbox = OutboxBuilder(event.room_id, event.event_id)
        room_update = None
        effects = RedactionEffects()
        if decision.verdict is not Verdict.REJECTED:
            if decision.state_change is not None:
                assert state is not None
                ctx = NewEventContext(
                    event=event,
                    state_before=state,
                    rewrites_state=job.rewrites_state,
                    history_visibility=history_visibility,
                    send_as_server=job.send_as_server,
                    transaction_id=job.transaction_id,
                )
                room_update = await self._latest.update(ctx, room, decision, outbox)
            elif OutputKind.OLD_ROOM_EVENT in decision.outputs:
                outbox.add(
                    OutputOldRoomEvent(
                        event=event.pdu,
                        event_id=event.event_id,
                        room_version=event.room_version,
                        history_visibility=history_visibility,
                    ),
                    event_json=event.canonical_bytes,
                )
            effects = await self._redactions.effects(
                event,
                state,
                outbox,
                room_current_state=room.current_state if room is not None else None,
                prefetched=prefetched,
                soft_failed=decision.verdict is Verdict.SOFT_FAILED,
            )
        soft_failed = decision.verdict is Verdict.SOFT_FAILED
        write = EventWrite(
            event=event,
            status=EventStatus.STATEFUL if decision.with_state else EventStatus.OUTLIER,
            rejection_reason=decision.rejection.reason if decision.rejection else None,
            soft_failed=soft_failed,
            state_before=state.delta if state is not None else None,
            room_update=room_update,
            outbox=tuple(outbox.entries),
            redaction_target=effects.redaction_target,
            apply_redaction=effects.applied,
            outbox_sent=self._outbox.marks_for(event.room_id),
            # A soft-failed event was judged against current state: it must not have moved on.
            expected_room_version=room.version if soft_failed and room is not None else None,
        )
        redacts_itself = effects.applied is not None and effects.applied.target_id == event.event_id
        return PlannedWrite(write, decision, redacts_itself, job.fresh)
