"""Redactions in either arrival order (spec: client-server API "Redactions"; reference §8).

A redaction event records its target (pending). Once both the redaction and its target are
stored, accepted and in the same room, and ``check_redaction_allowed`` passes against the state
before the redaction, the target's stored JSON is replaced by its redacted form (with
``unsigned.redacted_because``) and a ``redacted_event`` output is emitted, once.

Flags: a rejected or soft-failed redaction records nothing (it is never applied, then or
later). A rejected target is never redacted (the record stays pending: a target rejected for
missing data may be accepted when processed again). A soft-failed target is redacted, in
either order, without a ``redacted_event`` output (the event itself was never announced).
Outliers may be targets and redactions (an outlier redaction is checked against the room's
current state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from roomserver.api import OutputRedactedEvent, StoredEvent
from roomserver.core.auth import CREATE_KEY, POWER_LEVELS_KEY, check_redaction_allowed
from roomserver.core.errors import Rejected
from roomserver.core.ids import EventId
from roomserver.core.pdu import Event
from roomserver.core.redaction import redact_with
from roomserver.input.outputs import OutboxBuilder
from roomserver.input.state import StateBefore
from roomserver.input.store import EventCache, InputStore, Prefetched, snapshot_of
from roomserver.ports import AppliedRedaction, RedactionRecord, SnapshotId, StateKey

_KEYS: tuple[StateKey, ...] = (CREATE_KEY, POWER_LEVELS_KEY)


@dataclass(frozen=True, slots=True)
class RedactionEffects:
    """The redaction bookkeeping of one ``EventWrite``."""

    redaction_target: EventId | None = None
    applied: AppliedRedaction | None = None


_NO_EFFECTS = RedactionEffects()


def redacted_form(target: Event, redaction: Event) -> dict[str, Any]:
    """The target's PDU as stored once redacted: stripped per its room version, with the
    redaction event under ``unsigned.redacted_because``."""
    pdu = redact_with(target.pdu, target.rules)
    pdu["unsigned"] = {"redacted_because": dict(redaction.pdu)}
    return pdu


class Redactions:
    def __init__(self, store: InputStore, events: EventCache) -> None:
        self._store = store
        self._events = events

    async def effects(
        self,
        event: Event,
        state_before: StateBefore | None,
        outbox: OutboxBuilder,
        *,
        room_current_state: int | None,
        prefetched: Prefetched | None = None,
        soft_failed: bool = False,
    ) -> RedactionEffects:
        """What storing ``event`` (accepted; ``soft_failed`` if so) does to redactions."""
        if event.type == "m.room.redaction" and event.state_key is None:
            if soft_failed:
                return RedactionEffects()
            return await self._as_redaction(event, state_before, outbox, room_current_state)
        records = prefetched.redactions if prefetched is not None else None
        if records is not None and not records:
            return _NO_EFFECTS  # the common case: nothing waits for the event
        return await self._as_target(event, outbox, records, announce=not soft_failed)

    async def _as_redaction(
        self,
        redaction: Event,
        state_before: StateBefore | None,
        outbox: OutboxBuilder,
        room_current_state: int | None,
    ) -> RedactionEffects:
        target_id = redaction.redacts
        if target_id is None or target_id == redaction.event_id:
            return RedactionEffects()
        target = (await self._store.get_events([target_id])).get(target_id)
        if target is None or target.rejected or target.redacted_because is not None:
            return RedactionEffects(redaction_target=target_id)
        if state_before is not None:
            found = await state_before.entries(self._store, _KEYS)
        elif room_current_state is not None:
            found = await self._store.state_entries(SnapshotId(room_current_state), _KEYS)
        else:
            found = {}
        if not await self._allowed(redaction, target.event, found):
            return RedactionEffects(redaction_target=target_id)
        applied = self._apply(target.event, redaction, outbox, announce=not target.soft_failed)
        return RedactionEffects(target_id, applied)

    async def _as_target(
        self,
        target: Event,
        outbox: OutboxBuilder,
        records: Sequence[RedactionRecord] | None,
        *,
        announce: bool,
    ) -> RedactionEffects:
        if records is None:
            records = await self._store.redactions_for(target.event_id)
        pending = sorted(
            r.redaction_id for r in records if r.target_id == target.event_id and not r.validated
        )
        if not pending:
            return RedactionEffects()
        redactions = await self._store.get_events(pending)
        for redaction_id in pending:
            stored = redactions.get(redaction_id)
            if stored is None or stored.rejected or stored.soft_failed:
                continue
            found = await self._state_at(stored)
            if await self._allowed(stored.event, target, found):
                applied = self._apply(target, stored.event, outbox, announce=announce)
                return RedactionEffects(applied=applied)
        return RedactionEffects()

    async def _state_at(self, redaction: StoredEvent) -> dict[StateKey, EventId]:
        if redaction.outlier:
            room = await self._store.room(redaction.event.room_id)
            snapshot = room.current_state if room is not None else None
        else:
            snapshot = snapshot_of(redaction)
        if snapshot is None:
            return {}
        return await self._store.state_entries(snapshot, _KEYS)

    async def _allowed(
        self, redaction: Event, target: Event, found: Mapping[StateKey, EventId]
    ) -> bool:
        loaded = await self._events.get(found.values())
        state = {k: loaded[v].event for k, v in found.items() if v in loaded}
        try:
            check_redaction_allowed(redaction, target, state)
        except Rejected:
            return False
        return True

    def _apply(
        self, target: Event, redaction: Event, outbox: OutboxBuilder, *, announce: bool
    ) -> AppliedRedaction:
        self._events.evict(target.event_id)
        if announce:
            outbox.add(
                OutputRedactedEvent(
                    redacted_event_id=target.event_id, redacted_because=redaction.pdu
                )
            )
        return AppliedRedaction(
            target_id=target.event_id,
            redaction_id=redaction.event_id,
            redacted_pdu=redacted_form(target, redaction),
        )
