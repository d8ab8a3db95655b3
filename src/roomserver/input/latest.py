"""Forward extremities, current state and the outputs of a NEW event (reference §7, §10).

Gather: ``extremity_facts`` reads what ``core.decide`` needs to decide the new forward
extremities (which events the DAG already cites, what the event reaches through failed prevs).

Then, given the decision for an accepted, not soft-failed NEW event, ``update`` builds the
``RoomUpdate`` (extremities, current state as a delta, membership changes) and adds the outputs
to the event's outbox: invites and retired invites for local users first, then the
``new_room_event``. On the fast path (the event extends every old extremity) the decision
carries the one-entry change of current state; otherwise the states after the new extremities
are resolved here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from roomserver.api import (
    OutputNewInviteEvent,
    OutputNewRoomEvent,
    OutputRetireInviteEvent,
    TransactionId,
)
from roomserver.core.dag import extremities_to_check
from roomserver.core.decide import Decision
from roomserver.core.identifiers import server_name_of
from roomserver.core.ids import EventId, ServerName
from roomserver.core.pdu import Event
from roomserver.input.outputs import OutboxBuilder
from roomserver.input.state import StateBefore, StateResolver
from roomserver.input.store import (
    EventCache,
    InputStore,
    Prefetched,
    changes_between,
    full_state,
    state_after_delta,
)
from roomserver.ports import (
    MemberFacts,
    MembershipChange,
    RoomInfo,
    RoomUpdate,
    StateDelta,
    StateKey,
)

MEMBER = "m.room.member"
_FAILED_PREVS_WALK_LIMIT = 1_000


class NewEventContext(NamedTuple):
    """What the caller of ``LatestEvents.update`` knows about the event being added."""

    event: Event
    state_before: StateBefore
    rewrites_state: bool
    history_visibility: str
    send_as_server: ServerName | None
    transaction_id: TransactionId | None


class LatestEvents:
    def __init__(
        self, store: InputStore, events: EventCache, resolver: StateResolver, server_name: str
    ) -> None:
        self._store = store
        self._events = events
        self._resolver = resolver
        self._server_name = server_name

    async def extremity_facts(
        self,
        event: Event,
        old: Sequence[EventId],
        referenced: frozenset[EventId],
        prefetched: Prefetched | None = None,
    ) -> tuple[frozenset[EventId], frozenset[EventId]]:
        """What ``core.decide`` needs for the new forward extremities (reference §7.3): what the
        event builds on besides its prev events (``referenced``: what events just stored for
        it cite; and what it reaches through rejected or soft-failed prev events), and which of
        ``extremities_to_check`` an event of the room's DAG already cites.

        "Cites" counts only events stored with state, neither rejected nor soft-failed
        (``referenced_as_prev``): an outlier, or an event that failed its checks, is not built
        upon, so an event that only they cite is still an extremity. A rejected message sent
        before its sender's join must not make the join look late."""
        superseded = set(referenced) | await self._reached_through_failed_prevs(event)
        ask = extremities_to_check(old, event.event_id, superseded | set(event.prev_event_ids))
        cited = prefetched.cited(ask) if prefetched is not None else None
        if cited is None:
            cited = await self._store.referenced_as_prev(event.room_id, ask)
        return frozenset(superseded), frozenset(cited)

    async def update(
        self, ctx: NewEventContext, room: RoomInfo | None, decision: Decision, outbox: OutboxBuilder
    ) -> RoomUpdate:
        """The ``RoomUpdate`` of a decision that moves the room on (``decision.state_change``
        set), with its outputs added to ``outbox``: invites, retired invites, then the
        ``new_room_event``. A state change to resolve is resolved here."""
        event = ctx.event
        extremities = decision.forward_extremities
        change = decision.state_change
        assert extremities is not None and change is not None
        if change.resolve:
            current, diff = await self._resolved_current_state(ctx, room, extremities)
        else:
            assert room is not None
            current = StateDelta(room.current_state, dict(change.changes))
            diff = _StateDiff(change.replaced, change.changes, change.changes, change.replaced)
        membership: list[tuple[MembershipChange, EventId | None]] = []
        if diff.removed or diff.added:
            membership = await self._membership_changes(event, diff)
            await self._invite_outputs(event, membership, diff, outbox)
        outbox.add(
            OutputNewRoomEvent(
                event=event.pdu,
                event_id=event.event_id,
                room_version=event.room_version,
                latest_event_ids=extremities,
                adds_state_event_ids=diff.output_adds,
                removes_state_event_ids=diff.output_removes,
                state_before_adds_event_ids=diff.before_adds,
                state_before_removes_event_ids=diff.before_removes,
                last_sent_event_id=room.last_sent_event_id if room is not None else None,
                rewrites_state=ctx.rewrites_state,
                send_as_server=ctx.send_as_server,
                transaction_id=ctx.transaction_id,
                history_visibility=ctx.history_visibility,
            ),
            event_json=event.canonical_bytes,
        )
        return RoomUpdate(
            expected_version=room.version if room is not None else None,
            room_version=event.room_version,
            forward_extremities=extremities,
            current_state=current,
            last_sent_event_id=event.event_id,
            membership_changes=tuple(c for c, _ in membership),
        )

    async def _reached_through_failed_prevs(self, event: Event) -> set[EventId]:
        """The events ``event`` reaches through a path of rejected or soft-failed prev events
        (stored with state): their own prevs, recursively while they failed too.

        Those failed events' citations do not count in ``referenced_as_prev``, so what they
        cite may still be an extremity; an accepted event that cites them builds on it all,
        so it stops being one. The walk stops after ``_FAILED_PREVS_WALK_LIMIT`` events (a
        longer chain leaves an extra extremity, never a wrong state). Prevs are usually in
        the event cache: the common path costs no storage access."""
        out: set[EventId] = set()
        prevs = event.prev_event_ids
        cached = self._events.peek(prevs)
        if len(cached) == len(prevs) and not any(
            not s.outlier and (s.rejected or s.soft_failed) for s in cached.values()
        ):
            return out  # the common case: every prev cached, none failed
        seen = set(prevs)
        frontier = sorted(seen)
        while frontier and len(seen) <= _FAILED_PREVS_WALK_LIMIT:
            stored = await self._events.get(frontier)
            frontier = []
            for event_id in sorted(stored):
                prev = stored[event_id]
                if prev.outlier or not (prev.rejected or prev.soft_failed):
                    continue
                for grandparent in prev.event.prev_event_ids:
                    out.add(grandparent)
                    if grandparent not in seen:
                        seen.add(grandparent)
                        frontier.append(grandparent)
        return out

    async def _resolved_current_state(
        self, ctx: NewEventContext, room: RoomInfo | None, extremities: tuple[EventId, ...]
    ) -> tuple[StateDelta, _StateDiff]:
        event = ctx.event
        before = await ctx.state_before.full_map(self._store)
        after = dict(before)
        if event.state_key is not None:
            after[event.state_tuple] = event.event_id
        # Extremities are accepted, not soft-failed events with state; an outlier (which
        # cannot be one) would contribute no state.
        others = [e for e in extremities if e != event.event_id]
        stored = await self._store.get_events(others)
        sets = [after] if event.event_id in extremities else []
        for extremity in sorted(others):
            if extremity in stored and not stored[extremity].outlier:
                sets.append(await full_state(self._store, state_after_delta(stored[extremity])))
        if len(sets) > 1:
            new_map = await self._resolver.resolve(event.rules, sets, pending=[event])
        else:
            new_map = sets[0] if sets else after
        has_old = room is not None and room.current_state is not None
        old_map = await self._store.state_map(room.current_state) if has_old and room else {}
        changes = changes_between(old_map, new_map)
        base = room.current_state if room is not None and not ctx.rewrites_state else None
        current = StateDelta(base, changes if base is not None else dict(new_map))
        removed = {k: old_map[k] for k in changes if k in old_map}
        added = {k: v for k, v in changes.items() if v is not None}
        if ctx.rewrites_state:
            output_adds, output_removes = dict(new_map), {}
        else:
            output_adds, output_removes = added, removed
        diff = _StateDiff(removed, added, output_adds, output_removes)
        back = changes_between(new_map, before)
        diff.before_adds = tuple(sorted(v for v in back.values() if v is not None))
        diff.before_removes = tuple(sorted(new_map[k] for k in back if k in new_map))
        return current, diff

    async def _membership_changes(
        self, event: Event, diff: _StateDiff
    ) -> list[tuple[MembershipChange, EventId | None]]:
        """Membership changes of the current-state delta, each with the previous event ID."""
        keys = sorted({k for k in (*diff.removed, *diff.added) if k[0] == MEMBER})
        if not keys:
            return []
        facts = await self._member_facts(
            diff.added[k] for k in keys if diff.added.get(k, event.event_id) != event.event_id
        )
        facts[event.event_id] = MemberFacts(event.membership, event.sender)
        out: list[tuple[MembershipChange, EventId | None]] = []
        for key in keys:
            user = key[1]
            previous = diff.removed.get(key)
            added_id = diff.added.get(key)
            if added_id is None:
                # A state reset removed the member event: the user no longer belongs to the room.
                assert previous is not None
                out.append((MembershipChange(user, "leave", previous, user), previous))
                continue
            member = facts.get(added_id)
            if member is None:
                continue
            membership = member.membership or "leave"
            out.append((MembershipChange(user, membership, added_id, member.sender), previous))
        return out

    async def _member_facts(self, event_ids: Iterable[EventId]) -> dict[EventId, MemberFacts]:
        """Membership and sender of the member events ``event_ids``: from the event cache when
        it holds them, else read from storage without parsing the events (a big room's
        ``has_state`` join changes the membership of every member at once)."""
        wanted = set(event_ids)
        cached = self._events.peek(wanted)
        out = {i: MemberFacts(s.event.membership, s.event.sender) for i, s in cached.items()}
        rest = wanted - out.keys()
        if rest:
            out.update(await self._store.member_facts(sorted(rest)))
        return out

    async def _invite_outputs(
        self,
        event: Event,
        membership: list[tuple[MembershipChange, EventId | None]],
        diff: _StateDiff,
        outbox: OutboxBuilder,
    ) -> None:
        """``new_invite_event`` for a local user newly invited; ``retire_invite_event`` when a
        local user's invite is replaced by another membership."""
        local = [
            (change, previous)
            for change, previous in membership
            if _is_local(change.user_id, self._server_name)
        ]
        if not local:
            return
        previous_ids = [p for _, p in local if p is not None]
        previous_events = await self._events.get(previous_ids) if previous_ids else {}
        for change, previous in local:
            previous_event = previous_events.get(previous) if previous is not None else None
            was_invited = previous_event is not None and previous_event.event.membership == "invite"
            if change.membership == "invite" and change.event_id != previous:
                invite = event if change.event_id == event.event_id else None
                if invite is None:
                    stored = (await self._events.get([change.event_id])).get(change.event_id)
                    invite = stored.event if stored is not None else None
                if invite is not None:
                    outbox.add(
                        OutputNewInviteEvent(
                            event=invite.pdu,
                            event_id=invite.event_id,
                            room_version=invite.room_version,
                        ),
                        event_json=invite.canonical_bytes,
                    )
            if was_invited and change.membership != "invite" and previous is not None:
                outbox.add(
                    OutputRetireInviteEvent(
                        event_id=previous,
                        room_id=event.room_id,
                        target_user_id=change.user_id,
                        membership=change.membership,
                        retired_by_event_id=(
                            change.event_id if change.event_id != previous else None
                        ),
                    )
                )


class _StateDiff:
    """The current-state delta (``removed`` / ``added`` by key), the delta the output shows
    (the whole new state when rewriting), and the delta from the new current state back to
    the state before the event."""

    __slots__ = (
        "added",
        "before_adds",
        "before_removes",
        "output_adds",
        "output_removes",
        "removed",
    )

    def __init__(
        self,
        removed: Mapping[StateKey, EventId],
        added: Mapping[StateKey, EventId],
        output_adds: Mapping[StateKey, EventId],
        output_removes: Mapping[StateKey, EventId],
    ) -> None:
        self.removed = dict(removed)
        self.added = dict(added)
        self.output_adds = tuple(sorted(output_adds.values()))
        self.output_removes = tuple(sorted(output_removes.values()))
        # Fast path: back from "before + event" to "before" undoes the event's own change.
        self.before_adds = tuple(sorted(removed.values()))
        self.before_removes = tuple(sorted(added.values()))


def _is_local(user_id: str, server_name: str) -> bool:
    return server_name_of(user_id) == server_name
