"""The SQLite engine: a writer and a reader connection, each on its own thread, WAL mode.

Each transaction is a single hand-off to a database thread, which runs the whole storage
function (see ``roomserver.storage.engine``) and commits; the event loop never touches the disk.
Write transactions start with ``BEGIN IMMEDIATE``, so two processes sharing a file serialise
instead of failing at commit time.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from roomserver.ports import CorruptData, StorageError, StorageUnavailable
from roomserver.storage.dialect import Dialect, compile_query
from roomserver.storage.engine import Row, TxFunction, drive_to_completion

T = TypeVar("T")

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA busy_timeout=10000",
    "PRAGMA cache_size=-65536",  # 64 MiB page cache
    "PRAGMA temp_store=MEMORY",
)


def storage_error_from_sqlite(exc: sqlite3.Error) -> StorageError:
    """Classify a sqlite3 exception into the storage error categories."""
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and any(
        word in text for word in ("locked", "busy", "unable to open", "disk i/o", "readonly")
    ):
        return StorageUnavailable(f"sqlite: {exc}")
    if isinstance(exc, sqlite3.IntegrityError):
        return StorageError(f"sqlite: constraint violated: {exc}")
    if isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in text or "not a database" in text or "corrupt" in text
    ):
        return CorruptData(f"sqlite: the database file is damaged: {exc}")
    return StorageError(f"sqlite: {exc}")


class SqliteTx:
    dialect = Dialect.SQLITE

    def __init__(
        self, conn: sqlite3.Connection, fault_injector: Callable[[str], None] | None
    ) -> None:
        self._conn = conn
        self._callbacks: list[Callable[[], None]] = []
        self._fault_injector = fault_injector

    async def execute(self, sql: str, *args: Any) -> int:
        text, params = compile_query(Dialect.SQLITE, sql, args)
        return self._conn.execute(text, params).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            text, _ = compile_query(Dialect.SQLITE, sql, rows[0])
            self._conn.executemany(text, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        text, params = compile_query(Dialect.SQLITE, sql, args)
        return self._conn.execute(text, params).fetchall()

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        text, params = compile_query(Dialect.SQLITE, sql, args)
        row: Row | None = self._conn.execute(text, params).fetchone()
        return row

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def checkpoint(self, name: str) -> None:
        if self._fault_injector is not None:
            self._fault_injector(name)


class _Lane:
    """One connection and the one thread that uses it."""

    def __init__(self, name: str) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.conn: sqlite3.Connection | None = None


class SqliteEngine:
    """Writes go through one connection and thread; reads through a second pair, so they are
    not queued behind writes (WAL readers never block the writer). An in-memory database has
    only the one connection."""

    dialect = Dialect.SQLITE

    def __init__(self, path: str) -> None:
        self._path = path
        self._writer = _Lane("roomserver-sqlite-write")
        self._reader = self._writer if path == ":memory:" else _Lane("roomserver-sqlite-read")
        self.fault_injector: Callable[[str], None] | None = None

    async def open(self) -> None:
        await self._call(self._writer, lambda: self._connect(self._writer))
        if self._reader is not self._writer:
            await self._call(self._reader, lambda: self._connect(self._reader))

    def _connect(self, lane: _Lane) -> None:
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, cached_statements=512
        )
        try:
            for pragma in _PRAGMAS:
                conn.execute(pragma)
        except BaseException:
            conn.close()
            raise
        lane.conn = conn

    async def _call(self, lane: _Lane, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(lane.executor, fn)
        except sqlite3.Error as exc:
            raise storage_error_from_sqlite(exc) from exc
        except RuntimeError as exc:
            if "shutdown" in str(exc):
                raise StorageUnavailable("the SQLite storage is closed") from exc
            raise

    async def run(self, fn: TxFunction[T], *, write: bool) -> T:
        lane = self._writer if write else self._reader
        return await self._call(lane, lambda: self._run_sync(lane, fn, write))

    def _run_sync(self, lane: _Lane, fn: TxFunction[T], write: bool) -> T:
        conn = lane.conn
        if conn is None:
            raise StorageUnavailable("the SQLite storage is closed")
        tx = SqliteTx(conn, self.fault_injector)
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = drive_to_completion(fn(tx))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for callback in tx._callbacks:
            callback()
        return result

    async def close(self) -> None:
        lanes = [self._writer] if self._reader is self._writer else [self._reader, self._writer]
        for lane in lanes:
            if lane.conn is not None:
                conn, lane.conn = lane.conn, None
                await asyncio.get_running_loop().run_in_executor(lane.executor, conn.close)
            lane.executor.shutdown(wait=True)
