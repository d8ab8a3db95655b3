"""PostgreSQL connections go back to the pool without asyncpg's reset query (a round trip per
transaction): storage keeps no session state, settings from the URL stay, and a transaction
left open is still rolled back."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from roomserver.storage import SqlStorage, open_storage
from roomserver.storage.engine import Tx
from tests.pgutil import fresh_schema_url


async def test_released_connections_skip_the_reset_query(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resets: list[object] = []
    original = asyncpg.Connection.reset

    async def counted(self: asyncpg.Connection[Any], *, timeout: float | None = None) -> None:
        resets.append(self)
        await original(self, timeout=timeout)

    monkeypatch.setattr(asyncpg.Connection, "reset", counted)
    url = await fresh_schema_url(pg_database)
    store: SqlStorage = await open_storage(url + "&application_name=rs-pool-test")
    try:

        async def settings(tx: Tx) -> tuple[Any, ...]:
            row = await tx.fetchrow(
                "SELECT current_setting('search_path'), current_setting('application_name'), "
                "txid_current_if_assigned() IS NULL"
            )
            assert row is not None
            return tuple(row)

        first = await store.engine.run(settings, write=False)
        for _ in range(3):
            await store.room_version_of("!nowhere:example.org")
            assert await store.engine.run(settings, write=True) is not None
        assert await store.engine.run(settings, write=False) == first
        assert first[0] == url.split("search_path=")[1] and first[1] == "rs-pool-test"
        assert resets == []
    finally:
        await store.close()
