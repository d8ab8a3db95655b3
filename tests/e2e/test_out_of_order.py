"""Out-of-order delivery with federation off ends where in-order delivery ends.

Each test builds the same room script twice (two rooms, so two sets of event IDs), feeds one
room in order and the other out of order through the facade, and compares what the roomserver
holds afterwards by the script's names: each event's stored outcome, the forward extremities
and the current state. Events that are rejected, soft-failed or outliers must never make an
accepted event look as if it "arrived late" (already cited by a later event).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from roomserver.api import Kind, Outcome
from roomserver.app import Roomserver
from roomserver.core.pdu import Event
from roomserver.input.errors import MISSING_AUTH, MISSING_PREVS
from roomserver.testing.builder import RoomBuilder
from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import ALICE, BOB, submit, trust

Script = Callable[[RoomBuilder], dict[str, Event]]


def _first_message_before_join(b: RoomBuilder) -> dict[str, Event]:
    """Alice's room; Bob joins and says something (his message cites his join)."""
    create, alice, power, rules = b.create_room(ALICE)
    join = b.join(BOB)
    message = b.message(BOB, "first words")
    return {
        "create": create,
        "alice": alice,
        "power": power,
        "rules": rules,
        "join": join,
        "message": message,
    }


async def _feed(
    rs: Roomserver, events: Mapping[str, Event], order: Sequence[str], *, kind: Kind = Kind.NEW
) -> list[tuple[str, Outcome, str | None]]:
    """Submit ``order`` (names) one request each; the outcomes by name."""
    out = []
    for name in order:
        result = (await submit(rs, [events[name].pdu], kind=kind)).results[0]
        assert result.event_id == events[name].event_id
        out.append((name, result.outcome, result.reason))
    return out


async def _held(rs: Roomserver, room_id: str, events: Mapping[str, Event]) -> dict[str, object]:
    """What the roomserver holds for the room, in the script's names."""
    name_of = {e.event_id: n for n, e in events.items()}
    stored = {n: await rs.event(e.event_id) for n, e in events.items()}
    return {
        "outcomes": {n: s.outcome if s is not None else None for n, s in stored.items()},
        "outliers": sorted(n for n, s in stored.items() if s is not None and s.outlier),
        "latest": sorted(name_of[e] for e in await rs.latest_events(room_id)),
        "state": {k: name_of[v] for k, v in (await rs.current_state(room_id)).items()},
    }


async def _two_rooms(rs: Roomserver, script: Script) -> tuple[dict[str, Event], dict[str, Event]]:
    first, second = RoomBuilder("10"), RoomBuilder("10")
    trust(rs, first, second)
    a, b = script(first), script(second)
    assert a.keys() == b.keys() and first.room_id != second.room_id
    return a, b


async def test_message_before_join_ends_as_in_order(open_roomserver: OpenRoomserver) -> None:
    """The three steps of the bug: a message before its sender's join is rejected for missing
    auth events; the join then becomes the extremity and enters current state; the message
    sent again is processed again and accepted, as it is in order."""
    rs = await open_roomserver()
    in_order, late = await _two_rooms(rs, _first_message_before_join)
    setup = ["create", "alice", "power", "rules"]
    await _feed(rs, in_order, [*setup, "join", "message"])
    expected = await _held(rs, in_order["create"].room_id, in_order)
    assert expected["latest"] == ["message"]

    assert {o for _, o, _ in await _feed(rs, late, setup)} == {Outcome.ACCEPTED}
    [(_, outcome, reason)] = await _feed(rs, late, ["message"])
    assert outcome is Outcome.REJECTED and reason is not None and reason.startswith(MISSING_AUTH)

    [(_, outcome, reason)] = await _feed(rs, late, ["join"])
    assert outcome is Outcome.ACCEPTED, reason
    room_id = late["create"].room_id
    after_join = await _held(rs, room_id, late)
    assert after_join["latest"] == ["join"]
    assert after_join["state"][("m.room.member", BOB)] == "join"

    [(_, outcome, reason)] = await _feed(rs, late, ["message"])
    assert outcome is Outcome.ACCEPTED, reason
    assert await _held(rs, room_id, late) == expected
    stored = await rs.event(late["message"].event_id)
    assert stored is not None and stored.rejection_reason is None and not stored.soft_failed


async def test_message_before_its_prev_is_rejected_then_accepted(
    open_roomserver: OpenRoomserver,
) -> None:
    """Rejected for missing prev events (its auth events are all there): the prev arrives, is
    an extremity, and the message sent again is accepted on top of it."""
    rs = await open_roomserver()

    def script(b: RoomBuilder) -> dict[str, Event]:
        events = _first_message_before_join(b)
        events["reply"] = b.message(ALICE, "welcome")
        events["topic"] = b.send("m.room.topic", ALICE, {"topic": "late"}, state_key="")
        return events

    in_order, late = await _two_rooms(rs, script)
    names = ["create", "alice", "power", "rules", "join", "message", "reply", "topic"]
    await _feed(rs, in_order, names)
    expected = await _held(rs, in_order["create"].room_id, in_order)
    assert expected["latest"] == ["topic"]

    await _feed(rs, late, names[:-3])
    [(_, outcome, reason)] = await _feed(rs, late, ["topic"])  # cites "reply", not stored
    assert outcome is Outcome.REJECTED and reason is not None and reason.startswith(MISSING_PREVS)
    [(_, outcome, _)] = await _feed(rs, late, ["message"])
    assert outcome is Outcome.ACCEPTED
    [(_, outcome, _)] = await _feed(rs, late, ["reply"])
    assert outcome is Outcome.ACCEPTED
    room_id = late["create"].room_id
    assert (await _held(rs, room_id, late))["latest"] == ["reply"]
    [(_, outcome, reason)] = await _feed(rs, late, ["topic"])
    assert outcome is Outcome.ACCEPTED, reason
    assert await _held(rs, room_id, late) == expected
