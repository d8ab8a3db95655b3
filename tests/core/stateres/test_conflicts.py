"""Splitting state sets into unconflicted and conflicted parts."""

from __future__ import annotations

from roomserver.core.stateres.conflicts import conflicted_keys, disagreeing_keys, split
from roomserver.core.stateres.provider import EventLookup
from tests.core.stateres.helpers import random_fork


def _sets():  # type: ignore[no-untyped-def]
    b, sets = random_fork("10", 7)
    return b, sets[:2]


def _reference(sets):  # type: ignore[no-untyped-def]
    keys = set().union(*sets)
    return {k for k in keys if len({s.get(k) for s in sets}) > 1}


def test_conflicted_keys_through_events_and_through_items_agree() -> None:
    b, sets = _sets()
    expected = _reference(sets)
    assert expected
    assert conflicted_keys(sets, EventLookup(b.events)) == expected
    assert conflicted_keys(sets) == expected  # items comparison
    assert conflicted_keys(sets, EventLookup({})) == expected  # unknown events: items


def test_event_filed_under_another_key_falls_back_to_items() -> None:
    """A state set filing a differing event under another key than its own is caught."""
    b, sets = _sets()
    odd = dict(sets[1])
    some_key = next(iter(_reference(sets) & odd.keys()))
    some_event = odd.pop(some_key)
    odd[("m.room.odd", "")] = some_event
    assert conflicted_keys([sets[0], odd], EventLookup(b.events)) == _reference([sets[0], odd])


def test_a_key_missing_from_a_set_conflicts_in_v2_but_not_in_v1() -> None:
    b, sets = _sets()
    smaller = dict(sets[0])
    key = next(k for k in smaller if k[0] == "m.room.member")
    del smaller[key]
    both = [sets[0], smaller]
    assert conflicted_keys(both, EventLookup(b.events)) == {key}
    assert disagreeing_keys(both, EventLookup(b.events)) == frozenset()


def test_split_lists_each_sets_conflicted_events() -> None:
    _, sets = _sets()
    conflicts = split(sets, conflicted_keys(sets))
    for state, events in zip(sets, conflicts.per_set, strict=True):
        assert events == {state[k] for k in conflicts.keys if k in state}
    assert conflicts.events == set().union(*conflicts.per_set)
