"""Writes the state resolution scenarios under tests/core/stateres/fixtures/ as JSON.

Run: ``.venv/bin/python -m tests.core.stateres.generate_fixtures`` (from the repository root).

Each scenario builds a room with ``RoomBuilder`` (hashed, signed events), forks it, and states
the expected resolution *by reasoning* (see each docstring), not by running the resolver. The
script then checks the resolver agrees, and, when ``.synapse-venv`` has Synapse installed, that
Synapse agrees too (except where a scenario documents that the two differ).
Fixture format (one JSON object per file):

    {"description": str, "room_version": str,
     "events": [{"event_id": str, "label": str, "pdu": {...}}],
     "rejected": [event_id, ...],
     "state_sets": [[[type, state_key, event_id], ...], ...],
     "expected": [[type, state_key, event_id], ...]}
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roomserver.core.pdu import Event
from roomserver.core.stateres import MappingEventProvider, resolve_state
from roomserver.testing.builder import RoomBuilder

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[3]
ALICE = "@alice:example.org"
BOB = "@bob:example.org"
CAROL = "@carol:example.org"
EVE = "@eve:example.org"
PL_KEY = ("m.room.power_levels", "")
JR_KEY = ("m.room.join_rules", "")
TOPIC_KEY = ("m.room.topic", "")

StateSet = dict[tuple[str, str], str]


class Scenario:
    """A room being built, with labelled events and named branches."""

    def __init__(self, version: str, description: str) -> None:
        self.version = version
        self.description = description
        self.b = RoomBuilder(version, room_id=f"!fixture{version.replace('.', '')}:example.org")
        self.labels: dict[str, str] = {}
        self.rejected: list[str] = []
        self._saved: dict[str, tuple[StateSet, list[str]]] = {}

    def label(self, name: str, event: Event) -> Event:
        self.labels[event.event_id] = name
        return event

    def save(self, name: str) -> None:
        self._saved[name] = (dict(self.b.state), list(self.b.latest))

    def restore(self, name: str) -> None:
        state, latest = self._saved[name]
        self.b.state = dict(state)
        self.b.latest = list(latest)

    def power_levels(self, sender: str, users: dict[str, int], name: str, **extra: Any) -> Event:
        content: dict[str, Any] = {
            "users": users,
            "users_default": 0,
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 0,
            "events": {},
        }
        content.update(extra)
        return self.label(name, self.b.send("m.room.power_levels", sender, content, state_key=""))

    def topic(self, sender: str, topic: str, name: str) -> Event:
        return self.label(name, self.b.send("m.room.topic", sender, {"topic": topic}, state_key=""))

    def fixture(self, state_sets: list[StateSet], expected: StateSet) -> dict[str, Any]:
        return {
            "description": self.description,
            "room_version": self.version,
            "events": [
                {"event_id": e.event_id, "label": self.labels.get(e.event_id, ""), "pdu": e.pdu}
                for e in self.b.events.values()
            ],
            "rejected": self.rejected,
            "state_sets": [sorted([t, k, v] for (t, k), v in s.items()) for s in state_sets],
            "expected": sorted([t, k, v] for (t, k), v in expected.items()),
        }


def _room(version: str, description: str, creator_pl: bool = True) -> Scenario:
    sc = Scenario(version, description)
    b = sc.b
    b.create_room(ALICE, power_levels=None)
    sc.label("PL0", b.events[b.state[PL_KEY]])
    sc.label("JR0", b.events[b.state[JR_KEY]])
    for user in (BOB, CAROL):
        b.join(user)
    return sc


def _admin(version: str) -> dict[str, int]:
    """Alice's own entry: v12 creators may not be listed in ``users``."""
    return {} if version == "12" else {ALICE: 100}


