"""Every pipeline test runs on the in-memory fake storage and on the real SQLite storage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from roomserver.input import InputConfig
from roomserver.ports import MissingEventFetcher
from roomserver.testing.builder import RoomBuilder
from tests.input.fakes import FakeKeyRing, MemoryStorage
from tests.input.helpers import Harness, HarnessFactory


@pytest.fixture(params=["memory", "sqlite"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HarnessFactory]:
    opened: list[Any] = []

    async def make(
        builder: RoomBuilder,
        *,
        fetcher: MissingEventFetcher | None = None,
        config: InputConfig | None = None,
        keyring: FakeKeyRing | None = None,
    ) -> Harness:
        if request.param == "memory":
            store: Any = MemoryStorage()
        else:
            from roomserver.storage import open_storage

            store = await open_storage(f"sqlite://{tmp_path}/db{len(opened)}.sqlite")
        opened.append(store)
        return Harness(builder, store=store, fetcher=fetcher, config=config, keyring=keyring)

    yield make
    for store in opened:
        await store.close()
