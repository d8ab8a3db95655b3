"""The entry point and the provider contract."""

from __future__ import annotations

import pytest

from roomserver.core.errors import UnknownRoomVersion
from roomserver.core.stateres import (
    MappingEventProvider,
    MissingEvent,
    SupportsRejection,
    resolve_state,
)
from roomserver.testing.builder import RoomBuilder
from tests.core.stateres.helpers import CountingProvider, random_fork

TOPIC = ("m.room.topic", "")


def test_mapping_and_provider_give_the_same_answer() -> None:
    b, sets = random_fork("10", 1)
    assert resolve_state("10", sets, b.events) == resolve_state(
        "10", sets, MappingEventProvider(b.events)
    )
    assert resolve_state("10", sets, CountingProvider(b.events)) == resolve_state(
        "10", sets, b.events
    )


@pytest.mark.parametrize("version", ["2", "10", "12"])
def test_rejections_are_read_from_a_provider_that_knows_them(version: str) -> None:
    """``MappingEventProvider(rejected=...)`` answers ``SupportsRejection``: a rejected event is
    left out of the resolution; a provider without ``is_rejected`` has every event count."""
    b = RoomBuilder(version)
    b.create_room("@alice:example.org")
    fork = b.latest
    base = dict(b.state)
    early = b.send("m.room.topic", "@alice:example.org", {"topic": "early"}, state_key="")
    b.latest = fork
    late = b.send("m.room.topic", "@alice:example.org", {"topic": "late"}, state_key="")
    sets = [{**base, TOPIC: early.event_id}, {**base, TOPIC: late.event_id}]
    # Same sender and power: the later timestamp is applied last and wins.
    assert resolve_state(version, sets, CountingProvider(b.events))[TOPIC] == late.event_id
    assert resolve_state(version, sets, MappingEventProvider(b.events))[TOPIC] == late.event_id
    with_rejection = MappingEventProvider(b.events, rejected={late.event_id})
    assert isinstance(with_rejection, SupportsRejection) and with_rejection.is_rejected(
        late.event_id
    )
    assert resolve_state(version, sets, with_rejection)[TOPIC] == early.event_id


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