def ban_vs_power_levels(version: str) -> dict[str, Any]:
    """Alice (100) made Bob a moderator (50). Then, concurrently, Alice demotes Bob (fork A)
    and Bob bans Carol (fork B). Alice's sender power sorts her demotion first; Bob's ban
    then fails against the demoted power levels. Expected: the demotion, Carol still joined."""
    sc = _room(version, ban_vs_power_levels.__doc__ or "")
    sc.power_levels(ALICE, {**_admin(version), BOB: 50}, "PL1")
    sc.save("fork")
    demote = sc.power_levels(ALICE, _admin(version), "PL_demote")
    a = dict(sc.b.state)
    sc.restore("fork")
    sc.label("ban_carol", sc.b.member(BOB, CAROL, "ban"))
    b = dict(sc.b.state)
    expected = dict(b)
    expected[PL_KEY] = demote.event_id
    expected[("m.room.member", CAROL)] = a[("m.room.member", CAROL)]
    return sc.fixture([a, b], expected)


def topic_reset(version: str) -> dict[str, Any]:
    """Bob (50) set topic T1. Concurrently Alice demotes Bob (fork A) while Bob sets topic T2
    (fork B). The topic key is conflicted (T1 vs T2) and both topics are re-checked against the
    demotion, where Bob may no longer set a topic: both fail and the topic disappears (the
    known "topic reset" of state res v2, unchanged by v2.1). Expected: demotion, no topic."""
    sc = _room(version, topic_reset.__doc__ or "")
    sc.power_levels(ALICE, {**_admin(version), BOB: 50}, "PL1")
    t1 = sc.topic(BOB, "T1", "T1")
    sc.save("fork")
    demote = sc.power_levels(ALICE, _admin(version), "PL_demote")
    a = dict(sc.b.state)
    sc.restore("fork")
    sc.topic(BOB, "T2", "T2")
    b = dict(sc.b.state)
    expected = dict(a)
    expected[PL_KEY] = demote.event_id
    del expected[TOPIC_KEY]  # T1 and T2 both fail
    assert a[TOPIC_KEY] == t1.event_id
    return sc.fixture([a, b], expected)


def join_rule_evasion(version: str) -> dict[str, Any]:
    """Alice makes the room invite-only (fork A) while Eve joins under the old public join
    rules (fork B). The join rules change is a power event and is applied first; Eve's join is
    then not allowed. Expected: invite-only, Eve absent."""
    sc = _room(version, join_rule_evasion.__doc__ or "")
    sc.save("fork")
    invite_only = sc.label(
        "JR_invite", sc.b.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, state_key="")
    )
    a = dict(sc.b.state)
    sc.restore("fork")
    sc.label("eve_join", sc.b.join(EVE))
    b = dict(sc.b.state)
    expected = dict(a)
    expected[JR_KEY] = invite_only.event_id
    return sc.fixture([a, b], expected)


def offtopic_power_levels(version: str) -> dict[str, Any]:
    """Alice gives Bob 50 (PL1); Bob gives Carol 50 (PL2); Carol changes the topic level
    within her power (PL3). Fork B only has PL1 and a topic. Every power levels event is
    allowed in its own chain and they descend from one another: PL3 wins."""
    sc = _room(version, offtopic_power_levels.__doc__ or "")
    sc.power_levels(ALICE, {**_admin(version), BOB: 50}, "PL1")
    sc.save("fork")
    sc.power_levels(BOB, {**_admin(version), BOB: 50, CAROL: 50}, "PL2")
    pl3 = sc.power_levels(
        CAROL, {**_admin(version), BOB: 50, CAROL: 50}, "PL3", events={"m.room.topic": 25}
    )
    a = dict(sc.b.state)
    sc.restore("fork")
    topic = sc.topic(ALICE, "from fork B", "T_B")
    b = dict(sc.b.state)
    expected = dict(a)
    expected[PL_KEY] = pl3.event_id
    expected[TOPIC_KEY] = topic.event_id
    return sc.fixture([a, b], expected)


