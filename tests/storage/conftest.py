"""Fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``tests.pgutil``: the server on 127.0.0.1:5432, one fresh database per
test session (dropped at the end), a fresh schema per test. CI sets
``ROOMSERVER_REQUIRE_POSTGRES=1``, so there a missing server fails the run instead of skipping.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from roomserver.storage import SqlStorage, open_storage
from tests.pgutil import fresh_schema_url, pg_database

__all__ = ["pg_database"]

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
async def storage_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/storage-{secrets.token_hex(4)}.db"
    dsn: str = request.getfixturevalue("pg_database")
    return await fresh_schema_url(dsn)


@pytest.fixture
async def store(storage_url: str) -> AsyncIterator[SqlStorage]:
    storage = await open_storage(storage_url)
    try:
        yield storage
    finally:
        await storage.close()
