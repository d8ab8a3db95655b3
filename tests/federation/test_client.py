"""FederationClient transport: X-Matrix signing, errors, backoff, size bounds, discovery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest
from nacl.signing import SigningKey

from roomserver.federation.backoff import Backoff
from roomserver.federation.discovery import ServerAddress, ServerResolver
from roomserver.federation.errors import (
    BackingOff,
    BadResponse,
    RemoteRejected,
    RemoteUnavailable,
)
from roomserver.federation.xmatrix import (
    authorization_header,
    parse_authorization,
    verify_request,
)
from tests.federation.conftest import StartRemote
from tests.federation.helpers import OUR_KEY, OUR_KEY_ID, OUR_SERVER, federation_stack, remote_room


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- X-Matrix ---------------------------------------------------------------------------------
def test_authorization_header_round_trip() -> None:
    body = {"limit": 5, "earliest_events": []}
    header = authorization_header(
        method="POST",
        uri="/_matrix/federation/v1/get_missing_events/%21r%3Aa.test",
        origin=OUR_SERVER,
        destination="remote.test",
        signing_key=OUR_KEY,
        key_id=OUR_KEY_ID,
        content=body,
    )
    auth = parse_authorization(header)
    assert (auth.origin, auth.destination, auth.key_id) == (OUR_SERVER, "remote.test", OUR_KEY_ID)
    keys = {OUR_KEY_ID: OUR_KEY.verify_key}
    uri = "/_matrix/federation/v1/get_missing_events/%21r%3Aa.test"
    verify_request(
        auth, method="POST", uri=uri, destination="remote.test", verify_keys=keys, content=body
    )
    for wrong in (
        {"uri": uri + "?x=1"},
        {"destination": "other.test"},
        {"content": {"limit": 6, "earliest_events": []}},
    ):
        args: dict[str, Any] = {"uri": uri, "destination": "remote.test", "content": body}
        args.update(wrong)
        with pytest.raises(ValueError):
            verify_request(auth, method="POST", verify_keys=keys, **args)


@pytest.mark.parametrize(
    "header",
    [
        'X-Matrix origin="a.test",destination="b.test",key="ed25519:1",sig="c2ln"',
        'X-Matrix  ORIGIN=a.test , Key="ed25519:1", sig="c2ln", destination="b.test"',
        'x-matrix origin=a.test,key=ed25519:1,sig=c2ln,destination=b.test,extra="x,y"',
        'X-Matrix origin="a\\.test",destination="b.test",key="ed25519:1",sig="c2ln"',
    ],
)
def test_parse_authorization_variants(header: str) -> None:
    auth = parse_authorization(header)
    assert (auth.origin, auth.destination, auth.key_id, auth.signature) == (
        "a.test",
        "b.test",
        "ed25519:1",
        "c2ln",
    )


@pytest.mark.parametrize(
    "header", ["Bearer abc", 'X-Matrix origin="a.test",key="ed25519:1"', "X-Matrix ,,,"]
)
def test_parse_authorization_rejects(header: str) -> None:
    with pytest.raises(ValueError):
        parse_authorization(header)


# -- transport --------------------------------------------------------------------------------
async def test_requests_are_signed_for_the_destination(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote)
    remote.add_room(builder)
    async with federation_stack(remote) as net:
        pdu = await net.client.get_event("remote.test", builder.latest[0])
        ids = await net.client.get_state_ids("remote.test", builder.room_id, builder.latest[0])
    assert pdu == dict(builder.events[builder.latest[0]].pdu)
    assert ids.pdu_ids
    assert remote.auth_failures == []
    assert {r.origin for r in remote.requests} == {OUR_SERVER}


async def test_a_request_signed_with_another_key_is_refused(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    remote.add_room(remote_room(remote))
    async with federation_stack(remote) as net:
        impostor = type(net.client)(
            server_name=OUR_SERVER,
            signing_key=SigningKey.generate(),
            key_id=OUR_KEY_ID,
            overrides={"remote.test": remote.base_url},
        )
        with pytest.raises(RemoteRejected) as caught:
            await impostor.get_event("remote.test", "$nope")
        await impostor.close()
    assert caught.value.status == 401
    assert remote.auth_failures


async def test_not_found_is_a_rejection_not_a_failure(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    remote.add_room(remote_room(remote))
    async with federation_stack(remote) as net:
        with pytest.raises(RemoteRejected) as caught:
            await net.client.get_event("remote.test", "$unknown")
        assert caught.value.status == 404 and caught.value.errcode == "M_NOT_FOUND"
        assert net.client.backoff.retry_at("remote.test") is None


async def test_malformed_answers_are_bad_responses(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote)
    remote.add_room(builder)
    remote.tamper = lambda endpoint, body: {"pdus": "not a list"}
    async with federation_stack(remote) as net:
        with pytest.raises(BadResponse):
            await net.client.get_event("remote.test", builder.latest[0])


async def test_backoff_grows_and_clears(remotes: StartRemote) -> None:
    remote = await remotes("remote.test")
    builder = remote_room(remote)
    remote.add_room(builder)
    remote.fail_status = 502
    clock = FakeClock()
    backoff = Backoff(initial=10.0, maximum=25.0, clock=clock)
    async with federation_stack(remote, backoff=backoff) as net:
        with pytest.raises(RemoteUnavailable):
            await net.client.get_event("remote.test", builder.latest[0])
        with pytest.raises(BackingOff):
            await net.client.get_event("remote.test", builder.latest[0])
        assert len(remote.requests) == 1
        clock.now += 10
        with pytest.raises(RemoteUnavailable):  # tried again, failed again: 20 s now
            await net.client.get_event("remote.test", builder.latest[0])
        assert backoff.retry_at("remote.test") == clock.now + 20
        clock.now += 20
        with pytest.raises(RemoteUnavailable):
            await net.client.get_event("remote.test", builder.latest[0])
        assert backoff.retry_at("remote.test") == clock.now + 25  # capped
        clock.now += 25
        remote.fail_status = None
        await net.client.get_event("remote.test", builder.latest[0])
        assert backoff.failures("remote.test") == 0
    assert len(remote.requests) == 4


async def test_connection_refused_is_unavailable() -> None:
    async with federation_stack() as net:
        net.client.resolver.set_override("gone.test", "http://127.0.0.1:9")
        with pytest.raises(RemoteUnavailable):
            await net.client.get_event("gone.test", "$x")


# -- discovery --------------------------------------------------------------------------------
class _Resolver(ServerResolver):
    """Discovery with a canned ``.well-known`` answer instead of an HTTPS request."""

    def __init__(self, well_known: dict[str, str], srv: dict[str, tuple[str, int]]) -> None:
        async def lookup(name: str) -> Sequence[tuple[str, int]]:
            return [srv[name]] if name in srv else []

        super().__init__(srv_lookup=lookup)
        self.answers = well_known

    async def _fetch_well_known(
        self, host: str, session: aiohttp.ClientSession
    ) -> tuple[str | None, float]:
        return self.answers.get(host), 60.0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1.2.3.4", ServerAddress("https://1.2.3.4:8448", "1.2.3.4", "1.2.3.4")),
        ("1.2.3.4:99", ServerAddress("https://1.2.3.4:99", "1.2.3.4:99", None)),
        ("[::1]:99", ServerAddress("https://[::1]:99", "[::1]:99", None)),
        ("a.test:99", ServerAddress("https://a.test:99", "a.test:99", None)),
        ("plain.test", ServerAddress("https://plain.test:8448", "plain.test", "plain.test")),
        ("srv.test", ServerAddress("https://target.test:1234", "srv.test", "srv.test")),
        ("old-srv.test", ServerAddress("https://old.test:5", "old-srv.test", "old-srv.test")),
        (
            "wk.test",
            ServerAddress("https://delegated.test:8448", "delegated.test", "delegated.test"),
        ),
        (
            "wk-port.test",
            ServerAddress("https://delegated.test:443", "delegated.test:443", "delegated.test"),
        ),
        ("wk-srv.test", ServerAddress("https://t2.test:77", "srvd.test", "srvd.test")),
        ("override.test", ServerAddress("http://127.0.0.1:1")),
    ],
)
async def test_server_discovery(name: str, expected: ServerAddress) -> None:
    resolver = _Resolver(
        {
            "wk.test": "delegated.test",
            "wk-port.test": "delegated.test:443",
            "wk-srv.test": "srvd.test",
        },
        {
            "_matrix-fed._tcp.srv.test": ("target.test", 1234),
            "_matrix._tcp.old-srv.test": ("old.test", 5),
            "_matrix-fed._tcp.srvd.test": ("t2.test", 77),
        },
    )
    resolver.set_override("override.test", "http://127.0.0.1:1/")
    async with aiohttp.ClientSession() as session:
        assert await resolver.resolve(name, session) == expected
