"""The async Protocols through which ``input`` meets storage, the bus and federation.

``input``, ``storage``, ``bus`` and ``federation`` never import each other; ``startup.py`` wires the
concrete adapters to these Protocols. Constructors take the smallest Protocol they use.

State snapshots are opaque integers (``SnapshotId``) issued by storage. A snapshot is written as
a ``StateDelta`` against a base snapshot, so storing an event's state costs O(entries changed).

Identifiers are typed with ``RoomId``, ``EventId`` and ``ServerName`` (``roomserver.core.ids``):
the storage Protocols take and return them (rooms, events, auth chains, joined servers; a state
map maps a ``StateKey`` to an ``EventId``), so do their value types (``RoomInfo``,
``RoomUpdate``, ``MembershipChange``, ``EventWrite``, ``InputReads``, ``RedactionRecord``...),
the fetcher's requests and answers (the servers it is asked to try and the one that answered
are ``ServerName``s, as is ``ServerKeyRecord.server_name``), and ``OutputPublisher``. Still
plain ``str``: user IDs and room versions.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, NewType, Protocol

from roomserver.api import StoredEvent
from roomserver.core.ids import EventId, RoomId, ServerName
from roomserver.core.pdu import Event
from roomserver.core.state_keys import StateKey as StateKey

SnapshotId = NewType("SnapshotId", int)


# ---------------------------------------------------------------------------------------------
# What becomes of an input message: one vocabulary for input and the bus


class Disposition(enum.Enum):
    """What becomes of an input message once it was handled (``input`` decides it, the bus
    applies it to the stream)."""

    #: Done: the outcome is recorded (or the input was dropped with a reason). Acked.
    ACK = "ack"
    #: A transient failure: redelivered after a delay; the room waits, other rooms do not.
    RETRY = "retry"
    #: Never processable (undecodable): no more deliveries.
    TERMINATE = "terminate"


def backoff_delay(attempt: int, *, initial: float, maximum: float) -> float:
    """The one backoff: ``initial`` seconds after the first failure, doubling with each
    further one, up to ``maximum`` (``attempt`` counts from 1)."""
    return float(min(initial * 2 ** min(max(attempt - 1, 0), 62), maximum))


# ---------------------------------------------------------------------------------------------
# Storage errors


class StorageError(Exception):
    """Base of storage failures. Transient subclasses may be retried; others may not."""

    transient: bool = False


class StorageUnavailable(StorageError):
    """The database cannot be reached or timed out (transient)."""

    transient = True


class ConcurrentUpdate(StorageError):
    """Another writer changed the room since it was read (optimistic concurrency check failed).

    Transient: re-read the room and process the event again.
    """

    transient = True


class StaleRead(ConcurrentUpdate):
    """What a message assumed of storage instead of reading it (``InputAssumption``) did not
    hold when its writes were to be committed: nothing was written; process the message
    again with real reads."""


class CorruptData(StorageError):
    """A stored row cannot be decoded (truncated JSON, impossible values)."""


class SchemaTooNew(StorageError):
    """The database was written by a newer schema than this program knows."""


# ---------------------------------------------------------------------------------------------
# Storage value types


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room_id: RoomId
    room_version: str
    # Accepted, not soft-failed events with state (only accepted NEW events update them).
    forward_extremities: tuple[EventId, ...]
    current_state: SnapshotId | None
    last_sent_event_id: EventId | None
    version: int  # bumped by every RoomUpdate; used for optimistic concurrency


@dataclass(frozen=True, slots=True)
class StateDelta:
    """A snapshot written as ``base`` plus ``changes`` (``None`` value = key removed)."""

    base: SnapshotId | None
    changes: Mapping[StateKey, EventId | None] = field(default_factory=dict)


class EventStatus(enum.Enum):
    OUTLIER = "outlier"  # no state known
    STATEFUL = "stateful"  # in the contiguous DAG, with a state-before snapshot


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """A change in the room's current membership for one user (from the current-state delta)."""

    user_id: str
    membership: str  # join, invite, leave, ban, knock
    event_id: EventId
    sender: str


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An output message committed with the event, published after commit (outbox pattern)."""

    msg_id: str  # unique and stable: the bus deduplicates on it
    output_type: str
    payload: bytes
    sequence: int = 0  # assigned by storage


@dataclass(frozen=True, slots=True)
class RoomUpdate:
    """The change to a room's forward extremities and current state, checked against
    ``expected_version`` (``None``: the room must not exist yet; it is created)."""

    expected_version: int | None
    room_version: str
    forward_extremities: tuple[EventId, ...]
    current_state: StateDelta
    last_sent_event_id: EventId | None
    membership_changes: Sequence[MembershipChange] = ()


@dataclass(frozen=True, slots=True)
class RedactionRecord:
    redaction_id: EventId
    target_id: EventId
    validated: bool


@dataclass(frozen=True, slots=True)
class OutlierRow:
    """One outlier to store in bulk (``storage/bulk.py``): the event (in the form to store),
    its JSON, its rejection."""

    event: Event
    event_json: bytes
    rejection_reason: str | None


@dataclass(frozen=True, slots=True)
class EventWrite:
    """Everything persisting one event changes, applied in ONE transaction.

    Idempotent: writing an event that is already stored never changes its JSON (nor its prev
    edges); it may give an outlier a state snapshot, replace a stored rejection by the new
    outcome (cleared, or the new reason and soft-failed flag; never set a rejection on an
    accepted event), and apply the room update and outbox entries if the room's version still
    matches.
    """

    event: Event
    status: EventStatus
    rejection_reason: str | None = None
    soft_failed: bool = False
    state_before: StateDelta | None = None  # required for STATEFUL
    room_update: RoomUpdate | None = None
    outbox: Sequence[OutboxEntry] = ()
    # Redaction bookkeeping: a redaction event records its target (pending until validated);
    # applying one replaces the target's stored JSON with its redacted form.
    redaction_target: EventId | None = None
    apply_redaction: AppliedRedaction | None = None
    # Outbox sequences of this room already published: marked sent in the same transaction
    # (saves a separate ``mark_outbox_sent``). Unknown sequences are ignored.
    outbox_sent: Sequence[int] = ()
    # A write without a room update that was decided against this version of the room (a
    # soft-failed event: checked against current state): ``ConcurrentUpdate`` if the room
    # moved on. ``None``: not checked.
    expected_room_version: int | None = None
    # In ``BatchPersist.persist_many``: the placeholder snapshot IDs (negative) that later
    # writes of the same call use for this write's state-before and the room's new current
    # state (``PersistResult.state_before`` / ``current_state``).
    snapshot_placeholders: tuple[SnapshotId | None, SnapshotId | None] = (None, None)


@dataclass(frozen=True, slots=True)
class AppliedRedaction:
    target_id: EventId
    redaction_id: EventId
    redacted_pdu: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PersistResult:
    state_before: SnapshotId | None
    current_state: SnapshotId | None
    stream_position: int
    # The room's unsent outbox entries after the write, in sequence order (what
    # ``pending_outbox`` would answer right after it); ``None``: not reported, ask
    # ``pending_outbox``. A storage that reports it also honours ``EventWrite.outbox_sent``.
    pending_outbox: tuple[OutboxEntry, ...] | None = None


@dataclass(frozen=True, slots=True)
class InputAssumption:
    """What a message's gather assumed of storage instead of reading it: its room's cached row
    is the stored one, and the reads it skipped would have answered "nothing". Checked first
    in the transaction that commits the message's writes (``BatchPersist.persist_many``),
    which raises ``StaleRead`` and writes nothing if any of it is false."""

    room_id: RoomId
    room_row_version: int  # the room row's ``RoomInfo.version``
    not_stored: tuple[EventId, ...] = ()  # get_events(these) is empty
    not_cited: tuple[EventId, ...] = ()  # referenced_as_prev(room_id, these) is empty
    not_redacted: tuple[EventId, ...] = ()  # redactions_for(each of these) is empty


@dataclass(frozen=True, slots=True)
class InputReads:
    """The reads the input pipeline makes before deciding on one event, answered at once
    (``InputReadBatch.read_for_input``)."""

    events: Mapping[EventId, StoredEvent]  # get_events(event_ids)
    referenced: AbstractSet[EventId]  # referenced_as_prev(room_id, referenced_ids)
    redactions: Sequence[RedactionRecord]  # redactions_for(each of redactions_of), [] if None
    room: RoomInfo | None = None  # room(room_id), when asked ``with_room``


@dataclass(frozen=True, slots=True)
class ServerKeyRecord:
    """A cached server signing key as storage keeps it (``verify_key``: raw ed25519 bytes)."""

    server_name: ServerName
    key_id: str
    verify_key: bytes
    valid_until_ts: int
    expired_ts: int | None = None


# ---------------------------------------------------------------------------------------------
# Storage protocols


class EventStore(Protocol):
    async def get_events(self, event_ids: Iterable[EventId]) -> dict[EventId, StoredEvent]:
        """The stored events among ``event_ids`` (missing ones are simply absent), whatever
        their flags: rejected, soft-failed and outlier events are returned with them."""
        ...

    async def room(self, room_id: RoomId) -> RoomInfo | None: ...

    async def room_version_of(self, room_id: RoomId) -> str | None:
        """The room version the room's events are stored under, also for a room known only
        through outliers or rejected events (``room`` answers ``None`` for those)."""
        ...

    async def persist(self, write: EventWrite) -> PersistResult:
        """Apply ``write`` atomically. Raises ``ConcurrentUpdate`` if the room moved on."""
        ...

    async def referenced_as_prev(
        self, room_id: RoomId, event_ids: Iterable[EventId]
    ) -> set[EventId]:
        """The IDs among ``event_ids`` that some event of ``room_id`` in the room's DAG lists in
        its prev_events: stored with state, not rejected, not soft-failed. Citations by
        outliers, rejected or soft-failed events, or by events of other rooms, do not count
        (such an event cannot be built upon, so what it alone cites stays an extremity)."""
        ...

    async def redactions_for(self, event_id: EventId) -> list[RedactionRecord]:
        """Redactions targeting ``event_id`` and, for a redaction, the record it created. Only
        accepted, not soft-failed redactions create records (the input pipeline writes them);
        the target may be stored with any flags, or not at all."""
        ...

    async def pending_outbox(self, room_id: RoomId) -> list[OutboxEntry]: ...

    async def mark_outbox_sent(self, room_id: RoomId, sequences: Collection[int]) -> None: ...

    async def rooms_with_unsent_outbox(self) -> list[RoomId]:
        """The rooms with outbox entries not marked sent, sorted by room ID."""
        ...


class InputReadBatch(Protocol):
    """Optional: one round trip for ``get_events`` + ``referenced_as_prev`` + ``redactions_for``
    (the pipeline falls back to the three calls when storage lacks it)."""

    async def read_for_input(
        self,
        event_ids: Iterable[EventId],
        *,
        room_id: RoomId,
        referenced_ids: Iterable[EventId],
        redactions_of: EventId | Sequence[EventId] | None,
        with_room: bool = False,
    ) -> InputReads:
        """``redactions_of``: one event ID, or several (the records of each, in one list).
        ``with_room``: the room row too (``InputReads.room``)."""
        ...


class BatchPersist(Protocol):
    async def persist_many(
        self, writes: Sequence[EventWrite], *, expect: InputAssumption | None = None
    ) -> list[PersistResult]:
        """Persist ``writes`` in order in ONE transaction (all or nothing). A ``StateDelta``
        base may be a placeholder (a negative ``SnapshotId``) named by an earlier write's
        ``snapshot_placeholders``; it is replaced by the real snapshot. Only the last result
        of each room reports ``pending_outbox``. ``expect``: checked first, in the same
        transaction (``StaleRead`` if false; ``writes`` may then be empty)."""
        ...


def record_placeholders(
    write: EventWrite, result: PersistResult, resolved: dict[int, int | None]
) -> None:
    """Record in ``resolved`` the real snapshots ``write``'s placeholders stand for
    (``result`` is what persisting it returned)."""
    before, current = write.snapshot_placeholders
    if before is not None:
        resolved[before] = result.state_before
    if current is not None:
        resolved[current] = result.current_state


def with_placeholders_resolved(
    write: EventWrite, resolved: Mapping[int, int | None], *, partial: bool = False
) -> EventWrite:
    """``write`` with the placeholder snapshot bases of its deltas replaced by ``resolved``
    (``StorageError`` for a placeholder that no earlier write defined; with ``partial``, such
    a placeholder is left for a later resolution)."""

    def base(delta: StateDelta) -> StateDelta:
        if delta.base is None or delta.base >= 0:
            return delta
        if delta.base not in resolved:
            if partial:
                return delta
            raise StorageError(f"snapshot placeholder {delta.base} is not defined")
        real = resolved[delta.base]
        return StateDelta(None if real is None else SnapshotId(real), delta.changes)

    state_before = write.state_before
    update = write.room_update
    changed: dict[str, Any] = {}
    if state_before is not None and (state_before.base or 0) < 0:
        new_before = base(state_before)
        if new_before is not state_before:  # (left as it is: nothing to rebuild)
            changed["state_before"] = new_before
    if update is not None and (update.current_state.base or 0) < 0:
        new_current = base(update.current_state)
        if new_current is not update.current_state:
            changed["room_update"] = replace(update, current_state=new_current)
    return replace(write, **changed) if changed else write


class StateStore(Protocol):
    async def state_map(self, snapshot: SnapshotId | None) -> dict[StateKey, EventId]:
        """The whole state of a snapshot (``None``: the empty state)."""
        ...

    async def state_entries(
        self, snapshot: SnapshotId | None, keys: Iterable[StateKey]
    ) -> dict[StateKey, EventId]:
        """Only the given keys of a snapshot; cheap, never loads the whole state."""
        ...

    async def state_diff(
        self, old: SnapshotId | None, new: SnapshotId | None
    ) -> tuple[dict[StateKey, EventId], dict[StateKey, EventId]]:
        """``(added_or_changed, removed_or_replaced)`` going from ``old`` to ``new``; cheap when
        the snapshots share most entries."""
        ...


class AuthChainIndex(Protocol):
    async def auth_chain(self, event_ids: Iterable[EventId]) -> set[EventId]:
        """Every event reachable through auth_events from ``event_ids`` (excluding them), with
        any flags: an accepted event's chain holds only accepted events (a rejected auth event
        rejects the event citing it); a rejected event's may hold rejected ones."""
        ...

    async def auth_chain_difference(
        self, state_sets: Sequence[Collection[EventId]]
    ) -> set[EventId]:
        """Union of the sets' full auth chains minus their intersection (spec: state res v2)."""
        ...


