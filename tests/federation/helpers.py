"""Test helpers: our server's identity, fake remotes on 127.0.0.1, a wired federation stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey

from roomserver.federation.client import FederationClient
from roomserver.federation.fetcher import FederationFetcher
from roomserver.federation.keyring import KeyRing, Notary
from roomserver.testing.builder import RoomBuilder
from tests.federation.remote import FakeRemote

OUR_SERVER = "us.test"
OUR_KEY_ID = "ed25519:us"
OUR_KEY = SigningKey(b"\x05" * 32)


def make_remote(name: str) -> FakeRemote:
    return FakeRemote(name, trusted={OUR_SERVER: {OUR_KEY_ID: OUR_KEY.verify_key}})


@dataclass
class Stack:
    client: FederationClient
    keyring: KeyRing
    fetcher: FederationFetcher


@asynccontextmanager
async def federation_stack(
    *remotes: FakeRemote,
    notaries: tuple[Notary, ...] = (),
    fetcher_options: dict[str, Any] | None = None,
    keyring_options: dict[str, Any] | None = None,
    **client_options: Any,
) -> AsyncIterator[Stack]:
    """A client that reaches ``remotes`` through overrides, a key ring and a fetcher."""
    client = FederationClient(
        server_name=OUR_SERVER,
        signing_key=OUR_KEY,
        key_id=OUR_KEY_ID,
        overrides={r.server_name: r.base_url for r in remotes},
        **client_options,
    )
    keyring = KeyRing(client, notaries=notaries, **(keyring_options or {}))
    fetcher = FederationFetcher(client, keyring, server_name=OUR_SERVER, **(fetcher_options or {}))
    try:
        yield Stack(client, keyring, fetcher)
    finally:
        await client.close()


def remote_room(remote: FakeRemote, *, version: str = "10", messages: int = 3) -> RoomBuilder:
    """A room created by a user of ``remote`` with a second member and a few messages."""
    builder = RoomBuilder(version, server_name=remote.server_name, keys=remote.builder_keys())
    alice = f"@alice:{remote.server_name}"
    builder.create_room(alice)
    builder.join(f"@bob:{remote.server_name}")
    for i in range(messages):
        builder.message(alice, f"message {i}")
    return builder
