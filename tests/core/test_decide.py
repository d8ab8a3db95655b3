"""Table tests of the pure decide step (``core/decide.py``).

A batch is decided here the way the input pipeline decides it: each event's checks run over
the ``RoomView`` the decisions before it left (for a linear DAG the state before an event is
the view's state), and each decision gives the view the next event sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from roomserver.core.decide import (
    Decision,
    EventFacts,
    OutputKind,
    Rejection,
    RejectionKind,
    Role,
    RoomView,
    StateChange,
    Verdict,
    against_auth_events,
    against_state_before,
    decide,
    needs_soft_fail_check,
    parse_rejection,
    soft_fail_reason,
    updates_room,
)
from roomserver.core.pdu import Event
from roomserver.core.state_keys import StateKey
from roomserver.testing.builder import RoomBuilder

ALICE = "@alice:example.org"
BOB = "@bob:remote.test"
TOPIC: StateKey = ("m.room.topic", "")


# -- rejection kinds and the stored reason strings ---------------------------------------------
# (stored reason as written before the kinds existed, kind, waits for data, rejected for stateres)
STORED = [
    (
        "missing auth events ['$a', '$b']: m.room.member: sender not in room (rule 4.4)",
        RejectionKind.MISSING_AUTH_EVENTS,
        True,
        True,
    ),
    (
        "missing prev events ['$p'] could not be obtained",
        RejectionKind.MISSING_PREV_EVENTS,
        True,
        True,
    ),
    (
        "not allowed by the state before the event: m.room.message: sender not in room (rule 5)",
        RejectionKind.STATE_BEFORE,
        False,
        False,
    ),
    ("prev event $x is in another room", RejectionKind.PREV_IN_OTHER_ROOM, False, True),
    ("m.room.member: sender is banned (rule 4.3.3)", RejectionKind.AUTH_EVENTS, False, True),
    ("auth event $c is rejected", RejectionKind.AUTH_EVENTS, False, True),
    ("", RejectionKind.AUTH_EVENTS, False, True),
    (None, RejectionKind.AUTH_EVENTS, False, True),
]


@pytest.mark.parametrize(("reason", "kind", "waits", "for_stateres"), STORED)
def test_stored_reasons_are_classified(
    reason: str | None, kind: RejectionKind, waits: bool, for_stateres: bool
) -> None:
    parsed = parse_rejection(reason)
    assert parsed.kind is kind
    assert parsed.reason == (reason or "")  # shown as stored
    assert parsed.kind.waits_for_data is waits
    assert parsed.kind.rejected_for_state_resolution is for_stateres


@pytest.mark.parametrize(
    ("rejection", "reason"),
    [
        (
            Rejection.missing_auth_events({"$b", "$a"}, "rule says no"),
            "missing auth events ['$a', '$b']: rule says no",
        ),
        (
            Rejection.missing_prev_events(["$q", "$p"]),
            "missing prev events ['$p', '$q'] could not be obtained",
        ),
        (
            Rejection.by_state_before("rule says no"),
            "not allowed by the state before the event: rule says no",
        ),
        (Rejection.prev_in_other_room("$x"), "prev event $x is in another room"),
        (Rejection.by_auth_events("rule says no"), "rule says no"),
    ],
)
def test_reasons_are_written_as_before_and_read_back(rejection: Rejection, reason: str) -> None:
    assert rejection.reason == reason
    assert parse_rejection(rejection.reason) == rejection


# -- a batch, decided in order -------------------------------------------------------------------
@dataclass
class Room:
    """A builder's room and the view after its setup events (all accepted)."""

    builder: RoomBuilder
    view: RoomView
    events: dict[str, Event] = field(default_factory=dict)

    def state_events(self, state: dict[StateKey, str]) -> dict[StateKey, Event]:
        return {k: self.builder.events[v] for k, v in state.items()}


def new_room(*, join_bob: bool = True) -> Room:
    builder = RoomBuilder("10")
    setup = builder.create_room(ALICE)
    if join_bob:
        setup.append(builder.join(BOB))
    view = RoomView(
        forward_extremities=(setup[-1].event_id,),
        state=dict(builder.state),
        last_sent_event_id=setup[-1].event_id,
    )
    return Room(builder, view)


