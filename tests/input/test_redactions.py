"""Redactions in both arrival orders, and redactions that may not be applied."""

from __future__ import annotations

from roomserver.api import Outcome
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
