"""The bulk path for outliers gives exactly the normal path's outcomes (``input/bulk.py``)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey, VerifyKey

from roomserver.api import EventResult, InputRoomEvent, Kind, Outcome
from roomserver.core.pdu import Event
from roomserver.core.room_versions import RoomVersion
from roomserver.core.signatures import verify_event
from roomserver.input import InputProcessor
from roomserver.input.bulk import OutlierImporter, VerifyKeySource, topological_order
from roomserver.storage import SqlStorage, open_storage
from roomserver.storage.engine import Row, Tx
from roomserver.storage.ids import unpack_ints
from roomserver.testing.joins import JoinRoom, build_join_room
from tests.input.fakes import RecordingPublisher
from tests.pgutil import fresh_schema_url, pg_database

__all__ = ["pg_database"]


class RoomKeys:
    """A key ring knowing the room's signers; ``pooled`` also hands out the keys, so that the
    bulk path checks signatures in its pool."""

    def __init__(self, room: JoinRoom) -> None:
        self.keys = {
            server: {kid: SigningKey(seed).verify_key} for server, (kid, seed) in room.keys.items()
        }

    async def verify_event(self, event: Event | Mapping[str, Any], room_version: str) -> None:
        verify_event(event, room_version=room_version, verify_keys=self.keys)


class PooledRoomKeys(RoomKeys):
    async def verify_keys_for_event(
        self, event: Event | Mapping[str, Any], rules: RoomVersion
    ) -> dict[str, dict[str, VerifyKey]]:
        return self.keys


def test_pooled_keys_are_a_verify_key_source() -> None:
    room = build_join_room(2)
    assert isinstance(PooledRoomKeys(room), VerifyKeySource)
    assert not isinstance(RoomKeys(room), VerifyKeySource)


async def _join(
    store: SqlStorage, room: JoinRoom, *, bulk: bool, pooled: bool = True
) -> list[EventResult]:
    keyring = PooledRoomKeys(room) if pooled else RoomKeys(room)
    processor = InputProcessor(store, keyring, None, RecordingPublisher(), server_name="rs.test")
    items = [InputRoomEvent(event=p, kind=Kind.OUTLIER) for p in room.outliers]
    if bulk:
        with ThreadPoolExecutor(2) as pool:
            importer = OutlierImporter(
                store, keyring, server_name="rs.test", executor=pool, min_outliers=1
            )
            report = await importer.import_outliers(room.room_id, items)
        assert report.stored > 0
    results = [await processor.process(item) for item in items]
    join = InputRoomEvent(
        event=room.join,
        kind=Kind.NEW,
        has_state=True,
        state_event_ids=tuple(room.state_event_ids),
    )
    results.append(await processor.process(join))
    return results


async def _snapshot(store: SqlStorage, room: JoinRoom, results: list[EventResult]) -> Any:
    """Everything the two paths must agree on: outcomes, stored rows, auth chains, state."""
    ids = sorted({r.event_id for r in results if r.event_id is not None})
    stored = await store.get_events(ids)
    rows = {
        i: (s.outlier, s.rejected, s.rejection_reason, s.soft_failed, dict(s.event.pdu))
        for i, s in stored.items()
    }
    chains = {i: sorted(await store.auth_chain([i])) for i in sorted(stored)}
    info = await store.room(room.room_id)
    assert info is not None
    state = await store.state_map(info.current_state)
    return (
        [(r.event_id, r.outcome, r.reason) for r in results],
        rows,
        chains,
        state,
        (await _chain_index(store)),
    )


async def _chain_index(store: SqlStorage) -> dict[str, tuple[str, int, list[tuple[str, int]]]]:
    """The auth chain index with numeric IDs named by event IDs: each event's chain (named by
    the event that started it), its sequence, and its reach."""

    async def read(tx: Tx) -> list[Row]:
        return await tx.fetch(
            "SELECT e.event_nid, e.event_id, p.chain_id, p.sequence, p.reach "
            "FROM auth_chain_positions p JOIN events e ON e.event_nid = p.event_nid"
        )

    rows = await store.engine.run(read, write=False)
    name = {nid: eid for nid, eid, *_ in rows}
    out = {}
    for _, eid, chain, sequence, reach in rows:
        flat = unpack_ints(reach, eid)
        pairs = sorted((name[flat[i]], flat[i + 1]) for i in range(0, len(flat), 2))
        out[eid] = (name[chain], sequence, pairs)
    return out


async def _compare(url_of: Any, room: JoinRoom, *, pooled: bool = True) -> None:
    snapshots = []
    for bulk in (False, True):
        store = await open_storage(await url_of(bulk))
        try:
            results = await _join(store, room, bulk=bulk, pooled=pooled)
            snapshots.append(await _snapshot(store, room, results))
        finally:
            await store.close()
    normal, bulked = snapshots
    assert bulked[0] == normal[0]
    assert bulked[1] == normal[1]
    assert bulked[2] == normal[2]
    assert bulked[3] == normal[3]
    assert bulked[4] == normal[4]
    assert normal[0][-1][1] is Outcome.ACCEPTED  # the join


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    members=st.integers(min_value=0, max_value=40),
    seed=st.integers(min_value=0, max_value=2**16),
    version=st.sampled_from(["1", "6", "10", "11", "12"]),
    odd=st.booleans(),
    pooled=st.booleans(),
)
def test_bulk_path_equals_normal_path_on_sqlite(
    members: int, seed: int, version: str, odd: bool, pooled: bool
) -> None:
    room = build_join_room(members, version=version, seed=seed, odd=odd)
    with tempfile.TemporaryDirectory() as tmp:

        async def url_of(bulk: bool) -> str:
            return f"sqlite:///{Path(tmp)}/{'bulk' if bulk else 'normal'}.db"

        asyncio.run(_compare(url_of, room, pooled=pooled))


@pytest.mark.parametrize("version", ["10", "12"])
async def test_bulk_path_equals_normal_path_on_postgresql(pg_database: str, version: str) -> None:
    room = build_join_room(60, version=version, seed=7, odd=True)

    async def url_of(_: bool) -> str:
        return await fresh_schema_url(pg_database)

    await _compare(url_of, room)


async def test_odd_room_has_every_kind_of_outcome(tmp_path: Path) -> None:
    """The generated room exercises rejection, invalidity and missing auth events."""
    room = build_join_room(20, seed=3, odd=True)
    store = await open_storage(f"sqlite:///{tmp_path}/odd.db")
    try:
        results = await _join(store, room, bulk=True)
    finally:
        await store.close()
    outcomes = [r.outcome for r in results]
    assert Outcome.INVALID in outcomes
    reasons = [r.reason or "" for r in results if r.outcome is Outcome.REJECTED]
    assert any(r.startswith("missing auth events") for r in reasons)
    assert any(not r.startswith("missing auth events") for r in reasons)
    assert results[-1].outcome is Outcome.ACCEPTED


def test_topological_order_puts_auth_events_first_and_drops_cycles() -> None:
    room = build_join_room(5, seed=1)
    from roomserver.core.pdu import parse_event

    events = [parse_event(p, room.room_version) for p in room.outliers]
    shuffled = list(reversed(events))
    ordered, cycles = topological_order(shuffled)
    assert cycles == []
    seen: set[str] = set()
    batch = {e.event_id for e in events}
    for event in ordered:
        assert all(a in seen for a in event.auth_event_ids if a in batch)
        seen.add(event.event_id)
