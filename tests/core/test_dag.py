"""Table tests of the forward extremity rules (``core/dag.py``)."""

from __future__ import annotations

import pytest

from roomserver.core.dag import (
    extremities_to_check,
    missing_prev_events,
    new_forward_extremities,
)

# (case, old extremities, event, superseded by the event, cited by stored events, expected)
CASES = [
    ("extends the only extremity", ["$a"], "$b", {"$a"}, set(), ("$b",)),
    ("merges two extremities", ["$a", "$c"], "$d", {"$a", "$c"}, set(), ("$d",)),
    ("forks: the other extremity stays", ["$a", "$c"], "$d", {"$a"}, set(), ("$c", "$d")),
    ("first event of a room", [], "$create", set(), set(), ("$create",)),
    ("arrived late: already cited", ["$x"], "$b", {"$a"}, {"$b"}, ("$x",)),
    ("late but the room had none", [], "$b", set(), {"$b"}, ("$b",)),
    ("an old extremity cited by a stored event goes", ["$a", "$c"], "$d", {"$a"}, {"$c"}, ("$d",)),
    ("reached through a failed prev", ["$a", "$r"], "$d", {"$r", "$a"}, set(), ("$d",)),
    ("the event itself was an extremity", ["$d", "$a"], "$d", set(), set(), ("$a", "$d")),
    ("sorted whatever the order", ["$z", "$m"], "$a", set(), set(), ("$a", "$m", "$z")),
]


@pytest.mark.parametrize(
    ("old", "event", "superseded", "cited", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_new_forward_extremities(
    old: list[str], event: str, superseded: set[str], cited: set[str], expected: tuple[str, ...]
) -> None:
    assert new_forward_extremities(old, event, superseded, cited) == expected
    # Only the event and the kept old extremities can change the answer through ``cited``.
    asked = extremities_to_check(old, event, superseded)
    assert asked[0] == event
    irrelevant = {e for e in old if e not in asked}
    assert new_forward_extremities(old, event, superseded, cited | irrelevant) == expected


def test_extremities_to_check_keeps_order_and_skips_superseded() -> None:
    assert extremities_to_check(["$c", "$a", "$b"], "$e", {"$a"}) == ["$e", "$c", "$b"]
    assert extremities_to_check(["$e"], "$e", set()) == ["$e"]


@pytest.mark.parametrize(
    ("prevs", "known", "missing"),
    [
        (["$a"], {"$a": True}, []),
        (["$a", "$b"], {"$a": True}, ["$b"]),
        (["$a"], {"$a": False}, ["$a"]),  # an outlier: known, but without state
        ([], {}, []),
    ],
)
def test_missing_prev_events(prevs: list[str], known: dict[str, bool], missing: list[str]) -> None:
    assert missing_prev_events(prevs, known) == missing
