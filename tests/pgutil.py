"""PostgreSQL for tests: one fresh database per test session on the server at 127.0.0.1:5432.

Without a reachable server the PostgreSQL tests are skipped with a loud reason, unless
``ROOMSERVER_REQUIRE_POSTGRES=1`` (CI sets it), which turns that into a failure.
Override the server with ``ROOMSERVER_TEST_PG`` (a DSN without a database name).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg
import pytest

PG_SERVERS = (
    [os.environ["ROOMSERVER_TEST_PG"]]
    if "ROOMSERVER_TEST_PG" in os.environ
    else ["postgresql://postgres@127.0.0.1:5432", "postgresql://root@127.0.0.1:5432"]
)
T = TypeVar("T")


def postgres_required() -> bool:
    return os.environ.get("ROOMSERVER_REQUIRE_POSTGRES", "") not in ("", "0", "false")


def run_apart(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on its own loop in another thread (the caller may be inside a loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _create_database(name: str) -> str:
    errors: list[str] = []
    for server in PG_SERVERS:
        try:
            conn = await asyncpg.connect(f"{server}/postgres", timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            errors.append(f"{server}: {exc}")
            continue
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return server
    raise RuntimeError("cannot reach the PostgreSQL test server: " + "; ".join(errors))


async def _drop_database(server: str, name: str) -> None:
    conn = await asyncpg.connect(f"{server}/postgres", timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A DSN of a fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"roomserver_test_{secrets.token_hex(6)}"
    try:
        server = run_apart(_create_database(name))
    except Exception as exc:
        message = f"PostgreSQL tests need a server on 127.0.0.1:5432: {exc}"
        if postgres_required():
            pytest.fail(message)
        pytest.skip(message + " (set ROOMSERVER_REQUIRE_POSTGRES=1 to fail instead)")
    try:
        yield f"{server}/{name}"
    finally:
        run_apart(_drop_database(server, name))


async def fresh_schema_url(dsn: str) -> str:
    """A URL of ``dsn`` whose search_path is a new, empty schema."""
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return f"{dsn}?search_path={schema}"
