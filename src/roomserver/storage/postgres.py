"""The PostgreSQL engine: asyncpg with a connection pool.

Transactions run at READ COMMITTED; rooms are serialised by locking the room row
(``SELECT ... FOR UPDATE``) and checking its version counter (see ``roomserver.storage.events``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from roomserver.ports import (
    ConcurrentUpdate,
    CorruptData,
    StorageError,
    StorageUnavailable,
)
from roomserver.storage.dialect import Dialect, compile_query
from roomserver.storage.engine import Row, TxFunction

T = TypeVar("T")


_DRIVER_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def storage_error_from_postgres(exc: BaseException) -> StorageError:
    """Classify an asyncpg / network exception into the storage error categories."""
    if isinstance(
        exc,
        asyncpg.SerializationError | asyncpg.DeadlockDetectedError | asyncpg.UniqueViolationError,
    ):
        # Our writes check before they insert, so a uniqueness clash means a concurrent writer.
        return ConcurrentUpdate(f"postgresql: concurrent write: {exc}")
    if isinstance(exc, asyncpg.DataError | asyncpg.DataCorruptedError):
        return CorruptData(f"postgresql: {exc}")
    if isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | asyncpg.AdminShutdownError,
    ):
        return StorageUnavailable(f"postgresql unavailable: {exc}")
    return StorageError(f"postgresql: {exc}")


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 3" or "INSERT 0 1".
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresTx:
    dialect = Dialect.POSTGRESQL

    def __init__(
        self,
        conn: asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any],
        fault_injector: Callable[[str], None] | None,
    ) -> None:
        self._conn = conn
        self._callbacks: list[Callable[[], None]] = []
        self._fault_injector = fault_injector

    async def execute(self, sql: str, *args: Any) -> int:
        text, params = compile_query(Dialect.POSTGRESQL, sql, args)
        return _rowcount(await self._conn.execute(text, *params))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if len(rows) == 1:  # one round trip instead of executemany's protocol overhead
            text, params = compile_query(Dialect.POSTGRESQL, sql, rows[0])
            await self._conn.execute(text, *params)
        elif rows:
            text, _ = compile_query(Dialect.POSTGRESQL, sql, rows[0])
            await self._conn.executemany(text, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        text, params = compile_query(Dialect.POSTGRESQL, sql, args)
        return list(await self._conn.fetch(text, *params))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        text, params = compile_query(Dialect.POSTGRESQL, sql, args)
        row: Row | None = await self._conn.fetchrow(text, *params)
        return row

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def checkpoint(self, name: str) -> None:
        if self._fault_injector is not None:
            self._fault_injector(name)


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """A connection going back to the pool needs no reset query (asyncpg's default costs a
    round trip per transaction): storage never changes session state (no ``SET``, ``LISTEN``,
    cursors or session advisory locks; settings from the URL are connection defaults). asyncpg
    still rolls back a transaction left open."""


class PostgresEngine:
    dialect = Dialect.POSTGRESQL

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool[Any] | None = None
        self.fault_injector: Callable[[str], None] | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=10,
                reset=_keep_session,
            )
        except _DRIVER_ERRORS as exc:
            raise storage_error_from_postgres(exc) from exc

    def _require_pool(self) -> asyncpg.Pool[Any]:
        if self._pool is None:
            raise StorageUnavailable("the PostgreSQL storage is closed")
        return self._pool

    async def run(self, fn: TxFunction[T], *, write: bool) -> T:
        pool = self._require_pool()
        try:
            async with pool.acquire() as conn:
                tx = PostgresTx(conn, self.fault_injector)
                if write:
                    async with conn.transaction():
                        result = await fn(tx)
                else:
                    # Reads run statement by statement (no BEGIN/COMMIT round trips): each is
                    # one query, or reads only immutable rows (snapshots, chain positions).
                    result = await fn(tx)
        except _DRIVER_ERRORS as exc:
            raise storage_error_from_postgres(exc) from exc
        for callback in tx._callbacks:
            callback()
        return result

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
