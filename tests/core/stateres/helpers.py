"""Shared helpers for the state resolution tests: fixtures, forks, counting providers."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from roomserver.core.pdu import Event, parse_event
from roomserver.testing.builder import RoomBuilder

FIXTURES = Path(__file__).parent / "fixtures"
StateSet = dict[tuple[str, str], str]
PL_KEY = ("m.room.power_levels", "")


def load_fixture(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def fixture_events(fixture: Mapping[str, Any]) -> dict[str, Event]:
    return {
        e["event_id"]: parse_event(e["pdu"], fixture["room_version"], event_id=e["event_id"])
        for e in fixture["events"]
    }


def rows_to_state(rows: Sequence[Sequence[str]]) -> StateSet:
    return {(t, k): e for t, k, e in rows}


def auth_closure(event_ids: AbstractSet[str], events: Mapping[str, Event]) -> set[str]:
    """Reference: the events and all their auth ancestors, by plain graph search."""
    seen = set(event_ids)
    stack = list(event_ids)
    while stack:
        for auth_id in events[stack.pop()].auth_event_ids:
            if auth_id not in seen:
                seen.add(auth_id)
                stack.append(auth_id)
    return seen


def reference_auth_difference(
    state_sets: Sequence[Mapping[tuple[str, str], str]], events: Mapping[str, Event]
) -> set[str]:
    """Reference: union minus intersection of each state set's (inclusive) auth chain."""
    chains = [auth_closure(set(s.values()), events) for s in state_sets]
    return set().union(*chains) - set(chains[0]).intersection(*chains[1:])


class CountingProvider:
    """An ``EventProvider`` that counts lookups; optionally answers the index questions."""

    def __init__(
        self,
        events: Mapping[str, Event],
        *,
        difference: AbstractSet[str] | None = None,
    ) -> None:
        self.events = events
        self.lookups = 0
        self.difference = difference
        self.difference_calls = 0

    def get_event(self, event_id: str) -> Event | None:
        self.lookups += 1
        return self.events.get(event_id)


class IndexedProvider(CountingProvider):
    """Also answers ``auth_chain_difference`` (from a precomputed answer, as an index would)."""

    def auth_chain_difference(
        self, state_sets: Sequence[Mapping[tuple[str, str], str]]
    ) -> AbstractSet[str]:
        self.difference_calls += 1
        assert self.difference is not None
        return self.difference


USERS = [f"@u{i}:example.org" for i in range(6)]


def random_fork(version: str, seed: int, *, members: int = 0) -> tuple[RoomBuilder, list[StateSet]]:
    """A room with a few powerful users, forked into 2-3 branches of random state changes.

    ``members`` extra users join before the fork (to grow the room without touching the
    conflict).
    """
    rng = random.Random(seed)
    b = RoomBuilder(version, room_id=f"!r{seed}:example.org")
    admin = USERS[0]
    b.create_room(admin)
    for user in USERS[1:]:
        b.join(user)
    for i in range(members):
        b.join(f"@m{i}:example.org")
    pl = dict(b.events[b.state[PL_KEY]].content)
    users = dict(pl["users"])
    users.update({USERS[1]: 75, USERS[2]: 50})
    pl["users"] = users
    b.send("m.room.power_levels", admin, pl, state_key="")
    base_state, base_latest = dict(b.state), list(b.latest)
    sets: list[StateSet] = []
    for _ in range(rng.choice([2, 2, 3])):
        b.state, b.latest = dict(base_state), list(base_latest)
        for _ in range(rng.randint(1, 6)):
            random_change(b, rng, version)
        sets.append(dict(b.state))
    return b, sets


def random_change(b: RoomBuilder, rng: random.Random, version: str) -> None:
    kind = rng.random()
    sender, target = rng.choice(USERS), rng.choice(USERS)
    if kind < 0.25 and PL_KEY in b.state:  # a resolution may have dropped the power levels
        content = dict(b.events[b.state[PL_KEY]].content)
        users = dict(content["users"])
        users[target] = rng.choice([0, 25, 50, 75, 100])
        if version == "12":
            users.pop(USERS[0], None)
        content["users"] = users
        b.send("m.room.power_levels", sender, content, state_key="")
    elif kind < 0.45:
        b.member(sender, target, rng.choice(["ban", "leave"]))
    elif kind < 0.55:
        rule = rng.choice(["public", "invite"])
        b.send("m.room.join_rules", sender, {"join_rule": rule}, state_key="")
    elif kind < 0.7:
        b.member(target, target, rng.choice(["join", "leave"]))
    else:
        b.send("m.room.topic", sender, {"topic": f"t{rng.random()}"}, state_key="")
