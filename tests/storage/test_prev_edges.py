"""Contract (both backends): what stored prev edges and event flags mean to the readers.

* ``referenced_as_prev(room_id, ids)`` counts a citation only by an event of that room stored
  with state, neither rejected nor soft-failed. Outliers, rejected and soft-failed events keep
  their edges (they may be processed again) but cite nothing as far as extremities go.
* An event rejected for missing data and written again is updated in place: one row, its
  edges once, the new outcome (cleared, or the new reason; the soft-failed flag), and a place in
  the auth chain index that covers the auth events it lacked the first time.
"""

from __future__ import annotations

from roomserver.ports import EventStatus, EventWrite, StateDelta
from roomserver.storage import SqlStorage
from tests.storage.helpers import LinearRoom, make_event

ROOM = "!edges:example.org"
OTHER = "!elsewhere:example.org"


async def _edges_of(store: SqlStorage, event_id: str) -> list[str]:
    async def fn(tx: object, _: object) -> list[str]:
        rows = await tx.fetch(  # type: ignore[attr-defined]
            "SELECT p.prev_event_id FROM prev_edges p JOIN events e ON e.event_nid = p.event_nid "
            "WHERE e.event_id = ? ORDER BY p.prev_event_id",
            event_id,
        )
        return [r[0] for r in rows]

    return await store._run(fn)  # type: ignore[arg-type]


async def _stateful(store: SqlStorage, room: LinearRoom, seed: str, **write: object) -> str:
    """Store an event citing the room's latest event, with state, without a room update."""
    event = make_event(ROOM, seed, prev=room.latest, depth=room.depth + 1)
    await store.persist(
        EventWrite(
            event=event,
            status=EventStatus.STATEFUL,
            state_before=StateDelta(room.current, {}),
            **write,  # type: ignore[arg-type]
        )
    )
    return event.event_id


async def test_only_accepted_events_with_state_of_the_room_cite(store: SqlStorage) -> None:
    room = LinearRoom(store, ROOM)
    await room.create()
    tip = room.latest[0]
    assert await store.referenced_as_prev(ROOM, [tip]) == set()

    outlier = make_event(ROOM, "outlier", prev=[tip], depth=room.depth + 1)
    await store.persist(EventWrite(event=outlier, status=EventStatus.OUTLIER))
    await _stateful(store, room, "rejected", rejection_reason="not allowed")
    await _stateful(store, room, "soft-failed", soft_failed=True)
    other_room = make_event(OTHER, "other room", prev=[tip], depth=1)
    await store.persist(
        EventWrite(event=other_room, status=EventStatus.STATEFUL, state_before=StateDelta(None, {}))
    )
    for seed in ("rejected", "soft-failed"):
        assert len(await _edges_of(store, make_event(ROOM, seed).event_id)) == 1  # kept
    assert await store.referenced_as_prev(ROOM, [tip]) == set()
    # Room scope: the event of the other room cites it there, not here.
    assert await store.referenced_as_prev(OTHER, [tip]) == {tip}
    assert (
        await store.read_for_input([], room_id=ROOM, referenced_ids=[tip], redactions_of=None)
    ).referenced == set()

    await _stateful(store, room, "accepted")
    assert await store.referenced_as_prev(ROOM, [tip, "$unknown"]) == {tip}
    reads = await store.read_for_input([], room_id=ROOM, referenced_ids=[tip], redactions_of=None)
    assert set(reads.referenced) == {tip}


