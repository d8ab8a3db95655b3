"""The federation classes satisfy the ports the pipeline and storage see (checked by mypy)."""

from __future__ import annotations

from roomserver import ports
from roomserver.federation.client import FederationClient
from roomserver.federation.fetcher import FederationFetcher
from roomserver.federation.keyring import InMemoryKeyCache, KeyCache, KeyRing
from roomserver.storage.store import SqlStorage
from tests.federation.helpers import OUR_KEY, OUR_KEY_ID, OUR_SERVER


async def test_federation_objects_fit_the_ports() -> None:
    client = FederationClient(server_name=OUR_SERVER, signing_key=OUR_KEY, key_id=OUR_KEY_ID)
    keyring: ports.KeyRing = KeyRing(client)
    assert isinstance(keyring, KeyRing)
    fetcher: ports.MissingEventFetcher = FederationFetcher(
        client, KeyRing(client), server_name=OUR_SERVER
    )
    assert isinstance(fetcher, FederationFetcher)
    cache: KeyCache = InMemoryKeyCache()
    assert cache is not None
    await client.close()


def _storage_is_a_key_cache(store: SqlStorage) -> KeyCache:
    """Type-level only: the SQL storage can back the key ring's cache."""
    return store
