"""The key ring's in-memory fast path (``cached_verify_keys``): it answers only what the full
lookup would, and validity (``valid_until_ts``, old keys, the room version's rule, its own
time to live) is honoured exactly as on the full path."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pytest
from nacl.signing import SigningKey

from roomserver.core.base64 import encode_base64
from roomserver.core.errors import InvalidSignature
from roomserver.core.pdu import Event
from roomserver.core.room_versions import room_version
from roomserver.core.signatures import sign_json
from roomserver.federation.keyring import HOT_KEY_TTL_S, InMemoryKeyCache, KeyRing
from roomserver.ports import ServerKeyRecord
from roomserver.testing.builder import RoomBuilder
from roomserver.testing.builder import test_signing_key as signing_key

SERVER = "remote.test"
KEY_ID = "ed25519:k1"
START_TS = 1_700_000_000_000


class _KeyServer:
    """A key client for one server: answers with its key, valid until ``valid_until_ts``."""

    def __init__(self, key: SigningKey, valid_until_ts: int) -> None:
        self.key = key
        self.valid_until_ts = valid_until_ts
        self.old: dict[str, tuple[SigningKey, int]] = {}  # key ID -> (key, expired_ts)
        self.fetches = 0

    async def get_server_keys(self, destination: str) -> dict[str, Any]:
        self.fetches += 1
        response = {
            "server_name": destination,
            "valid_until_ts": self.valid_until_ts,
            "verify_keys": {KEY_ID: {"key": encode_base64(bytes(self.key.verify_key))}},
            "old_verify_keys": {
                key_id: {"key": encode_base64(bytes(k.verify_key)), "expired_ts": expired}
                for key_id, (k, expired) in self.old.items()
            },
        }
        return sign_json(response, server_name=destination, signing_key=self.key, key_id=KEY_ID)

    async def query_server_keys(
        self, notary: str, server_keys: Mapping[str, Mapping[str, int]]
    ) -> list[dict[str, Any]]:
        raise AssertionError("no notary configured")


class _CountingCache(InMemoryKeyCache):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get_server_keys(
        self, server_name: str, key_ids: Collection[str] | None = None
    ) -> Mapping[str, ServerKeyRecord]:
        self.reads += 1
        return await super().get_server_keys(server_name, key_ids)

    async def put_server_keys(self, keys: Sequence[ServerKeyRecord]) -> None:
        await super().put_server_keys(keys)


def _events(
    version: str = "10", *, key_id: str = KEY_ID, key: SigningKey | None = None
) -> list[Event]:
    builder = RoomBuilder(
        version,
        server_name=SERVER,
        keys={SERVER: (key_id, key or signing_key(7))},
        start_ts=START_TS,
    )
    builder.create_room(f"@alice:{SERVER}")
    builder.message(f"@alice:{SERVER}", "one")
    return list(builder.events.values())


def _ring(
    client: _KeyServer, cache: InMemoryKeyCache, clock: list[float], now_ms: int = START_TS
) -> KeyRing:
    return KeyRing(client, cache=cache, clock=lambda: clock[0], clock_ms=lambda: now_ms)


async def test_a_known_key_answers_from_memory_without_reading_the_cache() -> None:
    client, cache, clock = _KeyServer(signing_key(7), START_TS + 10**9), _CountingCache(), [0.0]
    ring = _ring(client, cache, clock)
    events = _events()
    rules = room_version("10")
    assert ring.cached_verify_keys(events[0], rules) is None  # nothing looked up yet
    await ring.verify_event(events[0], "10")
    reads = cache.reads
    keys = ring.cached_verify_keys(events[1], rules)
    assert keys is not None
    assert bytes(keys[SERVER][KEY_ID]) == bytes(signing_key(7).verify_key)
    assert keys == await ring.verify_keys_for_event(events[1], rules)
    for event in events:
        await ring.verify_event(event, "10")
    assert (cache.reads, client.fetches) == (reads, 1)


async def test_memory_expires_after_its_time_to_live() -> None:
    client, cache, clock = _KeyServer(signing_key(7), START_TS + 10**9), _CountingCache(), [0.0]
    ring = _ring(client, cache, clock)
    event = _events()[1]
    await ring.verify_event(event, "10")
    clock[0] = HOT_KEY_TTL_S + 0.1
    assert ring.cached_verify_keys(event, room_version("10")) is None
    reads = cache.reads
    await ring.verify_event(event, "10")  # read again from the cache, not fetched
    assert (cache.reads, client.fetches) == (reads + 1, 1)
    assert ring.cached_verify_keys(event, room_version("10")) is not None


@pytest.mark.parametrize(("version", "valid"), [("4", True), ("10", False)])
async def test_a_key_expired_before_the_event_is_not_answered_from_memory(
    version: str, valid: bool
) -> None:
    """valid_until_ts before the event's timestamp: room versions 5+ go the full way (which
    fetches the key again and, still too short, rejects); versions 1-4 ignore validity."""
    events = _events(version)
    client = _KeyServer(signing_key(7), events[0].origin_server_ts)
    ring = _ring(client, InMemoryKeyCache(), [0.0])
    await ring.verify_event(events[0], version)  # valid until exactly its timestamp: usable
    late = events[1]
    assert late.origin_server_ts > client.valid_until_ts
    cached = ring.cached_verify_keys(late, room_version(version))
    assert (cached is not None) is valid
    if valid:
        await ring.verify_event(late, version)
        assert client.fetches == 1
    else:
        with pytest.raises(InvalidSignature, match="no verifiable signature"):
            await ring.verify_event(late, version)
        assert client.fetches == 2  # the stale key was fetched again (refetch interval allows)


async def test_an_old_key_verifies_only_events_sent_before_it_expired() -> None:
    old_key = signing_key(9)
    events = _events(key_id="ed25519:old", key=old_key)
    client = _KeyServer(signing_key(7), START_TS + 10**9)
    client.old["ed25519:old"] = (old_key, events[1].origin_server_ts)  # expired at event 1
    ring = _ring(client, InMemoryKeyCache(), [0.0])
    await ring.verify_event(events[0], "10")
    rules = room_version("10")
    assert ring.cached_verify_keys(events[1], rules) == {SERVER: {}}  # known, but not usable
    with pytest.raises(InvalidSignature, match="no known key"):
        await ring.verify_event(events[1], "10")
    assert client.fetches == 1


async def test_a_fetch_or_an_added_key_drops_the_servers_keys_from_memory() -> None:
    client = _KeyServer(signing_key(7), START_TS + 10**9)
    ring = _ring(client, InMemoryKeyCache(), [0.0])
    event = _events()[1]
    await ring.verify_event(event, "10")
    ring.add_verify_key(SERVER, "ed25519:other", signing_key(8).verify_key)
    assert ring.cached_verify_keys(event, room_version("10")) is None
    await ring.verify_event(event, "10")
    assert ring.cached_verify_keys(event, room_version("10")) is not None


async def test_a_sender_that_is_no_user_id_raises_as_on_the_full_path() -> None:
    ring = _ring(_KeyServer(signing_key(7), START_TS), InMemoryKeyCache(), [0.0])
    pdu = dict(_events()[1].pdu)
    pdu["sender"] = "not a user"
    with pytest.raises(InvalidSignature, match="sender"):
        ring.cached_verify_keys(pdu, room_version("10"))
    with pytest.raises(InvalidSignature, match="sender"):
        await ring.verify_event(pdu, "10")
