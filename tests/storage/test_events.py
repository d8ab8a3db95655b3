"""Contract: events, flags, redactions, outbox, memberships, keys (both backends)."""

from __future__ import annotations

import pytest

from roomserver.core.redaction import redact
from roomserver.federation.keyring import KeyCache
from roomserver.ports import (
    AppliedRedaction,
    CorruptData,
    EventStatus,
    EventWrite,
    OutboxEntry,
    ServerKeyRecord,
    StateDelta,
    Storage,
)
from roomserver.storage import SqlStorage
from roomserver.storage.engine import Tx
from roomserver.testing.builder import RoomBuilder
from tests.storage.helpers import LinearRoom, make_event

ROOM = "!events:example.org"


async def test_round_trip_of_a_signed_room(store: SqlStorage) -> None:
    builder = RoomBuilder("10")
    builder.create_room("@alice:example.org")
    builder.join("@bob:example.org")
    builder.message("@bob:example.org", "hi")
    for event in builder.events.values():
        await store.persist(EventWrite(event=event, status=EventStatus.OUTLIER))
    stored = await store.get_events([*builder.events, "$missing"])
    assert set(stored) == set(builder.events)
    positions: list[int] = []
    for event_id, event in builder.events.items():
        got = stored[event_id]
        assert got.event.pdu == event.pdu
        assert got.event.room_version == "10"
        assert (got.outlier, got.rejected, got.soft_failed) == (True, False, False)
        assert got.state_snapshot is None
        assert got.stream_position is not None
        positions.append(got.stream_position)
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)


async def test_flags_round_trip(store: SqlStorage) -> None:
    rejected = make_event(ROOM, "rejected", event_type="m.room.topic", state_key="")
    soft = make_event(ROOM, "soft")
    await store.persist(
        EventWrite(event=rejected, status=EventStatus.OUTLIER, rejection_reason="not allowed")
    )
    await store.persist(
        EventWrite(
            event=soft, status=EventStatus.STATEFUL, soft_failed=True, state_before=StateDelta(None)
        )
    )
    got = await store.get_events([rejected.event_id, soft.event_id])
    assert got[rejected.event_id].rejected
    assert got[rejected.event_id].rejection_reason == "not allowed"
    assert got[rejected.event_id].outcome.value == "rejected"
    assert got[soft.event_id].soft_failed and not got[soft.event_id].outlier
    assert got[soft.event_id].outcome.value == "soft_failed"


async def test_outlier_gains_state_and_rejection_can_be_cleared_not_set(
    store: SqlStorage,
) -> None:
    room = LinearRoom(store, ROOM)
    await room.create()
    event = make_event(ROOM, "later", depth=10)
    await store.persist(EventWrite(event=event, status=EventStatus.OUTLIER, rejection_reason="x"))
    await store.persist(
        EventWrite(event=event, status=EventStatus.STATEFUL, state_before=StateDelta(room.current))
    )
    got = (await store.get_events([event.event_id]))[event.event_id]
    assert not got.outlier and not got.rejected and got.rejection_reason is None
    assert got.state_snapshot == room.current
    # Writing it again as rejected does not reject an accepted event.
    await store.persist(
        EventWrite(event=event, status=EventStatus.OUTLIER, rejection_reason="again")
    )
    again = (await store.get_events([event.event_id]))[event.event_id]
    assert not again.rejected and not again.outlier
    assert again.stream_position == got.stream_position


async def test_redaction_pending_then_applied(store: SqlStorage) -> None:
    room = LinearRoom(store, ROOM)
    await room.create()
    target = room.next_event("target", content={"body": "secret", "msgtype": "m.text"})
    await room.send(target)
    redaction = room.next_event(
        "redaction", event_type="m.room.redaction", content={"redacts": target.event_id}
    )
    await room.send(redaction, redaction_target=target.event_id)
    records = await store.redactions_for(target.event_id)
    assert [(r.redaction_id, r.validated) for r in records] == [(redaction.event_id, False)]
    assert await store.redactions_for(redaction.event_id) == records

    redacted_pdu = redact(target.pdu, "10")
    other = room.next_event("after")
    await room.send(
        other,
        apply_redaction=AppliedRedaction(target.event_id, redaction.event_id, redacted_pdu),
    )
    got = (await store.get_events([target.event_id]))[target.event_id]
    assert got.redacted_because == redaction.event_id
    assert got.event.content == {}
    assert got.event.pdu == redacted_pdu
    assert [r.validated for r in await store.redactions_for(target.event_id)] == [True]


