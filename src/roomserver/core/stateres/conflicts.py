"""Splitting state sets into unconflicted and conflicted parts (spec §11.2, §11.5).

The state sets of a big room share almost everything. The split compares them with set
operations on their item views (C speed) and never builds the unconflicted state map: it is
"the first state set without the conflicted keys".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from roomserver.core.stateres.provider import EventLookup, StateKey, StateMap


@dataclass(frozen=True, slots=True)
class Conflicts:
    """The conflicted part of some state sets.

    ``keys``: the conflicted keys. ``per_set``: for each state set (in input order), the event
    IDs it holds at conflicted keys. ``events``: the conflicted state set (their union).
    """

    keys: frozenset[StateKey]
    per_set: tuple[frozenset[str], ...]
    events: frozenset[str]


def conflicted_keys(
    state_sets: Sequence[StateMap], lookup: EventLookup | None = None
) -> frozenset[StateKey]:
    """Keys not mapped to the same event by every state set; a key missing from some state set
    is conflicted (v2: spec §11.2, "Unconflicted state map and conflicted state set").

    Asks the provider (``state_difference``) when it can answer from storage.
    """
    if lookup is not None:
        if lookup.state_difference is not None:
            return frozenset(lookup.state_difference(state_sets))
        found = _keys_of_differing_events(state_sets, lookup)
        if found is not None:
            return found
    first = state_sets[0].items()
    keys: set[StateKey] = set()
    for other in state_sets[1:]:
        keys.update(key for key, _ in first ^ other.items())
    return frozenset(keys)


def _keys_of_differing_events(
    state_sets: Sequence[StateMap], lookup: EventLookup
) -> frozenset[StateKey] | None:
    """The conflicted keys found through the events not held by every state set.

    Cheaper than comparing items (event IDs hash faster than ``(key, event ID)`` pairs). An
    event ID names one ``(type, state_key)``, so a key is conflicted exactly when one of its
    events is missing from some state set. ``None`` when a state set files such an event under
    another key than its own, or the event is unknown: the caller compares items instead.
    """
    first = set(state_sets[0].values())
    others = [s.values() for s in state_sets[1:]]
    if len(others) == 1:
        differing = first.symmetric_difference(others[0])
    else:
        differing = first.union(*others) - first.intersection(*others)
    keys: set[StateKey] = set()
    for event_id in differing:
        event = lookup.find(event_id)
        if event is None or event.state_key is None:
            return None
        key = (event.type, event.state_key)
        if not any(s.get(key) == event_id for s in state_sets):
            return None
        keys.add(key)
    return frozenset(keys)


def disagreeing_keys(
    state_sets: Sequence[StateMap], lookup: EventLookup | None = None
) -> frozenset[StateKey]:
    """Keys that state sets map to different events; a key missing from some state set is not
    a conflict (v1: spec §11.5)."""
    conflicted = conflicted_keys(state_sets, lookup)
    return frozenset(key for key in conflicted if len({s[key] for s in state_sets if key in s}) > 1)


def split(state_sets: Sequence[StateMap], keys: frozenset[StateKey]) -> Conflicts:
    per_set = tuple(frozenset(s[k] for k in keys if k in s) for s in state_sets)
    return Conflicts(keys=keys, per_set=per_set, events=frozenset().union(*per_set))


def unconflicted_event_ids(state_sets: Sequence[StateMap], conflicts: Conflicts) -> set[str]:
    """The events every state set holds: the values of the unconflicted state map."""
    shared = set(state_sets[0].values())
    shared.difference_update(conflicts.per_set[0])
    return shared


def merge_resolved(
    base: Mapping[StateKey, str], conflicts: Conflicts, resolved: Mapping[StateKey, str]
) -> dict[StateKey, str]:
    """The unconflicted state map with the resolved entries added; the unconflicted entries
    win where both have a key (spec §11.3 step 5). ``base`` is one of the input state sets."""
    out = dict(base)
    keys = conflicts.keys
    for key in keys:
        out.pop(key, None)
    for key, event_id in resolved.items():
        if key in keys or key not in base:
            out[key] = event_id
    return out