def mainline_sort(version: str) -> dict[str, Any]:
    """Topics ordered by their power levels on the mainline, not by timestamp. Alice sets PL1,
    forks; fork A: PL2 then topic TA (cites PL2); fork B: topic TB sent *later* (forged clock)
    but citing PL1. Mainline of PL2: TB's closest mainline event (PL1) is older, so TB is
    checked first and TA last. Expected: PL2, topic TA."""
    sc = _room(version, mainline_sort.__doc__ or "")
    sc.power_levels(ALICE, {**_admin(version), BOB: 50}, "PL1")
    sc.save("fork")
    pl2 = sc.power_levels(ALICE, {**_admin(version), BOB: 60}, "PL2")
    ta = sc.topic(ALICE, "TA", "TA")
    a = dict(sc.b.state)
    sc.restore("fork")
    tb = sc.b.send(
        "m.room.topic",
        ALICE,
        {"topic": "TB"},
        state_key="",
        origin_server_ts=ta.origin_server_ts + 1000,
    )
    sc.label("TB", tb)
    b = dict(sc.b.state)
    expected = dict(a)
    expected[PL_KEY] = pl2.event_id
    expected[TOPIC_KEY] = ta.event_id
    return sc.fixture([a, b], expected)


def conflicting_creators() -> dict[str, Any]:
    """Room version 12 with two creators (Alice sends the create event, Bob is an additional
    creator). Concurrently: Alice tries to ban Bob and sets power levels PLA; Bob sets power
    levels PLB later. Creators outrank everyone and equal each other, so the power events are
    ordered by timestamp: PLA, then PLB. The ban fails (a creator cannot ban a creator).
    Expected: PLB, Bob joined."""
    sc = Scenario("12", conflicting_creators.__doc__ or "")
    b = sc.b
    b.create_room(ALICE, extra_create_content={"additional_creators": [BOB]})
    b.join(BOB)
    b.join(CAROL)
    sc.save("fork")
    sc.label("ban_bob", b.member(ALICE, BOB, "ban"))
    sc.power_levels(ALICE, {CAROL: 10}, "PLA")
    a = dict(b.state)
    sc.restore("fork")
    plb = sc.power_levels(BOB, {CAROL: 20}, "PLB")
    bb = dict(b.state)
    expected = dict(bb)
    expected[PL_KEY] = plb.event_id
    return sc.fixture([a, bb], expected)


def _stale_join_rules(version: str) -> tuple[Scenario, list[StateSet], Event, Event]:
    sc = _room(version, "")
    sc.power_levels(ALICE, {**_admin(version), BOB: 50}, "PL1")
    jr1 = sc.label(
        "JR1", sc.b.send("m.room.join_rules", BOB, {"join_rule": "invite"}, state_key="")
    )
    sc.power_levels(ALICE, _admin(version), "PL2_demote_bob")
    true_state = dict(sc.b.state)
    stale = dict(true_state)
    stale[JR_KEY] = next(e for e, n in sc.labels.items() if n == "JR0")
    return sc, [true_state, stale], jr1, sc.b.events[stale[JR_KEY]]


def state_reset_join_rules(version: str) -> dict[str, Any]:
    """A state reset that v2.1 fixes by starting the iterative checks from an empty state.
    Linear history: Bob (moderator) sets invite-only join rules JR1, later Alice demotes Bob
    (PL2). A second state set is stale: PL2 but the original public JR0. v2 re-checks JR1
    against the unconflicted PL2, where Bob has no power, so the join rules reset to JR0.
    v2.1 checks JR1 against its own auth events: JR1 stays."""
    sc, sets, jr1, jr0 = _stale_join_rules(version)
    sc.description = state_reset_join_rules.__doc__ or ""
    expected = dict(sets[0])
    expected[JR_KEY] = jr1.event_id if version == "12" else jr0.event_id
    return sc.fixture(sets, expected)


