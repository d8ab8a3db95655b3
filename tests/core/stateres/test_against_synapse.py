"""Differential check against Synapse's state resolution (``matrix-synapse`` in .synapse-venv).

Slow. Without .synapse-venv (``bash bench/setup_synapse_venv.sh`` creates it) it is skipped,
or fails when ``ROOMSERVER_REQUIRE_SYNAPSE=1`` (CI). Random forks in several room versions; both
implementations must resolve them identically.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from roomserver.core.stateres import resolve_state
from roomserver.testing.builder import RoomBuilder
from tests.core.stateres.helpers import PL_KEY, USERS, StateSet, random_change, random_fork
from tests.synapse_venv import run_in_synapse

pytestmark = pytest.mark.slow


def _fork_merge_room(version: str, seed: int) -> tuple[RoomBuilder, list[list[StateSet]]]:
    """Three rounds of fork (2-3 branches, some invites) and merge (our resolution + an event
    citing every branch tip): auth chains then cross earlier resolutions."""
    rng = random.Random(seed)
    b = RoomBuilder(version, room_id=f"!merge{seed}:example.org")
    b.create_room(USERS[0], join_rule=rng.choice(["public", "invite"]))
    for user in USERS[1:]:
        if rng.random() < 0.3:
            b.member(USERS[0], user, "invite")
        b.join(user)
    content = dict(b.events[b.state[PL_KEY]].content)
    content["users"] = {**content["users"], USERS[1]: 75, USERS[2]: 50}
    b.send("m.room.power_levels", USERS[0], content, state_key="")
    rounds: list[list[StateSet]] = []
    for round_number in range(3):
        base_state, base_latest = dict(b.state), list(b.latest)
        sets: list[StateSet] = []
        tips: list[str] = []
        for _ in range(rng.choice([2, 2, 3])):
            b.state, b.latest = dict(base_state), list(base_latest)
            for _ in range(rng.randint(1, 5)):
                if rng.random() < 0.15:
                    b.member(rng.choice(USERS), rng.choice(USERS), "invite")
                else:
                    random_change(b, rng, version)
            sets.append(dict(b.state))
            tips.extend(b.latest)
        rounds.append(sets)
        b.state, b.latest = resolve_state(version, sets, b.events), tips
        b.send("m.room.topic", USERS[0], {"topic": f"merge {round_number}"}, state_key="")
    return b, rounds


def _room_request(version: str, b: RoomBuilder, cases: list[list[StateSet]]) -> dict[str, Any]:
    return {
        "room_version": version,
        "pdus": [dict(e.pdu) for e in b.events.values()],
        "event_ids": list(b.events),
        "cases": [
            {"name": str(i), "state_sets": [[[*k, v] for k, v in s.items()] for s in sets]}
            for i, sets in enumerate(cases)
        ],
    }


VERSIONS = ("1", "2", "10", "11", "12")


@pytest.fixture(scope="module")
def resolved() -> dict[str, list[tuple[list[StateSet], list[StateSet]]]]:
    """Per version: (ours, Synapse's) resolutions of every case of every room. Synapse runs
    once for all versions (its start-up is most of its time)."""
    rooms, expected, versions = [], [], []
    for version in VERSIONS:
        for seed in range(25):
            b, sets = random_fork(version, 1000 + seed)
            expected.append([resolve_state(version, sets, b.events)])
            rooms.append(_room_request(version, b, [sets]))
            versions.append(version)
        for seed in range(15):
            b, rounds = _fork_merge_room(version, seed)
            expected.append([resolve_state(version, sets, b.events) for sets in rounds])
            rooms.append(_room_request(version, b, rounds))
            versions.append(version)
    answers = run_in_synapse("synapse_stateres.py", {"rooms": rooms})["rooms"]
    out: dict[str, list[tuple[list[StateSet], list[StateSet]]]] = {v: [] for v in VERSIONS}
    for version, ours, answer in zip(versions, expected, answers, strict=True):
        theirs = [{(t, k): e for t, k, e in case["state"]} for case in answer["cases"]]
        out[version].append((ours, theirs))
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_random_forks_resolve_like_synapse(
    resolved: dict[str, list[tuple[list[StateSet], list[StateSet]]]], version: str
) -> None:
    rooms = resolved[version]
    assert len(rooms) == 40
    for room, (ours, theirs) in enumerate(rooms):
        assert len(ours) == len(theirs)
        for case, (state, synapse_state) in enumerate(zip(ours, theirs, strict=True)):
            assert state == synapse_state, (version, room, case)
