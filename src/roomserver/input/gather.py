"""Gather: what the decision for one event needs, as frozen values (``core.decide`` decides).

    parse for the room version ► its auth events (fetching a missing auth chain)
    ► its prev events (filling a gap for NEW events) and the state before it
    ► the entries of that state the rules read ► for a soft-fail check, the entries of current
    state ► for an event that moves the room on, what the new extremities depend on.

What is gathered depends only on what earlier checks decided (a rejected event fills no gap,
an event that does not move the room on asks nothing about extremities); each check is made
once, by ``core.decide``, and its answer passed on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from roomserver.api import InputRoomEvent, Kind, StoredEvent
from roomserver.core.dag import extremities_to_check, missing_prev_events
from roomserver.core.decide import RoomView
from roomserver.core.ids import EventId, RoomId
from roomserver.core.pdu import Event, parse_event
from roomserver.input.checks import current_for_soft_fail, needed_state_events
from roomserver.input.errors import InputInvalid
from roomserver.input.fetch import FetchMissing, GapFilled, LazyServers
from roomserver.input.job import Job
from roomserver.input.latest import LatestEvents
from roomserver.input.missing import Budget
from roomserver.input.rooms import RoomRows
from roomserver.input.state import StateBefore, StateResolver, state_from_prevs, supplied_state
from roomserver.input.store import (
    EventCache,
    InputStore,
    Prefetched,
    SnapshotEntries,
    rejected_for_missing_data,
)
from roomserver.ports import RoomInfo, StateDelta, StateKey

_NONE: frozenset[EventId] = frozenset()

# Events parsed when their message began, by id() of their PDU: (pdu, kind, event).
Parsed = dict[int, tuple[Mapping[str, Any], Kind, Event]]


class AuthEvents(NamedTuple):
    """The event's auth events as stored (``missing``: unknown, or rejected only for lack of
    data; such an event waits for them)."""

    events: tuple[Event, ...]
    rejected: frozenset[EventId]
    missing: tuple[EventId, ...]


class StateGathered(NamedTuple):
    """The event's prev events and the state before it."""

    room: RoomInfo | None  # the room row, as it is after a filled gap
    state: StateBefore | None  # None: not known (an outlier, or prevs not obtained)
    prev_in_other_room: EventId | None = None
    missing_prevs: tuple[EventId, ...] = ()
    gap: GapFilled | None = None  # None: the missing-events procedure did not run

    @property
    def gap_filled(self) -> frozenset[EventId] | None:
        """What the gap's events cite, when the missing-events procedure ran."""
        return self.gap.referenced if self.gap is not None else None


