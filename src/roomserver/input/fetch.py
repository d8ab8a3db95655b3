"""Fetching what an event lacks over federation, for the gather step: its auth chain (spec
7.4) and the gap before a NEW event (``missing.MissingPrevEvents``).

Every fetched event is run through the whole pipeline (``ProcessJob``: gather, decide, commit)
before the event that needed it goes on: "commit what was decided so far, fetch, go on". The
servers asked are the origin, the sender's server, then the servers joined to the room; never
ourselves, never one the room's server ACL denies.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from roomserver.api import EventResult, Kind, StoredEvent
from roomserver.core.errors import InvalidEvent
from roomserver.core.identifiers import is_valid_server_name, server_name_of
from roomserver.core.ids import EventId, ServerName
from roomserver.core.pdu import Event
from roomserver.input.acl import ServerAclChecker
from roomserver.input.config import InputConfig
from roomserver.input.errors import InputInvalid, MissingData
from roomserver.input.job import Job
from roomserver.input.missing import Budget, FetchedJob, MissingPrevEvents
from roomserver.input.rooms import RoomRows
from roomserver.input.store import InputStore, rejected_for_missing_data
from roomserver.ports import KeyRing, MissingEventFetcher, RoomInfo

log = logging.getLogger(__name__)

ProcessJob = Callable[[Job, Budget, RoomInfo | None], Awaitable[tuple[EventResult, int]]]


@dataclass(frozen=True, slots=True)
class GapFilled:
    """What the missing-events procedure left for the event: the state before it when that
    came from a remote, and the events the gap's events cite as prev events."""

    remote_state: tuple[EventId, ...] | None
    referenced: frozenset[EventId]


class FetchMissing:
    def __init__(
        self,
        store: InputStore,
        fetcher: MissingEventFetcher | None,
        keyring: KeyRing,
        acl: ServerAclChecker,
        rooms: RoomRows,
        config: InputConfig,
        *,
        server_name: str,
    ) -> None:
        self._store = store
        self._fetcher = fetcher
        self._keyring = keyring
        self._acl = acl
        self._rooms = rooms
        self._config = config
        self._server_name = server_name
        self._process: ProcessJob | None = None

    @property
    def enabled(self) -> bool:
        return self._fetcher is not None

    def process_with(self, process: ProcessJob) -> None:
        """How fetched events are processed (the processor's own pipeline)."""
        self._process = process

    async def auth_chain(self, event: Event, servers: Sequence[ServerName], budget: Budget) -> None:
        """Fetch the event's auth chain and store it as outliers (oldest first). A permanent
        failure leaves the auth events missing (the event is then rejected for lack of them)."""
        if self._fetcher is None or not servers:
            return
        try:
            chain = await budget.run(
                f"the auth chain of {event.event_id}",
                self._fetcher.fetch_auth_chain(
                    event.room_id, event.room_version, event.event_id, servers, have=self._have_any
                ),
            )
        except MissingData as exc:
            if exc.transient:
                raise
            log.info("auth chain of %s not fetched: %s", event.event_id, exc)
            return
        for fetched in chain:
            if fetched.room_id == event.room_id and fetched.event_id != event.event_id:
                await self.process_fetched(FetchedJob(fetched, Kind.OUTLIER), budget)

    async def fill_gap(
        self, job: Job, room: RoomInfo | None, servers: Sequence[ServerName], budget: Budget
    ) -> GapFilled:
        """The missing-events procedure before ``job``'s event (reference §6)."""
        if self._fetcher is None or not servers:
            return GapFilled(None, frozenset())

        async def process(fetched: FetchedJob) -> None:
            await self.process_fetched(fetched, budget)

        procedure = MissingPrevEvents(
            self._store, self._fetcher, process, limit=self._config.missing_events_limit
        )
        try:
            state = await procedure.fill(job.event, room, servers, budget)
        except MissingData as exc:
            if exc.transient:
                raise
            log.info("gap before %s not filled: %s", job.event.event_id, exc)
            state = None
        return GapFilled(state, frozenset(procedure.referenced))

    async def process_fetched(self, fetched: FetchedJob, budget: Budget) -> None:
        """Run an event a fetcher returned through the pipeline (no prev-event fetching)."""
        assert self._process is not None, "process_with was not called"
        event = fetched.event
        stored = (await self._store.get_events([event.event_id])).get(event.event_id)
        if stored is not None and already_done(stored, fetched.kind):
            return
        if self._config.verify_fetched_events:
            try:
                await self._keyring.verify_event(event.pdu, event.room_version)
            except InvalidEvent as exc:
                log.info("dropping fetched event %s: %s", event.event_id, exc)
                return
        job = Job(
            event=event,
            kind=fetched.kind,
            state_event_ids=fetched.state_event_ids,
            fetched=True,
        )
        try:
            _, outputs = await self._process(job, budget, await self._rooms.get(event.room_id))
            budget.outputs_queued += outputs
        except InputInvalid as exc:
            log.info("dropping fetched event %s: %s", event.event_id, exc)

    async def servers_for(self, job: Job, room: RoomInfo | None) -> list[ServerName]:
        """Servers to ask for missing data: the origin, the sender's server, then the servers
        joined to the room; never ourselves, never one the room's server ACL denies."""
        candidates = [job.origin, server_name_of(job.event.sender)]
        allowed = await self._acl.predicate(room)
        if room is not None:
            candidates += sorted(await self._store.joined_servers(room.room_id))
        out: list[ServerName] = []
        for server in candidates:
            if not server or server == self._server_name or server in out:
                continue
            if not is_valid_server_name(server):
                continue
            if allowed(server):
                out.append(server)
        return out

    async def _have_any(self, event_ids: Sequence[EventId]) -> set[EventId]:
        return set(await self._store.get_events(event_ids))


class LazyServers:
    """The server list of one job, computed on first use (most events never need it)."""

    def __init__(self, fetch: FetchMissing, job: Job, room: RoomInfo | None) -> None:
        self._fetch = fetch
        self._job = job
        self._room = room
        self._servers: list[ServerName] | None = None

    async def get(self) -> list[ServerName]:
        if self._servers is None:
            self._servers = await self._fetch.servers_for(self._job, self._room)
        return self._servers


def already_done(stored: StoredEvent, kind: Kind) -> bool:
    """Whether re-processing ``stored`` as ``kind`` would change nothing (idempotence).

    An outlier asked for as NEW/OLD gains state; an event rejected for lack of data is tried
    again (we may know more now)."""
    if rejected_for_missing_data(stored):
        return False
    return kind is Kind.OUTLIER or not stored.outlier
