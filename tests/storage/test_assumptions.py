"""Contract: ``persist_many(writes, expect=InputAssumption)`` checks what a message assumed
instead of reading, in the transaction that commits it: ``StaleRead`` and nothing written
when any of it is false (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from roomserver.ports import InputAssumption, StaleRead, StateDelta
from roomserver.storage import open_storage
from tests.storage.helpers import LinearRoom, linear_write

ROOM = "!assume:example.org"


async def _room(storage_url: str) -> tuple[Any, LinearRoom]:
    store = await open_storage(storage_url)
    room = LinearRoom(store, ROOM)
    await room.create()
    return store, room


def _next_write(room: LinearRoom, seed: str) -> Any:
    event = room.next_event(seed)
    return event, linear_write(
        event,
        expected_version=room.version,
        state_before=StateDelta(room.current, {}),
        current_state=StateDelta(room.current, {}),
    )


async def test_a_true_assumption_commits_the_writes(storage_url: str) -> None:
    store, room = await _room(storage_url)
    try:
        event, write = _next_write(room, "fresh")
        extremity = room.latest[0]
        expect = InputAssumption(
            ROOM,
            room.version or 0,
            not_stored=(event.event_id,),
            not_cited=(event.event_id, extremity),
            not_redacted=(event.event_id,),
        )
        await store.persist_many([write], expect=expect)
        assert event.event_id in await store.get_events([event.event_id])
        # Nothing to write: the check alone.
        assert (
            await store.persist_many([], expect=InputAssumption(ROOM, (room.version or 0) + 1))
            == []
        )
    finally:
        await store.close()


@pytest.mark.parametrize("wrong", ["version", "stored", "cited", "no room"])
async def test_a_false_assumption_writes_nothing(storage_url: str, wrong: str) -> None:
    store, room = await _room(storage_url)
    try:
        cited = list(room.results)[-2]  # the creator's join: the power levels cite it
        event, write = _next_write(room, "stale")
        version = room.version or 0
        expect = {
            "version": InputAssumption(ROOM, version - 1),
            "stored": InputAssumption(ROOM, version, not_stored=(room.latest[0],)),
            "cited": InputAssumption(ROOM, version, not_cited=(cited,)),
            "no room": InputAssumption("!nowhere:example.org", 1),
        }[wrong]
        with pytest.raises(StaleRead):
            await store.persist_many([write], expect=expect)
        assert await store.get_events([event.event_id]) == {}
        info = await store.room(ROOM)
        assert info is not None and info.version == version
    finally:
        await store.close()