async def test_outbox_pending_and_sent(store: SqlStorage) -> None:
    room = LinearRoom(store, ROOM)
    await room.create()
    entries = [OutboxEntry(f"msg-{i}", "new_room_event", f"payload {i}".encode()) for i in range(3)]
    await room.send(room.next_event("with outputs"), outbox=entries)
    pending = await store.pending_outbox(ROOM)
    assert [(p.msg_id, p.payload) for p in pending] == [(e.msg_id, e.payload) for e in entries]
    assert [p.sequence for p in pending] == sorted(p.sequence for p in pending)
    await store.mark_outbox_sent(ROOM, [pending[0].sequence, pending[1].sequence])
    assert [p.msg_id for p in await store.pending_outbox(ROOM)] == ["msg-2"]
    assert await store.pending_outbox("!other:example.org") == []


async def test_rooms_with_unsent_outbox(store: SqlStorage) -> None:
    assert await store.rooms_with_unsent_outbox() == []
    rooms = [LinearRoom(store, room_id) for room_id in ("!b:example.org", "!a:example.org")]
    quiet = LinearRoom(store, "!quiet:example.org")
    for room in [*rooms, quiet]:
        await room.create()
    for n, room in enumerate(rooms):
        entries = [OutboxEntry(f"{room.room_id}-{i}", "new_room_event", b"x") for i in range(2)]
        await room.send(room.next_event(f"out {n}"), outbox=entries)
    assert await store.rooms_with_unsent_outbox() == ["!a:example.org", "!b:example.org"]
    pending = await store.pending_outbox("!a:example.org")
    await store.mark_outbox_sent("!a:example.org", [pending[0].sequence])
    assert await store.rooms_with_unsent_outbox() == ["!a:example.org", "!b:example.org"]
    await store.mark_outbox_sent("!a:example.org", [pending[1].sequence])
    assert await store.rooms_with_unsent_outbox() == ["!b:example.org"]


async def test_memberships(store: SqlStorage) -> None:
    room = LinearRoom(store, ROOM)
    await room.create("@alice:example.org")
    for user in ("@bob:b.example", "@carol:b.example", "@dan:c.example"):
        await room.send(
            room.next_event(
                f"join {user}",
                event_type="m.room.member",
                state_key=user,
                content={"membership": "join"},
                sender=user,
            )
        )
    await room.send(
        room.next_event(
            "dan leaves",
            event_type="m.room.member",
            state_key="@dan:c.example",
            content={"membership": "leave"},
            sender="@dan:c.example",
        )
    )
    assert await store.joined_users(ROOM) == [
        "@alice:example.org",
        "@bob:b.example",
        "@carol:b.example",
    ]
    assert await store.joined_servers(ROOM) == ["b.example", "example.org"]
    assert await store.membership(ROOM, "@dan:c.example") == "leave"
    assert await store.membership(ROOM, "@bob:b.example") == "join"
    assert await store.membership(ROOM, "@nobody:example.org") is None


async def test_room_info_and_extremities(store: SqlStorage) -> None:
    assert await store.room(ROOM) is None
    room = LinearRoom(store, ROOM)
    await room.create()
    info = await store.room(ROOM)
    assert info is not None
    assert info.forward_extremities == tuple(room.latest)
    assert info.current_state == room.current
    assert info.version == 3
    assert info.last_sent_event_id == room.latest[0]
    assert await store.state_map(info.current_state) == room.state
    # An outlier for an unknown room does not make the room exist.
    await store.persist(
        EventWrite(event=make_event("!ghost:example.org", "x"), status=EventStatus.OUTLIER)
    )
    assert await store.room("!ghost:example.org") is None


async def test_referenced_as_prev(store: SqlStorage) -> None:
    room = LinearRoom(store, ROOM)
    await room.create()
    first, last = next(iter(room.results)), room.latest[0]
    assert await store.referenced_as_prev(ROOM, [first, last, "$unknown"]) == {first}


async def test_storage_satisfies_the_ports(store: SqlStorage) -> None:
    storage: Storage = store  # checked by mypy
    key_cache: KeyCache = store
    assert await storage.room(ROOM) is None
    assert await key_cache.get_server_keys("a.example") == {}


