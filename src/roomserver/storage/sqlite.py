"""The SQLite engine: a writer and a reader connection, each on its own thread, WAL mode.

Each transaction is a single hand-off to a database thread, which runs the whole storage
function (see ``roomserver.storage.engine``) and commits; the event loop never touches the disk.
Write transactions start with ``BEGIN IMMEDIATE``, so two processes sharing a file serialise
instead of failing at commit time.

Group commit: writes that queue up while the writer thread is busy (many rooms at once) run in
the next hand-off as one transaction, each inside its own ``SAVEPOINT``: a write that raises is
rolled back alone and gets its exception; the others commit together, and every caller gets its
result only after that ``COMMIT`` (so each write stays atomic and durable on return). A lone
write runs as before, without a savepoint. This saves a ``COMMIT`` (the dearest statement) and a
hand-off per write when the writer is the bottleneck.

Checkpoints off the commit path: SQLite's automatic checkpoint runs inside the ``COMMIT`` that
takes the write-ahead log past 1,000 pages, and copies the log into the database file with two
fsyncs, so about one commit in a hundred took milliseconds longer (the p99 of an idle
single-event sync call). The writer connection turns it off; after a write, a third connection
on its own thread runs a ``PASSIVE`` checkpoint (which never blocks the writer or readers),
at most one at a time and at most every ``CHECKPOINT_INTERVAL_S``. A log is never left
unchecked for longer than the writes that follow it allow: every write after the interval
starts the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from roomserver.ports import CorruptData, StorageError, StorageUnavailable
from roomserver.storage.dialect import Dialect, compile_query
from roomserver.storage.engine import Row, TxFunction, drive_to_completion

T = TypeVar("T")
log = logging.getLogger(__name__)

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA busy_timeout=10000",
    "PRAGMA cache_size=-65536",  # 64 MiB page cache
    "PRAGMA temp_store=MEMORY",
)
#: The writer's connection leaves checkpoints to the checkpoint lane (see the module docs).
_WRITER_PRAGMAS = ("PRAGMA wal_autocheckpoint=0",)
#: At most one checkpoint starts per this many seconds (while writes keep coming).
CHECKPOINT_INTERVAL_S = 0.25


def storage_error_from_sqlite(exc: sqlite3.Error) -> StorageError:
    """Classify a sqlite3 exception into the storage error categories."""
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and any(
        word in text for word in ("locked", "busy", "unable to open", "disk i/o", "readonly")
    ):
        return StorageUnavailable(f"sqlite: {exc}")
    if isinstance(exc, sqlite3.IntegrityError):
        return StorageError(f"sqlite: constraint violated: {exc}")
    if "malformed json" in text:  # a stored JSON value read with SQLite's JSON operators
        return CorruptData(f"sqlite: a stored JSON value cannot be decoded: {exc}")
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
        in_memory = path == ":memory:"
        self._reader = self._writer if in_memory else _Lane("roomserver-sqlite-read")
        #: Runs the WAL checkpoints (none for an in-memory database: it has no log).
        self._checkpointer = None if in_memory else _Lane("roomserver-sqlite-checkpoint")
        self._checkpointing: asyncio.Task[None] | None = None
        self._last_checkpoint = float("-inf")  # loop time the last checkpoint started
        #: Checkpoints completed (the tests read it).
        self.checkpoints = 0
        self.fault_injector: Callable[[str], None] | None = None
        self._queued: list[tuple[TxFunction[Any], asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        writer_pragmas = _WRITER_PRAGMAS if self._checkpointer is not None else ()
        await self._call(self._writer, lambda: self._connect(self._writer, writer_pragmas))
        if self._reader is not self._writer:
            await self._call(self._reader, lambda: self._connect(self._reader))
        if self._checkpointer is not None:
            checkpointer = self._checkpointer
            await self._call(checkpointer, lambda: self._connect(checkpointer))

    def _connect(self, lane: _Lane, extra: Sequence[str] = ()) -> None:
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, cached_statements=512
        )
        try:
            for pragma in (*_PRAGMAS, *extra):
                conn.execute(pragma)
        except BaseException:
            conn.close()
            raise
        lane.conn = conn

    def _after_write(self) -> None:
        """A write committed: start a checkpoint unless one runs or one started lately."""
        if self._checkpointer is None or self._checkpointing is not None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_checkpoint < CHECKPOINT_INTERVAL_S:
            return
        self._last_checkpoint = loop.time()
        self._checkpointing = loop.create_task(self._checkpoint(self._checkpointer))

    async def _checkpoint(self, lane: _Lane) -> None:
        try:
            await self._call(lane, functools.partial(self._checkpoint_sync, lane))
            self.checkpoints += 1
        except Exception as exc:  # the next write tries again; commits never depend on it
            log.warning("sqlite: WAL checkpoint failed: %s", exc)
        finally:
            self._checkpointing = None

    @staticmethod
    def _checkpoint_sync(lane: _Lane) -> None:
        if lane.conn is not None:
            lane.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

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
        if write:
            return await self._write(fn)
        lane = self._reader
        return await self._call(lane, lambda: self._run_sync(lane, fn, write))

    async def _write(self, fn: TxFunction[T]) -> T:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((fn, future))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return cast(T, await future)

    async def _drain(self) -> None:
        """Hand the queued writes to the writer thread, a batch per hand-off, until none is left."""
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    outcomes = await self._call(
                        self._writer, functools.partial(self._run_batch, batch)
                    )
                except BaseException as exc:  # the whole transaction failed (or was not begun)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                self._after_write()
        finally:
            self._drainer = None

    def _run_batch(
        self, batch: Sequence[tuple[TxFunction[Any], asyncio.Future[Any]]]
    ) -> list[tuple[bool, Any]]:
        """One write transaction for ``batch``: (True, result) or (False, exception) each."""
        if len(batch) == 1:
            return [(True, self._run_sync(self._writer, batch[0][0], True))]
        conn = self._writer.conn
        if conn is None:
            raise StorageUnavailable("the SQLite storage is closed")
        outcomes: list[tuple[bool, Any]] = []
        committed: list[SqliteTx] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for fn, _ in batch:
                tx = SqliteTx(conn, self.fault_injector)
                conn.execute("SAVEPOINT write")
                try:
                    result = drive_to_completion(fn(tx))
                except Exception as exc:
                    conn.execute("ROLLBACK TO write")
                    conn.execute("RELEASE write")
                    if isinstance(exc, sqlite3.Error):
                        error: Exception = storage_error_from_sqlite(exc)
                        error.__cause__ = exc
                    else:
                        error = exc
                    outcomes.append((False, error))
                    continue
                conn.execute("RELEASE write")
                outcomes.append((True, result))
                committed.append(tx)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for tx in committed:
            for callback in tx._callbacks:
                callback()
        return outcomes

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
        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing  # a short passive checkpoint: let it finish
        lanes = [self._writer] if self._reader is self._writer else [self._reader, self._writer]
        if self._checkpointer is not None:
            lanes.append(self._checkpointer)
        for lane in lanes:
            if lane.conn is not None:
                conn, lane.conn = lane.conn, None
                await asyncio.get_running_loop().run_in_executor(lane.executor, conn.close)
            lane.executor.shutdown(wait=True)
