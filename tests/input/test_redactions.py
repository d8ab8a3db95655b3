"""Redactions in both arrival orders, and redactions that may not be applied."""

from __future__ import annotations

from roomserver.api import Outcome
from roomserver.core.pdu import Event
from roomserver.testing.builder import RoomBuilder
from tests.input.helpers import ALICE, BOB, CAROL, HarnessFactory, new_room


async def test_redaction_after_target(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    target = builder.message(BOB, "secret")
    redaction = builder.send(
        "m.room.redaction", ALICE, {"reason": "spam"}, extra={"redacts": target.event_id}
    )
    h = await harness(builder)
    await h.accept_all([*events, target, redaction])
    redacted = h.publisher.outputs("redacted_event")
    assert len(redacted) == 1
    assert redacted[0].redacted_event_id == target.event_id
    assert redacted[0].redacted_because["content"] == {"reason": "spam"}
    stored = await h.stored(target.event_id)
    assert stored.event.content == {}
    assert stored.event.pdu["unsigned"]["redacted_because"]["type"] == "m.room.redaction"
    assert stored.redacted_because == redaction.event_id
    # Redelivery of the redaction: no second output.
    assert (await h.submit(redaction)).outcome is Outcome.ACCEPTED
    assert len(h.publisher.outputs("redacted_event")) == 1


async def test_redaction_before_target(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events.append(builder.join(BOB))
    fork = events[-1].event_id
    target = builder.send("m.room.message", BOB, {"body": "secret"}, prev_events=[fork])
    redaction = builder.send(
        "m.room.redaction",
        ALICE,
        {},
        extra={"redacts": target.event_id},
        prev_events=[fork],
    )
    h = await harness(builder)
    await h.accept_all([*events, redaction])
    assert h.publisher.outputs("redacted_event") == []
    await h.accept_all([target])
    redacted = h.publisher.outputs("redacted_event")
    assert [r.redacted_event_id for r in redacted] == [target.event_id]
    assert (await h.stored(target.event_id)).event.content == {}
    assert await h.extremities() == {redaction.event_id, target.event_id}


async def test_redaction_without_power_is_not_applied(harness: HarnessFactory) -> None:
    builder, events = new_room()
    events += [builder.join(BOB), builder.join(CAROL)]
    target = builder.message(CAROL, "mine")
    # Bob (another server, power 0) may send a redaction, but it may not be applied.
    redaction = builder.send("m.room.redaction", BOB, {}, extra={"redacts": target.event_id})
    h = await harness(builder)
    await h.accept_all([*events, target, redaction])
    assert h.publisher.outputs("redacted_event") == []
    assert (await h.stored(target.event_id)).event.content["body"] == "mine"


async def test_same_server_redaction_is_applied_v11(harness: HarnessFactory) -> None:
    builder, events = new_room("11")
    events.append(builder.join(CAROL))
    target = builder.message(CAROL, "mine")
    # Carol's own server: applied without the redact level. v11: redacts in content.
    redaction = builder.send("m.room.redaction", CAROL, {"redacts": target.event_id})
    h = await harness(builder)
    await h.accept_all([*events, target, redaction])
    assert [r.redacted_event_id for r in h.publisher.outputs("redacted_event")] == [target.event_id]


async def test_redaction_waits_for_a_target_rejected_for_missing_data(
    harness: HarnessFactory,
) -> None:
    """A target rejected for missing data is not redacted (a rejected event never is); the
    redaction stays pending, and is applied once the target is processed again and accepted.
    A rejected or soft-failed redaction records nothing, so it is never applied later."""
    builder, events = new_room()
    join = builder.join(BOB)
    fork = join.event_id
    target = builder.send("m.room.message", BOB, {"body": "secret"}, prev_events=[fork])
    redaction = builder.send(
        "m.room.redaction", ALICE, {}, extra={"redacts": target.event_id}, prev_events=[fork]
    )
    mallory_redaction = builder.send(
        "m.room.redaction", CAROL, {}, extra={"redacts": target.event_id}, prev_events=[fork]
    )
    h = await harness(builder)
    await h.accept_all(events)
    early = await h.submit(target)  # before Bob's join: missing auth events
    assert early.outcome is Outcome.REJECTED
    assert (early.reason or "").startswith("missing auth events")
    rejected = await h.submit(mallory_redaction)  # Carol never joined
    assert rejected.outcome is Outcome.REJECTED
    await h.accept_all([join, redaction])
    assert h.publisher.outputs("redacted_event") == []
    assert (await h.stored(target.event_id)).redacted_because is None
    records = await h.store.redactions_for(target.event_id)
    assert [(r.redaction_id, r.validated) for r in records] == [(redaction.event_id, False)]

    await h.accept_all([target])
    redacted = h.publisher.outputs("redacted_event")
    assert [r.redacted_event_id for r in redacted] == [target.event_id]
    stored = await h.stored(target.event_id)
    assert stored.redacted_because == redaction.event_id and stored.event.content == {}
    assert await h.extremities() == {redaction.event_id, target.event_id}


def _soft_failed_target() -> tuple[RoomBuilder, list[Event], Event, Event]:
    """Bob joins while Alice bans him on another branch; his message on his branch is then
    soft-failed. Alice's redaction of it sits on her branch."""
    builder, events = new_room()
    create, alice, power, rules = events
    join = builder.join(BOB)
    ban = builder.send(
        "m.room.member",
        ALICE,
        {"membership": "ban"},
        state_key=BOB,
        prev_events=[rules.event_id],
        auth_events=[create.event_id, alice.event_id, power.event_id],
    )
    target = builder.add(
        builder.make_pdu(
            "m.room.message",
            BOB,
            {"body": "spam"},
            prev_events=[join.event_id],
            auth_events=[create.event_id, power.event_id, join.event_id],
        )
    )
    redaction = builder.add(
        builder.make_pdu(
            "m.room.redaction",
            ALICE,
            {},
            extra={"redacts": target.event_id},
            prev_events=[ban.event_id],
        )
    )
    return builder, [*events, join, ban], target, redaction


async def test_soft_failed_target_is_redacted_in_either_order(harness: HarnessFactory) -> None:
    """A soft-failed event is stored, so a redaction applies to it whichever arrives first;
    it was never announced, so neither is its redaction (no ``redacted_event``)."""
    stored = []
    builder, events, target, redaction = _soft_failed_target()
    for redaction_first in (False, True):
        h = await harness(builder)
        await h.accept_all(events)
        order = [redaction, target] if redaction_first else [target, redaction]
        outcomes = [(await h.submit(e)).outcome for e in order]
        expected = [Outcome.ACCEPTED, Outcome.SOFT_FAILED]
        assert outcomes == (expected if redaction_first else expected[::-1])
        found = await h.stored(target.event_id)
        assert found.soft_failed and found.redacted_because == redaction.event_id
        assert found.event.content == {}
        assert h.publisher.outputs("redacted_event") == []
        stored.append(found.event.pdu)
    assert stored[0] == stored[1]


async def test_soft_failed_redaction_records_nothing(harness: HarnessFactory) -> None:
    """Bob, banned in current state, redacts his own message on his branch: the redaction is
    soft-failed, so it records nothing and is never applied."""
    builder, events, target, _ = _soft_failed_target()
    create, power = events[0], events[2]
    join = events[4]
    own = builder.add(
        builder.make_pdu(
            "m.room.redaction",
            BOB,
            {},
            extra={"redacts": target.event_id},
            prev_events=[target.event_id],
            auth_events=[create.event_id, power.event_id, join.event_id],
        )
    )
    h = await harness(builder)
    await h.accept_all(events)
    assert [(await h.submit(e)).outcome for e in (target, own)] == [Outcome.SOFT_FAILED] * 2
    assert await h.store.redactions_for(target.event_id) == []
    assert (await h.stored(target.event_id)).redacted_because is None
