"""The auth chain index: auth chains and auth chain differences without walking the DAG.

Every stored state event gets a place ``(chain_id, sequence)`` on a chain: it continues the
chain of an auth event with the same ``(type, state_key)`` if that event is the chain's head,
and starts a new chain otherwise. Along a chain, each event is an auth ancestor of all later
ones, so the auth ancestors of any event inside one chain form a prefix ``1..k``. Each event
stores its *reach*: for every chain holding one of its ancestors, that ``k``. The reach is
computed once, on insert, from the reaches of its auth events.

* ``auth_chain(E)`` = the events at ``(c, 1..k)`` for each ``(c, k)`` in the merged reach.
* ``auth_chain_difference(S_1..S_n)``: merge the reaches of each set; in chain ``c`` the union
  of the sets' chains is ``1..max_i k_i`` and the intersection ``1..min_i k_i`` (0 if a set
  misses the chain), so the difference is ``(min, max]``: one range query per chain.

Chain ``c`` is numbered after the event that started it. A room with 100,000 members has about
as many chains (one per member), but each event's reach stays small: the chains of its own
membership, the create, power levels, join rules and their senders' memberships. See
``docs/storage.md`` for the comparison with a chain cover index storing only links.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence

from roomserver.core.ids import EventId
from roomserver.core.pdu import Event
from roomserver.ports import CorruptData
from roomserver.storage.cache import ChainPosition, TxCache
from roomserver.storage.dialect import padded_size, values_table
from roomserver.storage.engine import Tx
from roomserver.storage.ids import chunks, event_nids, pack_ints, unpack_ints

Reach = dict[int, int]
_RANGES_PER_QUERY = 256


def _merge(into: Reach, flat: tuple[int, ...]) -> None:
    for i in range(0, len(flat), 2):
        chain, seq = flat[i], flat[i + 1]
        if seq > into.get(chain, 0):
            into[chain] = seq


def _merge_inclusive(into: Reach, position: ChainPosition) -> None:
    """Merge the ancestors of an event and the event itself."""
    _merge(into, position.reach)
    if position.sequence > into.get(position.chain_id, 0):
        into[position.chain_id] = position.sequence


def reach_of_auth_events(positions: Iterable[ChainPosition]) -> Reach:
    """The reach of an event whose auth events have ``positions``: their ancestors and them."""
    reach: Reach = {}
    for pos in positions:
        _merge_inclusive(reach, pos)
    return reach


def same_key_auth_positions(
    event: Event, auth_nids: Mapping[str, int], positions: Mapping[int, ChainPosition]
) -> list[ChainPosition]:
    """The positions of the event's auth events with its own state key, by auth event ID: the
    first of them that is its chain's head is the chain the event continues."""
    out: list[ChainPosition] = []
    for auth_id in sorted(auth_nids):
        same = positions.get(auth_nids[auth_id])
        if same is not None and same.state_tuple == event.state_tuple:
            out.append(same)
    return out


async def chain_positions(tx: Tx, cache: TxCache, nids: Iterable[int]) -> dict[int, ChainPosition]:
    out: dict[int, ChainPosition] = {}
    missing: list[int] = []
    for nid in nids:
        pos = cache.chain_position(nid)
        if pos is None:
            missing.append(nid)
        else:
            out[nid] = pos
    for part in chunks(sorted(set(missing))):
        rows = await tx.fetch(
            "SELECT p.event_nid, p.chain_id, p.sequence, p.reach, e.type, e.state_key "
            "FROM auth_chain_positions p JOIN events e ON e.event_nid = p.event_nid "
            "WHERE p.event_nid IN @LIST",
            part,
        )
        for nid, chain_id, sequence, reach, event_type, state_key in rows:
            flat = unpack_ints(reach, f"auth chain reach of event {nid}")
            pos = ChainPosition(chain_id, sequence, flat, (event_type, state_key or ""))
            out[nid] = pos
            cache.chain_positions[nid] = pos
    return out


class PendingPositions:
    """Auth chain positions assigned in one transaction, inserted together before it ends
    (``flush``): one statement for a message's state events instead of one each. Chain heads
    read or assigned in the transaction are remembered, so continuing a chain costs no read."""

    def __init__(self) -> None:
        self._rows: list[tuple[int, int, int, bytes]] = []
        self._heads: dict[int, int | None] = {}

    async def head(self, tx: Tx, chain_id: int) -> int | None:
        """The highest sequence on ``chain_id`` (None for an empty chain)."""
        if chain_id not in self._heads:
            row = await tx.fetchrow(
                "SELECT MAX(sequence) FROM auth_chain_positions WHERE chain_id = ?", chain_id
            )
            self._heads[chain_id] = None if row is None or row[0] is None else int(row[0])
        return self._heads[chain_id]

    def add(self, event_nid: int, chain_id: int, sequence: int, reach: bytes) -> None:
        self._rows.append((event_nid, chain_id, sequence, reach))
        self._heads[chain_id] = sequence

    def take(self) -> list[tuple[int, int, int, bytes]]:
        """The rows added since the last ``flush`` or ``take``, which the caller inserts."""
        rows, self._rows = self._rows, []
        return rows

    async def flush(self, tx: Tx) -> None:
        rows = self.take()
        await tx.executemany(
            "INSERT INTO auth_chain_positions (event_nid, chain_id, sequence, reach) "
            "VALUES (?, ?, ?, ?)",
            rows,
        )


