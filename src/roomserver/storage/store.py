"""``SqlStorage``: the ``roomserver.ports.Storage`` implementation over either engine."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from roomserver.api import StoredEvent
from roomserver.core.canonical_json import canonical_json
from roomserver.core.ids import EventId, RoomId, ServerName
from roomserver.ports import (
    EventFacts,
    EventWrite,
    InputAssumption,
    InputReads,
    MemberFacts,
    OutboxEntry,
    OutlierRow,
    PersistResult,
    RedactionRecord,
    RoomInfo,
    ServerKeyRecord,
    SnapshotId,
    StateKey,
    StorageError,
    record_placeholders,
)
from roomserver.storage import authchain, bulk, events, inspect, state
from roomserver.storage.batch import WriteBatch
from roomserver.storage.cache import Caches, TxCache
from roomserver.storage.dialect import Dialect
from roomserver.storage.engine import Engine, Tx

T = TypeVar("T")

#: How long ``get_server_keys`` answers from memory. Our own ``put_server_keys`` refreshes it at
#: once; keys another process stores are seen within this delay (the key ring then at worst
#: fetches a key again).
SERVER_KEY_CACHE_S = 5.0


def _encode(write: EventWrite) -> events.EncodedWrite:
    """Encode a write's JSON before entering the transaction."""
    strict = write.event.rules.strict_canonical_json
    redacted = (
        None
        if write.apply_redaction is None
        else canonical_json(write.apply_redaction.redacted_pdu, strict=strict)
    )
    encoded = write.event.canonical_bytes  # parse_event encoded it already (size check)
    if encoded is None:
        encoded = canonical_json(write.event.pdu, strict=strict)
    return events.EncodedWrite(write, encoded, redacted)


