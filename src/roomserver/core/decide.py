"""The decision for one input event (pure): its outcome, the rule that rejected it, soft
failure, the new forward extremities, the change to current state and which outputs it emits.

The input pipeline gathers what an event needs (its auth events, the entries of the state
before it and of current state the rules read, which events stored events cite) and calls the
functions here in the order of the spec's checks; nothing here reads storage or awaits. Each
check runs once and its answer travels on as a value:

    against_auth_events (spec 7.4) ► against_state_before (7.5, with the DAG's own checks)
    ► soft_fail_reason (7.6, when ``needs_soft_fail_check``) ► decide: outcome, extremities
    (``core.dag``), current-state change, outputs and the ``RoomView`` the next event sees.

Rejection kinds are an Enum. Storage keeps a rejection as its reason string (what users and
outputs see), so ``parse_rejection`` classifies a stored reason again, for rows written before
the kinds existed too.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from roomserver.core.auth import check_auth_events, check_auth_rules, check_soft_fail
from roomserver.core.dag import new_forward_extremities
from roomserver.core.errors import Rejected, SoftFailed
from roomserver.core.ids import EventId
from roomserver.core.pdu import Event
from roomserver.core.state_keys import StateKey


class Role(enum.Enum):
    """How an input event relates to the room's DAG (the input ``Kind``)."""

    NEW = "new"  # the DAG grows with it: it may change extremities and current state
    OLD = "old"  # history (backfill): stored with state, never changes current state
    OUTLIER = "outlier"  # stored without state


