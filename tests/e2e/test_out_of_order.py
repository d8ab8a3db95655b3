"""Out-of-order delivery with federation off ends where in-order delivery ends.

Each test builds the same room script twice (two rooms, so two sets of event IDs), feeds one
room in order and the other out of order through the facade, and compares what the roomserver
holds afterwards by the script's names: each event's stored outcome, the forward extremities
and the current state. Events that are rejected, soft-failed or outliers must never make an
accepted event look as if it "arrived late" (already cited by a later event).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pytest

from roomserver.api import Kind, Outcome
from roomserver.app import Roomserver
from roomserver.core.decide import RejectionKind, parse_rejection
from roomserver.core.pdu import Event
from roomserver.query.queries import UnknownEvents
from roomserver.testing.builder import RoomBuilder
from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import ALICE, BOB, submit, trust

Script = Callable[[RoomBuilder], dict[str, Event]]
MISSING_AUTH = RejectionKind.MISSING_AUTH_EVENTS
MISSING_PREVS = RejectionKind.MISSING_PREV_EVENTS


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
    assert outcome is Outcome.REJECTED and parse_rejection(reason).kind is MISSING_AUTH

    room_id = late["create"].room_id
    with pytest.raises(UnknownEvents):  # rejected without state: an outlier
        await rs.state_after(room_id, [late["message"].event_id])

    [(_, outcome, reason)] = await _feed(rs, late, ["join"])
    assert outcome is Outcome.ACCEPTED, reason
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
    assert outcome is Outcome.REJECTED and parse_rejection(reason).kind is MISSING_PREVS
    [(_, outcome, _)] = await _feed(rs, late, ["message"])
    assert outcome is Outcome.ACCEPTED
    [(_, outcome, _)] = await _feed(rs, late, ["reply"])
    assert outcome is Outcome.ACCEPTED
    room_id = late["create"].room_id
    assert (await _held(rs, room_id, late))["latest"] == ["reply"]
    [(_, outcome, reason)] = await _feed(rs, late, ["topic"])
    assert outcome is Outcome.ACCEPTED, reason
    assert await _held(rs, room_id, late) == expected


async def test_outlier_citing_an_event_does_not_make_it_late(
    open_roomserver: OpenRoomserver,
) -> None:
    """The message arrives first as an outlier (as a fetched auth or state event would): it
    cites the join, but an outlier is not built upon, so the join still becomes the extremity;
    the message sent as NEW then gains state and ends as in order."""
    rs = await open_roomserver()
    in_order, late = await _two_rooms(rs, _first_message_before_join)
    setup = ["create", "alice", "power", "rules"]
    await _feed(rs, in_order, [*setup, "join", "message"])
    expected = await _held(rs, in_order["create"].room_id, in_order)

    await _feed(rs, late, setup)
    [(_, outcome, reason)] = await _feed(rs, late, ["message"], kind=Kind.OUTLIER)
    assert outcome is Outcome.REJECTED and parse_rejection(reason).kind is MISSING_AUTH
    [(_, outcome, _)] = await _feed(rs, late, ["join"])
    assert outcome is Outcome.ACCEPTED
    room_id = late["create"].room_id
    assert (await _held(rs, room_id, late))["latest"] == ["join"]
    # Now its auth events are known: as an outlier it is accepted, still without state.
    [(_, outcome, _)] = await _feed(rs, late, ["message"], kind=Kind.OUTLIER)
    assert outcome is Outcome.ACCEPTED
    held = await _held(rs, room_id, late)
    assert held["latest"] == ["join"] and held["outliers"] == ["message"]
    [(_, outcome, reason)] = await _feed(rs, late, ["message"])
    assert outcome is Outcome.ACCEPTED, reason
    assert await _held(rs, room_id, late) == expected


def _ban_races_join(b: RoomBuilder) -> dict[str, Event]:
    """Bob joins while Alice bans him on a concurrent branch; Bob then speaks on his branch."""
    create, alice, power, rules = b.create_room(ALICE)
    join = b.join(BOB)
    ban = b.send(
        "m.room.member",
        ALICE,
        {"membership": "ban"},
        state_key=BOB,
        prev_events=[rules.event_id],
        auth_events=[create.event_id, alice.event_id, power.event_id],
    )
    bob_speaks = b.add(
        b.make_pdu(
            "m.room.message",
            BOB,
            {"msgtype": "m.text", "body": "am I still here?"},
            prev_events=[join.event_id],
            auth_events=[create.event_id, power.event_id, join.event_id],
        )
    )
    bob_topic = b.add(  # Bob lacks the power to set state
        b.make_pdu(
            "m.room.topic",
            BOB,
            {"topic": "mine"},
            state_key="",
            prev_events=[join.event_id],
            auth_events=[create.event_id, power.event_id, join.event_id],
        )
    )
    after_ban = b.add(
        b.make_pdu("m.room.message", ALICE, {"body": "bye"}, prev_events=[ban.event_id])
    )
    merge = b.add(
        b.make_pdu(
            "m.room.message",
            ALICE,
            {"body": "merge"},
            prev_events=[bob_speaks.event_id, after_ban.event_id],
        )
    )
    return {
        "create": create,
        "alice": alice,
        "power": power,
        "rules": rules,
        "join": join,
        "ban": ban,
        "bob_speaks": bob_speaks,
        "bob_topic": bob_topic,
        "after_ban": after_ban,
        "merge": merge,
    }


async def test_event_cited_only_by_a_soft_failed_event_stays_an_extremity(
    open_roomserver: OpenRoomserver,
) -> None:
    """The soft-failed sibling. Bob's message on his join's branch is soft-failed (current
    state has him banned). It cites the join, but a soft-failed event is not built upon: the
    join stays an extremity when Alice writes on the ban's branch. An event that does cite the
    soft-failed message builds on the join through it: then the join stops being one."""
    rs = await open_roomserver()
    b = RoomBuilder("10")
    trust(rs, b)
    events = _ban_races_join(b)
    room_id = events["create"].room_id
    fed = await _feed(rs, events, ["create", "alice", "power", "rules", "join", "ban"])
    assert {o for _, o, _ in fed} == {Outcome.ACCEPTED}
    held = await _held(rs, room_id, events)
    assert held["latest"] == ["ban", "join"]
    assert held["state"][("m.room.member", BOB)] == "ban"

    [(_, outcome, _)] = await _feed(rs, events, ["bob_speaks"])
    assert outcome is Outcome.SOFT_FAILED
    assert (await _held(rs, room_id, events))["latest"] == ["ban", "join"]
    # The state after a soft-failed event is that of its branch (Bob still joined there).
    after = await rs.state_after(room_id, [events["bob_speaks"].event_id])
    assert after[("m.room.member", BOB)] == events["join"].event_id
    # A rejected state event with state: the state after it is the state before it.
    [(_, outcome, _)] = await _feed(rs, events, ["bob_topic"])
    assert outcome is Outcome.REJECTED
    stored = await rs.event(events["bob_topic"].event_id)
    assert stored is not None and not stored.outlier
    after = await rs.state_after(room_id, [events["bob_topic"].event_id])
    assert ("m.room.topic", "") not in after
    assert after == await rs.state_after(room_id, [events["join"].event_id])
    assert (await _held(rs, room_id, events))["latest"] == ["ban", "join"]

    [(_, outcome, _)] = await _feed(rs, events, ["after_ban"])
    assert outcome is Outcome.ACCEPTED
    held = await _held(rs, room_id, events)
    assert held["latest"] == ["after_ban", "join"]
    assert held["state"][("m.room.member", BOB)] == "ban"

    [(_, outcome, reason)] = await _feed(rs, events, ["merge"])
    assert outcome is Outcome.ACCEPTED, reason
    held = await _held(rs, room_id, events)
    assert held["latest"] == ["merge"]
    assert held["state"][("m.room.member", BOB)] == "ban"
    assert held["outcomes"]["bob_speaks"] is Outcome.SOFT_FAILED


async def test_citations_from_another_room_do_not_count(open_roomserver: OpenRoomserver) -> None:
    """Room scope: events of another room that cite this room's next event (a rejected one,
    and one accepted with supplied state) do not make it look late here."""
    rs = await open_roomserver()
    in_order, here = await _two_rooms(rs, _first_message_before_join)
    setup = ["create", "alice", "power", "rules"]
    await _feed(rs, in_order, [*setup, "join", "message"])
    expected = await _held(rs, in_order["create"].room_id, in_order)
    await _feed(rs, here, setup)

    elsewhere = RoomBuilder("10")
    trust(rs, elsewhere)
    base = _first_message_before_join(elsewhere)
    await _feed(rs, base, ["create", "alice", "power", "rules", "join"])
    cites = [here["join"].event_id, base["join"].event_id]
    rejected = elsewhere.add(
        elsewhere.make_pdu("m.room.message", BOB, {"body": "which room?"}, prev_events=cites)
    )
    [result] = (await submit(rs, [rejected.pdu])).results
    assert result.outcome is Outcome.REJECTED  # its prev is not known (in this room)
    state_ids = tuple(sorted(elsewhere.state.values()))
    accepted = elsewhere.add(
        elsewhere.make_pdu("m.room.message", BOB, {"body": "from the past"}, prev_events=cites)
    )
    [result] = (
        await submit(rs, [accepted.pdu], kind=Kind.OLD, has_state=True, state_event_ids=state_ids)
    ).results
    assert result.outcome is Outcome.ACCEPTED, result.reason
    stored = await rs.event(accepted.event_id)
    assert stored is not None and not stored.outlier

    [(_, outcome, _)] = await _feed(rs, here, ["join"])
    assert outcome is Outcome.ACCEPTED
    room_id = here["create"].room_id
    assert (await _held(rs, room_id, here))["latest"] == ["join"]
    await _feed(rs, here, ["message"])
    assert await _held(rs, room_id, here) == expected


async def test_event_citing_an_auth_event_rejected_for_missing_data_waits_for_it(
    open_roomserver: OpenRoomserver,
) -> None:
    """Bob's join cites power levels not received yet, and his message cites the join (and no
    other unknown event): both are rejected for missing auth events (the message too: its
    auth event is stored but was rejected only for missing data).
    Once the power levels arrive, the join and then the message sent again are accepted."""
    rs = await open_roomserver()

    def script(b: RoomBuilder) -> dict[str, Event]:
        create, alice, power, rules = b.create_room(ALICE)
        levels = b.send(
            "m.room.power_levels",
            ALICE,
            {"users": {ALICE: 100}, "users_default": 0, "state_default": 50, "ban": 50},
            state_key="",
        )
        join = b.join(BOB)
        # Citing the first power levels (allowed: an auth event of the right type): its only
        # unknown auth event is the join.
        message = b.add(
            b.make_pdu(
                "m.room.message",
                BOB,
                {"msgtype": "m.text", "body": "hi"},
                auth_events=[create.event_id, power.event_id, join.event_id],
            )
        )
        return {
            "create": create,
            "alice": alice,
            "power": power,
            "rules": rules,
            "levels": levels,
            "join": join,
            "message": message,
        }

    in_order, late = await _two_rooms(rs, script)
    setup = ["create", "alice", "power", "rules"]
    await _feed(rs, in_order, [*setup, "levels", "join", "message"])
    expected = await _held(rs, in_order["create"].room_id, in_order)
    assert expected["latest"] == ["message"]

    await _feed(rs, late, setup)
    for name in ("join", "message"):
        [(_, outcome, reason)] = await _feed(rs, late, [name])
        assert outcome is Outcome.REJECTED and parse_rejection(reason).kind is MISSING_AUTH, reason
    outcomes = await _feed(rs, late, ["levels", "join", "message"])
    assert [o for _, o, _ in outcomes] == [Outcome.ACCEPTED] * 3, outcomes
    assert await _held(rs, late["create"].room_id, late) == expected


async def test_message_before_join_in_one_request(open_roomserver: OpenRoomserver) -> None:
    """The same steps inside one request (one input message: its writes are buffered and
    committed together): the rejected message's buffered write does not hide the join."""
    rs = await open_roomserver()
    in_order, late = await _two_rooms(rs, _first_message_before_join)
    names = ["create", "alice", "power", "rules", "join", "message"]
    response = await submit(rs, [in_order[n].pdu for n in names])
    assert {r.outcome for r in response.results} == {Outcome.ACCEPTED}
    expected = await _held(rs, in_order["create"].room_id, in_order)

    first = ["create", "alice", "power", "rules", "message", "join"]
    response = await submit(rs, [late[n].pdu for n in first])
    outcomes = {n: r.outcome for n, r in zip(first, response.results, strict=True)}
    assert outcomes["message"] is Outcome.REJECTED and outcomes["join"] is Outcome.ACCEPTED
    room_id = late["create"].room_id
    assert (await _held(rs, room_id, late))["latest"] == ["join"]
    [result] = (await submit(rs, [late["message"].pdu])).results
    assert result.outcome is Outcome.ACCEPTED, result.reason
    assert await _held(rs, room_id, late) == expected