def state_reset_power_levels(version: str) -> dict[str, Any]:
    """A state reset that v2.1 fixes with the conflicted state subgraph. Linear history:
    Alice gives Bob 50 (PL2); Bob sets a topic (cites PL2); Bob gives Carol 50 (PL3). A stale
    state set holds the original PL1 with the same topic. PL2 is in every auth chain, so it is
    not in the auth difference: v2 checks PL3 against PL1, where Bob has no power, and the
    power levels reset to PL1. v2.1 adds PL2 (between PL3 and PL1): PL3 stays."""
    sc = _room(version, state_reset_power_levels.__doc__ or "")
    pl1 = sc.power_levels(ALICE, _admin(version), "PL1")
    sc.power_levels(ALICE, {**_admin(version), BOB: 50}, "PL2")
    sc.topic(BOB, "Bob's topic", "T")
    pl3 = sc.power_levels(BOB, {**_admin(version), BOB: 50, CAROL: 50}, "PL3")
    true_state = dict(sc.b.state)
    stale = dict(true_state)
    stale[PL_KEY] = pl1.event_id
    expected = dict(true_state)
    expected[PL_KEY] = pl3.event_id if version == "12" else pl1.event_id
    return sc.fixture([true_state, stale], expected)


def rejected_event_excluded(version: str) -> dict[str, Any]:
    """The provider reports Bob's conflicting topic as rejected (it failed its own auth
    events): it is never admitted although the rules would allow it against the resolved
    state. Expected: Alice's topic."""
    sc = _room(version, rejected_event_excluded.__doc__ or "")
    sc.power_levels(ALICE, {**_admin(version), BOB: 50}, "PL1")
    sc.save("fork")
    ta = sc.topic(ALICE, "TA", "TA")
    a = dict(sc.b.state)
    sc.restore("fork")
    tb = sc.topic(BOB, "TB", "TB_rejected")
    sc.rejected.append(tb.event_id)
    b = dict(sc.b.state)
    expected = dict(a)
    expected[TOPIC_KEY] = ta.event_id
    return sc.fixture([a, b], expected)


def v1_power_levels_then_members() -> dict[str, Any]:
    """State res v1: conflicting power levels are taken in ascending depth while each next one
    is allowed; then members; then other keys by highest depth. Fork A: Alice gives Bob 50 then
    Bob bans Carol; fork B: Carol sets a topic (requires 50: not allowed, but v1 takes the only
    candidate for a key only one state set has). Expected: the power levels event that comes
    second in ascending depth / descending sha1 order; Carol banned only if it lets Bob ban."""
    sc = _room("1", v1_power_levels_then_members.__doc__ or "")
    sc.save("fork")
    pl1 = sc.power_levels(ALICE, {ALICE: 100, BOB: 50}, "PL1")
    ban = sc.label("ban_carol", sc.b.member(BOB, CAROL, "ban"))
    a = dict(sc.b.state)
    sc.restore("fork")
    sc.power_levels(ALICE, {ALICE: 100, CAROL: 50}, "PL1b")
    sc.topic(CAROL, "Carol's topic", "T_carol")
    b = dict(sc.b.state)
    # PL1 and PL1b have the same depth; the descending sha1 order decides which comes first,
    # and the second is applied if allowed (Alice may set either): the later one wins.
    _, second = sorted(
        [pl1, sc.b.events[b[PL_KEY]]],
        key=lambda e: hashlib.sha1(e.event_id.encode()).hexdigest(),
        reverse=True,
    )
    expected = dict(b)  # the topic key is only in fork B: not a conflict in v1
    expected[PL_KEY] = second.event_id
    # Carol's membership: her join (lower depth) first, then the ban if Bob may ban under the
    # chosen power levels.
    bob_can_ban = second.content["users"].get(BOB, 0) >= 50
    expected[("m.room.member", CAROL)] = (
        ban.event_id if bob_can_ban else b[("m.room.member", CAROL)]
    )
    return sc.fixture([a, b], expected)