class SqlStorage:
    """Everything the roomserver remembers, in SQLite or PostgreSQL (see ``docs/storage.md``)."""

    def __init__(self, engine: Engine, *, cache_size: int = 200_000) -> None:
        self._engine = engine
        self._caches = Caches(cache_size)
        self._server_keys: dict[str, tuple[float, dict[str, ServerKeyRecord]]] = {}
        self._server_keys_generation = 0  # bumped by put_server_keys: drops racing reads

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    @property
    def engine(self) -> Engine:
        return self._engine

    def set_fault_injector(self, injector: Callable[[str], None] | None) -> None:
        """Tests: ``injector(point)`` is called at named points inside write transactions."""
        self._engine.fault_injector = injector

    def clear_caches(self) -> None:
        self._caches.clear()
        self._server_keys.clear()

    async def _run(
        self, fn: Callable[[Tx, TxCache], Coroutine[Any, Any, T]], *, write: bool = False
    ) -> T:
        async def body(tx: Tx) -> T:
            cache = TxCache(self._caches)
            result = await fn(tx, cache)
            tx.after_commit(cache.commit)
            return result

        return await self._engine.run(body, write=write)

    async def close(self) -> None:
        await self._engine.close()

    # -- EventStore -------------------------------------------------------------------------------
    async def get_events(self, event_ids: Iterable[str]) -> dict[EventId, StoredEvent]:
        wanted = list(event_ids)
        if not wanted:
            return {}
        return await self._run(lambda tx, cache: events.get_events(tx, cache, wanted))

    async def event_facts(self, event_ids: Iterable[EventId]) -> dict[EventId, EventFacts]:
        wanted = list(event_ids)
        if not wanted:
            return {}
        return await self._run(lambda tx, _: events.event_facts(tx, wanted))

    async def member_facts(self, event_ids: Iterable[EventId]) -> dict[EventId, MemberFacts]:
        wanted = list(event_ids)
        if not wanted:
            return {}
        return await self._run(lambda tx, _: events.member_facts(tx, wanted))

    async def room(self, room_id: RoomId) -> RoomInfo | None:
        return await self._run(lambda tx, _: events.room_info(tx, room_id))

    async def room_version_of(self, room_id: str) -> str | None:
        return await self._run(lambda tx, _: events.room_version_of(tx, room_id))

    # -- operator overviews (roomserver.storage.inspect) ------------------------------------------
    async def list_rooms(self, *, limit: int = 1000) -> list[inspect.RoomOverview]:
        return await self._run(lambda tx, _: inspect.list_rooms(tx, limit=limit))

    async def event_counts(self, room_id: str) -> inspect.EventCounts:
        return await self._run(lambda tx, _: inspect.event_counts(tx, room_id))

    async def newest_event_ids(self, room_id: str, *, limit: int) -> list[EventId]:
        return await self._run(lambda tx, _: inspect.newest_event_ids(tx, room_id, limit=limit))

    async def persist(self, write: EventWrite) -> PersistResult:
        encoded = _encode(write)
        return await self._run(lambda tx, cache: events.persist(tx, cache, encoded), write=True)

    async def persist_many(
        self, writes: Sequence[EventWrite], *, expect: InputAssumption | None = None
    ) -> list[PersistResult]:
        """``BatchPersist``: the writes in order, in one transaction (JSON encoded first),
        after checking ``expect``."""
        encoded = [_encode(w) for w in writes]
        last_of_room = {w.event.room_id: i for i, w in enumerate(writes)}
        counts = Counter(w.event.event_id for w in writes)
        repeated = {event_id for event_id, n in counts.items() if n > 1}

        async def fn(tx: Tx, cache: TxCache) -> list[PersistResult]:
            batch = WriteBatch()
            if expect is not None:
                await events.check_assumption(tx, batch, expect)
            resolved: dict[int, int | None] = {}
            results: list[PersistResult] = []
            room_nids: dict[int, int] = {}
            ahead_until = 0  # writes before this index had their event rows inserted ahead
            for index, enc in enumerate(encoded):
                if index >= ahead_until:
                    # Resolved as far as the writes before them allow (the rest stay negative).
                    ahead = (e.resolve(resolved) for e in encoded[index:])
                    run = await events.insert_run(tx, cache, batch, ahead, repeated=repeated)
                    ahead_until = index + max(run, 1)
                placeholder = enc.resolve(resolved).unresolved()
                if placeholder is not None:
                    raise StorageError(f"snapshot placeholder {placeholder} is not defined")
                write = enc.write
                result, room_nid = await events.persist_in_batch(tx, cache, batch, enc)
                record_placeholders(write, result, resolved)
                results.append(result)
                if last_of_room[write.event.room_id] == index:
                    room_nids[index] = room_nid
            await batch.flush(tx)
            for index, room_nid in room_nids.items():
                pending = await events.unsent_outbox(tx, room_nid)
                results[index] = replace(results[index], pending_outbox=pending)
            return results

        return await self._run(fn, write=True)

    async def store_outliers(
        self, room_id: str, room_version: str, rows: Sequence[OutlierRow]
    ) -> list[EventId]:
        """``roomserver.input.bulk.BulkStore``: many outliers in one transaction (see
        ``storage/bulk.py``); the IDs stored now."""
        return await self._run(
            lambda tx, cache: bulk.store_outliers(tx, cache, room_id, room_version, rows),
            write=True,
        )

    async def redaction_records_of(self, event_ids: Sequence[str]) -> list[RedactionRecord]:
        """The redaction records naming any of ``event_ids`` as target or redaction."""
        return await self._run(lambda tx, _: events.redactions_for_many(tx, list(event_ids)))

    async def redactions_for(self, event_id: str) -> list[RedactionRecord]:
        """The records naming ``event_id`` as target or redaction (no flags are read: only
        accepted, not soft-failed redactions are recorded)."""
        return await self._run(lambda tx, _: events.redactions_for(tx, event_id))

    async def referenced_as_prev(self, room_id: str, event_ids: Iterable[str]) -> set[EventId]:
        """The IDs among ``event_ids`` that an accepted, not soft-failed event of ``room_id``
        with state lists in its prev_events (see ``ports.EventStore.referenced_as_prev``)."""
        wanted = sorted(set(event_ids))
        return await self._run(lambda tx, _: events.referenced_as_prev(tx, room_id, wanted))

    async def read_for_input(
        self,
        event_ids: Iterable[str],
        *,
        room_id: RoomId,
        referenced_ids: Iterable[str],
        redactions_of: str | Sequence[str] | None,
        with_room: bool = False,
    ) -> InputReads:
        """``get_events``, ``referenced_as_prev(room_id, referenced_ids)``,
        ``redactions_for`` and (``with_room``) ``room(room_id)`` in one hand-off."""
        wanted = list(event_ids)
        cited = sorted(set(referenced_ids))
        targets = (
            [] if redactions_of is None
            else [redactions_of] if isinstance(redactions_of, str)
            else sorted(set(redactions_of))
        )  # fmt: skip

        async def fn(tx: Tx, cache: TxCache) -> InputReads:
            found = await events.get_events(tx, cache, wanted) if wanted else {}
            referenced = await events.referenced_as_prev(tx, room_id, cited) if cited else set()
            if len(targets) == 1:
                redactions = await events.redactions_for(tx, targets[0])
            else:
                redactions = await events.redactions_for_many(tx, targets) if targets else []
            room = await events.room_info(tx, room_id) if with_room else None
            return InputReads(found, referenced, redactions, room)

        return await self._run(fn)

    async def pending_outbox(self, room_id: str) -> list[OutboxEntry]:
        return await self._run(lambda tx, _: events.pending_outbox(tx, room_id))

    async def rooms_with_unsent_outbox(self) -> list[RoomId]:
        """Rooms with outputs committed but not marked sent (a start-up sweep publishes them)."""
        return await self._run(lambda tx, _: events.rooms_with_unsent_outbox(tx))

    async def mark_outbox_sent(self, room_id: str, sequences: Collection[int]) -> None:
        """Mark entries sent. Their message IDs stay (deduplication); payloads are dropped."""
        wanted = sorted(set(sequences))
        if not wanted:
            return

        async def fn(tx: Tx, _: TxCache) -> None:
            await events.mark_outbox_sent(tx, room_id, wanted)

        await self._run(fn, write=True)

    # -- StateStore -------------------------------------------------------------------------------
    async def state_map(self, snapshot: SnapshotId | None) -> dict[StateKey, EventId]:
        return await self._run(lambda tx, cache: state.state_map(tx, cache, snapshot))

    async def state_entries(
        self, snapshot: SnapshotId | None, keys: Iterable[StateKey]
    ) -> dict[StateKey, EventId]:
        wanted = list(keys)
        if snapshot is None or not wanted:
            return {}
        return await self._run(lambda tx, cache: state.state_entries(tx, cache, snapshot, wanted))

    async def state_diff(
        self, old: SnapshotId | None, new: SnapshotId | None
    ) -> tuple[dict[StateKey, EventId], dict[StateKey, EventId]]:
        return await self._run(lambda tx, cache: state.state_diff(tx, cache, old, new))

    # -- AuthChainIndex ---------------------------------------------------------------------------
    async def auth_chain(self, event_ids: Iterable[str]) -> set[EventId]:
        wanted = list(event_ids)
        return await self._run(lambda tx, cache: authchain.auth_chain(tx, cache, wanted))

    async def auth_chain_difference(self, state_sets: Sequence[Collection[str]]) -> set[EventId]:
        sets = [list(s) for s in state_sets]
        return await self._run(lambda tx, cache: authchain.auth_chain_difference(tx, cache, sets))

    # -- MembershipStore --------------------------------------------------------------------------
    # Rows change only with a RoomUpdate's membership changes (the current state's member
    # events): rejected, soft-failed and outlier events never appear here.
    async def membership(self, room_id: str, user_id: str) -> str | None:
        async def fn(tx: Tx, _: TxCache) -> str | None:
            row = await tx.fetchrow(
                "SELECT m.membership FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid "
                "WHERE r.room_id = ? AND m.user_id = ?",
                room_id,
                user_id,
            )
            return None if row is None else str(row[0])

        return await self._run(fn)

    async def joined_users(self, room_id: str) -> list[str]:
        async def fn(tx: Tx, _: TxCache) -> list[str]:
            rows = await tx.fetch(
                "SELECT m.user_id FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid "
                "WHERE r.room_id = ? AND m.membership = 'join' ORDER BY m.user_id",
                room_id,
            )
            return [r[0] for r in rows]

        return await self._run(fn)

    async def joined_servers(self, room_id: str) -> list[ServerName]:
        async def fn(tx: Tx, _: TxCache) -> list[ServerName]:
            rows = await tx.fetch(
                "SELECT DISTINCT m.server_name FROM memberships m "
                "JOIN rooms r ON r.room_nid = m.room_nid "
                "WHERE r.room_id = ? AND m.membership = 'join' ORDER BY m.server_name",
                room_id,
            )
            return [r[0] for r in rows]

        return await self._run(fn)

    # -- Server signing keys ----------------------------------------------------------------------
    async def get_server_keys(
        self, server_name: str, key_ids: Collection[str] | None = None
    ) -> dict[str, ServerKeyRecord]:
        """Cached keys of ``server_name`` (only ``key_ids`` if given), by key ID. Answered from
        memory for ``SERVER_KEY_CACHE_S`` after a read (the key ring asks for every event)."""
        hit = self._server_keys.get(server_name)
        if hit is not None and time.monotonic() - hit[0] < SERVER_KEY_CACHE_S:
            return {k: r for k, r in hit[1].items() if key_ids is None or k in key_ids}
        read_at, generation = time.monotonic(), self._server_keys_generation
        records = await self._read_server_keys(server_name)
        if generation == self._server_keys_generation:
            self._server_keys[server_name] = (read_at, records)
        return {k: r for k, r in records.items() if key_ids is None or k in key_ids}

    async def _read_server_keys(self, server_name: str) -> dict[str, ServerKeyRecord]:
        async def fn(tx: Tx, _: TxCache) -> dict[str, ServerKeyRecord]:
            rows = await tx.fetch(
                "SELECT key_id, verify_key, valid_until_ts, expired_ts FROM server_keys "
                "WHERE server_name = ? ORDER BY key_id",
                server_name,
            )
            return {
                r[0]: ServerKeyRecord(ServerName(server_name), r[0], bytes(r[1]), int(r[2]), r[3])
                for r in rows
            }

        return await self._run(fn)

    async def put_server_keys(self, keys: Sequence[ServerKeyRecord]) -> None:
        """Store ``keys``, replacing cached keys with the same server name and key ID."""
        if not keys:
            return

        async def fn(tx: Tx, _: TxCache) -> None:
            await tx.executemany(
                "INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts, "
                "expired_ts) VALUES (?, ?, ?, ?, ?) ON CONFLICT (server_name, key_id) DO UPDATE "
                "SET verify_key = excluded.verify_key, valid_until_ts = excluded.valid_until_ts, "
                "expired_ts = excluded.expired_ts",
                [
                    (k.server_name, k.key_id, k.verify_key, k.valid_until_ts, k.expired_ts)
                    for k in keys
                ],
            )

        try:
            await self._run(fn, write=True)
        finally:
            self._server_keys_generation += 1
            for k in keys:
                self._server_keys.pop(k.server_name, None)