def decide_linear(
    room: Room, event: Event, *, role: Role = Role.NEW, cited: frozenset[str] = frozenset()
) -> Decision:
    """The checks and decision of ``event`` whose state before is the view's state (its prev
    events are the view's extremities)."""
    view = room.view
    auth = [room.builder.events[a] for a in event.auth_event_ids if a in room.builder.events]
    rejection = against_auth_events(event, auth)
    before = room.state_events(dict(view.state)) if role is not Role.OUTLIER else None
    rejection = against_state_before(event, before, role=role, prior=rejection)
    soft = None
    if needs_soft_fail_check(event, role=role, rejection=rejection, rewrites_state=False):
        current = room.state_events(dict(view.state))
        if set(event.prev_event_ids) != set(view.forward_extremities):
            soft = soft_fail_reason(event, current)
    facts = EventFacts(
        event=event,
        role=role,
        state_known=before is not None,
        rejection=rejection,
        soft_fail_reason=soft,
        cited=cited,
    )
    decision = decide(view, facts)
    room.view = decision.view
    return decision


def run_batch(room: Room, events: Sequence[Event]) -> list[Decision]:
    return [decide_linear(room, e) for e in events]


def test_rejected_in_the_middle_of_a_batch_is_not_seen_by_later_events() -> None:
    room = new_room(join_bob=False)
    b = room.builder
    first = b.send("m.room.topic", ALICE, {"topic": "one"}, state_key="")
    # Bob is not in the room: his topic is rejected; the builder must not build on it.
    intruder = b.add(
        b.make_pdu("m.room.topic", BOB, {"topic": "spam"}, state_key=""), update_state=False
    )
    third = b.send("m.room.topic", ALICE, {"topic": "three"}, state_key="")
    assert third.prev_event_ids == (first.event_id,)
    d1, d2, d3 = run_batch(room, [first, intruder, third])
    assert d1.verdict is Verdict.ACCEPTED
    assert d2.verdict is Verdict.REJECTED
    assert d2.rejection is not None and d2.rejection.kind is RejectionKind.AUTH_EVENTS
    assert d2.outputs == () and d2.forward_extremities is None and d2.state_change is None
    assert d2.view == d1.view  # the next event sees the room without it
    assert d3.verdict is Verdict.ACCEPTED
    # The state before the third event is the first topic, never the rejected one.
    assert d3.state_change == StateChange({TOPIC: third.event_id}, {TOPIC: first.event_id})
    assert d3.forward_extremities == (third.event_id,)
    assert d3.view.state[TOPIC] == third.event_id


def test_rejected_event_does_not_become_an_extremity() -> None:
    room = new_room(join_bob=False)
    b = room.builder
    before = room.view
    intruder = b.add(b.make_pdu("m.room.message", BOB, {"body": "hi"}), update_state=False)
    decision = decide_linear(room, intruder)
    assert decision.verdict is Verdict.REJECTED
    assert decision.view.forward_extremities == before.forward_extremities
    assert intruder.event_id not in decision.view.forward_extremities
    assert not updates_room(Role.NEW, decision.rejection, None, state_known=True)


def test_state_event_changes_current_state() -> None:
    room = new_room()
    b = room.builder
    old_rules = room.view.state[("m.room.join_rules", "")]
    rules = b.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, state_key="")
    message = b.message(ALICE)
    d_rules, d_message = run_batch(room, [rules, message])
    key = ("m.room.join_rules", "")
    assert d_rules.state_change == StateChange({key: rules.event_id}, {key: old_rules})
    assert d_rules.outputs == (OutputKind.NEW_ROOM_EVENT,)
    assert d_message.state_change == StateChange({}, {})  # a message changes no state
    assert d_message.view.state[key] == rules.event_id
    assert d_message.view.last_sent_event_id == message.event_id


def test_soft_failed_event_leaves_the_room_as_it_was() -> None:
    room = new_room()
    b = room.builder
    fork = room.view.forward_extremities[0]
    ban = b.member(ALICE, BOB, "ban")
    # Bob speaks on the branch before his ban: allowed by the state before it, not by current.
    late = b.add(b.make_pdu("m.room.message", BOB, {"body": "hi"}, prev_events=[fork]))
    (d_ban,) = run_batch(room, [ban])
    before = room.view
    state_before = room.state_events({**before.state, ("m.room.member", BOB): _join_of(room)})
    rejection = against_state_before(late, state_before, role=Role.NEW)
    assert rejection is None  # passes against the state before it
    assert needs_soft_fail_check(late, role=Role.NEW, rejection=None, rewrites_state=False)
    soft = soft_fail_reason(late, room.state_events(dict(before.state)))
    assert soft is not None
    decision = decide(before, EventFacts(late, Role.NEW, state_known=True, soft_fail_reason=soft))
    assert decision.verdict is Verdict.SOFT_FAILED and decision.reason == soft
    assert decision.outputs == () and decision.forward_extremities is None
    assert decision.with_state
    assert decision.view == before
    assert d_ban.verdict is Verdict.ACCEPTED


