"""Numeric IDs for event IDs and state keys, and the packed integer arrays stored in BLOBs."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from roomserver.core.state_keys import StateKey as StateKey
from roomserver.ports import CorruptData, StorageError
from roomserver.storage.cache import TxCache
from roomserver.storage.engine import Tx

T = TypeVar("T")
CHUNK = 2000  # values per IN list: well under SQLite's limit of 32,766 parameters


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def pack_ints(values: Iterable[int]) -> bytes:
    items = list(values)
    return struct.pack(f"<{len(items)}q", *items)


def unpack_ints(blob: bytes, what: str) -> tuple[int, ...]:
    data = bytes(blob)
    if len(data) % 8:
        raise CorruptData(f"{what}: packed integer array of {len(data)} bytes")
    return struct.unpack(f"<{len(data) // 8}q", data)


async def event_nids(tx: Tx, cache: TxCache, event_ids: Iterable[str]) -> dict[str, int]:
    """Numeric IDs of the stored events among ``event_ids``."""
    out: dict[str, int] = {}
    missing: list[str] = []
    for eid in event_ids:
        nid = cache.event_nid(eid)
        if nid is None:
            missing.append(eid)
        else:
            out[eid] = nid
    for part in chunks(sorted(set(missing))):
        rows = await tx.fetch(
            "SELECT event_id, event_nid FROM events WHERE event_id IN @LIST", part
        )
        for eid, nid in rows:
            out[eid] = nid
            cache.event_nids[eid] = nid
    return out


async def state_key_nids(
    tx: Tx, cache: TxCache, keys: Iterable[StateKey], *, create: bool
) -> dict[StateKey, int]:
    """Numeric IDs of ``keys``; unknown keys are created if ``create``, else left out."""
    out: dict[StateKey, int] = {}
    by_type: dict[str, list[str]] = {}
    for key in keys:
        nid = cache.state_key(key)
        if nid is None:
            by_type.setdefault(key[0], []).append(key[1])
        else:
            out[key] = nid
    for event_type in sorted(by_type):
        wanted = sorted(set(by_type[event_type]))
        for part in chunks(wanted):
            rows = await tx.fetch(
                "SELECT state_key, key_nid FROM state_keys WHERE type = ? AND state_key IN @LIST",
                event_type,
                part,
            )
            for state_key, nid in rows:
                out[(event_type, state_key)] = nid
                cache.state_keys[(event_type, state_key)] = nid
        if not create:
            continue
        for state_key in wanted:
            if (event_type, state_key) in out:
                continue
            row = await tx.fetchrow(
                "INSERT INTO state_keys (type, state_key) VALUES (?, ?) "
                "ON CONFLICT (type, state_key) DO NOTHING RETURNING key_nid",
                event_type,
                state_key,
            )
            if row is None:  # inserted meanwhile by a concurrent transaction
                row = await tx.fetchrow(
                    "SELECT key_nid FROM state_keys WHERE type = ? AND state_key = ?",
                    event_type,
                    state_key,
                )
            if row is None:
                raise StorageError(f"could not assign a numeric ID to ({event_type}, {state_key})")
            out[(event_type, state_key)] = row[0]
            cache.state_keys[(event_type, state_key)] = row[0]
    return out
