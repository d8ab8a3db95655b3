"""A ``has_state`` join's state read from rows (``supplied_state`` via ``event_facts``), and the
membership changes of a ``has_state`` join (``LatestEvents._membership_changes``), read
through ``member_facts`` without parsing the member events, agree with the changes built from
the parsed events: order, membership, event, sender and previous event."""

from __future__ import annotations

from typing import Any

import pytest

from roomserver.api import Kind, Outcome
from roomserver.core.pdu import Event
from roomserver.input.errors import InputInvalid
from roomserver.input.latest import MEMBER, LatestEvents, _StateDiff
from roomserver.input.state import supplied_state
from roomserver.input.store import EventCache, changes_between
from roomserver.ports import MembershipChange
from tests.input.helpers import ALICE, BOB, CAROL, SERVER, HarnessFactory, new_room

DAN = "@dan:remote.test"
ERIN = "@erin:other.test"
FRANK = "@frank:remote.test"
GINA = "@gina:other.test"

Changes = list[tuple[MembershipChange, str | None]]


async def _parsed_way(store: Any, event: Event, diff: _StateDiff) -> Changes:
    """The changes built from whole parsed events (how they were built before
    ``member_facts``), as the reference."""
    keys = sorted({k for k in (*diff.removed, *diff.added) if k[0] == MEMBER})
    loaded = await store.get_events([diff.added[k] for k in keys if k in diff.added])
    out: Changes = []
    for key in keys:
        previous = diff.removed.get(key)
        added_id = diff.added.get(key)
        if added_id is None:
            assert previous is not None
            out.append((MembershipChange(key[1], "leave", previous, key[1]), previous))
            continue
        member = event if added_id == event.event_id else loaded[added_id].event
        change = MembershipChange(key[1], member.membership or "leave", added_id, member.sender)
        out.append((change, previous))
    return out


@pytest.mark.interpreted  # watches LatestEvents._membership_changes
async def test_has_state_join_membership_changes_match_the_parsed_events(
    harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Event, _StateDiff, Changes]] = []
    real = LatestEvents._membership_changes

    async def recording(self: LatestEvents, event: Event, diff: _StateDiff) -> Changes:
        out = await real(self, event, diff)
        seen.append((event, diff, out))
        return out

    monkeypatch.setattr(LatestEvents, "_membership_changes", recording)

    builder, events = new_room()
    events += [builder.join(BOB), builder.join(DAN)]
    early_state = dict(builder.state)  # before the invite, the ban, erin's join and leave
    events += [
        builder.member(ALICE, CAROL, "invite"),
        builder.member(ALICE, DAN, "ban", reason="spam"),
        builder.join(ERIN),
        builder.member(ERIN, ERIN, "leave"),
    ]
    h = await harness(builder)
    await h.accept_all(events)
    # A join whose state is the early state: a state reset (carol's invite and erin's leave
    # vanish from the current state, dan is joined again).
    reset = builder.join(FRANK)
    result = await h.submit(
        reset, Kind.NEW, has_state=True, state_event_ids=tuple(early_state.values())
    )
    assert result.outcome is Outcome.ACCEPTED, result
    # Then a join with the full state again: the invite, the ban and the leave come back.
    full = dict(builder.state)
    gina = builder.join(GINA)
    result = await h.submit(gina, Kind.NEW, has_state=True, state_event_ids=tuple(full.values()))
    assert result.outcome is Outcome.ACCEPTED, result

    joins = [(e, d, c) for e, d, c in seen if e.event_id in (reset.event_id, gina.event_id)]
    assert [e.event_id for e, _, _ in joins] == [reset.event_id, gina.event_id]
    by_id = {e.event_id: e for e in events}
    member_of = {e.state_key: e.event_id for e in events if e.type == MEMBER}
    resolver: Any = None
    cold = LatestEvents(h.store, EventCache(h.store), resolver, SERVER)
    for event, diff, changes in joins:
        assert changes == await _parsed_way(h.store, event, diff)
        # Nothing cached: every member event is read from storage.
        assert await cold._membership_changes(event, diff) == changes

    reset_changes = {c.user_id: (c, p) for c, p in joins[0][2]}
    assert set(reset_changes) == {CAROL, DAN, ERIN, FRANK}
    carol_invite = member_of[CAROL]
    assert reset_changes[CAROL] == (
        MembershipChange(CAROL, "leave", carol_invite, CAROL),
        carol_invite,
    )
    erin_leave = by_id[member_of[ERIN]]
    assert reset_changes[ERIN] == (
        MembershipChange(ERIN, "leave", erin_leave.event_id, ERIN),
        erin_leave.event_id,
    )
    dan_join = early_state[("m.room.member", DAN)]
    dan_ban = member_of[DAN]
    assert reset_changes[DAN] == (MembershipChange(DAN, "join", dan_join, DAN), dan_ban)
    assert reset_changes[FRANK] == (MembershipChange(FRANK, "join", reset.event_id, FRANK), None)

    gina_changes = [(c.user_id, c.membership, c.sender, p) for c, p in joins[1][2]]
    assert gina_changes == [
        (CAROL, "invite", ALICE, None),
        (DAN, "ban", ALICE, dan_join),
        (ERIN, "leave", ERIN, None),
        (GINA, "join", GINA, None),
    ]


async def test_supplied_state_chooses_from_rows(harness: HarnessFactory) -> None:
    """``supplied_state`` (read through ``event_facts``): a caller's state naming two events
    for one key is invalid; a remote's answer keeps the deeper one (then the greater ID),
    skips unknown IDs and non-state events."""
    builder, events = new_room()
    fork = events[-1].event_id
    topics = [
        builder.send("m.room.topic", ALICE, {"topic": t}, state_key="", prev_events=[fork])
        for t in ("a", "b")
    ]
    deeper = builder.send("m.room.topic", ALICE, {"topic": "c"}, state_key="")
    message = builder.message(ALICE)
    h = await harness(builder)
    await h.accept_all([*events, *topics, deeper, message])
    base = [e.event_id for e in events]
    with pytest.raises(InputInvalid, match="two events"):
        await supplied_state(h.store, [*base, *(t.event_id for t in topics)], None, strict=True)
    unknown = "$" + "x" * 43
    remote = [*base, topics[0].event_id, deeper.event_id, topics[1].event_id, message.event_id]
    chosen = await supplied_state(h.store, [*remote, unknown], None, strict=False)
    assert chosen.full is not None
    assert chosen.full[("m.room.topic", "")] == deeper.event_id
    assert message.event_id not in chosen.full.values()
    tied = await supplied_state(h.store, [*base, *(t.event_id for t in topics)], None, strict=False)
    assert tied.full is not None
    assert tied.full[("m.room.topic", "")] == max(t.event_id for t in topics)
    assert {k: v for k, v in tied.full.items() if k[0] != "m.room.topic"} == {
        e.state_tuple: e.event_id for e in events
    }


def test_changes_between_lists_changed_keys_in_key_order() -> None:
    old = {("m.room.member", f"@u{i}:x"): f"$old{i}" for i in range(0, 50, 2)}
    new = {("m.room.member", f"@u{i}:x"): f"$old{i}" for i in range(0, 50, 3)}
    new[("m.room.member", "@u6:x")] = "$changed"
    new[("m.room.create", "")] = "$create"
    expected = {k: new.get(k) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    got = changes_between(old, new)
    assert list(got.items()) == list(expected.items())
    assert got[("m.room.member", "@u6:x")] == "$changed"
    assert got[("m.room.member", "@u2:x")] is None
    assert ("m.room.member", "@u0:x") not in got
    assert changes_between(new, new) == {}
