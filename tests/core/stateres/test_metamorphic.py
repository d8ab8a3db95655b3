"""Metamorphic properties: the result depends on the states, not on how they are handed in."""

from __future__ import annotations

import random

import pytest

from roomserver.core.stateres import resolve_state
from tests.core.stateres.helpers import IndexedProvider, random_fork, reference_auth_difference

VERSIONS = ["1", "2", "6", "10", "11", "12"]


def _shuffled(state: dict[tuple[str, str], str], rng: random.Random) -> dict[tuple[str, str], str]:
    items = list(state.items())
    rng.shuffle(items)
    return dict(items)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("seed", range(8))
def test_order_of_state_sets_and_of_their_entries_does_not_matter(version: str, seed: int) -> None:
    b, sets = random_fork(version, seed)
    expected = resolve_state(version, sets, b.events)
    for shuffle_seed in range(4):
        rng = random.Random(shuffle_seed)
        shuffled = [_shuffled(s, rng) for s in sets]
        rng.shuffle(shuffled)
        assert resolve_state(version, shuffled, b.events) == expected


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("seed", range(4))
def test_one_state_set_and_a_set_with_itself_resolve_to_it(version: str, seed: int) -> None:
    b, sets = random_fork(version, seed)
    for state in sets:
        assert resolve_state(version, [state], b.events) == state
        assert resolve_state(version, [state, dict(state)], b.events) == state
        assert resolve_state(version, [state, state, state], b.events) == state


@pytest.mark.parametrize("version", ["2", "10", "12"])
@pytest.mark.parametrize("seed", range(6))
def test_repeating_a_state_set_changes_nothing(version: str, seed: int) -> None:
    b, sets = random_fork(version, seed)
    assert resolve_state(version, [*sets, sets[0]], b.events) == resolve_state(
        version, sets, b.events
    )


@pytest.mark.parametrize("version", ["10", "12"])
@pytest.mark.parametrize("seed", range(6))
def test_index_answers_and_in_memory_answers_agree(version: str, seed: int) -> None:
    b, sets = random_fork(version, seed)
    provider = IndexedProvider(b.events, difference=reference_auth_difference(sets, b.events))
    assert resolve_state(version, sets, provider) == resolve_state(version, sets, b.events)
