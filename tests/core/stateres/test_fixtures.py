"""Whole scenarios as JSON fixtures (written by generate_fixtures.py, expectations reasoned)."""

from __future__ import annotations

from pathlib import Path

import pytest

from roomserver.core.stateres import MappingEventProvider, resolve_state
from tests.core.stateres.helpers import (
    FIXTURES,
    IndexedProvider,
    fixture_events,
    load_fixture,
    reference_auth_difference,
    rows_to_state,
)

FIXTURE_PATHS = sorted(FIXTURES.glob("*.json"))


def test_every_scenario_of_the_brief_has_a_fixture() -> None:
    names = {p.stem for p in FIXTURE_PATHS}
    for scenario in (
        "ban_vs_power_levels",
        "topic_reset",
        "join_rule_evasion",
        "offtopic_power_levels",
        "mainline_sort",
        "conflicting_creators",
        "state_reset_join_rules",
        "state_reset_power_levels",
    ):
        assert any(n.startswith(scenario) for n in names), scenario


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=lambda p: p.stem)
def test_fixture(path: Path) -> None:
    fixture = load_fixture(path)
    events = fixture_events(fixture)
    sets = [rows_to_state(s) for s in fixture["state_sets"]]
    expected = rows_to_state(fixture["expected"])
    provider = MappingEventProvider(events, rejected=frozenset(fixture["rejected"]))
    version = fixture["room_version"]
    assert resolve_state(version, sets, provider) == expected
    assert resolve_state(version, list(reversed(sets)), provider) == expected
    if not fixture["rejected"]:
        assert resolve_state(version, sets, events) == expected
        indexed = IndexedProvider(events, difference=reference_auth_difference(sets, events))
        assert resolve_state(version, sets, indexed) == expected


def test_v2_1_changes_the_outcome_of_the_state_reset_fixtures() -> None:
    """The v10 and v12 variants of each state-reset scenario must differ: v2.1 fixes them."""
    for scenario in ("state_reset_join_rules", "state_reset_power_levels"):
        v10 = load_fixture(FIXTURES / f"{scenario}_v10.json")
        v12 = load_fixture(FIXTURES / f"{scenario}_v12.json")
        labels10 = {e["event_id"]: e["label"] for e in v10["events"]}
        labels12 = {e["event_id"]: e["label"] for e in v12["events"]}
        pick10 = {(t, k): labels10[e] for t, k, e in v10["expected"] if labels10[e]}
        pick12 = {(t, k): labels12[e] for t, k, e in v12["expected"] if labels12[e]}
        assert pick10 != pick12, scenario