def _join_of(room: Room) -> str:
    joins = [
        e.event_id
        for e in room.builder.events.values()
        if e.type == "m.room.member" and e.state_key == BOB and e.membership == "join"
    ]
    return joins[-1]


def test_outlier_is_stored_without_state_and_changes_nothing() -> None:
    room = new_room()
    message = room.builder.message(BOB)
    before = room.view
    decision = decide_linear(room, message, role=Role.OUTLIER)
    assert decision.verdict is Verdict.ACCEPTED
    assert not decision.with_state
    assert decision.outputs == () and decision.state_change is None
    assert decision.view == before


def test_old_event_emits_old_room_event_and_keeps_the_room() -> None:
    room = new_room()
    message = room.builder.message(BOB)
    before = room.view
    decision = decide_linear(room, message, role=Role.OLD)
    assert decision.outputs == (OutputKind.OLD_ROOM_EVENT,)
    assert decision.forward_extremities is None and decision.view == before


def test_has_state_resets_extremities_and_resolves_current_state() -> None:
    room = new_room()
    b = room.builder
    topic = b.send("m.room.topic", ALICE, {"topic": "x"}, state_key="")
    facts = EventFacts(topic, Role.NEW, state_known=True, rewrites_state=True)
    assert not needs_soft_fail_check(topic, role=Role.NEW, rejection=None, rewrites_state=True)
    decision = decide(room.view, facts)
    assert decision.forward_extremities == (topic.event_id,)
    assert decision.state_change == StateChange({}, {}, resolve=True)
    assert decision.outputs == (OutputKind.NEW_ROOM_EVENT,)


def test_fork_resolves_and_keeps_the_other_extremity() -> None:
    room = new_room()
    b = room.builder
    base = room.view.forward_extremities[0]
    a = b.send("m.room.topic", ALICE, {"topic": "A"}, state_key="")
    side = b.send("m.room.name", ALICE, {"name": "B"}, state_key="", prev_events=[base])
    (d_a,) = run_batch(room, [a])
    decision = decide(room.view, EventFacts(side, Role.NEW, state_known=True))
    assert decision.forward_extremities == tuple(sorted([a.event_id, side.event_id]))
    assert decision.state_change is not None and decision.state_change.resolve
    assert d_a.state_change is not None and not d_a.state_change.resolve


def test_duplicate_changes_nothing() -> None:
    room = new_room()
    topic = room.builder.send("m.room.topic", ALICE, {"topic": "again"}, state_key="")
    before = room.view
    (first,) = run_batch(room, [topic])
    # Decided again (a redelivery) over a current state that already names it: no change.
    seen = RoomView(before.forward_extremities, first.view.state, before.last_sent_event_id)
    again = decide(seen, EventFacts(topic, Role.NEW, state_known=True))
    assert again.state_change == StateChange({}, {})
    assert again.forward_extremities == (topic.event_id,)
    # Already cited by an event of the DAG (it arrived late): the extremities stay.
    later = RoomView(("$later",), first.view.state, "$later")
    late = decide(
        later, EventFacts(topic, Role.NEW, state_known=True, cited=frozenset({topic.event_id}))
    )
    assert late.forward_extremities == ("$later",)


def test_missing_prev_events_reject_only_new_events() -> None:
    room = new_room()
    message = room.builder.message(BOB)
    new = against_state_before(message, None, role=Role.NEW, missing_prevs=["$gone"])
    assert new == Rejection.missing_prev_events(["$gone"])
    assert against_state_before(message, None, role=Role.OLD, missing_prevs=["$gone"]) is None
    decision = decide(room.view, EventFacts(message, Role.NEW, state_known=False, rejection=new))
    assert decision.verdict is Verdict.REJECTED and not decision.with_state
    assert decision.reason == "missing prev events ['$gone'] could not be obtained"


def test_missing_auth_events_wait_and_the_first_rejection_wins() -> None:
    room = new_room()
    message = room.builder.message(BOB)
    auth = [room.builder.events[a] for a in message.auth_event_ids[:1]]  # only the create event
    rejection = against_auth_events(message, auth, missing=message.auth_event_ids[1:])
    assert rejection is not None and rejection.kind is RejectionKind.MISSING_AUTH_EVENTS
    assert rejection.kind.waits_for_data
    # Nothing missing, same auth events: rejected for good by them.
    rejected = against_auth_events(message, auth)
    assert rejected is not None and rejected.kind is RejectionKind.AUTH_EVENTS
    state = room.state_events(dict(room.view.state))
    assert against_state_before(message, state, role=Role.NEW, prior=rejection) == rejection
    other_room = against_state_before(message, state, role=Role.NEW, prev_in_other_room="$x")
    assert other_room == Rejection.prev_in_other_room("$x")