async def test_server_keys(store: SqlStorage) -> None:
    keys = [
        ServerKeyRecord("a.example", "ed25519:1", b"\x01" * 32, 1000),
        ServerKeyRecord("a.example", "ed25519:0", b"\x02" * 32, 500, expired_ts=400),
        ServerKeyRecord("b.example", "ed25519:1", b"\x03" * 32, 1000),
    ]
    await store.put_server_keys(keys)
    got = await store.get_server_keys("a.example")
    assert got == {"ed25519:1": keys[0], "ed25519:0": keys[1]}
    assert await store.get_server_keys("a.example", ["ed25519:0"]) == {"ed25519:0": keys[1]}
    newer = ServerKeyRecord("a.example", "ed25519:1", b"\x01" * 32, 2000)
    await store.put_server_keys([newer])
    assert (await store.get_server_keys("a.example"))["ed25519:1"] == newer
    assert await store.get_server_keys("c.example") == {}


async def test_corrupt_event_row_raises_corrupt_data(store: SqlStorage) -> None:
    event = make_event(ROOM, "to corrupt")
    await store.persist(EventWrite(event=event, status=EventStatus.OUTLIER))

    async def damage(tx: Tx) -> None:
        await tx.execute(
            "UPDATE events SET json = ? WHERE event_id = ?",
            b'{"type": "m.room.mess',
            event.event_id,
        )

    await store.engine.run(damage, write=True)
    with pytest.raises(CorruptData, match="cannot be decoded"):
        await store.get_events([event.event_id])


async def test_corrupt_room_and_index_rows_raise_corrupt_data(store: SqlStorage) -> None:
    room = LinearRoom(store, ROOM)
    await room.create()

    async def damage(tx: Tx) -> None:
        await tx.execute("UPDATE rooms SET forward_extremities = ? WHERE room_id = ?", "[1,", ROOM)
        await tx.execute("UPDATE auth_chain_positions SET reach = ?", b"\x01\x02\x03")

    await store.engine.run(damage, write=True)
    store.clear_caches()
    with pytest.raises(CorruptData, match="forward extremities"):
        await store.room(ROOM)
    with pytest.raises(CorruptData, match="reach"):
        await store.auth_chain(room.latest)


async def test_member_facts_read_from_the_stored_json(store: SqlStorage) -> None:
    """``member_facts`` agrees with the parsed events: a string membership as stored (escapes
    decoded), a membership of another type or missing as ``None``, the sender; an unknown ID
    is left out."""
    room = LinearRoom(store, ROOM)
    await room.create("@alice:example.org")
    contents: dict[str, dict[str, object]] = {
        "@bob:b.example": {"membership": "join"},
        "@carol:b.example": {"membership": "ban", "reason": "spam"},
        "@dan:c.example": {"membership": 'le\u00e4ve "x"', "reason": "nul \u0000"},
        "@erin:c.example": {"membership": 3},
        "@fay:c.example": {"membership": {"nested": "join"}},
        "@gus:c.example": {},
    }
    sent = []
    for user, content in contents.items():
        event = room.next_event(
            f"member {user}",
            event_type="m.room.member",
            state_key=user,
            content=content,
            sender="@alice:example.org" if user == "@carol:b.example" else user,
        )
        await room.send(event)
        sent.append(event)
    unknown = make_event(ROOM, "never stored").event_id
    facts = await store.member_facts([e.event_id for e in sent] + [unknown])
    assert facts == {e.event_id: (e.membership, e.sender) for e in sent}
    assert [facts[e.event_id].membership for e in sent] == [
        "join",
        "ban",
        'le\u00e4ve "x"',
        None,
        None,
        None,
    ]
    assert facts[sent[1].event_id].sender == "@alice:example.org"
    assert await store.member_facts([]) == {}


async def test_event_facts_are_the_stored_rows(store: SqlStorage) -> None:
    room = LinearRoom(store, ROOM)
    await room.create("@alice:example.org")
    message = room.next_event("hello")
    await room.send(message)
    topic = room.next_event("topic", event_type="m.room.topic", state_key="")
    await room.send(topic)
    rejected = make_event(ROOM, "bad topic", event_type="m.room.topic", state_key="", depth=9)
    await store.persist(
        EventWrite(event=rejected, status=EventStatus.OUTLIER, rejection_reason="not allowed")
    )
    unknown = make_event(ROOM, "never stored").event_id
    sent = [message, topic, rejected]
    facts = await store.event_facts([e.event_id for e in sent] + [unknown])
    assert facts == {
        message.event_id: (message.type, None, message.depth, False),
        topic.event_id: ("m.room.topic", "", topic.depth, False),
        rejected.event_id: ("m.room.topic", "", rejected.depth, True),
    }
    assert await store.event_facts([]) == {}
