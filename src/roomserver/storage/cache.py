"""Bounded in-memory caches of immutable facts (IDs to numeric IDs, snapshot metadata).

Only facts that never change once committed are cached, so several processes sharing one
PostgreSQL database cannot see stale entries. A transaction records what it learnt in a
``TxCache`` overlay, merged into the shared caches only after commit (a rolled-back insert must
not leave a numeric ID behind). Caches are touched inside transaction functions, i.e. on the
SQLite threads or on the event loop; the shared ones take a lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from roomserver.core.ids import EventId
from roomserver.core.pdu import Event

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A bounded least-recently-used map, safe to share between the SQLite threads."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            if len(self._data) > self._capacity:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class StateMapCache:
    """Whole states by snapshot ID, bounded by their total number of entries. Snapshots never
    change, so a cached state stays true; callers get copies."""

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._total = 0
        self._data: OrderedDict[int, dict[tuple[str, str], EventId]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, snapshot_id: int) -> dict[tuple[str, str], EventId] | None:
        """The cached state itself (read it, never change it)."""
        with self._lock:
            value = self._data.get(snapshot_id)
            if value is not None:
                self._data.move_to_end(snapshot_id)
            return value

    def put(self, snapshot_id: int, state: dict[tuple[str, str], EventId]) -> None:
        if len(state) > self._max_entries // 4:
            return  # one huge state would evict everything else
        with self._lock:
            old = self._data.pop(snapshot_id, None)
            if old is not None:
                self._total -= len(old)
            self._data[snapshot_id] = state
            self._total += len(state)
            while self._total > self._max_entries and self._data:
                _, evicted = self._data.popitem(last=False)
                self._total -= len(evicted)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._total = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    snapshot_id: int
    room_nid: int
    parent: int | None
    base: int | None
    position: int


@dataclass(frozen=True, slots=True)
class ChainPosition:
    chain_id: int
    sequence: int
    # (chain, highest sequence) pairs, flattened: the strict auth ancestors of the event.
    reach: tuple[int, ...]
    state_tuple: tuple[str, str]


class Caches:
    def __init__(
        self,
        capacity: int = 200_000,
        *,
        event_capacity: int = 20_000,
        state_map_entries: int = 1_000_000,
    ) -> None:
        self.state_maps = StateMapCache(state_map_entries)
        # Parsed events by (event ID, redacted_because): stored JSON changes only by redaction.
        self.events: LRU[tuple[str, str | None], Event] = LRU(event_capacity)
        self.event_nids: LRU[str, int] = LRU(capacity)
        self.state_keys: LRU[tuple[str, str], int] = LRU(capacity)
        self.snapshots: LRU[int, SnapshotMeta] = LRU(capacity)
        self.chain_positions: LRU[int, ChainPosition] = LRU(capacity // 4)

    def clear(self) -> None:
        self.state_maps.clear()
        self.events.clear()
        self.event_nids.clear()
        self.state_keys.clear()
        self.snapshots.clear()
        self.chain_positions.clear()


class TxCache:
    """What one transaction learnt; read through to the shared caches."""

    def __init__(self, shared: Caches) -> None:
        self.shared = shared
        self.event_nids: dict[str, int] = {}
        self.state_keys: dict[tuple[str, str], int] = {}
        self.snapshots: dict[int, SnapshotMeta] = {}
        self.chain_positions: dict[int, ChainPosition] = {}

    def event_nid(self, event_id: str) -> int | None:
        nid = self.event_nids.get(event_id)
        return nid if nid is not None else self.shared.event_nids.get(event_id)

    def state_key(self, key: tuple[str, str]) -> int | None:
        nid = self.state_keys.get(key)
        return nid if nid is not None else self.shared.state_keys.get(key)

    def snapshot(self, snapshot_id: int) -> SnapshotMeta | None:
        meta = self.snapshots.get(snapshot_id)
        return meta if meta is not None else self.shared.snapshots.get(snapshot_id)

    def chain_position(self, event_nid: int) -> ChainPosition | None:
        pos = self.chain_positions.get(event_nid)
        return pos if pos is not None else self.shared.chain_positions.get(event_nid)

    def commit(self) -> None:
        for eid, nid in self.event_nids.items():
            self.shared.event_nids.put(eid, nid)
        for key, key_nid in self.state_keys.items():
            self.shared.state_keys.put(key, key_nid)
        for sid, meta in self.snapshots.items():
            self.shared.snapshots.put(sid, meta)
        for enid, pos in self.chain_positions.items():
            self.shared.chain_positions.put(enid, pos)