class Gatherer:
    def __init__(
        self,
        store: InputStore,
        events: EventCache,
        snapshot_entries: SnapshotEntries,
        resolver: StateResolver,
        latest: LatestEvents,
        rooms: RoomRows,
        fetch: FetchMissing,
    ) -> None:
        self._store = store
        self._events = events
        self._snapshot_entries = snapshot_entries
        self._resolver = resolver
        self._latest = latest
        self._rooms = rooms
        self._fetch = fetch

    async def auth_events(self, job: Job, servers: LazyServers, budget: Budget) -> AuthEvents:
        """Spec 7.4: the auth events the event cites (v12: and the create event the room ID
        names), fetching a missing auth chain (not for events fetched themselves)."""
        event = job.event
        if job.is_create:
            return AuthEvents((), frozenset(), ())
        wanted = list(event.auth_event_ids)
        if event.rules.room_id_from_create_event:
            # v12: the room ID names the create event
            wanted.append(EventId("$" + event.room_id[1:]))
        loaded = await self._events.get(wanted)
        events = tuple(s.event for s in loaded.values() if not s.rejected)
        if len(events) == len(wanted):
            return AuthEvents(events, _NONE, ())  # the common case: all stored and accepted
        missing = _missing_auth(wanted, loaded)
        if missing and not job.fetched and self._fetch.enabled:
            await self._fetch.auth_chain(event, await servers.get(), budget)
            loaded = await self._events.get(wanted)
            missing = _missing_auth(wanted, loaded)
        rejected = frozenset(i for i, s in loaded.items() if s.rejected)
        return AuthEvents(tuple(s.event for s in loaded.values()), rejected, tuple(missing))

    async def state_before(
        self,
        job: Job,
        room: RoomInfo | None,
        servers: LazyServers,
        budget: Budget,
        *,
        fill_gap: bool,
    ) -> StateGathered:
        """The prev events (filling a gap for a NEW event when ``fill_gap``: it passed its
        auth events) and the state before the event (spec 11.1)."""
        event = job.event
        if job.kind is Kind.OUTLIER:
            return StateGathered(room, None)
        prevs = await self.load_prevs(event.prev_event_ids)
        missing = _missing_prevs(event, prevs)
        gap: GapFilled | None = None
        if (
            missing
            and job.kind is Kind.NEW
            and job.state_event_ids is None
            and not job.is_create
            and fill_gap
        ):
            gap = await self._fetch.fill_gap(job, room, await servers.get(), budget)
            room = await self._rooms.get(event.room_id)
            prevs = await self.load_prevs(event.prev_event_ids)
            missing = _missing_prevs(event, prevs)
        wrong_room = sorted(p for p, s in prevs.items() if s.event.room_id != event.room_id)
        state = await self._state_before(job, room, gap, prevs, missing)
        return StateGathered(
            room, state, wrong_room[0] if wrong_room else None, tuple(sorted(missing)), gap
        )

    async def _state_before(
        self,
        job: Job,
        room: RoomInfo | None,
        gap: GapFilled | None,
        prevs: Mapping[EventId, StoredEvent],
        missing: Sequence[EventId],
    ) -> StateBefore | None:
        """Spec 11.1: the state before the event, or ``None`` when it cannot be known."""
        if job.is_create:
            return StateBefore(StateDelta(None, {}), {})
        if job.state_event_ids is not None:
            return await supplied_state(
                self._store, job.state_event_ids, room, strict=not job.fetched
            )
        if gap is not None and gap.remote_state is not None:
            return await supplied_state(self._store, gap.remote_state, room, strict=False)
        if missing or not prevs:
            return None
        ordered = [prevs[p] for p in job.event.prev_event_ids]
        return await state_from_prevs(self._store, self._resolver, job.event.rules, ordered, room)

    async def needed_state(self, job: Job, state: StateBefore | None) -> dict[StateKey, Event]:
        """Spec 7.5: the entries of the state before the event that the rules (and the
        outputs) read; none for a create event or an unknown state."""
        if state is None or job.is_create:
            return {}
        return await needed_state_events(
            self._store, self._events, job.event, state, self._snapshot_entries
        )

    async def current_for_soft_fail(
        self, event: Event, gathered: StateGathered
    ) -> dict[StateKey, Event] | None:
        """Spec 7.6: the entries of current state the soft-fail check reads (``None``: no
        check, e.g. the event extends every forward extremity)."""
        return await current_for_soft_fail(
            self._store,
            self._events,
            self._resolver,
            event,
            gathered.room,
            gathered.state,
            gap_filled=gathered.gap_filled,
        )

    async def room_facts(
        self, job: Job, gathered: StateGathered, prefetched: Prefetched | None
    ) -> tuple[RoomView, frozenset[EventId], frozenset[EventId]]:
        """For an event that moves the room on: the room as it sees it, with its own state
        key's entry (the fast path's change), and what its new extremities depend on
        (``EventFacts.superseded`` and ``cited``)."""
        room, event = gathered.room, job.event
        if room is None or job.rewrites_state:
            return view_of(room), frozenset(), frozenset()
        state: dict[StateKey, EventId] = {}
        if event.state_key is not None and gathered.state is not None:
            key = event.state_tuple
            if key in gathered.state.known:
                entry = gathered.state.known[key]
            else:
                entry = (await gathered.state.entries(self._store, [key])).get(key)
            if entry is not None:
                state = {key: entry}
        superseded, cited = await self._latest.extremity_facts(
            event, room.forward_extremities, gathered.gap_filled or frozenset(), prefetched
        )
        return view_of(room, state), superseded, cited

    def stateful_cached(self, event_ids: Sequence[EventId]) -> dict[EventId, StoredEvent]:
        return {i: s for i, s in self._events.peek(event_ids).items() if not s.outlier}

    async def load_prevs(self, event_ids: Sequence[EventId]) -> dict[EventId, StoredEvent]:
        """Prev events as stored. Cached entries are trusted only once they have state (an
        outlier may have gained state since it was cached)."""
        out = self.stateful_cached(event_ids)
        rest = [i for i in event_ids if i not in out]
        if rest:
            loaded = await self._store.get_events(rest)
            for stored in loaded.values():
                self._events.remember(stored)
            out.update(loaded)
        return out


