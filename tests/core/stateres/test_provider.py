"""The entry point and the provider contract."""

from __future__ import annotations

import pytest

from roomserver.core.errors import UnknownRoomVersion
from roomserver.core.stateres import (
    EventProvider,
    MappingEventProvider,
    MissingEvent,
    SupportsRejection,
    resolve_state,
)
from tests.core.stateres.helpers import CountingProvider, random_fork


def test_mapping_and_provider_give_the_same_answer() -> None:
    b, sets = random_fork("10", 1)
    assert resolve_state("10", sets, b.events) == resolve_state(
        "10", sets, MappingEventProvider(b.events)
    )
    assert resolve_state("10", sets, CountingProvider(b.events)) == resolve_state(
        "10", sets, b.events
    )


def test_protocols_are_recognised() -> None:
    assert isinstance(MappingEventProvider({}), EventProvider)
    assert isinstance(MappingEventProvider({}), SupportsRejection)
    assert not isinstance(CountingProvider({}), SupportsRejection)


def test_no_state_sets_resolve_to_nothing() -> None:
    assert resolve_state("10", [], {}) == {}


def test_unknown_room_version() -> None:
    with pytest.raises(UnknownRoomVersion):
        resolve_state("999", [{}], {})


def test_missing_conflicted_event_is_reported() -> None:
    b, sets = random_fork("10", 2)
    key = next(k for k in sets[0] if sets[0][k] != sets[1].get(k))
    missing = sets[0][key]
    events = {k: v for k, v in b.events.items() if k != missing}
    with pytest.raises(MissingEvent) as caught:
        resolve_state("10", sets, events)
    assert caught.value.event_id == missing


def test_result_is_a_fresh_dict() -> None:
    b, sets = random_fork("10", 4)
    result = resolve_state("10", [sets[0]], b.events)
    result[("x", "")] = "$y"
    assert ("x", "") not in sets[0]
