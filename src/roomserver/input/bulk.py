"""The bulk path for outliers: a room's state and auth chain given at once (a join).

A ``send_join`` response gives tens of thousands of events as outliers. One by one, each pays
a trip through the whole pipeline; here a message's outliers are handled as one batch, before
the message goes through the normal path:

1. **parse** every event (in a thread pool: canonical JSON and the reference hash);
2. **verify** the signatures (keys looked up through the key ring, the ed25519 checks in the
   pool: PyNaCl releases the GIL) and the content hashes (a mismatch: the redacted form);
3. **order** the events topologically by their auth events (stable: message order first);
4. **check** each against its own auth events (``core.auth.check_auth_events``), those of the
   batch decided just before it or stored;
5. **store** them with batched statements and build their auth chain index in bulk, in one
   transaction (``storage/bulk.py``).

The outcome of each event is what the normal path gives, because the bulk path stores only
what the normal path would store the same way, and the normal path then answers every stored
event from storage (an outlier stored already is a no-op). Everything else is *deferred*:
left unstored, for the normal path to handle in message order as before. Deferred are: events
that do not parse, fail their signatures or hashes (INVALID there); create events of a room
stored already; redactions and events with redaction records (their bookkeeping is the normal
path's); events whose origin is checked against a server ACL (a room with current state);
events stored already but rejected for missing data (processed again there); events whose
auth events are missing (fetched there), or are deferred themselves.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from nacl.signing import VerifyKey

from roomserver.api import EventResult, InputRoomEvent, Kind, Outcome, StoredEvent
from roomserver.core.auth import check_auth_events
from roomserver.core.canonical_json import canonical_json
from roomserver.core.errors import CoreError, Rejected
from roomserver.core.ids import EventId, RoomId
from roomserver.core.pdu import Event, parse_event
from roomserver.core.redaction import redact_with
from roomserver.core.room_versions import RoomVersion
from roomserver.core.signatures import check_content_hash, required_signers, verify_event
from roomserver.input.store import rejected_for_missing_data
from roomserver.ports import KeyRing, OutlierRow, RedactionRecord, RoomInfo

T = TypeVar("T")
R = TypeVar("R")

#: A message with fewer outliers than this goes through the normal path alone.
BULK_MIN_OUTLIERS = 32
#: Events per task handed to the thread pool.
CHUNK = 500


@runtime_checkable
class BulkStore(Protocol):
    """What the bulk path needs of storage (``SqlStorage`` has it)."""

    async def get_events(self, event_ids: Sequence[EventId]) -> dict[EventId, StoredEvent]: ...

    async def room(self, room_id: RoomId) -> RoomInfo | None: ...

    async def room_version_of(self, room_id: RoomId) -> str | None: ...

    async def redaction_records_of(self, event_ids: Sequence[str]) -> list[RedactionRecord]: ...

    async def store_outliers(
        self, room_id: RoomId, room_version: str, rows: Sequence[OutlierRow]
    ) -> list[EventId]: ...


@runtime_checkable
class VerifyKeySource(Protocol):
    """A key ring that hands out the keys to check an event with (``federation.KeyRing``), so
    that the checks themselves can run in the pool."""

    async def verify_keys_for_event(
        self, event: Event | Mapping[str, Any], rules: RoomVersion
    ) -> dict[str, dict[str, VerifyKey]]: ...


@dataclass(slots=True)
class BulkReport:
    """What one bulk pass did, and where its time went (seconds)."""

    stored: int = 0
    deferred: int = 0
    rejected: int = 0
    #: The outcome of each item (by its position in the message) that the bulk path answers:
    #: stored by it now, or stored before with a final outcome. Exactly what the normal path
    #: answers for them.
    results: dict[int, EventResult] = field(default_factory=dict)
    timings: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("parse", "verify", "auth", "store"), 0.0)
    )
    #: CPU seconds of the whole process (every thread) during each phase.
    cpu: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("parse", "verify", "auth", "store"), 0.0)
    )

    def phase(self, name: str, started: tuple[float, float]) -> tuple[float, float]:
        """Add the time since ``started`` (a ``_clocks()`` reading) to phase ``name``."""
        now = _clocks()
        self.timings[name] = self.timings.get(name, 0.0) + now[0] - started[0]
        self.cpu[name] = self.cpu.get(name, 0.0) + now[1] - started[1]
        return now

    def add(self, other: BulkReport) -> None:
        self.stored += other.stored
        self.deferred += other.deferred
        self.rejected += other.rejected
        for phase, seconds in other.timings.items():
            self.timings[phase] = self.timings.get(phase, 0.0) + seconds
        for phase, seconds in other.cpu.items():
            self.cpu[phase] = self.cpu.get(phase, 0.0) + seconds


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


@dataclass(slots=True)
class _Candidate:
    index: int
    item: InputRoomEvent
    event: Event | None = None


def _parse_chunk(
    pdus: Sequence[tuple[Mapping[str, Any], str]],
) -> list[Event | None]:
    out: list[Event | None] = []
    for pdu, version in pdus:
        try:
            out.append(parse_event(pdu, version, check_edge_counts=True))
        except (CoreError, ValueError, TypeError):
            out.append(None)
    return out


def _verify_chunk(
    jobs: Sequence[tuple[Event, Mapping[str, Mapping[str, VerifyKey]] | None]],
) -> list[Event | None]:
    """Signatures (when keys are given) and content hashes: the event to store, or None."""
    out: list[Event | None] = []
    for event, keys in jobs:
        try:
            if keys is not None:
                verify_event(event, room_version=event.room_version, verify_keys=keys)
            if not check_content_hash(event):
                redacted = redact_with(event.pdu, event.rules)
                event = parse_event(redacted, event.room_version, event_id=event.event_id)
            out.append(event)
        except (CoreError, ValueError, TypeError):
            out.append(None)
    return out


def topological_order(events: Sequence[Event]) -> tuple[list[Event], list[Event]]:
    """``events`` ordered so that each comes after its auth events among them, in given order
    where that allows; and those on an auth cycle (never valid), left out of the order."""
    position = {e.event_id: i for i, e in enumerate(events)}
    waiting_on: dict[str, int] = {}
    citers: dict[str, list[int]] = {}
    for i, event in enumerate(events):
        cited = {a for a in event.auth_event_ids if a in position and a != event.event_id}
        waiting_on[event.event_id] = len(cited)
        for auth_id in cited:
            citers.setdefault(auth_id, []).append(i)
    ready = [i for i, e in enumerate(events) if waiting_on[e.event_id] == 0]
    heapq.heapify(ready)
    ordered: list[Event] = []
    while ready:
        i = heapq.heappop(ready)
        event = events[i]
        ordered.append(event)
        for j in citers.get(event.event_id, ()):
            other = events[j].event_id
            waiting_on[other] -= 1
            if waiting_on[other] == 0:
                heapq.heappush(ready, j)
    done = {e.event_id for e in ordered}
    return ordered, [e for e in events if e.event_id not in done]


def check_in_order(
    ordered: Sequence[Event], stored: Mapping[EventId, StoredEvent]
) -> tuple[dict[EventId, str | None], set[EventId]]:
    """Spec 7.4 for each event in ``ordered`` against its own auth events: those decided before
    it in ``ordered`` or ``stored``. Returns the rejection reason (or None) of each event
    decided, and the IDs deferred (an auth event missing, deferred, or rejected for missing
    data: the normal path fetches it)."""
    decided: dict[EventId, str | None] = {}
    by_id: dict[EventId, Event] = {}
    deferred: set[EventId] = set()
    for event in ordered:
        if event.type == "m.room.create" and event.state_key == "":
            wanted: list[EventId] = []
        else:
            wanted = list(event.auth_event_ids)
            if event.rules.room_id_from_create_event:
                wanted.append(EventId("$" + event.room_id[1:]))
        auth_events: list[Event] = []
        rejected: set[str] = set()
        for auth_id in wanted:
            if auth_id in decided:
                auth_events.append(by_id[auth_id])
                if decided[auth_id] is not None:
                    rejected.add(auth_id)
                continue
            known = stored.get(auth_id)
            if known is None or auth_id in deferred or rejected_for_missing_data(known):
                deferred.add(event.event_id)
                break
            auth_events.append(known.event)
            if known.rejected:
                rejected.add(auth_id)
        if event.event_id in deferred:
            continue
        try:
            check_auth_events(event, auth_events, rejected=rejected)
            decided[event.event_id] = None
        except Rejected as exc:
            decided[event.event_id] = exc.reason
        by_id[event.event_id] = event
    return decided, deferred


class OutlierImporter:
    """The bulk path for a message's outliers (see the module docstring)."""

    def __init__(
        self,
        store: BulkStore,
        keyring: KeyRing,
        *,
        server_name: str,
        executor: Executor | None = None,
        min_outliers: int = BULK_MIN_OUTLIERS,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._server_name = server_name
        self._executor = executor
        self.min_outliers = min_outliers
        self.totals = BulkReport()

    async def _in_pool(self, fn: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        parts = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
        done = await asyncio.gather(*(loop.run_in_executor(self._executor, fn, p) for p in parts))
        return [x for part in done for x in part]

    async def import_outliers(self, room_id: RoomId, items: Sequence[InputRoomEvent]) -> BulkReport:
        """Store what the bulk path can decide of ``items`` (one message's events for
        ``room_id``); the rest is left for the normal path."""
        report = BulkReport()
        candidates = [
            _Candidate(i, item)
            for i, item in enumerate(items)
            if item.kind is Kind.OUTLIER and isinstance(item.event, Mapping)
        ]
        if len(candidates) < self.min_outliers:
            return report
        room = await self._store.room(room_id)
        acl_applies = room is not None and room.current_state is not None
        version = await self._versions(room_id, candidates, room)
        if version is None:
            report.deferred = len(candidates)
            return report
        candidates = [
            c
            for c in candidates
            if not (acl_applies and c.item.origin not in (None, self._server_name))
        ]
        started = _clocks()
        parsed = await self._in_pool(
            _parse_chunk, [(c.item.event, _version_of(c, version)) for c in candidates]
        )
        events: list[Event] = []
        verified: dict[str, bool] = {}
        index_of: dict[str, int] = {}
        for candidate, event in zip(candidates, parsed, strict=True):
            if event is None or event.room_id != room_id or event.event_id in verified:
                continue
            index_of[event.event_id] = candidate.index
            if event.type == "m.room.redaction" or (
                room is not None and event.type == "m.room.create" and event.state_key == ""
            ):
                continue
            verified[event.event_id] = candidate.item.verified
            events.append(event)
        started = report.phase("parse", started)

        events = await self._drop_settled(events, index_of, report)
        events = await self._verify(events, verified)
        started = report.phase("verify", started)

        ordered, _cycles = topological_order(events)
        batch_ids = {e.event_id for e in ordered}
        outside = {a for e in ordered for a in _wanted_auth(e) if a not in batch_ids}
        stored = await self._store.get_events(sorted(outside)) if outside else {}
        decided, _deferred = check_in_order(ordered, stored)
        started = report.phase("auth", started)

        rows = [
            OutlierRow(e, _event_json(e), decided[e.event_id])
            for e in ordered
            if e.event_id in decided
        ]
        written = await self._store.store_outliers(room_id, version, rows)
        for event_id in written:
            reason = decided[event_id]
            outcome = Outcome.ACCEPTED if reason is None else Outcome.REJECTED
            report.results[index_of[event_id]] = EventResult(event_id, outcome, reason)
        started = report.phase("store", started)
        report.stored = len(written)
        report.rejected = sum(1 for r in rows if r.rejection_reason is not None)
        report.deferred = len(candidates) - len(rows)
        self.totals.add(report)
        return report

    async def _versions(
        self, room_id: RoomId, candidates: Sequence[_Candidate], room: RoomInfo | None
    ) -> str | None:
        """The room version every candidate parses with, as the normal path would pick it;
        None when that could differ between them (then the normal path does it all)."""
        stored = room.room_version if room is not None else None
        if stored is None:
            stored = await self._store.room_version_of(room_id)
        creates = [c for c in candidates if _is_create_pdu(c.item.event)]
        if creates and (stored is not None or len(creates) > 1):
            return None  # the normal path tells which create is INVALID
        if creates:
            content = creates[0].item.event.get("content")
            found = content.get("room_version", "1") if isinstance(content, Mapping) else None
            stored = found if isinstance(found, str) else None
            if stored is None:
                return None
        if stored is None:
            named = {c.item.room_version for c in candidates}
            if len(named) != 1 or None in named:
                return None
            return named.pop()
        if any(c.item.room_version not in (None, stored) for c in candidates):
            return None
        return stored

    async def _drop_settled(
        self, events: list[Event], index_of: Mapping[str, int], report: BulkReport
    ) -> list[Event]:
        """Leave out events stored already (answered with their stored outcome, except those
        rejected for missing data: the normal path processes them again) and those with
        redaction records."""
        ids = [e.event_id for e in events]
        known = await self._store.get_events(ids)
        for event_id, stored in known.items():
            if not rejected_for_missing_data(stored):
                reason = stored.rejection_reason if stored.rejected else None
                report.results[index_of[event_id]] = EventResult(event_id, stored.outcome, reason)
        records = await self._store.redaction_records_of(ids)
        named = {r.target_id for r in records} | {r.redaction_id for r in records}
        return [e for e in events if e.event_id not in known and e.event_id not in named]

    async def _verify(self, events: list[Event], verified: Mapping[str, bool]) -> list[Event]:
        jobs: list[tuple[Event, Mapping[str, Mapping[str, VerifyKey]] | None]] = []
        source = self._keyring if isinstance(self._keyring, VerifyKeySource) else None
        unverified = [e for e in events if not verified[e.event_id]]
        keys_of = await _keys_by_signers(source, unverified) if source is not None else {}
        for event in events:
            if verified[event.event_id]:
                jobs.append((event, None))
            elif source is not None:
                keys = keys_of.get(event.event_id)
                if keys is None:
                    try:
                        keys = await source.verify_keys_for_event(event, event.rules)
                    except CoreError:
                        continue  # keys unobtainable: INVALID on the normal path
                jobs.append((event, keys))
            else:
                try:
                    await self._keyring.verify_event(event, event.room_version)
                except CoreError:
                    continue
                jobs.append((event, None))
        checked = await self._in_pool(_verify_chunk, jobs)
        return [e for e in checked if e is not None]


def _origin_ts(event: Event) -> int:
    ts = event.pdu.get("origin_server_ts")
    return ts if type(ts) is int else 0


def _signers_and_key_ids(event: Event) -> tuple[str, tuple[tuple[str, tuple[str, ...]], ...]]:
    """What the keys an event is checked with depend on, besides its timestamp."""
    signatures = event.pdu.get("signatures")
    signatures = signatures if isinstance(signatures, Mapping) else {}
    out = []
    for server in sorted(required_signers(event, event.rules)):
        by_key = signatures.get(server)
        key_ids = tuple(sorted(by_key)) if isinstance(by_key, Mapping) else ()
        out.append((server, key_ids))
    return event.room_version, tuple(out)


async def _keys_by_signers(
    source: VerifyKeySource, events: Sequence[Event]
) -> dict[str, dict[str, dict[str, VerifyKey]]]:
    """The verify keys of many events with few key ring calls: events signed by the same
    servers with the same key IDs share them. A key usable at a time is usable at every
    earlier time (validity only ends), so when the group's earliest and latest events get the
    same keys, every event between them gets those too; otherwise the group is left out (the
    caller asks for each event)."""
    groups: dict[Any, list[Event]] = {}
    for event in events:
        try:
            groups.setdefault(_signers_and_key_ids(event), []).append(event)
        except CoreError:
            continue  # the signature check reports it
    out: dict[str, dict[str, dict[str, VerifyKey]]] = {}
    for group in groups.values():
        earliest = min(group, key=_origin_ts)
        latest = max(group, key=_origin_ts)
        try:
            keys = await source.verify_keys_for_event(latest, latest.rules)
            if earliest is not latest and keys != await source.verify_keys_for_event(
                earliest, earliest.rules
            ):
                continue
        except CoreError:
            continue
        for event in group:
            out[event.event_id] = keys
    return out


def _is_create_pdu(pdu: Mapping[str, Any]) -> bool:
    return pdu.get("type") == "m.room.create" and pdu.get("state_key") == ""


def _version_of(candidate: _Candidate, version: str) -> str:
    if _is_create_pdu(candidate.item.event):
        content = candidate.item.event.get("content")
        found = content.get("room_version", "1") if isinstance(content, Mapping) else "1"
        return found if isinstance(found, str) else version
    return version


def _wanted_auth(event: Event) -> list[EventId]:
    if event.type == "m.room.create" and event.state_key == "":
        return []
    if event.rules.room_id_from_create_event:
        return [*event.auth_event_ids, EventId("$" + event.room_id[1:])]
    return list(event.auth_event_ids)


def _event_json(event: Event) -> bytes:
    if event.canonical_bytes is not None:
        return event.canonical_bytes
    return canonical_json(event.pdu, strict=event.rules.strict_canonical_json)
