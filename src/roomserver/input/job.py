"""One event to process, with how it relates to the DAG (shared by gather, fetch and decide)."""

from __future__ import annotations

from dataclasses import dataclass

from roomserver.api import Kind, TransactionId
from roomserver.core.decide import Role, is_create
from roomserver.core.ids import EventId, ServerName
from roomserver.core.pdu import Event

_ROLES = {Kind.NEW: Role.NEW, Kind.OLD: Role.OLD, Kind.OUTLIER: Role.OUTLIER}


@dataclass(frozen=True, slots=True)
class Job:
    """One event to process: an input event, or one fetched on its behalf (``fetched``)."""

    event: Event
    kind: Kind
    origin: ServerName | None = None
    state_event_ids: tuple[EventId, ...] | None = None  # supplied state before the event
    rewrites_state: bool = False  # NEW with caller-supplied state
    send_as_server: ServerName | None = None
    transaction_id: TransactionId | None = None
    fetched: bool = False  # fetched by this pipeline: never fetches prev events itself
    # Not stored when its processing began: storage writes its state before as given (a
    # stored event keeps its row's snapshot).
    fresh: bool = False

    @property
    def is_create(self) -> bool:
        return is_create(self.event)

    @property
    def role(self) -> Role:
        return _ROLES[self.kind]
