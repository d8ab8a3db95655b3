"""The federation classes used through the ports the pipeline and storage see.

mypy checks that they fit the Protocols (the annotated assignments below); these tests check
that, called only through the port, they behave as the port's docstrings say.
"""

from __future__ import annotations

import pytest

from roomserver import ports
from roomserver.core.errors import InvalidSignature
from roomserver.core.pdu import parse_event
from roomserver.federation.client import FederationClient
from roomserver.federation.errors import NoServerSucceeded
from roomserver.federation.fetcher import FederationFetcher
from roomserver.federation.keyring import InMemoryKeyCache, KeyCache, KeyRing
from roomserver.storage.store import SqlStorage
from roomserver.testing.builder import RoomBuilder
from tests.federation.helpers import OUR_KEY, OUR_KEY_ID, OUR_SERVER


async def test_key_ring_port_verifies_with_trusted_keys() -> None:
    builder = RoomBuilder("10", server_name=OUR_SERVER)
    create = builder.create_room(f"@alice:{OUR_SERVER}")[0]
    client = FederationClient(server_name=OUR_SERVER, signing_key=OUR_KEY, key_id=OUR_KEY_ID)
    try:
        ring = KeyRing(client)
        key_id, key = builder.key_for(OUR_SERVER)
        ring.add_verify_key(OUR_SERVER, key_id, key.verify_key)
        keyring: ports.KeyRing = ring
        await keyring.verify_event(create, "10")
        await keyring.verify_event(dict(create.pdu), "10")
        # A signed field changed after signing: the signature no longer matches.
        forged = {**create.pdu, "origin_server_ts": create.origin_server_ts + 1}
        with pytest.raises(InvalidSignature):
            await keyring.verify_event(forged, "10")
        with pytest.raises(InvalidSignature):
            await keyring.verify_event(parse_event(forged, "10"), "10")
    finally:
        await client.close()


async def test_fetcher_port_never_asks_our_own_server() -> None:
    client = FederationClient(server_name=OUR_SERVER, signing_key=OUR_KEY, key_id=OUR_KEY_ID)
    try:
        fetcher: ports.MissingEventFetcher = FederationFetcher(
            client, KeyRing(client), server_name=OUR_SERVER
        )
        with pytest.raises(NoServerSucceeded) as caught:
            await fetcher.fetch_event("!r:us.test", "10", "$e", [OUR_SERVER, OUR_SERVER])
        assert caught.value.errors == {}
        assert "tried: none" in str(caught.value)
    finally:
        await client.close()


async def test_in_memory_key_cache_keeps_and_replaces_keys() -> None:
    cache: KeyCache = InMemoryKeyCache()
    old = ports.ServerKeyRecord("a.test", "ed25519:1", b"\x01" * 32, valid_until_ts=10)
    other = ports.ServerKeyRecord("a.test", "ed25519:2", b"\x02" * 32, valid_until_ts=20)
    assert await cache.get_server_keys("a.test") == {}
    await cache.put_server_keys([old, other])
    assert await cache.get_server_keys("a.test") == {"ed25519:1": old, "ed25519:2": other}
    assert await cache.get_server_keys("a.test", ["ed25519:2", "ed25519:9"]) == {"ed25519:2": other}
    assert await cache.get_server_keys("b.test") == {}
    renewed = ports.ServerKeyRecord("a.test", "ed25519:1", b"\x01" * 32, valid_until_ts=99)
    await cache.put_server_keys([renewed])
    assert (await cache.get_server_keys("a.test", ["ed25519:1"]))["ed25519:1"] == renewed


def _storage_is_a_key_cache(store: SqlStorage) -> KeyCache:
    """Type-level only: the SQL storage can back the key ring's cache."""
    return store
