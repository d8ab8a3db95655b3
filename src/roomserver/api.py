"""Public request, response and output types of the roomserver, and their JSON wire format.

Wire format (version 1): every message body is a JSON object with ``"v": 1``. Input messages
carry one ``InputRoomEvent``; output messages carry one ``OutputEvent``. Field names are
documented on each ``to_json``. Decoders reject unknown versions with ``WireFormatError``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from roomserver.core.pdu import Event

WIRE_VERSION = 1

StateKey = tuple[str, str]


class WireFormatError(ValueError):
    """A message body that is not a valid version-1 wire message."""


class Kind(enum.IntEnum):
    """How an input event relates to the room's DAG (wire values as Dendrite's)."""

    OUTLIER = 1  # outside the contiguous DAG: stored and authorised, no state, no output
    NEW = 2  # extends the DAG forward: updates extremities and current state, emits output
    OLD = 3  # backfill / gap filling: gets state if possible, never moves extremities


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    SOFT_FAILED = "soft_failed"
    REJECTED = "rejected"
    INVALID = "invalid"
    ERROR = "error"
    QUEUED = "queued"  # asynchronous requests: published to the input stream


@dataclass(frozen=True, slots=True)
class TransactionId:
    session_id: int
    transaction_id: str


@dataclass(frozen=True, slots=True)
class InputRoomEvent:
    """One event to ingest.

    ``event`` is the PDU in federation format. ``room_version`` may be omitted when the room is
    known (or for a create event, whose content names it). ``verified`` marks an event whose
    hashes, signatures and server ACL the caller has already checked.
    """

    event: Mapping[str, Any]
    kind: Kind = Kind.NEW
    origin: str | None = None
    has_state: bool = False
    state_event_ids: tuple[str, ...] = ()
    send_as_server: str | None = None
    transaction_id: TransactionId | None = None
    verified: bool = False
    room_version: str | None = None


@dataclass(frozen=True, slots=True)
class InputRoomEventsRequest:
    events: Sequence[InputRoomEvent]
    asynchronous: bool = False


@dataclass(frozen=True, slots=True)
class EventResult:
    event_id: str | None
    outcome: Outcome
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class InputRoomEventsResponse:
    results: list[EventResult]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored, with its processing outcome."""

    event: Event
    outlier: bool
    rejected: bool = False
    rejection_reason: str | None = None
    soft_failed: bool = False
    state_snapshot: int | None = None  # snapshot of the state before the event; None for outliers
    redacted_because: str | None = None
    stream_position: int | None = None

    @property
    def outcome(self) -> Outcome:
        if self.rejected:
            return Outcome.REJECTED
        if self.soft_failed:
            return Outcome.SOFT_FAILED
        return Outcome.ACCEPTED


# ---------------------------------------------------------------------------------------------
# Output events (stream <prefix>OutputRoomEvent)


class OutputType(enum.Enum):
    NEW_ROOM_EVENT = "new_room_event"
    OLD_ROOM_EVENT = "old_room_event"
    NEW_INVITE_EVENT = "new_invite_event"
    RETIRE_INVITE_EVENT = "retire_invite_event"
    REDACTED_EVENT = "redacted_event"


@dataclass(frozen=True, slots=True)
class OutputNewRoomEvent:
    event: Mapping[str, Any]
    event_id: str
    room_version: str
    latest_event_ids: tuple[str, ...]
    adds_state_event_ids: tuple[str, ...] = ()
    removes_state_event_ids: tuple[str, ...] = ()
    state_before_adds_event_ids: tuple[str, ...] = ()
    state_before_removes_event_ids: tuple[str, ...] = ()
    last_sent_event_id: str | None = None
    rewrites_state: bool = False
    send_as_server: str | None = None
    transaction_id: TransactionId | None = None
    history_visibility: str = "shared"


@dataclass(frozen=True, slots=True)
class OutputOldRoomEvent:
    event: Mapping[str, Any]
    event_id: str
    room_version: str
    history_visibility: str = "shared"


@dataclass(frozen=True, slots=True)
class OutputNewInviteEvent:
    event: Mapping[str, Any]
    event_id: str
    room_version: str


@dataclass(frozen=True, slots=True)
class OutputRetireInviteEvent:
    event_id: str  # the invite being retired
    room_id: str
    target_user_id: str
    membership: str  # join, leave or ban
    retired_by_event_id: str | None = None


@dataclass(frozen=True, slots=True)
class OutputRedactedEvent:
    redacted_event_id: str
    redacted_because: Mapping[str, Any]  # the redaction event's PDU


OutputPayload = (
    OutputNewRoomEvent
    | OutputOldRoomEvent
    | OutputNewInviteEvent
    | OutputRetireInviteEvent
    | OutputRedactedEvent
)

_PAYLOAD_TYPES: dict[OutputType, type[Any]] = {
    OutputType.NEW_ROOM_EVENT: OutputNewRoomEvent,
    OutputType.OLD_ROOM_EVENT: OutputOldRoomEvent,
    OutputType.NEW_INVITE_EVENT: OutputNewInviteEvent,
    OutputType.RETIRE_INVITE_EVENT: OutputRetireInviteEvent,
    OutputType.REDACTED_EVENT: OutputRedactedEvent,
}
_TYPE_OF_PAYLOAD = {v: k for k, v in _PAYLOAD_TYPES.items()}


@dataclass(frozen=True, slots=True)
class OutputEvent:
    room_id: str
    payload: OutputPayload
    type: OutputType = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _TYPE_OF_PAYLOAD[type(self.payload)])
