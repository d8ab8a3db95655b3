"""Every query test runs on the in-memory fake storage, on SQLite and on PostgreSQL.

The room is written by the real input pipeline (``tests.input.helpers.Harness``), so the
queries read exactly what the pipeline stores: snapshots, flags and rejection reasons.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from roomserver.storage import open_storage
from roomserver.testing.builder import RoomBuilder
from tests.input.fakes import MemoryStorage
from tests.input.helpers import Harness
from tests.pgutil import fresh_schema_url, pg_database

__all__ = ["pg_database"]

HarnessMaker = Callable[[RoomBuilder], Awaitable[Harness]]


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def make_harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[HarnessMaker]:
    opened: list[Any] = []

    async def make(builder: RoomBuilder) -> Harness:
        if request.param == "memory":
            store: Any = MemoryStorage()
        elif request.param == "sqlite":
            store = await open_storage(f"sqlite:///{tmp_path}/query-{secrets.token_hex(4)}.db")
        else:
            dsn: str = request.getfixturevalue("pg_database")
            store = await open_storage(await fresh_schema_url(dsn))
        opened.append(store)
        return Harness(builder, store=store)

    yield make
    for store in opened:
        await store.close()