def v1_depth_order() -> dict[str, Any]:
    """State res v1: fork A: Alice sets topic TA1, then TA2 (deeper); fork B: Alice makes Bob a
    moderator (PL_B), then Bob sets topic TB, as deep as TA2, and Eve joins. Power levels:
    ascending depth, PL0 then PL_B, which Alice may send: PL_B. Topic: the deepest candidates
    TA2 and TB tie on depth; the lower sha1(event_id) that passes wins (both pass against R).
    Eve's membership is in fork B only: not a conflict in v1, kept as is."""
    sc = _room("1", v1_depth_order.__doc__ or "")
    sc.save("fork")
    sc.topic(ALICE, "TA1", "TA1")
    ta2 = sc.topic(ALICE, "TA2", "TA2")
    a = dict(sc.b.state)
    sc.restore("fork")
    pl_b = sc.power_levels(ALICE, {ALICE: 100, BOB: 50}, "PL_B")
    tb = sc.topic(BOB, "TB", "TB")
    sc.label("eve_join", sc.b.join(EVE))
    b = dict(sc.b.state)
    assert ta2.depth == tb.depth
    expected = dict(b)
    expected[PL_KEY] = pl_b.event_id
    expected[TOPIC_KEY] = min(
        (ta2, tb), key=lambda e: hashlib.sha1(e.event_id.encode()).hexdigest()
    ).event_id
    return sc.fixture([a, b], expected)


SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {
    "ban_vs_power_levels_v10": lambda: ban_vs_power_levels("10"),
    "ban_vs_power_levels_v2": lambda: ban_vs_power_levels("2"),
    "ban_vs_power_levels_v12": lambda: ban_vs_power_levels("12"),
    "topic_reset_v10": lambda: topic_reset("10"),
    "topic_reset_v12": lambda: topic_reset("12"),
    "join_rule_evasion_v10": lambda: join_rule_evasion("10"),
    "join_rule_evasion_v12": lambda: join_rule_evasion("12"),
    "offtopic_power_levels_v10": lambda: offtopic_power_levels("10"),
    "offtopic_power_levels_v12": lambda: offtopic_power_levels("12"),
    "mainline_sort_v10": lambda: mainline_sort("10"),
    "mainline_sort_v12": lambda: mainline_sort("12"),
    "conflicting_creators_v12": conflicting_creators,
    "state_reset_join_rules_v10": lambda: state_reset_join_rules("10"),
    "state_reset_join_rules_v12": lambda: state_reset_join_rules("12"),
    "state_reset_power_levels_v10": lambda: state_reset_power_levels("10"),
    "state_reset_power_levels_v12": lambda: state_reset_power_levels("12"),
    "rejected_event_excluded_v10": lambda: rejected_event_excluded("10"),
    "v1_power_levels_then_members": v1_power_levels_then_members,
    "v1_depth_order": v1_depth_order,
}


def _state(rows: list[list[str]]) -> StateSet:
    return {(t, k): e for t, k, e in rows}


def _synapse(fixture: dict[str, Any]) -> StateSet | None:
    python = ROOT / ".synapse-venv" / "bin" / "python"
    if not python.exists():
        return None
    request = {
        "room_version": fixture["room_version"],
        "pdus": [e["pdu"] for e in fixture["events"]],
        "event_ids": [e["event_id"] for e in fixture["events"]],
        "rejected": fixture["rejected"],
        "cases": [{"name": "x", "state_sets": fixture["state_sets"]}],
    }
    done = subprocess.run(
        [str(python), str(ROOT / "bench" / "synapse_stateres.py")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
    )
    return _state(json.loads(done.stdout)["cases"][0]["state"])


def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    failures = 0
    for name, build in SCENARIOS.items():
        fixture = build()
        events = {e.event_id: e for e in _events(fixture)}
        provider = MappingEventProvider(events, rejected=frozenset(fixture["rejected"]))
        sets = [_state(s) for s in fixture["state_sets"]]
        ours = resolve_state(fixture["room_version"], sets, provider)
        expected = _state(fixture["expected"])
        status = "ok" if ours == expected else "RESOLVER DISAGREES"
        synapse = _synapse(fixture) if not fixture["rejected"] else None
        if synapse is not None:
            status += ", synapse agrees" if synapse == expected else ", SYNAPSE DISAGREES"
        failures += "DISAGREES" in status
        print(f"{name}: {status}")
        path = FIXTURES / f"{name}.json"
        path.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
    sys.exit(1 if failures else 0)


def _events(fixture: dict[str, Any]) -> list[Event]:
    from roomserver.core.pdu import parse_event

    return [
        parse_event(e["pdu"], fixture["room_version"], event_id=e["event_id"])
        for e in fixture["events"]
    ]


if __name__ == "__main__":
    main()
