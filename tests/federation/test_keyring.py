"""KeyRing against real HTTP fake remotes: direct fetch, notaries, validity, caching."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from nacl.signing import SigningKey

from roomserver.core.errors import InvalidSignature
from roomserver.federation.errors import KeyFetchError
from roomserver.federation.keyring import InMemoryKeyCache, KeyRing, Notary
from roomserver.testing.builder import RoomBuilder
from tests.federation.conftest import StartRemote
from tests.federation.helpers import federation_stack, remote_room
from tests.federation.remote import FakeRemote


def _room_signed_with(
    remote: FakeRemote, key_id: str, key: SigningKey, version: str = "10"
) -> RoomBuilder:
    builder = RoomBuilder(
        version, server_name=remote.server_name, keys={remote.server_name: (key_id, key)}
    )
    builder.create_room(f"@alice:{remote.server_name}")
    return builder


async def test_keys_fetched_once_from_the_server_then_cached(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote)
    async with federation_stack(remote) as net:
        for event in builder.events.values():
            await net.keyring.verify_event(event, "10")
    assert remote.count("key_server") == 1


async def test_concurrent_fetches_for_one_server_are_coalesced(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote, messages=20)
    remote.delay = 0.2
    async with federation_stack(remote) as net:
        await asyncio.gather(
            *(net.keyring.verify_event(e.pdu, "10") for e in builder.events.values())
        )
    assert remote.count("key_server") == 1


async def test_a_forged_event_signature_is_invalid(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote)
    pdu = copy.deepcopy(dict(builder.events[builder.latest[0]].pdu))
    pdu["origin_server_ts"] += 1
    async with federation_stack(remote) as net:
        with pytest.raises(InvalidSignature):
            await net.keyring.verify_event(pdu, "10")


async def test_keys_from_a_notary_when_the_server_is_down(remotes: StartRemote) -> None:
    down, notary = await remotes("down.test"), await remotes("notary.test")
    builder = remote_room(down)
    notary.notarise(down)
    down.fail_status = 500
    async with federation_stack(down, notary, notaries=(Notary("notary.test"),)) as net:
        await net.keyring.verify_event(builder.events[builder.latest[0]], "10")
    assert notary.count("key_query") == 1
    assert notary.count("key_server") == 1  # the notary's own key, to check its signature
    query = next(r for r in notary.requests if r.endpoint == "key_query")
    event = builder.events[builder.latest[0]]
    wanted = query.body["server_keys"]["down.test"][down.key_id]
    assert wanted == {"minimum_valid_until_ts": event.origin_server_ts}


async def test_notary_with_pinned_key(remotes: StartRemote) -> None:
    down, notary = await remotes("down.test"), await remotes("notary.test")
    builder = remote_room(down)
    notary.notarise(down)
    down.fail_status = 500
    pinned = Notary("notary.test", {notary.key_id: notary.verify_key})
    async with federation_stack(down, notary, notaries=(pinned,)) as net:
        await net.keyring.verify_event(builder.events[builder.latest[0]], "10")
    assert notary.count("key_server") == 0


async def test_notary_signature_under_an_untrusted_key_is_refused(remotes: StartRemote) -> None:
    down, notary = await remotes("down.test"), await remotes("notary.test")
    builder = remote_room(down)
    notary.notarise(down)
    down.fail_status = 500
    wrong = Notary("notary.test", {notary.key_id: SigningKey.generate().verify_key})
    async with federation_stack(down, notary, notaries=(wrong,)) as net:
        with pytest.raises(KeyFetchError):
            await net.keyring.verify_event(builder.events[builder.latest[0]], "10")


@pytest.mark.parametrize("forgery", ["signature", "server_name"])
async def test_key_response_must_be_self_signed_and_for_the_server(
    remotes: StartRemote, forgery: str
) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote)

    def forge(body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        if forgery == "signature":
            body["signatures"][remote.server_name][remote.key_id] = "A" * 86
        else:
            body["server_name"] = "other.test"
        return body

    remote.tamper_keys = forge
    async with federation_stack(remote) as net:
        with pytest.raises(KeyFetchError):
            await net.keyring.verify_event(builder.events[builder.latest[0]], "10")
        assert await net.keyring.get_server_keys("remote.test", [remote.key_id]) == {}


async def test_unreachable_key_server_is_a_transient_error(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote)
    remote.fail_status = 503
    async with federation_stack(remote) as net:
        with pytest.raises(KeyFetchError):
            await net.keyring.verify_event(builder.events[builder.latest[0]], "10")


async def test_old_verify_keys_verify_events_sent_before_expiry(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    old_key = SigningKey.generate()
    builder = _room_signed_with(remote, "ed25519:old", old_key)
    first_ts = min(e.origin_server_ts for e in builder.events.values())
    last_ts = max(e.origin_server_ts for e in builder.events.values())
    early, late = (
        next(e for e in builder.events.values() if e.origin_server_ts == ts)
        for ts in (first_ts, last_ts)
    )
    remote.old_verify_keys["ed25519:old"] = (old_key.verify_key, last_ts)
    async with federation_stack(remote) as net:
        await net.keyring.verify_event(early, "10")
        with pytest.raises(InvalidSignature):
            await net.keyring.verify_event(late, "10")


@pytest.mark.parametrize(("version", "valid"), [("4", True), ("10", False)])
async def test_key_validity_is_enforced_from_room_version_5(
    remotes: StartRemote, version: str, valid: bool
) -> None:
    remote = await remotes("remote.test")
    builder = _room_signed_with(remote, remote.key_id, remote.signing_key, version)
    remote.valid_until_ts = 1_600_000_000_000  # before the builder's events
    event = builder.events[builder.latest[0]]
    async with federation_stack(remote) as net:
        if valid:
            await net.keyring.verify_event(event, version)
        else:
            with pytest.raises(InvalidSignature):
                await net.keyring.verify_event(event, version)


async def test_out_of_band_keys_are_trusted_without_fetching(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote)
    event = builder.events[builder.latest[0]]
    async with federation_stack(remote) as net:
        net.keyring.add_verify_key(remote.server_name, remote.key_id, remote.verify_key)
        await net.keyring.verify_event(event, "10")
        assert remote.count("key_server") == 0
        # Taken as given: an out-of-band key valid until before the event is not usable for it
        # (v5+), so the server is asked and its fresher answer wins.
        stale = KeyRing(net.client)
        stale.add_verify_key(remote.server_name, remote.key_id, remote.verify_key, 1)
        await stale.verify_event(event, "10")
        assert remote.count("key_server") == 1
        # ... and a wrong out-of-band key is trusted as given, too.
        wrong = KeyRing(net.client)
        wrong.add_verify_key(remote.server_name, remote.key_id, SigningKey.generate().verify_key)
        with pytest.raises(InvalidSignature):
            await wrong.verify_event(event, "10")
        assert remote.count("key_server") == 1


async def test_unknown_key_ids_are_not_refetched_at_once(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = _room_signed_with(remote, "ed25519:unknown", SigningKey.generate())
    async with federation_stack(remote) as net:
        for event in builder.events.values():
            with pytest.raises(InvalidSignature):
                await net.keyring.verify_event(event, "10")
    assert remote.count("key_server") == 1


async def test_cache_is_shared_between_key_rings(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote)
    cache = InMemoryKeyCache()
    async with federation_stack(remote) as net:
        first = KeyRing(net.client, cache=cache)
        await first.verify_event(builder.events[builder.latest[0]], "10")
        second = KeyRing(net.client, cache=cache)
        await second.verify_event(builder.events[builder.latest[0]], "10")
    assert remote.count("key_server") == 1


async def test_a_shared_key_is_trusted_by_every_key_ring_on_the_cache() -> None:
    class NoClient:
        async def get_server_keys(self, destination: str) -> dict[str, Any]:
            raise AssertionError(f"no fetch expected, asked {destination}")

        async def query_server_keys(self, notary: str, server_keys: Any) -> list[dict[str, Any]]:
            raise AssertionError("no notary query expected")

    cache = InMemoryKeyCache()
    key = SigningKey(b"\x31" * 32)
    here, there = KeyRing(NoClient(), cache=cache), KeyRing(NoClient(), cache=cache)
    await here.share_verify_key("demo.example", "ed25519:demo", key.verify_key)
    for ring in (here, there):
        found = await ring.get_server_keys(
            "demo.example", ["ed25519:demo"], minimum_valid_until_ts=2**61
        )
        assert found["ed25519:demo"].verify_key == key.verify_key
        assert found["ed25519:demo"].expired_ts is None
    builder = RoomBuilder("10", keys={"demo.example": ("ed25519:demo", key)})
    builder.create_room("@alice:demo.example")
    for event in builder.events.values():
        await there.verify_event(event, "10")
