"""Fixtures of the federation tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.federation.helpers import make_remote
from tests.federation.remote import FakeRemote

StartRemote = Callable[[str], Awaitable[FakeRemote]]


@pytest.fixture
async def remotes() -> AsyncIterator[StartRemote]:
    """A factory of started ``FakeRemote``s, all stopped at the end of the test."""
    started: list[FakeRemote] = []

    async def start(name: str) -> FakeRemote:
        remote = make_remote(name)
        await remote.start()
        started.append(remote)
        return remote

    yield start
    for remote in started:
        await remote.stop()
