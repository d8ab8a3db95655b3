"""State resolution v1 (room version 1; spec §11.5, room version 1 "State resolution").

Known to reset state; kept exact for room version 1 rooms. The steps:

1. R := every key the state sets agree on (a key only some sets have is not a conflict);
2. the conflicted ``m.room.power_levels`` events, by ascending depth then descending
   ``sha1(event_id)``: the first goes into R, each next one only while the rules allow it;
3. the same for ``m.room.join_rules``, then 4. for each conflicted ``m.room.member`` key;
5. any other conflicted key: the event with the highest depth, then lowest ``sha1(event_id)``,
   that the rules allow against R.

Within step 4 and step 5 every key is resolved against R as it stood when the step began, so
the result does not depend on the order keys are visited in (docs/stateres.md, "v1").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from roomserver.core.errors import Rejected
from roomserver.core.pdu import Event
from roomserver.core.state_keys import POWER_LEVELS_KEY
from roomserver.core.stateres._rules import check_auth_rules
from roomserver.core.stateres.conflicts import disagreeing_keys
from roomserver.core.stateres.provider import EventLookup, StateKey, StateMap


def resolve_v1(state_sets: Sequence[StateMap], lookup: EventLookup) -> dict[StateKey, str]:
    """Resolve ``state_sets`` (at least one) with state res v1."""
    keys = disagreeing_keys(state_sets, lookup)
    union: dict[StateKey, str] = {}
    for state_set in reversed(state_sets):
        union.update(state_set)
    if not keys:
        return union
    for key in keys:
        del union[key]
    candidates = {
        key: [lookup.get(e) for e in sorted({s[key] for s in state_sets if key in s})]
        for key in keys
    }
    resolved: dict[StateKey, Event] = {}
    state = _StateR(union, resolved, lookup)

    if POWER_LEVELS_KEY in candidates:
        resolved[POWER_LEVELS_KEY] = resolve_auth_key(candidates[POWER_LEVELS_KEY], state)
    for event_type in ("m.room.join_rules", "m.room.member"):
        step = {
            key: resolve_auth_key(events, state)
            for key, events in sorted(candidates.items())
            if key[0] == event_type
        }
        resolved.update(step)
    step = {
        key: resolve_other_key(events, state)
        for key, events in sorted(candidates.items())
        if key not in resolved
    }
    resolved.update(step)
    for key, event in resolved.items():
        union[key] = event.event_id
    return union


class _StateR:
    """R: the agreed keys plus what has been resolved so far."""

    __slots__ = ("agreed", "lookup", "resolved")

    def __init__(
        self,
        agreed: Mapping[StateKey, str],
        resolved: Mapping[StateKey, Event],
        lookup: EventLookup,
    ) -> None:
        self.agreed = agreed
        self.resolved = resolved
        self.lookup = lookup

    def get(self, key: StateKey) -> Event | None:
        found = self.resolved.get(key)
        if found is not None:
            return found
        event_id = self.agreed.get(key)
        return None if event_id is None else self.lookup.get(event_id)


def _sha1(event: Event) -> str:
    return hashlib.sha1(event.event_id.encode("utf-8")).hexdigest()


def _allowed(event: Event, state: Mapping[StateKey, Event]) -> bool:
    try:
        check_auth_rules(event, state)
    except Rejected:
        return False
    return True


def resolve_auth_key(events: list[Event], state: _StateR) -> Event:
    """Steps 2-4 for one key: ascending depth, then descending sha1; the first event is taken,
    each next one replaces it while the rules allow it against R (with the current pick)."""
    ordered = _ascending_depth_descending_sha1(events)
    chosen = ordered[0]
    for event in ordered[1:]:
        local = dict(_auth_view(event, state))
        local[chosen.state_tuple] = chosen
        if not _allowed(event, local):
            break
        chosen = event
    return chosen


def _ascending_depth_descending_sha1(events: list[Event]) -> list[Event]:
    by_sha = sorted(events, key=_sha1, reverse=True)
    return sorted(by_sha, key=lambda e: e.depth)


def _auth_view(event: Event, state: _StateR) -> dict[StateKey, Event]:
    """The part of R the rules read for ``event`` (every key they may need)."""
    out: dict[StateKey, Event] = {}
    wanted = [("m.room.create", ""), POWER_LEVELS_KEY, ("m.room.member", event.sender)]
    if event.type == "m.room.member" and event.state_key is not None:
        wanted += [("m.room.member", event.state_key), ("m.room.join_rules", "")]
        third_party = event.content.get("third_party_invite")
        if isinstance(third_party, Mapping):
            signed = third_party.get("signed")
            token = signed.get("token") if isinstance(signed, Mapping) else None
            if isinstance(token, str):
                wanted.append(("m.room.third_party_invite", token))
    for key in wanted:
        found = state.get(key)
        if found is not None:
            out[key] = found
    return out


def resolve_other_key(events: list[Event], state: _StateR) -> Event:
    """Step 5 for one key: the highest depth, then lowest sha1, that the rules allow; if none
    is allowed, the last one in that order (the lowest depth)."""
    ordered = sorted(sorted(events, key=_sha1), key=lambda e: -e.depth)
    for event in ordered:
        if _allowed(event, _auth_view(event, state)):
            return event
    return ordered[-1]
