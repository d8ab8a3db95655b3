"""The state read model (``roomserver.state_view``) on its own: the state after a stored event,
the event cache in front of storage. ``tests/query`` checks it end to end through the queries.
"""

from __future__ import annotations

from collections.abc import Iterable

from roomserver.api import StoredEvent
from roomserver.core.ids import EventId
from roomserver.ports import SnapshotId, StateDelta
from roomserver.state_view import EventCache, apply_changes, state_after_delta
from roomserver.testing.builder import RoomBuilder

ALICE = "@alice:example.org"
TOPIC = ("m.room.topic", "")


def _room() -> tuple[RoomBuilder, StoredEvent, StoredEvent]:
    b = RoomBuilder("10")
    b.create_room(ALICE)
    topic = StoredEvent(
        b.send("m.room.topic", ALICE, {"topic": "t"}, state_key=""), outlier=False, state_snapshot=7
    )
    message = StoredEvent(b.message(ALICE), outlier=False, state_snapshot=8)
    return b, topic, message


def test_state_after_an_event_is_the_state_before_plus_itself() -> None:
    _, topic, message = _room()
    assert state_after_delta(topic) == StateDelta(SnapshotId(7), {TOPIC: topic.event.event_id})
    # A message changes no state; a soft-failed state event is part of its own state after.
    assert state_after_delta(message) == StateDelta(SnapshotId(8), {})
    soft = StoredEvent(topic.event, outlier=False, soft_failed=True, state_snapshot=7)
    assert state_after_delta(soft).changes == {TOPIC: topic.event.event_id}
    # A rejected state event adds nothing: its state after is the state before it.
    rejected = StoredEvent(topic.event, outlier=False, rejected=True, state_snapshot=7)
    assert state_after_delta(rejected) == StateDelta(SnapshotId(7), {})
    # An outlier has no snapshot to build on.
    assert state_after_delta(StoredEvent(topic.event, outlier=True)).base is None


def test_apply_changes_sets_and_removes() -> None:
    state = {TOPIC: "$old", ("m.room.name", ""): "$name"}
    apply_changes(state, {TOPIC: "$new", ("m.room.name", ""): None, ("m.room.avatar", ""): "$a"})
    assert state == {TOPIC: "$new", ("m.room.avatar", ""): "$a"}


class _CountingStore:
    def __init__(self, events: dict[str, StoredEvent]) -> None:
        self.events = events
        self.asked: list[list[str]] = []

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        wanted = list(event_ids)
        self.asked.append(wanted)
        return {i: self.events[i] for i in wanted if i in self.events}


async def test_event_cache_keeps_accepted_events_and_forgets_by_room() -> None:
    b, topic, message = _room()
    rejected_event = b.message(ALICE, "rejected")
    rejected = StoredEvent(rejected_event, outlier=False, rejected=True, state_snapshot=9)
    store = _CountingStore({s.event.event_id: s for s in (topic, message, rejected)})
    cache = EventCache(store, capacity=2)
    ids = [topic.event.event_id, message.event.event_id, rejected_event.event_id]

    assert await cache.get([*ids, EventId("$absent")]) == {i: store.events[i] for i in ids}
    assert store.asked == [[*ids, "$absent"]]
    # Accepted events are served from the cache; a rejected one is asked for again.
    assert await cache.get(ids) == {i: store.events[i] for i in ids}
    assert store.asked[-1] == [rejected_event.event_id]
    assert cache.peek(ids) == {i: store.events[i] for i in ids[:2]}

    # Capacity 2: remembering a third accepted event drops the least recently used.
    newest = StoredEvent(b.message(ALICE, "newest"), outlier=False, state_snapshot=10)
    cache.peek([topic.event.event_id])  # peeking does not refresh
    await cache.get([message.event.event_id])
    cache.remember(newest)
    assert set(cache.peek([*ids, newest.event.event_id])) == {
        message.event.event_id,
        newest.event.event_id,
    }
    cache.evict(message.event.event_id)
    assert cache.peek([message.event.event_id]) == {}
    cache.forget_room(b.room_id)
    assert cache.peek([newest.event.event_id]) == {}


async def test_settling_a_placeholder_keeps_every_other_field() -> None:
    from dataclasses import fields, replace

    _, topic, _ = _room()
    stored = StoredEvent(
        topic.event,
        outlier=False,
        rejected=False,
        rejection_reason="kept",
        soft_failed=True,
        state_snapshot=-3,
        redacted_because=EventId("$r"),
        stream_position=42,
    )
    # Every field but ``rejected`` (only accepted events are cached) unlike its default: a
    # field added later must be set here, and kept by the settling.
    others = [f for f in fields(StoredEvent) if f.name not in ("event", "rejected")]
    assert all(getattr(stored, f.name) != f.default for f in others)
    cache = EventCache(None)  # type: ignore[arg-type]
    cache.remember(stored)
    cache.settle_snapshots([topic.event.event_id], lambda s: SnapshotId(17) if s == -3 else s)
    settled = cache.peek([topic.event.event_id])[topic.event.event_id]
    assert settled == replace(stored, state_snapshot=17)