class MembershipStore(Protocol):
    """Memberships in the room's current state: written only by ``RoomUpdate`` s (accepted, not
    soft-failed NEW events), so rejected, soft-failed and outlier events never show here."""

    async def membership(self, room_id: RoomId, user_id: str) -> str | None: ...

    async def joined_servers(self, room_id: RoomId) -> list[ServerName]: ...

    async def joined_users(self, room_id: RoomId) -> list[str]: ...


class MemberFacts(NamedTuple):
    """What a membership change needs of an ``m.room.member`` event: ``content.membership``
    when it is a string (``Event.membership``) and the sender."""

    membership: str | None
    sender: str


class EventFacts(NamedTuple):
    """A stored event's row: what choosing a supplied state needs, without its JSON."""

    type: str
    state_key: str | None
    depth: int
    rejected: bool


class EventFactsStore(Protocol):
    """Small facts of many stored events without parsing them: a big room's ``has_state``
    join reads them for every state event and every member."""

    async def member_facts(self, event_ids: Iterable[EventId]) -> dict[EventId, MemberFacts]:
        """``MemberFacts`` of the stored events among ``event_ids`` (whatever their flags)."""
        ...

    async def event_facts(self, event_ids: Iterable[EventId]) -> dict[EventId, EventFacts]:
        """``EventFacts`` of the stored events among ``event_ids``."""
        ...


