"""The rows of one write transaction that nothing inside it reads back (``WriteBatch``), and
how they are written at its end: a statement per table on SQLite (no round trips to save), ONE
statement on PostgreSQL (data-modifying ``WITH`` clauses, one array per column), so a
message's deferred rows cost one round trip instead of up to seven."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from roomserver.ports import ConcurrentUpdate
from roomserver.storage.authchain import PendingPositions
from roomserver.storage.dialect import Dialect
from roomserver.storage.engine import Tx
from roomserver.storage.ids import chunks
from roomserver.storage.state import PendingDeltas


@dataclass(frozen=True, slots=True)
class RoomRow:
    room_nid: int
    version: int
    current_state: int | None


@dataclass(slots=True)
class RoomInTx:
    """A room as one transaction sees it: its row as read, and the room updates applied so far
    (written by ``WriteBatch.flush`` as one ``UPDATE``)."""

    row: RoomRow  # as read (locked if ``locked``)
    locked: bool
    version: int  # after the updates so far
    current_state: int | None
    # The last update's columns (forward extremities encoded as JSON by ``WriteBatch.flush``).
    update: tuple[str, tuple[str, ...], int | None, str | None] | None = None


_MEMBERSHIP_UPSERT = (
    "ON CONFLICT (room_nid, user_id) DO UPDATE SET server_name = excluded.server_name, "
    "membership = excluded.membership, event_id = excluded.event_id, sender = excluded.sender"
)

# PostgreSQL: every deferred row in one statement. The sub-statements run on one snapshot and
# touch different rows (outbox entries are marked sent only once committed, so never in the
# transaction that inserts them); rows keep the order of their arrays (outbox sequences follow
# the writes). One text whatever the numbers of rows: one cached plan.
_FLUSH_POSTGRES = (
    "WITH d AS (INSERT INTO state_deltas (snapshot_id, key_nid, event_nid) "
    "SELECT * FROM unnest(CAST(? AS BIGINT[]), CAST(? AS BIGINT[]), CAST(? AS BIGINT[]))), "
    "p AS (INSERT INTO prev_edges (prev_event_id, event_nid) "
    "SELECT * FROM unnest(CAST(? AS TEXT[]), CAST(? AS BIGINT[])) "
    "ON CONFLICT (prev_event_id, event_nid) DO NOTHING), "
    "a AS (INSERT INTO auth_chain_positions (event_nid, chain_id, sequence, reach) "
    "SELECT * FROM unnest(CAST(? AS BIGINT[]), CAST(? AS BIGINT[]), CAST(? AS BIGINT[]), "
    "CAST(? AS BYTEA[]))), "
    "m AS (INSERT INTO memberships (room_nid, user_id, server_name, membership, event_id, "
    "sender) SELECT * FROM unnest(CAST(? AS BIGINT[]), CAST(? AS TEXT[]), CAST(? AS TEXT[]), "
    "CAST(? AS TEXT[]), CAST(? AS TEXT[]), CAST(? AS TEXT[])) " + _MEMBERSHIP_UPSERT + "), "
    "o AS (INSERT INTO outbox (room_nid, msg_id, output_type, payload) "
    "SELECT * FROM unnest(CAST(? AS BIGINT[]), CAST(? AS TEXT[]), CAST(? AS TEXT[]), "
    "CAST(? AS BYTEA[])) ON CONFLICT (msg_id) DO NOTHING), "
    "s AS (UPDATE outbox SET sent = 1, payload = CAST(? AS BYTEA) "
    "FROM unnest(CAST(? AS BIGINT[]), CAST(? AS BIGINT[])) AS x(room_nid, sequence) "
    "WHERE outbox.room_nid = x.room_nid AND outbox.sequence = x.sequence) "
    "UPDATE rooms SET room_version = u.room_version, forward_extremities = u.extremities, "
    "current_state = u.current_state, last_sent_event_id = u.last_sent, version = u.version "
    "FROM unnest(CAST(? AS TEXT[]), CAST(? AS TEXT[]), CAST(? AS BIGINT[]), CAST(? AS TEXT[]), "
    "CAST(? AS BIGINT[]), CAST(? AS BIGINT[]), CAST(? AS BIGINT[])) "
    "AS u(room_version, extremities, current_state, last_sent, version, room_nid, old_version) "
    "WHERE rooms.room_nid = u.room_nid AND rooms.version = u.old_version"
)


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


class WriteBatch:
    """The writes of one transaction that nothing inside it reads back: inserted together by
    ``flush``, before the transaction ends, instead of one statement per event. Rows keep the
    order of the writes (outbox sequences follow it; a later membership of a user wins)."""

    def __init__(self) -> None:
        self.rooms: dict[str, RoomInTx] = {}
        self.prev_edges: list[tuple[str, int]] = []
        self.memberships: list[tuple[int, str, str, str, str, str]] = []
        self.outbox: list[tuple[int, str, str, bytes]] = []
        self.outbox_sent: dict[int, set[int]] = {}
        self.positions = PendingPositions()
        self.deltas = PendingDeltas()  # state snapshot rows
        # Events inserted ahead by ``insert_run``: event ID -> numeric ID, taken by their write.
        self.inserted: dict[str, int] = {}
        self.found_stored: set[str] = set()  # ... and those its insert found stored already

    def _room_updates(self) -> list[tuple[str, RoomInTx, tuple[Any, ...]]]:
        """(room ID, room, ``rooms`` columns) of each room updated since the last flush."""
        out = []
        for room_id, room in self.rooms.items():
            if room.update is not None:
                room_version, extremities, current, last_sent = room.update
                columns = (
                    room_version,
                    json.dumps(list(extremities)),
                    current,
                    last_sent,
                    room.version,
                    room.row.room_nid,
                    room.row.version,
                )
                out.append((room_id, room, columns))
        return out

    @staticmethod
    def _updated(room: RoomInTx) -> None:
        room.row = RoomRow(room.row.room_nid, room.version, room.current_state)
        room.update = None

    async def flush(self, tx: Tx) -> None:
        if tx.dialect is Dialect.POSTGRESQL:
            await self._flush_in_one(tx)
            return
        await self.deltas.flush(tx)
        await tx.executemany(
            "INSERT INTO prev_edges (prev_event_id, event_nid) VALUES (?, ?) "
            "ON CONFLICT (prev_event_id, event_nid) DO NOTHING",
            self.prev_edges,
        )
        self.prev_edges = []
        await self.positions.flush(tx)
        for room_id, room, columns in self._room_updates():
            changed = await tx.execute(
                "UPDATE rooms SET room_version = ?, forward_extremities = ?, current_state = ?, "
                "last_sent_event_id = ?, version = ? WHERE room_nid = ? AND version = ?",
                *columns,
            )
            if changed != 1:
                raise ConcurrentUpdate(f"room {room_id} changed during the transaction")
            self._updated(room)
        await tx.executemany(
            "INSERT INTO memberships (room_nid, user_id, server_name, membership, event_id, "
            "sender) VALUES (?, ?, ?, ?, ?, ?) " + _MEMBERSHIP_UPSERT,
            self.memberships,
        )
        self.memberships = []
        await tx.executemany(
            "INSERT INTO outbox (room_nid, msg_id, output_type, payload) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (msg_id) DO NOTHING",
            self.outbox,
        )
        self.outbox = []
        for room_nid, sequences in sorted(self.outbox_sent.items()):
            await mark_sent(tx, room_nid, sorted(sequences))
        self.outbox_sent = {}

    async def _flush_in_one(self, tx: Tx) -> None:
        updates = self._room_updates()
        # One upsert per user: the last membership wins, as applying them in order would
        # (an upsert cannot change one row twice in one statement).
        members = list({(m[0], m[1]): m for m in self.memberships}.values())
        sent = [
            (nid, seq) for nid, seqs in sorted(self.outbox_sent.items()) for seq in sorted(seqs)
        ]
        deltas, positions = self.deltas.take(), self.positions.take()
        if not (
            deltas or positions or updates or members or sent or self.prev_edges or self.outbox
        ):
            return
        args: list[Any] = [
            *_columns(deltas, 3),
            *_columns(self.prev_edges, 2),
            *_columns(positions, 4),
            *_columns(members, 6),
            *_columns(self.outbox, 4),
            b"",
            *_columns(sent, 2),
            *_columns([columns for _, _, columns in updates], 7),
        ]
        self.prev_edges, self.memberships, self.outbox, self.outbox_sent = [], [], [], {}
        changed = await tx.execute(_FLUSH_POSTGRES, *args)
        if changed != len(updates):
            rooms = ", ".join(room_id for room_id, _, _ in updates)
            raise ConcurrentUpdate(f"room {rooms} changed during the transaction")
        for _, room, _ in updates:
            self._updated(room)


async def mark_sent(tx: Tx, room_nid: int, sequences: list[int]) -> None:
    """Entries sent keep their message IDs (deduplication); their payloads are dropped."""
    for part in chunks(sequences):
        await tx.execute(
            "UPDATE outbox SET sent = 1, payload = ? WHERE sequence IN @LIST AND room_nid = ?",
            b"",
            part,
            room_nid,
        )
