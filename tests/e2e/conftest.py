"""Fixtures: a ``Roomserver`` on SQLite or PostgreSQL with its embedded nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from roomserver.app import Roomserver
from tests.pgutil import fresh_schema_url, pg_database

__all__ = ["pg_database"]

OpenRoomserver = Callable[..., Awaitable[Roomserver]]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/roomserver.db"
    dsn: str = request.getfixturevalue("pg_database")
    return await fresh_schema_url(dsn)


@pytest.fixture
async def open_roomserver(tmp_path: Path, database_url: str) -> AsyncIterator[OpenRoomserver]:
    """``await open_roomserver(**kwargs)``: a running Roomserver, closed after the test."""
    opened: list[Roomserver] = []

    async def _open(**kwargs: Any) -> Roomserver:
        kwargs.setdefault("data_dir", tmp_path / f"rs{len(opened)}")
        kwargs.setdefault("server_name", "rs.test")
        kwargs.setdefault("database_url", database_url)
        kwargs.setdefault("federation", False)
        rs = await Roomserver.open(**kwargs)
        opened.append(rs)
        return rs

    yield _open
    for rs in reversed(opened):
        await rs.close(grace=2.0)


@pytest.fixture
async def hanging_remote() -> AsyncIterator[str]:
    """An HTTP server that accepts every request and never answers it."""
    release = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    release.set()
    await runner.cleanup()
