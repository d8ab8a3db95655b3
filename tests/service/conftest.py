"""Fixtures of the HTTP API tests: a Roomserver over a real nats-server (tests/e2e's), on
SQLite unless a test parametrizes ``backend`` itself (the HTTP layer is backend-neutral; the
overview queries it adds run on both backends in tests/storage/test_inspect.py)."""

import pytest

from tests.e2e.conftest import database_url, hanging_remote, open_roomserver, pg_database

__all__ = ["database_url", "hanging_remote", "open_roomserver", "pg_database"]


@pytest.fixture
def backend() -> str:
    return "sqlite"
