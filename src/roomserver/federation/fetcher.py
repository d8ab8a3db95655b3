"""``FederationFetcher``: fetch the events, auth chains and state an incoming event lacks.

This is the object the input pipeline calls (through its port) when an event arrives with holes
(spec §7; the procedures of the reference's "missing prev events / state"). It keeps no state
and touches no storage: every method returns parsed, signature-checked ``Event``s in the right
room, and the caller authorises and stores them. Each method asks its servers in order until one
answers usefully, within an overall ``Deadline`` (MaximumMissingProcessingTime, 5 minutes by
default) after which it raises ``MissingDataTimeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from roomserver.core.errors import InvalidEvent
from roomserver.core.ids import EventId, ServerName
from roomserver.core.pdu import Event, parse_event
from roomserver.core.redaction import redact
from roomserver.core.signatures import check_content_hash
from roomserver.federation.client import StateIds, StatePdus
from roomserver.federation.errors import (
    BadResponse,
    FederationError,
    MissingDataTimeout,
    NoServerSucceeded,
)
from roomserver.federation.ordering import topological_order
from roomserver.ports import HaveEvents

logger = logging.getLogger(__name__)

T = TypeVar("T")
JSONObject = dict[str, Any]

MAXIMUM_MISSING_PROCESSING_TIME = 300.0
MISSING_EVENTS_PAGE = 20
EVENT_FETCH_CONCURRENCY = 8
STATE_FALLBACK_MIN_MISSING = 8


class FetchClient(Protocol):
    """The federation endpoints the fetcher uses (``FederationClient`` implements them)."""

    async def get_event(
        self, destination: str, event_id: str, *, time_limit: float | None = None
    ) -> JSONObject: ...

    async def get_event_auth(
        self, destination: str, room_id: str, event_id: str, *, time_limit: float | None = None
    ) -> list[JSONObject]: ...

    async def get_missing_events(
        self,
        destination: str,
        room_id: str,
        *,
        earliest: Sequence[str],
        latest: Sequence[str],
        limit: int,
        min_depth: int = 0,
        time_limit: float | None = None,
    ) -> list[JSONObject]: ...

    async def get_state_ids(
        self, destination: str, room_id: str, event_id: str, *, time_limit: float | None = None
    ) -> StateIds: ...

    async def get_state(
        self, destination: str, room_id: str, event_id: str, *, time_limit: float | None = None
    ) -> StatePdus: ...

    async def backfill(
        self,
        destination: str,
        room_id: str,
        event_ids: Sequence[str],
        limit: int,
        *,
        time_limit: float | None = None,
    ) -> list[JSONObject]: ...


class EventVerifier(Protocol):
    """Checks an event's signatures (``KeyRing`` implements it); raises ``InvalidSignature``."""

    async def verify_event(self, event: Event | Mapping[str, Any], room_version: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on the monotonic clock shared by the steps of one procedure."""

    at: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        return self.at - self.clock()


@dataclass(frozen=True, slots=True)
class MissingEvents:
    """``get_missing_events`` result: the events found, oldest first (topological by prev
    events), and the prev events they cite that are neither among them, nor held by the caller,
    nor in ``earliest``. With some events found, empty ``unresolved_prev_ids`` means the gap is
    closed; with none found, nothing is known (the remote had nothing to give)."""

    events: tuple[Event, ...]
    unresolved_prev_ids: tuple[EventId, ...]


@dataclass(frozen=True, slots=True)
class RemoteState:
    """The state before ``event_id`` according to ``server``.

    ``state_event_ids`` and ``auth_chain_ids`` are the remote's answer, in its order.
    ``events`` holds the events of both lists the caller lacked and that were fetched and
    verified (state and auth chain), oldest first by auth events; ``missing_event_ids`` those
    that could not be obtained (absent, or failing verification).
    """

    event_id: EventId
    server: ServerName
    state_event_ids: tuple[EventId, ...]
    auth_chain_ids: tuple[EventId, ...]
    events: tuple[Event, ...]
    missing_event_ids: tuple[EventId, ...]


class FederationFetcher:
    """Fetches missing room data from other servers as ``server_name``."""

    def __init__(
        self,
        client: FetchClient,
        verifier: EventVerifier,
        *,
        server_name: str,
        max_missing_processing_time: float = MAXIMUM_MISSING_PROCESSING_TIME,
        request_timeout: float = 30.0,
        state_ids_timeout: float = 20.0,
        missing_events_page: int = MISSING_EVENTS_PAGE,
        event_fetch_concurrency: int = EVENT_FETCH_CONCURRENCY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._verifier = verifier
        self.server_name = server_name
        self.max_missing_processing_time = max_missing_processing_time
        self.request_timeout = request_timeout
        self.state_ids_timeout = state_ids_timeout
        self.missing_events_page = missing_events_page
        self.event_fetch_concurrency = event_fetch_concurrency
        self._clock = clock

    def deadline(self) -> Deadline:
        """A new deadline ``max_missing_processing_time`` from now, for one whole procedure."""
        return Deadline.after(self.max_missing_processing_time, self._clock)

    # -- procedures ---------------------------------------------------------------------------
    async def fetch_event(
        self,
        room_id: str,
        room_version: str,
        event_id: EventId,
        servers: Sequence[ServerName],
        *,
        deadline: Deadline | None = None,
    ) -> Event:
        """``/event``: the event ``event_id`` of ``room_id``, from the first server that has it
        with a valid signature. Raises ``NoServerSucceeded`` or ``MissingDataTimeout``."""
        deadline = deadline or self.deadline()

        async def attempt(server: ServerName) -> Event:
            pdu = await self._client.get_event(server, event_id, time_limit=self._limit(deadline))
            return await self._verified(pdu, room_id, room_version, expected_event_id=event_id)

        return await self._first_success(f"event {event_id}", servers, attempt, deadline)

    async def fetch_auth_chain(
        self,
        room_id: str,
        room_version: str,
        event_id: EventId,
        servers: Sequence[ServerName],
        *,
        have: HaveEvents = frozenset(),
        deadline: Deadline | None = None,
    ) -> list[Event]:
        """``/event_auth``: the auth chain of ``event_id``, oldest first (by auth events).

        Events failing verification are dropped. If a server's chain cites auth events that are
        neither in it nor held by the caller, the next server is asked and the answers merged;
        what was gathered is returned even if still incomplete (the caller's auth checks decide).
        """
        deadline = deadline or self.deadline()
        found: dict[str, Event] = {}
        errors: dict[str, Exception] = {}
        answered = False
        for server in self._candidates(servers):
            self._check(deadline)
            try:
                chain = await self._bounded(
                    deadline,
                    self._auth_chain_from(server, room_id, room_version, event_id, deadline),
                )
            except FederationError as exc:
                if isinstance(exc, MissingDataTimeout):
                    raise
                errors[server] = exc
                continue
            answered = True
            for event in chain:
                found.setdefault(event.event_id, event)
            cited = {a for e in found.values() for a in e.auth_event_ids} - found.keys()
            if found and not (cited - await _held(have, sorted(cited))):
                break
        if not answered:
            raise NoServerSucceeded(f"the auth chain of {event_id}", errors)
        return topological_order(found.values(), lambda e: e.auth_event_ids)

    async def _auth_chain_from(
        self, server: str, room_id: str, room_version: str, event_id: str, deadline: Deadline
    ) -> list[Event]:
        pdus = await self._client.get_event_auth(
            server, room_id, event_id, time_limit=self._limit(deadline)
        )
        return await self._verified_many(pdus, room_id, room_version)

    async def get_missing_events(
        self,
        room_id: str,
        room_version: str,
        earliest: Sequence[EventId],
        latest: Sequence[EventId],
        *,
        limit: int = MISSING_EVENTS_PAGE,
        min_depth: int = 0,
        servers: Sequence[ServerName],
        have: HaveEvents = frozenset(),
        deadline: Deadline | None = None,
    ) -> MissingEvents:
        """``/get_missing_events``: walk back from ``latest`` towards ``earliest``.

        Asks at most ``missing_events_page`` (20) events per request, paging on from the oldest
        events found while their prev events are unresolved, until ``limit`` events in all.
        """
        deadline = deadline or self.deadline()
        found: dict[str, Event] = {}
        frontier_from: list[str] = list(latest)
        stop = set(earliest)
        order = self._candidates(servers)
        while len(found) < limit:
            page = min(self.missing_events_page, limit - len(found))
            known = [*earliest, *sorted(found)]
            try:
                server, events = await self._missing_page(
                    room_id, room_version, known, frontier_from, page, min_depth, order, deadline
                )
            except NoServerSucceeded as exc:
                if not found:
                    raise
                logger.info("get_missing_events in %s stopped early: %s", room_id, exc)
                break
            order = [server, *(s for s in order if s != server)]  # stick to what works
            new = [e for e in events if e.event_id not in found and e.event_id not in stop]
            if not new:
                break
            found.update((e.event_id, e) for e in new)
            unresolved = await self._unresolved(found, stop, have)
            if not unresolved:
                break
            frontier_from = sorted(
                e.event_id for e in found.values() if set(e.prev_event_ids) & unresolved
            )
        events = topological_order(found.values(), lambda e: e.prev_event_ids)
        unresolved = await self._unresolved(found, stop, have)
        return MissingEvents(tuple(events), tuple(sorted(unresolved)))

    async def _missing_page(
        self,
        room_id: str,
        room_version: str,
        earliest: list[str],
        latest: list[str],
        limit: int,
        min_depth: int,
        servers: Sequence[ServerName],
        deadline: Deadline,
    ) -> tuple[ServerName, list[Event]]:
        async def attempt(server: ServerName) -> tuple[ServerName, list[Event]]:
            pdus = await self._client.get_missing_events(
                server,
                room_id,
                earliest=earliest,
                latest=latest,
                limit=limit,
                min_depth=min_depth,
                time_limit=self._limit(deadline),
            )
            return server, await self._verified_many(pdus, room_id, room_version)

        return await self._first_success(
            f"missing events before {latest}", servers, attempt, deadline
        )

    async def _unresolved(
        self, found: Mapping[str, Event], stop: Set[str], have: HaveEvents
    ) -> set[EventId]:
        cited = {p for e in found.values() for p in e.prev_event_ids}
        cited -= found.keys() | stop
        return cited - await _held(have, sorted(cited)) if cited else set()

    async def state_ids(
        self,
        room_id: str,
        room_version: str,
        event_id: EventId,
        servers: Sequence[ServerName],
        *,
        have: HaveEvents = frozenset(),
        deadline: Deadline | None = None,
    ) -> RemoteState:
        """The state before ``event_id``: ``/state_ids``, then what the caller lacks.

        Lacked events come from ``/event`` (``event_fetch_concurrency`` at a time, each trying
        the servers in order) or, when more than 8 and more than half are lacked, from one
        ``/state`` request (falling back to ``/event`` if no server answers it).
        """
        deadline = deadline or self.deadline()
        order = self._candidates(servers)

        async def ask_ids(server: ServerName) -> tuple[ServerName, StateIds]:
            limit = min(self.state_ids_timeout, self._limit(deadline))
            return server, await self._client.get_state_ids(
                server, room_id, event_id, time_limit=limit
            )

        server, ids = await self._first_success(f"state at {event_id}", order, ask_ids, deadline)
        order = [server, *(s for s in order if s != server)]
        wanted = list(dict.fromkeys([*ids.pdu_ids, *ids.auth_chain_ids]))
        held = await _held(have, wanted)
        lacking = [e for e in wanted if e not in held]
        fetched: dict[EventId, Event] = {}
        if len(lacking) > STATE_FALLBACK_MIN_MISSING and 2 * len(lacking) > len(wanted):
            fetched = await self._state_pdus(room_id, room_version, event_id, order, deadline)
            fetched = {k: v for k, v in fetched.items() if k in set(lacking)}
        still = [e for e in lacking if e not in fetched]
        fetched.update(await self._fetch_many(room_id, room_version, still, order, deadline))
        state_set = set(ids.pdu_ids)
        events = [
            e for e in fetched.values() if e.event_id not in state_set or e.state_key is not None
        ]
        got = {e.event_id for e in events}
        return RemoteState(
            event_id=event_id,
            server=server,
            state_event_ids=ids.pdu_ids,
            auth_chain_ids=ids.auth_chain_ids,
            events=tuple(topological_order(events, lambda e: e.auth_event_ids)),
            missing_event_ids=tuple(e for e in lacking if e not in got),
        )

    async def _state_pdus(
        self,
        room_id: str,
        room_version: str,
        event_id: str,
        servers: Sequence[ServerName],
        deadline: Deadline,
    ) -> dict[EventId, Event]:
        """``/state``: every verified state and auth chain event of the answer, by event ID."""

        async def attempt(server: ServerName) -> StatePdus:
            return await self._client.get_state(
                server, room_id, event_id, time_limit=self._limit(deadline)
            )

        try:
            answer = await self._first_success(f"state at {event_id}", servers, attempt, deadline)
        except NoServerSucceeded as exc:
            logger.info("/state failed, falling back to /event: %s", exc)
            return {}
        state = await self._verified_many(list(answer.pdus), room_id, room_version)
        auth = await self._verified_many(list(answer.auth_chain), room_id, room_version)
        out = {e.event_id: e for e in auth}
        seen: set[tuple[str, str]] = set()
        for event in state:
            # A state answer lists state events only, one per (type, state_key).
            if event.state_key is None or event.state_tuple in seen:
                continue
            seen.add(event.state_tuple)
            out[event.event_id] = event
        return out

    async def _fetch_many(
        self,
        room_id: str,
        room_version: str,
        event_ids: Sequence[EventId],
        servers: Sequence[ServerName],
        deadline: Deadline,
    ) -> dict[EventId, Event]:
        """``/event`` for each of ``event_ids``, a bounded number at a time; failures skipped."""
        if not event_ids:
            return {}
        limiter = asyncio.Semaphore(self.event_fetch_concurrency)

        async def one(event_id: EventId) -> Event | None:
            async with limiter:
                try:
                    return await self.fetch_event(
                        room_id, room_version, event_id, servers, deadline=deadline
                    )
                except NoServerSucceeded as exc:
                    logger.info("could not fetch %s: %s", event_id, exc)
                    return None

        results = await asyncio.gather(*(one(e) for e in event_ids))
        return {e.event_id: e for e in results if e is not None}

    async def backfill(
        self,
        room_id: str,
        room_version: str,
        event_ids: Sequence[str],
        *,
        limit: int,
        servers: Sequence[ServerName],
        deadline: Deadline | None = None,
    ) -> list[Event]:
        """``/backfill``: ``event_ids`` and their predecessors, oldest first (by prev events).

        The prev/auth event count limits are not applied to backfilled events (spec §13.7).
        """
        deadline = deadline or self.deadline()

        async def attempt(server: ServerName) -> list[Event]:
            pdus = await self._client.backfill(
                server, room_id, event_ids, limit, time_limit=self._limit(deadline)
            )
            return await self._verified_many(pdus, room_id, room_version, check_edge_counts=False)

        events = await self._first_success("backfill", servers, attempt, deadline)
        return topological_order(events, lambda e: e.prev_event_ids)

    # -- helpers ------------------------------------------------------------------------------
    def _candidates(self, servers: Iterable[ServerName]) -> list[ServerName]:
        return [s for s in dict.fromkeys(servers) if s != self.server_name]

    def _limit(self, deadline: Deadline) -> float:
        """The time one request may take: the request timeout, within the deadline."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise MissingDataTimeout("MaximumMissingProcessingTime exceeded")
        return min(self.request_timeout, remaining)

    def _check(self, deadline: Deadline) -> None:
        self._limit(deadline)

    async def _bounded(self, deadline: Deadline, step: Awaitable[T]) -> T:
        """Await ``step`` (a coroutine) within what is left of ``deadline``."""
        remaining = deadline.remaining()
        if remaining <= 0:
            if asyncio.iscoroutine(step):
                step.close()  # never started: do not leave it unawaited
            raise MissingDataTimeout("MaximumMissingProcessingTime exceeded")
        try:
            async with asyncio.timeout(remaining):
                return await step
        except TimeoutError:
            raise MissingDataTimeout("MaximumMissingProcessingTime exceeded") from None

    async def _first_success(
        self,
        what: str,
        servers: Iterable[ServerName],
        attempt: Callable[[ServerName], Awaitable[T]],
        deadline: Deadline,
    ) -> T:
        """``attempt`` each server in order; the first that returns wins."""
        errors: dict[str, Exception] = {}
        for server in self._candidates(servers):
            try:
                return await self._bounded(deadline, attempt(server))
            except (FederationError, InvalidEvent) as exc:
                if isinstance(exc, MissingDataTimeout):
                    raise
                logger.debug("%s from %s failed: %s", what, server, exc)
                errors[server] = exc
        self._check(deadline)
        raise NoServerSucceeded(what, errors)

    async def _verified(
        self,
        pdu: Mapping[str, Any],
        room_id: str,
        room_version: str,
        *,
        expected_event_id: str | None = None,
        check_edge_counts: bool = True,
    ) -> Event:
        """Parse ``pdu`` for the room version, check its room, ID and signatures (spec §7, §9).

        A content hash mismatch is not an error: the event is used in its redacted form.
        Raises ``InvalidEvent`` (``InvalidSignature`` included) or ``BadResponse``.
        """
        event = parse_event(pdu, room_version, check_edge_counts=check_edge_counts)
        if expected_event_id is not None and event.event_id != expected_event_id:
            raise BadResponse(f"asked for {expected_event_id}, got {event.event_id}")
        if event.room_id != room_id:
            raise InvalidEvent(
                f"room_id: event is in {event.room_id}, not {room_id}", field="room_id"
            )
        await self._verifier.verify_event(event, room_version)
        if not check_content_hash(event):
            logger.info("content hash mismatch on %s: using its redacted form", event.event_id)
            redacted = redact(event.pdu, room_version)
            event = parse_event(
                redacted,
                room_version,
                event_id=event.event_id,
                check_edge_counts=check_edge_counts,
            )
        return event

    async def _verified_many(
        self,
        pdus: Sequence[Mapping[str, Any]],
        room_id: str,
        room_version: str,
        *,
        check_edge_counts: bool = True,
    ) -> list[Event]:
        """The events of ``pdus`` that verify; the others are logged and dropped."""

        async def one(pdu: Mapping[str, Any]) -> Event | None:
            try:
                return await self._verified(
                    pdu, room_id, room_version, check_edge_counts=check_edge_counts
                )
            except (InvalidEvent, BadResponse) as exc:
                logger.info("dropping a fetched event of %s: %s", room_id, exc)
                return None

        results = await asyncio.gather(*(one(p) for p in pdus))
        unique: dict[str, Event] = {}
        for event in results:
            if event is not None:
                unique.setdefault(event.event_id, event)
        return list(unique.values())


async def _held(have: HaveEvents, event_ids: Sequence[EventId]) -> Set[EventId]:
    if not event_ids:
        return frozenset()
    if isinstance(have, Set):
        return {e for e in event_ids if e in have}
    return await have(event_ids)