async def test_rejected_for_missing_data_then_accepted_is_updated_in_place(
    store: SqlStorage,
) -> None:
    room = LinearRoom(store, ROOM)
    await room.create()
    tip = room.latest[0]
    late = make_event(ROOM, "late prev", prev=[tip], depth=room.depth + 1)
    event = make_event(ROOM, "early", prev=[late.event_id, tip], depth=room.depth + 2)
    first = await store.persist(
        EventWrite(
            event=event,
            status=EventStatus.OUTLIER,
            rejection_reason="missing prev events ['x'] could not be obtained",
        )
    )
    assert await store.referenced_as_prev(ROOM, [late.event_id, tip]) == set()

    # Rejected again, for another reason: the reason is replaced.
    await store.persist(
        EventWrite(event=event, status=EventStatus.OUTLIER, rejection_reason="missing auth events")
    )
    stored = (await store.get_events([event.event_id]))[event.event_id]
    assert stored.rejected and stored.rejection_reason == "missing auth events"

    await room.send(late)
    again = await store.persist(
        EventWrite(
            event=event, status=EventStatus.STATEFUL, state_before=StateDelta(room.current, {})
        )
    )
    assert again.stream_position == first.stream_position  # the same row
    stored = (await store.get_events([event.event_id]))[event.event_id]
    assert (stored.rejected, stored.rejection_reason, stored.outlier) == (False, None, False)
    assert stored.state_snapshot is not None
    assert await _edges_of(store, event.event_id) == sorted([late.event_id, tip])
    assert await store.referenced_as_prev(ROOM, [late.event_id, tip]) == {late.event_id, tip}


async def test_rejected_then_soft_failed_sets_the_flag(store: SqlStorage) -> None:
    room = LinearRoom(store, ROOM)
    await room.create()
    event = make_event(ROOM, "message", prev=room.latest, depth=room.depth + 1)
    delta = StateDelta(room.current, {})
    await store.persist(
        EventWrite(
            event=event,
            status=EventStatus.STATEFUL,
            state_before=delta,
            rejection_reason="missing auth events ['$join']: sender not joined",
        )
    )
    await store.persist(
        EventWrite(event=event, status=EventStatus.STATEFUL, state_before=delta, soft_failed=True)
    )
    stored = (await store.get_events([event.event_id]))[event.event_id]
    assert (stored.rejected, stored.soft_failed) == (False, True)
    assert await store.referenced_as_prev(ROOM, room.latest) == set()


async def test_state_event_lacking_auth_events_is_indexed_once_it_has_them(
    store: SqlStorage,
) -> None:
    """A state event stored rejected before its auth event, then written again once that
    auth event is stored: its auth chain (and that of events citing it) covers the auth event
    and the auth event's own ancestors."""
    room = LinearRoom(store, ROOM)
    await room.create()
    create, power = room.state[("m.room.create", "")], room.state[("m.room.power_levels", "")]
    bob = "@bob:example.org"
    rules = room.next_event("rules", event_type="m.room.join_rules", state_key="")
    join = make_event(
        ROOM,
        "bob joins",
        event_type="m.room.member",
        state_key=bob,
        sender=bob,
        content={"membership": "join"},
        prev=[rules.event_id],
        auth=[create, power, rules.event_id],
        depth=room.depth + 1,
    )
    await store.persist(
        EventWrite(event=join, status=EventStatus.OUTLIER, rejection_reason="missing auth events")
    )
    await room.send(rules)
    await store.persist(
        EventWrite(
            event=join, status=EventStatus.STATEFUL, state_before=StateDelta(room.current, {})
        )
    )
    expected = {rules.event_id, *await store.auth_chain([rules.event_id])}
    assert await store.auth_chain([join.event_id]) == expected
    topic = make_event(
        ROOM,
        "bob's topic",
        event_type="m.room.topic",
        state_key="",
        sender=bob,
        prev=[join.event_id],
        auth=[create, power, join.event_id],
        depth=room.depth + 2,
    )
    await store.persist(
        EventWrite(
            event=topic, status=EventStatus.STATEFUL, state_before=StateDelta(room.current, {})
        )
    )
    assert await store.auth_chain([topic.event_id]) == expected | {join.event_id}
    assert await store.auth_chain_difference([[topic.event_id], [rules.event_id]]) == {
        rules.event_id,
        join.event_id,
    }
    store.clear_caches()  # the same answers from the database alone
    assert await store.auth_chain([topic.event_id]) == expected | {join.event_id}