def view_of(room: RoomInfo | None, state: Mapping[StateKey, EventId] | None = None) -> RoomView:
    """The room row as ``core.decide`` sees it, with the entries of current state ``state``
    (those the decision looks at)."""
    if room is None:
        return RoomView((), {} if state is None else state, None, False)
    return RoomView(
        room.forward_extremities,
        {} if state is None else state,
        room.last_sent_event_id,
        room.current_state is not None,
    )


# -- parsing ----------------------------------------------------------------------------------
async def parse_input(
    item: InputRoomEvent, store: InputStore, rooms: RoomRows, parsed: Parsed | None
) -> tuple[Event, RoomInfo | None]:
    """Spec 7.1: a valid event for the room version. The version is the stored room's, the
    create event's ``content.room_version`` (default "1"), or the input's. ``parsed``: the
    events of the item's message parsed when it began (used when still valid)."""
    pdu = item.event
    if not isinstance(pdu, Mapping):
        raise InputInvalid("event: must be a JSON object")
    edge_counts = item.kind is not Kind.OLD  # spec: not applied to backfilled events
    if pdu.get("type") == "m.room.create" and pdu.get("state_key") == "":
        content = pdu.get("content")
        version = content.get("room_version", "1") if isinstance(content, Mapping) else "1"
        if not isinstance(version, str):
            raise InputInvalid("content.room_version: must be a string")
        if item.room_version is not None and item.room_version != version:
            raise InputInvalid(
                f"room_version {item.room_version!r} differs from the create event's {version!r}"
            )
        event = parse_event(pdu, version, check_edge_counts=edge_counts)
        room = await rooms.get(event.room_id)
        stored_version = (
            room.room_version if room is not None else await store.room_version_of(event.room_id)
        )
        if stored_version is not None and stored_version != version:
            raise InputInvalid(f"room {event.room_id} already exists with another version")
        return event, room
    room_id = pdu.get("room_id")
    if not isinstance(room_id, str):
        raise InputInvalid("room_id: missing or not a string")
    room_id = RoomId(room_id)
    room = await rooms.get(room_id)
    early = parsed.pop(id(pdu), None) if parsed is not None else None
    if (
        early is not None
        and early[0] is pdu
        and early[1] is item.kind
        and room is not None
        and early[2].room_version == room.room_version
    ):
        return early[2], room  # parsed for the room's version when the message began
    version = room.room_version if room is not None else None
    if version is None:
        # Known only through outliers or rejected events, maybe: their version holds.
        stored_version = await store.room_version_of(room_id)
        if stored_version is not None and item.room_version not in (None, stored_version):
            raise InputInvalid(
                f"room {room_id} is stored with room version {stored_version}, "
                f"not {item.room_version}"
            )
        version = stored_version or item.room_version
    if version is None:
        raise InputInvalid(f"room {room_id} is unknown and the input names no room_version")
    return parse_event(pdu, version, check_edge_counts=edge_counts), room


def cited_ids(event: Event, room: RoomInfo | None) -> list[EventId]:
    """What the extremity facts will ask ``referenced_as_prev`` about on the common path: the
    event and the old extremities it does not cite."""
    if room is None:
        return [event.event_id]
    return extremities_to_check(room.forward_extremities, event.event_id, event.prev_event_ids)


def _missing_auth(
    wanted: Sequence[EventId], loaded: Mapping[EventId, StoredEvent]
) -> list[EventId]:
    """Auth events unknown, or stored but rejected only for lack of data: the event waits for
    them (rejected for missing auth events, processed again when resubmitted), as it would
    had they arrived in order."""
    return [i for i in wanted if i not in loaded or rejected_for_missing_data(loaded[i])]


def _missing_prevs(event: Event, prevs: Mapping[EventId, StoredEvent]) -> list[EventId]:
    """Prev events unknown, or known without state (outliers)."""
    return missing_prev_events(event.prev_event_ids, {i: not s.outlier for i, s in prevs.items()})
