"""The seam between storage logic and a database driver.

Storage logic is written once, as ``async def f(tx: Tx) -> T`` functions that only ever await
``Tx`` methods. The PostgreSQL engine awaits them on the event loop (asyncpg). The SQLite engine
runs the same coroutine to completion on its own database thread: its ``Tx`` methods never
suspend, so one ``coro.send(None)`` drives the whole transaction, and the event loop only waits
for one hand-off per transaction, never for the disk.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from roomserver.storage.dialect import Dialect

T = TypeVar("T")
Row = Sequence[Any]
TxFunction = Callable[["Tx"], Coroutine[Any, Any, T]]


class Tx(Protocol):
    """One open transaction. SQL is written as described in ``roomserver.storage.dialect``."""

    dialect: Dialect

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the transaction has committed (never if it rolls back)."""
        ...

    def checkpoint(self, name: str) -> None:
        """A named point inside a transaction where tests may inject a failure."""
        ...


class Engine(Protocol):
    dialect: Dialect
    fault_injector: Callable[[str], None] | None

    async def run(self, fn: TxFunction[T], *, write: bool) -> T:
        """Run ``fn`` in one transaction; commit if it returns, roll back if it raises.

        A read (``write=False``) may run without a transaction on engines where that is cheaper
        (PostgreSQL): read functions must either issue one statement or read immutable rows.
        """
        ...

    async def close(self) -> None: ...


def drive_to_completion(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (see the module docstring)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coro.close()
    raise RuntimeError("a storage transaction awaited something other than its Tx")
