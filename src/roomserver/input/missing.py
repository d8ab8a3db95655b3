"""Filling gaps before a NEW event (reference §6; spec: "Retrieving missing events").

1. ``get_missing_events`` between our forward extremities and the event (limit 20); the events
   found are processed oldest first as OLD events (never fetching further prev events).
2. An event found whose prev events still lack state is a backwards extremity: its state
   comes from ``state_ids`` (the lacked state and auth events are stored as outliers first), and
   it is processed as OLD with that state.
3. If the NEW event's prev events still lack state, ``state_ids`` at the event itself gives the
   state before it; the caller processes it with that state (without rewriting current state).

Everything runs within the event's ``Budget`` (the maximum missing processing time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TypeVar

from roomserver.api import Kind
from roomserver.core.ids import EventId, ServerName
from roomserver.core.pdu import Event
from roomserver.input.errors import MissingData, is_transient_fetch_error
from roomserver.input.store import InputStore, rejected_for_missing_data
from roomserver.ports import MissingEventFetcher, RemoteStateAnswer, RoomInfo

T = TypeVar("T")


class Budget:
    """The time one input event may spend fetching missing data (a loop-clock deadline)."""

    def __init__(self, seconds: float, *, deadline: float | None = None) -> None:
        """``deadline`` (loop time): a deadline shared with other events (their message's);
        default ``seconds`` from now."""
        self.seconds = seconds
        self.deadline = (
            asyncio.get_running_loop().time() + seconds if deadline is None else deadline
        )
        self.outputs_queued = 0  # by fetched events processed on the way
        self.writes = 0  # persists made for this input so far (fetched events included)

    async def run(self, what: str, awaitable: Awaitable[T]) -> T:
        """Await a fetch; a timeout or failure becomes ``MissingData`` (transient or not)."""
        try:
            async with asyncio.timeout_at(self.deadline):
                return await awaitable
        except TimeoutError:
            raise MissingData(
                f"timed out after {self.seconds:g}s fetching {what}", transient=True
            ) from None
        except MissingData:
            raise
        except Exception as exc:
            raise MissingData(
                f"could not fetch {what}: {type(exc).__name__}: {exc}",
                transient=is_transient_fetch_error(exc),
            ) from exc


@dataclass(frozen=True, slots=True)
class FetchedJob:
    """A fetched event to run through the pipeline (never fetching prev events itself)."""

    event: Event
    kind: Kind
    state_event_ids: tuple[EventId, ...] | None = None


ProcessFetched = Callable[[FetchedJob], Awaitable[None]]


class MissingPrevEvents:
    def __init__(
        self,
        store: InputStore,
        fetcher: MissingEventFetcher,
        process: ProcessFetched,
        *,
        limit: int,
    ) -> None:
        self._store = store
        self._fetcher = fetcher
        self._process = process
        self._limit = limit
        # Prev events of the events found in the gap, whatever their outcome: the gap's events
        # are ancestors of the NEW event, so all they cite is behind it (not an extremity).
        self.referenced: set[EventId] = set()

    async def have_with_state(self, event_ids: Sequence[EventId]) -> AbstractSet[EventId]:
        """Stored with state (``get_missing_events`` stops there; the state before an event
        can be computed from them). Rejected and soft-failed events with state count: the
        state after them is known (a rejected event's is the state before it). Outliers,
        including events rejected for missing prev events, do not."""
        stored = await self._store.get_events(event_ids)
        return {i for i, s in stored.items() if not s.outlier}

    async def fill(
        self, event: Event, room: RoomInfo | None, servers: Sequence[ServerName], budget: Budget
    ) -> tuple[EventId, ...] | None:
        """Fetch and process the gap before ``event``. Returns the state before ``event`` as
        event IDs when it had to come from a remote, ``None`` when its prev events now have
        state locally."""
        room_id, version = event.room_id, event.room_version
        earliest = room.forward_extremities if room is not None else ()
        answer = await budget.run(
            f"missing events before {event.event_id}",
            self._fetcher.get_missing_events(
                room_id,
                version,
                earliest,
                [event.event_id],
                limit=self._limit,
                min_depth=0,
                servers=servers,
                have=self.have_with_state,
            ),
        )
        for found in answer.events:
            if found.event_id == event.event_id or found.room_id != room_id:
                continue
            if found.event_id in await self.have_with_state([found.event_id]):
                continue
            self.referenced.update(found.prev_event_ids)
            prevs_ok = await self.have_with_state(found.prev_event_ids)
            if set(found.prev_event_ids) <= prevs_ok:
                await self._process(FetchedJob(found, Kind.OLD))
                continue
            state_ids = await self.remote_state(found, servers, budget)
            await self._process(FetchedJob(found, Kind.OLD, state_ids))
        if set(event.prev_event_ids) <= await self.have_with_state(event.prev_event_ids):
            return None
        return await self.remote_state(event, servers, budget)

    async def remote_state(
        self, event: Event, servers: Sequence[ServerName], budget: Budget
    ) -> tuple[EventId, ...]:
        """``state_ids`` before ``event``: store the lacked events as outliers (oldest first)
        and return the state's event IDs that are now stored."""
        answer: RemoteStateAnswer = await budget.run(
            f"the state before {event.event_id}",
            self._fetcher.state_ids(
                event.room_id, event.room_version, event.event_id, servers, have=self._have_any
            ),
        )
        for fetched in answer.events:
            if fetched.room_id == event.room_id:
                await self._process(FetchedJob(fetched, Kind.OUTLIER))
        stored = await self._store.get_events(answer.state_event_ids)
        return tuple(i for i in answer.state_event_ids if i in stored)

    async def _have_any(self, event_ids: Sequence[EventId]) -> AbstractSet[EventId]:
        """Held for ``state_ids``: stored, except events rejected for missing data, which are
        fetched again so that they are processed again (their auth events may be stored by
        now); a held event is never processed here, and a rejected one is left out of the
        state."""
        stored = await self._store.get_events(event_ids)
        return {i for i, s in stored.items() if not rejected_for_missing_data(s)}
