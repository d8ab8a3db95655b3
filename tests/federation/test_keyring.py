"""KeyRing against real HTTP fake remotes: direct fetch, notaries, validity, caching."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from nacl.signing import SigningKey

from roomserver.bus.embedded import free_port
from roomserver.core.errors import InvalidSignature
from roomserver.federation.errors import KeysUnobtainable, RemoteUnavailable
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
    async with federation_stack(
        down, notary, notaries=(wrong,), keyring_options={"give_up_after_s": 0.5}
    ) as net:
        with pytest.raises(KeysUnobtainable):
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
    async with federation_stack(remote, keyring_options={"give_up_after_s": 0.5}) as net:
        with pytest.raises(KeysUnobtainable):
            await net.keyring.verify_event(builder.events[builder.latest[0]], "10")
        assert await net.keyring.get_server_keys("remote.test", [remote.key_id]) == {}


async def test_a_key_server_answering_503_makes_the_event_invalid_within_the_bound(
    remotes: StartRemote,
) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote)
    remote.fail_status = 503
    loop = asyncio.get_running_loop()
    async with federation_stack(remote, keyring_options={"give_up_after_s": 4.0}) as net:
        started = loop.time()
        with pytest.raises(KeysUnobtainable) as caught:
            await net.keyring.verify_event(builder.events[builder.latest[0]], "10")
        elapsed = loop.time() - started
    assert elapsed < 4.0 + 1.0
    assert caught.value.server_name == "remote.test"
    assert caught.value.key_ids == (remote.key_id,)
    assert f"server remote.test key {remote.key_id}" in str(caught.value)
    assert "503" in str(caught.value)
    # Retried with the backoff (t = 0, 1, 3 s), not hammered.
    assert 2 <= remote.count("key_server") <= 3


async def test_an_unreachable_server_fails_later_events_at_once_until_its_backoff_ends(
    remotes: StartRemote,
) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote, messages=30)
    remote.fail_status = 503
    events = list(builder.events.values())
    loop = asyncio.get_running_loop()
    async with federation_stack(remote, keyring_options={"give_up_after_s": 1.5}) as net:
        with pytest.raises(KeysUnobtainable):
            await net.keyring.verify_event(events[0], "10")
        await asyncio.sleep(1.6)  # the server has now been unreachable for longer than the bound
        asked = remote.count("key_server")
        await asyncio.sleep(max(0.0, 2.5 - 1.6))  # and its backoff (1, 2, 4 s) has ended
        started = loop.time()
        for event in events[1:]:
            with pytest.raises(KeysUnobtainable):
                await net.keyring.verify_event(event, "10")
        elapsed = loop.time() - started
        assert elapsed < 1.0  # 31 events: none of them waited
        assert remote.count("key_server") - asked <= 1  # one try when the backoff ended
        # The server comes back: once its backoff ends, its keys are fetched and used.
        remote.fail_status = None
        await asyncio.sleep(4.5)
        await net.keyring.verify_event(events[-1], "10")


async def test_a_closed_port_gives_up_within_the_bound() -> None:
    """A server nobody listens for (a closed loopback port): INVALID within the bound."""
    from roomserver.federation.client import FederationClient
    from tests.federation.helpers import OUR_KEY, OUR_KEY_ID, OUR_SERVER

    server = "gone.test"
    key = SigningKey(b"\x07" * 32)
    builder = RoomBuilder("10", server_name=server, keys={server: ("ed25519:gone", key)})
    builder.create_room(f"@alice:{server}")
    port = free_port()
    client = FederationClient(
        server_name=OUR_SERVER,
        signing_key=OUR_KEY,
        key_id=OUR_KEY_ID,
        overrides={server: f"http://127.0.0.1:{port}"},
    )
    keyring = KeyRing(client, give_up_after_s=3.0)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        with pytest.raises(KeysUnobtainable, match=r"server gone\.test key ed25519:gone"):
            await keyring.verify_event(builder.events[builder.latest[0]], "10")
        assert loop.time() - started < 3.0 + 1.0
    finally:
        await client.close()


class _DeadKeyClient:
    """A key client whose every request fails as a connection error would; records when."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def get_server_keys(self, destination: str) -> dict[str, Any]:
        self.calls.append(self.clock[0])
        raise RemoteUnavailable("connection refused", destination=destination)

    async def query_server_keys(self, notary: str, server_keys: Any) -> list[dict[str, Any]]:
        raise AssertionError("no notary configured")


async def test_give_up_schedule_with_a_fake_clock() -> None:
    """Tries at 0, 1, 3, 7, 15 s; gives up when the next try would pass the 30 s bound; the
    next event waits for one more try; from then on events fail at once, one try per backoff."""
    now = [1000.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    client = _DeadKeyClient(now)
    keyring = KeyRing(client, clock=lambda: now[0], sleep=sleep, give_up_after_s=30.0)
    remote = FakeRemote("dead.test")
    builder = remote_room(remote, messages=5)
    events = list(builder.events.values())

    with pytest.raises(KeysUnobtainable):
        await keyring.verify_event(events[0], "10")
    assert [t - 1000 for t in client.calls] == [0, 1, 3, 7, 15]
    assert now[0] - 1000 == 15
    with pytest.raises(KeysUnobtainable):
        await keyring.verify_event(events[1], "10")
    assert [t - 1000 for t in client.calls][5:] == [31]  # the backoff allowed one more try
    assert now[0] - 1000 == 31
    for event in events[2:]:
        with pytest.raises(KeysUnobtainable):
            await keyring.verify_event(event, "10")
    assert len(client.calls) == 6 and now[0] - 1000 == 31  # no wait, no request
    now[0] += 40  # t = 71 > 31 + 32: the backoff has ended, one try, no wait
    with pytest.raises(KeysUnobtainable, match=r"no key source answered for 71 s"):
        await keyring.verify_event(events[-1], "10")
    assert [t - 1000 for t in client.calls][6:] == [71]


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
