"""A state change writes one snapshot: the event after it reuses the room's current state
(the state after the state event) instead of writing an equal snapshot of its own."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from roomserver.api import InputRoomEvent, Kind, Outcome, encode_input_batch
from roomserver.core.pdu import Event
from roomserver.input import Disposition, handle_message
from roomserver.storage import SqlStorage, open_storage
from roomserver.storage.engine import Tx
from tests.input.helpers import ALICE, BOB, Harness, new_room
from tests.pgutil import fresh_schema_url, pg_database

__all__ = ["pg_database"]


@dataclass
class Info:
    num_delivered: int = 1
    stream_seq: int = 7


@pytest.fixture(params=["sqlite", "postgresql"])
async def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStorage]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/dedup-{secrets.token_hex(4)}.db"
    else:
        url = await fresh_schema_url(request.getfixturevalue("pg_database"))
    store = await open_storage(url)
    try:
        yield store
    finally:
        await store.close()


async def _snapshot_rows(store: SqlStorage) -> int:
    async def count(tx: Tx) -> int:
        row = await tx.fetchrow("SELECT COUNT(*) FROM state_snapshots")
        assert row is not None
        return int(row[0])

    return await store.engine.run(count, write=False)


@pytest.mark.parametrize("batched", [False, True])
async def test_a_state_change_writes_one_snapshot(sql_store: SqlStorage, batched: bool) -> None:
    """A linear room with a state change every 50 events: one snapshot row per distinct
    state, every event's state before and the current state as built."""
    builder, events = new_room()
    # The state before each event, as the builder tracked it while building.
    expected: dict[str, dict[tuple[str, str], str]] = {}
    state: dict[tuple[str, str], str] = {}
    for event in events:
        expected[event.event_id] = dict(state)
        if event.state_key is not None:
            state[event.state_tuple] = event.event_id
    more: list[Event] = []
    for i in range(200):
        expected_before = dict(builder.state)
        if i == 3:
            event = builder.join(BOB)
        elif i % 50 == 49:
            event = builder.send("m.room.topic", ALICE, {"topic": f"t{i}"}, state_key="")
        else:
            event = builder.message(ALICE, f"m{i}")
        expected[event.event_id] = expected_before
        more.append(event)
    events += more
    h = Harness(builder, store=sql_store)
    if batched:
        for start in range(0, len(events), 25):
            part = events[start : start + 25]
            message = encode_input_batch(
                [InputRoomEvent(event=dict(e.pdu), kind=Kind.NEW) for e in part]
            )
            decision = await handle_message(h.processor, builder.room_id, message, Info())
            assert decision.disposition is Disposition.ACK
            assert all(r.outcome is Outcome.ACCEPTED for r in decision.results)
    else:
        await h.accept_all(events)
    distinct: set[frozenset[tuple[tuple[str, str], str]]] = set()
    for event in events:
        before = await h.state_before(event.event_id)
        assert before == expected[event.event_id], event.event_id
        distinct.add(frozenset(before.items()))
    current = await h.current_state()
    assert current == dict(builder.state)
    distinct.add(frozenset(current.items()))
    distinct.discard(frozenset())  # the create event's: no snapshot
    assert await _snapshot_rows(sql_store) == len(distinct)