class Storage(EventStore, StateStore, AuthChainIndex, MembershipStore, EventFactsStore, Protocol):
    """Everything the roomserver remembers, behind one object (both backends implement it)."""

    async def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Federation and keys (implemented by roomserver.federation)


class KeyRing(Protocol):
    async def verify_event(self, event: Event | Mapping[str, Any], room_version: str) -> None:
        """Check the event's signatures, fetching keys as needed; raise ``InvalidSignature``.
        Given an ``Event``, the bytes it computed for its event ID are reused."""
        ...


HaveEvents = AbstractSet[EventId] | Callable[[Sequence[EventId]], Awaitable[AbstractSet[EventId]]]
"""What the caller already holds: a set of event IDs, or an async callback returning the subset
of the given IDs it holds (decides what a fetcher fetches and when a gap is closed)."""


class MissingEventsAnswer(Protocol):
    """``get_missing_events`` result: the events found, oldest first (by prev events), and the
    prev events they cite that are neither among them, nor held, nor in ``earliest``."""

    @property
    def events(self) -> Sequence[Event]: ...

    @property
    def unresolved_prev_ids(self) -> Sequence[EventId]: ...


class RemoteStateAnswer(Protocol):
    """The state before ``event_id`` according to ``server`` (``/state_ids``): the IDs as
    answered, the lacked events fetched and verified (oldest first by auth events), and the
    IDs that could not be obtained."""

    @property
    def event_id(self) -> EventId: ...

    @property
    def server(self) -> ServerName: ...

    @property
    def state_event_ids(self) -> Sequence[EventId]: ...

    @property
    def auth_chain_ids(self) -> Sequence[EventId]: ...

    @property
    def events(self) -> Sequence[Event]: ...

    @property
    def missing_event_ids(self) -> Sequence[EventId]: ...