class RejectionKind(enum.Enum):
    """Why an event was rejected. The value is how its reason string begins, where it has a
    fixed beginning (``AUTH_EVENTS`` reasons are the rule's own message)."""

    AUTH_EVENTS = ""  # spec 7.4: not allowed by the auth events it cites
    MISSING_AUTH_EVENTS = "missing auth events"  # some could not be obtained
    PREV_IN_OTHER_ROOM = "prev event"  # a prev event belongs to another room
    MISSING_PREV_EVENTS = "missing prev events"  # the state before it could not be known
    STATE_BEFORE = "not allowed by the state before the event"  # spec 7.5

    @property
    def waits_for_data(self) -> bool:
        """Rejected for lack of data: processed again when it comes back (we may know more
        then), and it does not count as held when asking other servers."""
        return self in (RejectionKind.MISSING_AUTH_EVENTS, RejectionKind.MISSING_PREV_EVENTS)

    @property
    def rejected_for_state_resolution(self) -> bool:
        """State resolution treats the event as rejected: it failed against its own auth
        events or the DAG, not merely against the state before it."""
        return self is not RejectionKind.STATE_BEFORE


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rejection: its ``kind`` and the ``reason`` stored with the event and reported."""

    kind: RejectionKind
    reason: str

    @classmethod
    def by_auth_events(cls, reason: str) -> Rejection:
        return cls(RejectionKind.AUTH_EVENTS, reason)

    @classmethod
    def missing_auth_events(cls, missing: Collection[str], reason: str) -> Rejection:
        return cls(
            RejectionKind.MISSING_AUTH_EVENTS,
            f"{RejectionKind.MISSING_AUTH_EVENTS.value} {sorted(missing)}: {reason}",
        )

    @classmethod
    def prev_in_other_room(cls, event_id: str) -> Rejection:
        return cls(RejectionKind.PREV_IN_OTHER_ROOM, f"prev event {event_id} is in another room")

    @classmethod
    def missing_prev_events(cls, missing: Collection[str]) -> Rejection:
        return cls(
            RejectionKind.MISSING_PREV_EVENTS,
            f"{RejectionKind.MISSING_PREV_EVENTS.value} {sorted(missing)} could not be obtained",
        )

    @classmethod
    def by_state_before(cls, reason: str) -> Rejection:
        return cls(RejectionKind.STATE_BEFORE, f"{RejectionKind.STATE_BEFORE.value}: {reason}")


def parse_rejection(reason: str | None) -> Rejection:
    """The rejection a stored reason string stands for (``None``: a rejection stored without a
    reason, counted as one by the auth events). Stored rows keep only the string; its fixed
    beginning tells the kind, as the constructors of ``Rejection`` write it."""
    text = reason or ""
    for kind in (
        RejectionKind.MISSING_AUTH_EVENTS,
        RejectionKind.MISSING_PREV_EVENTS,
        RejectionKind.STATE_BEFORE,
    ):
        if text.startswith(kind.value):
            return Rejection(kind, text)
    if text.startswith("prev event ") and text.endswith(" is in another room"):
        return Rejection(RejectionKind.PREV_IN_OTHER_ROOM, text)
    return Rejection(RejectionKind.AUTH_EVENTS, text)


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SOFT_FAILED = "soft_failed"


class OutputKind(enum.Enum):
    """The outputs the decision itself calls for (redactions and invites follow from what
    the event changes, once its write is known)."""

    NEW_ROOM_EVENT = "new_room_event"
    OLD_ROOM_EVENT = "old_room_event"


# -- the checks, in the spec's order -------------------------------------------------------------
def against_auth_events(
    event: Event,
    auth_events: Sequence[Event],
    *,
    rejected: Collection[str] = (),
    missing: Collection[str] = (),
) -> Rejection | None:
    """Spec 7.4: the event against the auth events it cites (``auth_events``: those that are
    stored; ``rejected``: which of them are rejected; ``missing``: the ones unknown, or
    rejected only for lack of data). A failure while some are missing waits for them."""
    try:
        check_auth_events(event, auth_events, rejected=rejected)
    except Rejected as exc:
        if missing and not is_create(event):
            return Rejection.missing_auth_events(missing, exc.reason)
        return Rejection.by_auth_events(exc.reason)
    return None


def against_state_before(
    event: Event,
    state_before: Mapping[StateKey, Event] | None,
    *,
    role: Role,
    prior: Rejection | None = None,
    prev_in_other_room: str | None = None,
    missing_prevs: Collection[str] = (),
) -> Rejection | None:
    """The first rejection of the event, in the order of the checks: ``prior`` (its auth
    events), a prev event of another room, a NEW event whose state before is unknown
    (``state_before`` None: its prevs could not be obtained), then spec 7.5, the rules against
    the needed entries of the state before it."""
    if prior is not None:
        return prior
    if prev_in_other_room is not None:
        return Rejection.prev_in_other_room(prev_in_other_room)
    if state_before is None:
        return Rejection.missing_prev_events(missing_prevs) if role is Role.NEW else None
    if is_create(event):
        return None
    try:
        check_auth_rules(event, state_before)
    except Rejected as exc:
        return Rejection.by_state_before(exc.reason)
    return None


def needs_soft_fail_check(
    event: Event, *, role: Role, rejection: Rejection | None, rewrites_state: bool
) -> bool:
    """Spec 7.6 applies to NEW events that passed, unless they set the room's state (a create
    event, or state supplied by the caller)."""
    return role is Role.NEW and rejection is None and not is_create(event) and not rewrites_state


def soft_fail_reason(event: Event, current: Mapping[StateKey, Event] | None) -> str | None:
    """Spec 7.6: the rules against the needed entries of current state (``None``: nothing to
    check against); the reason if they fail."""
    if current is None:
        return None
    try:
        check_soft_fail(event, current)
    except SoftFailed as exc:
        return exc.reason
    return None


# -- the decision ---------------------------------------------------------------------------------
# The values built per event are NamedTuples: immutable like frozen dataclasses, and several
# times cheaper to build (the pipeline builds a few per event).
_NO_STATE: Mapping[StateKey, EventId] = MappingProxyType({})


class RoomView(NamedTuple):
    """The room as the next event of a batch sees it: decisions read it and return the next.

    ``state``: the entries of current state the decisions look at (the pipeline gathers the
    ones an event needs; it may hold the whole state)."""

    forward_extremities: tuple[EventId, ...] = ()
    state: Mapping[StateKey, EventId] = _NO_STATE
    last_sent_event_id: str | None = None
    has_current_state: bool = True  # False before the room's first accepted NEW event


class EventFacts(NamedTuple):
    """What was gathered and checked for one event: the input of ``decide``.

    ``state_known``: the state before it is known (stored with state, else as an outlier).
    ``superseded``: what it builds on besides its prev events (events reached through failed
    prevs, prevs cited by events fetched for its gap); ``cited``: which of
    ``core.dag.extremities_to_check`` events stored with state cite as a prev. Both matter
    only when ``updates_room`` holds (the pipeline gathers them only then)."""

    event: Event
    role: Role
    state_known: bool
    rejection: Rejection | None = None
    soft_fail_reason: str | None = None
    rewrites_state: bool = False
    superseded: frozenset[str] = frozenset()
    cited: frozenset[str] = frozenset()


class StateChange(NamedTuple):
    """The change to current state: ``changes`` (key -> event ID) on the fast path; with
    ``resolve`` the new current state must be resolved from the states after
    ``Decision.forward_extremities`` (``changes`` is then empty)."""

    changes: Mapping[StateKey, EventId]
    replaced: Mapping[StateKey, EventId]  # what the changed keys held before
    resolve: bool = False


class Decision(NamedTuple):
    verdict: Verdict
    rejection: Rejection | None
    soft_fail_reason: str | None
    with_state: bool  # stored with its state before (else as an outlier)
    outputs: tuple[OutputKind, ...]
    forward_extremities: tuple[EventId, ...] | None  # None: unchanged
    state_change: StateChange | None  # None: current state unchanged
    before: RoomView  # the room the decision saw
    event_id: EventId  # the event decided

    @property
    def view(self) -> RoomView:
        """What the next event sees (made when asked: the pipeline reads the room row)."""
        change = self.state_change
        if change is None or self.forward_extremities is None:
            return self.before
        state = {} if change.resolve else {**self.before.state, **change.changes}
        # Resolved: known once resolved (the pipeline gathers what the next event needs).
        return RoomView(self.forward_extremities, state, self.event_id)

    @property
    def reason(self) -> str | None:
        """The reason reported for the outcome."""
        if self.rejection is not None:
            return self.rejection.reason
        return self.soft_fail_reason


def updates_room(
    role: Role, rejection: Rejection | None, soft_fail: str | None, *, state_known: bool
) -> bool:
    """Whether the event moves the room on (extremities, current state, ``new_room_event``):
    an accepted NEW event whose state before is known."""
    return role is Role.NEW and rejection is None and soft_fail is None and state_known


def decide(view: RoomView, facts: EventFacts) -> Decision:
    """The decision for one event, given ``view`` (the room before it) and ``facts``."""
    if facts.rejection is not None:
        return _unchanged(view, facts, Verdict.REJECTED)
    if facts.soft_fail_reason is not None:
        return _unchanged(view, facts, Verdict.SOFT_FAILED)
    if facts.role is Role.OLD:
        return _unchanged(view, facts, Verdict.ACCEPTED, (OutputKind.OLD_ROOM_EVENT,))
    if not updates_room(facts.role, None, None, state_known=facts.state_known):
        return _unchanged(view, facts, Verdict.ACCEPTED)
    event = facts.event
    if facts.rewrites_state:
        extremities: tuple[EventId, ...] = (event.event_id,)
    else:
        superseded = set(event.prev_event_ids) | facts.superseded
        extremities = new_forward_extremities(
            view.forward_extremities, event.event_id, superseded, facts.cited
        )
    fast = (
        view.has_current_state
        and not facts.rewrites_state
        and extremities == (event.event_id,)
        and set(event.prev_event_ids) == set(view.forward_extremities)
    )
    change = _fast_state_change(event, view.state) if fast else StateChange({}, {}, resolve=True)
    return Decision(
        verdict=Verdict.ACCEPTED,
        rejection=None,
        soft_fail_reason=None,
        with_state=True,
        outputs=_NEW_ROOM_EVENT,
        forward_extremities=extremities,
        state_change=change,
        before=view,
        event_id=event.event_id,
    )


_NEW_ROOM_EVENT = (OutputKind.NEW_ROOM_EVENT,)


def _unchanged(
    view: RoomView, facts: EventFacts, verdict: Verdict, outputs: tuple[OutputKind, ...] = ()
) -> Decision:
    """A decision that leaves the room as it was: the next event sees ``view``."""
    return Decision(
        verdict=verdict,
        rejection=facts.rejection,
        soft_fail_reason=facts.soft_fail_reason if facts.rejection is None else None,
        with_state=facts.state_known,
        outputs=outputs,
        forward_extremities=None,
        state_change=None,
        before=view,
        event_id=facts.event.event_id,
    )


def _fast_state_change(event: Event, state: Mapping[StateKey, EventId]) -> StateChange:
    """Prev events == old extremities: current state is the state before the event, so the
    new one differs from it by the event alone (nothing when it is no state event, or the
    entry already names it)."""
    if event.state_key is None:
        return StateChange({}, {})
    key = event.state_tuple
    old = state.get(key)
    if old == event.event_id:
        return StateChange({}, {})
    return StateChange({key: event.event_id}, {key: old} if old is not None else {})


def is_create(event: Event) -> bool:
    return event.type == "m.room.create" and event.state_key == ""
