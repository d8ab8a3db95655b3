"""The room DAG's forward extremities (pure): which events nothing builds on yet.

Reference §7.3 (``docs/input.md``): when an accepted NEW event is added, the old extremities it
cites, or reaches through prev events that failed their checks, stop being extremities; so do
the old extremities some stored event of the DAG cites; the event becomes one, unless a stored
event already cites it (it arrived late): then the extremities stay as they were.

"Cites" is answered by storage (``referenced_as_prev``: only events stored with state, neither
rejected nor soft-failed, count). The functions here take that answer as data.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from roomserver.core.ids import EventId


def extremities_to_check(
    old: Sequence[EventId], event_id: EventId, superseded: Collection[str]
) -> list[EventId]:
    """The IDs whose citation by a stored event decides the new extremities: the event itself,
    then the old extremities it does not supersede (cite or reach through failed prevs)."""
    return [event_id, *(e for e in old if e not in superseded and e != event_id)]


def new_forward_extremities(
    old: Sequence[EventId], event_id: EventId, superseded: Collection[str], cited: Collection[str]
) -> tuple[EventId, ...]:
    """The forward extremities after adding the accepted NEW event ``event_id``.

    ``old``: the extremities before it; ``superseded``: what the event builds on (its prev
    events, and what it reaches through failed prev events or what events just stored for it
    cite); ``cited``: which of ``extremities_to_check`` a stored event cites. Sorted, so equal
    sets compare equal."""
    if event_id in cited and old:
        return tuple(sorted(old))  # it arrived late: something already builds on it
    kept = [e for e in old if e not in superseded and e != event_id and e not in cited]
    return tuple(sorted([*kept, event_id]))


def missing_prev_events(
    prev_event_ids: Sequence[EventId], has_state: dict[EventId, bool]
) -> list[EventId]:
    """Prev events that are unknown (absent from ``has_state``) or known without state
    (outliers): the DAG has a gap before the event."""
    return [p for p in prev_event_ids if not has_state.get(p, False)]
