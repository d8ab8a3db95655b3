"""Fixtures of the HTTP API tests: a Roomserver over a real nats-server (tests/e2e's), on
SQLite unless a test parametrizes ``backend`` itself (the HTTP layer is backend-neutral; the
overview queries it adds run on both backends in tests/storage/test_inspect.py)."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.e2e.conftest import database_url, open_roomserver, pg_database

__all__ = ["database_url", "open_roomserver", "pg_database"]


@pytest.fixture
def backend() -> str:
    return "sqlite"


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
