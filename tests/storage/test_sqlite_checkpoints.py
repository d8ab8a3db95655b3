"""The SQLite engine checkpoints its write-ahead log on a connection of its own, after writes,
never inside a writer's ``COMMIT`` (``roomserver.storage.sqlite``, module docs)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from roomserver.storage import sqlite as sqlite_module
from roomserver.storage.engine import Tx
from roomserver.storage.sqlite import SqliteEngine


async def _insert(tx: Tx, value: int) -> None:
    await tx.execute("INSERT INTO t (v) VALUES (?)", value)


async def _create(tx: Tx) -> None:
    await tx.execute("CREATE TABLE t (v INTEGER)")


async def _count(tx: Tx) -> int:
    row = await tx.fetchrow("SELECT COUNT(*) FROM t")
    assert row is not None
    return int(row[0])


async def _checkpoint_done(engine: SqliteEngine) -> None:
    task = engine._checkpointing
    if task is not None:
        await task


def _wal_pages(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size // 4096 if wal.exists() else 0


async def test_writes_are_checkpointed_by_the_checkpoint_lane_not_the_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    engine = SqliteEngine(str(path))
    await engine.open()
    try:
        assert engine._writer.conn is not None
        assert engine._writer.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        await engine.run(_create, write=True)
        for i in range(40):
            await engine.run(lambda tx, i=i: _insert(tx, i), write=True)
            await asyncio.sleep(sqlite_module.CHECKPOINT_INTERVAL_S / 8)
        assert engine._checkpointing is not None or engine.checkpoints > 0
        await _checkpoint_done(engine)
        # Writes spread over five intervals: a checkpoint in each (the first write's at once).
        assert engine.checkpoints >= 2
        await engine.run(lambda tx: _insert(tx, -1), write=True)
        assert await engine.run(_count, write=False) == 41
    finally:
        await engine.close()
    reopened = SqliteEngine(str(path))
    await reopened.open()
    try:
        assert await reopened.run(_count, write=False) == 41
    finally:
        await reopened.close()


async def test_a_burst_of_writes_starts_one_checkpoint_per_interval(tmp_path: Path) -> None:
    engine = SqliteEngine(str(tmp_path / "db.sqlite"))
    await engine.open()
    try:
        await engine.run(_create, write=True)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(engine.run(lambda tx, i=i: _insert(tx, i), write=True)
                               for i in range(200)))  # fmt: skip
        elapsed = loop.time() - started
        await _checkpoint_done(engine)
        assert 1 <= engine.checkpoints <= 2 + elapsed / sqlite_module.CHECKPOINT_INTERVAL_S
        assert _wal_pages(tmp_path / "db.sqlite") < 1000
    finally:
        await engine.close()


async def test_an_in_memory_database_has_no_checkpoint_lane() -> None:
    engine = SqliteEngine(":memory:")
    await engine.open()
    try:
        await engine.run(_create, write=True)
        await engine.run(lambda tx: _insert(tx, 1), write=True)
        assert engine._checkpointer is None and engine.checkpoints == 0
        assert await engine.run(_count, write=False) == 1
    finally:
        await engine.close()