class MissingEventFetcher(Protocol):
    """Fetches what an incoming event lacks from other servers (``roomserver.federation``).

    Every returned ``Event`` is parsed for the room version, in ``room_id``, and has valid
    signatures (a content-hash mismatch yields the redacted form). Failures raise the
    federation layer's errors (timeouts and unreachable servers are transient).
    """

    async def fetch_event(
        self, room_id: RoomId, room_version: str, event_id: EventId, servers: Sequence[ServerName]
    ) -> Event: ...

    async def fetch_auth_chain(
        self,
        room_id: RoomId,
        room_version: str,
        event_id: EventId,
        servers: Sequence[ServerName],
        *,
        have: HaveEvents = frozenset(),
    ) -> list[Event]:
        """The auth chain of ``event_id``, oldest first (by auth events)."""
        ...

    async def get_missing_events(
        self,
        room_id: RoomId,
        room_version: str,
        earliest: Sequence[EventId],
        latest: Sequence[EventId],
        *,
        limit: int = 20,
        min_depth: int = 0,
        servers: Sequence[ServerName],
        have: HaveEvents = frozenset(),
    ) -> MissingEventsAnswer: ...

    async def state_ids(
        self,
        room_id: RoomId,
        room_version: str,
        event_id: EventId,
        servers: Sequence[ServerName],
        *,
        have: HaveEvents = frozenset(),
    ) -> RemoteStateAnswer:
        """The state *before* ``event_id``, with the lacked events fetched."""
        ...


# ---------------------------------------------------------------------------------------------
# Output


class OutputPublisher(Protocol):
    async def publish_room_outputs(self, room_id: RoomId, outputs: Sequence[OutboxEntry]) -> None:
        """Publish a room's outputs in order (pipelined); return once the stream stored all of
        them. Each carries its ``msg_id``, so the stream drops a repeat."""
        ...