async def index_event(
    tx: Tx,
    cache: TxCache,
    event: Event,
    *,
    event_nid: int,
    pending: PendingPositions | None = None,
) -> None:
    """Give a newly stored state event its place in the index (other events need none).

    An event stored while one of its auth events is not indexed (not stored yet: it is
    rejected for missing auth events, or its auth event is such an event) stays unindexed:
    its reach would miss that auth event's chains for good, and so would the reach of every
    event indexed after it from it. ``ancestor_reach`` reads an unindexed event's auth events
    instead, and ``index_unindexed`` indexes it when it is written again (processed again
    once its auth events are stored). Positions are never changed once written.

    With ``pending``, the position is inserted by ``pending.flush`` (before the transaction
    ends); without it, at once.
    """
    if event.state_key is None:
        return
    auth_nids = await event_nids(tx, cache, event.auth_event_ids)
    positions = await chain_positions(tx, cache, auth_nids.values())
    if len(positions) < len(set(event.auth_event_ids)):
        return
    reach = reach_of_auth_events(positions.values())
    own = pending if pending is not None else PendingPositions()
    chain_id, sequence = event_nid, 1
    for same in same_key_auth_positions(event, auth_nids, positions):
        if await own.head(tx, same.chain_id) == same.sequence:
            chain_id, sequence = same.chain_id, same.sequence + 1
            break
    flat = tuple(x for chain in sorted(reach) for x in (chain, reach[chain]))
    own.add(event_nid, chain_id, sequence, pack_ints(flat))
    if pending is None:
        await own.flush(tx)
    cache.chain_positions[event_nid] = ChainPosition(chain_id, sequence, flat, event.state_tuple)


async def index_unindexed(
    tx: Tx,
    cache: TxCache,
    event: Event,
    *,
    event_nid: int,
    pending: PendingPositions | None = None,
) -> None:
    """Index a stored state event written again, if it was left unindexed (``index_event``)."""
    if event.state_key is None or cache.chain_position(event_nid) is not None:
        return
    if not await chain_positions(tx, cache, [event_nid]):
        await index_event(tx, cache, event, event_nid=event_nid, pending=pending)


def _auth_ids_from_json(blob: bytes, nid: int) -> list[str]:
    try:
        pdu = json.loads(bytes(blob))
        raw = pdu["auth_events"]
        return [a if isinstance(a, str) else str(a[0]) for a in raw]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CorruptData(f"event {nid}: stored JSON has no readable auth_events") from exc


async def ancestor_reach(tx: Tx, cache: TxCache, event_ids: Iterable[str]) -> Reach:
    """The merged reach of ``event_ids``: their auth ancestors, chain by chain."""
    nids = await event_nids(tx, cache, event_ids)
    positions = await chain_positions(tx, cache, nids.values())
    reach: Reach = {}
    seen: set[tuple[int, ...]] = set()
    for pos in positions.values():
        if pos.reach not in seen:  # members' reaches repeat a lot; merge each once
            seen.add(pos.reach)
            _merge(reach, pos.reach)
    unindexed = sorted(set(nids.values()) - positions.keys())
    auth_ids: set[str] = set()
    for part in chunks(unindexed):
        for nid, blob in await tx.fetch(
            "SELECT event_nid, json FROM events WHERE event_nid IN @LIST", part
        ):
            auth_ids.update(_auth_ids_from_json(blob, nid))
    if auth_ids:
        auth_nids = await event_nids(tx, cache, auth_ids)
        for pos in (await chain_positions(tx, cache, auth_nids.values())).values():
            _merge_inclusive(reach, pos)
    return reach


async def events_in_ranges(tx: Tx, ranges: Sequence[tuple[int, int, int]]) -> set[EventId]:
    """Event IDs at ``(chain, lo < sequence <= hi)`` for each range."""
    out: set[EventId] = set()
    for part in chunks(sorted(ranges), _RANGES_PER_QUERY):
        size = padded_size(len(part))
        args: list[int] = []
        for chain, lo, hi in part:
            args += (chain, lo, hi)
        args += (0, 0, 0) * (size - len(part))  # matches nothing
        rows = await tx.fetch(
            "WITH " + values_table("r", ("c", "lo", "hi"), rows=size) + " "
            "SELECT e.event_id FROM r JOIN auth_chain_positions p "
            "ON p.chain_id = r.c AND p.sequence > r.lo AND p.sequence <= r.hi "
            "JOIN events e ON e.event_nid = p.event_nid",
            *args,
        )
        out.update(r[0] for r in rows)
    return out


async def auth_chain(tx: Tx, cache: TxCache, event_ids: Iterable[str]) -> set[EventId]:
    reach = await ancestor_reach(tx, cache, event_ids)
    return await events_in_ranges(tx, [(c, 0, k) for c, k in reach.items()])


async def auth_chain_difference(
    tx: Tx, cache: TxCache, state_sets: Sequence[Collection[str]]
) -> set[EventId]:
    if not state_sets:
        return set()
    reaches = [await ancestor_reach(tx, cache, s) for s in state_sets]
    chains = set().union(*(r.keys() for r in reaches))
    ranges: list[tuple[int, int, int]] = []
    for chain in chains:
        values = [r.get(chain, 0) for r in reaches]
        lo, hi = min(values), max(values)
        if hi > lo:
            ranges.append((chain, lo, hi))
    return await events_in_ranges(tx, ranges)
