"""``KeyRing``: server signing keys, fetched, validated, cached, and used to verify events.

Keys come from, in order: keys added out of band (``add_verify_key``, trusted as given), the
``KeyCache``, the server itself (``GET /_matrix/key/v2/server``), then the configured notaries
(``POST /_matrix/key/v2/query``). A key response counts only if it is for the server asked
about and carries a valid self-signature (and, through a notary, the notary's signature under a
key we trust for it). Fetched keys are valid until ``min(valid_until_ts, fetched + 7 days)``
(spec §9). Concurrent fetches for one server are coalesced into one.

A server none of whose key sources answers is remembered, with a backoff (``Backoff``: 1 s,
2 s, 4 s ... up to ``max_backoff_s``): no request is made for its keys until the backoff ends.
An event that needs its keys waits at most ``give_up_after_s`` (retrying when the backoff
allows), and once the server has been unreachable for that long it does not wait at all: its
verification raises ``KeysUnobtainable``, an ``InvalidSignature`` (the event is ``INVALID``),
naming the server and the key IDs. One unreachable server cannot block a room.

Most events are signed with keys the ring knows already, so the lookup per event has a fast
path that neither awaits nor allocates coroutines (``cached_verify_keys``): the keys the last
lookup of a server found are kept in memory, as ``ServerKey``s with their ``VerifyKey`` built,
for ``HOT_KEY_TTL_S``. It answers only when every key the event needs is there and good enough
for the event (the full path would fetch nothing); anything else (a missing or stale key, a
fetch under way for the server) goes the full way. Fetching or adding keys for a server drops
its entries, and validity (``valid_until_ts``, ``expired_ts``, the room version's rule) is
checked per event exactly as on the full path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nacl.signing import VerifyKey

from roomserver.core import signatures as core_signatures
from roomserver.core.base64 import decode_base64
from roomserver.core.errors import InvalidSignature
from roomserver.core.ids import ServerName
from roomserver.core.pdu import Event
from roomserver.core.room_versions import RoomVersion
from roomserver.core.room_versions import room_version as get_room_version
from roomserver.core.signatures import required_signers
from roomserver.federation.backoff import Backoff
from roomserver.federation.errors import (
    FederationError,
    KeyFetchError,
    KeysUnobtainable,
    RemoteRejected,
)
from roomserver.ports import ServerKeyRecord

logger = logging.getLogger(__name__)

MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000
REFETCH_INTERVAL_MS = 60 * 1000
GIVE_UP_AFTER_S = 30.0
MAX_KEY_BACKOFF_S = 300.0
FOREVER_TS = 2**62
#: How long keys found by a lookup answer later lookups from memory (the storage's own cache of
#: the key table, ``SERVER_KEY_CACHE_S``, is as short: keys another process fetches show soon).
HOT_KEY_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class ServerKey:
    """One signing key of ``server_name``.

    A current key (``expired_ts is None``) is usable for events sent up to ``valid_until_ts``; an
    old key (from ``old_verify_keys``) only for events sent before ``expired_ts``.
    """

    server_name: str
    key_id: str
    verify_key: VerifyKey
    valid_until_ts: int
    expired_ts: int | None = None

    @classmethod
    def from_record(cls, record: ServerKeyRecord) -> ServerKey:
        return cls(
            record.server_name,
            record.key_id,
            VerifyKey(record.verify_key),
            record.valid_until_ts,
            record.expired_ts,
        )

    def to_record(self) -> ServerKeyRecord:
        return ServerKeyRecord(
            ServerName(self.server_name),
            self.key_id,
            bytes(self.verify_key),
            self.valid_until_ts,
            self.expired_ts,
        )

    def usable_at(self, origin_server_ts: int, *, enforce_validity: bool) -> bool:
        """Spec §9: may this key verify an event sent at ``origin_server_ts``?"""
        if self.expired_ts is not None:
            return origin_server_ts < self.expired_ts
        return not enforce_validity or self.valid_until_ts >= origin_server_ts


class KeyCache(Protocol):
    """Where fetched keys are kept between requests, as ``ports.ServerKeyRecord``s (raw key
    bytes). The storage layer implements a persistent one with these two methods."""

    async def get_server_keys(
        self, server_name: str, key_ids: Collection[str] | None = None
    ) -> Mapping[str, ServerKeyRecord]:
        """Cached keys of ``server_name`` (only ``key_ids`` if given), by key ID."""
        ...

    async def put_server_keys(self, keys: Sequence[ServerKeyRecord]) -> None:
        """Store ``keys``, replacing any cached key with the same server and key ID."""
        ...


class InMemoryKeyCache:
    """A ``KeyCache`` in a dict."""

    def __init__(self) -> None:
        self._keys: dict[str, dict[str, ServerKeyRecord]] = {}

    async def get_server_keys(
        self, server_name: str, key_ids: Collection[str] | None = None
    ) -> Mapping[str, ServerKeyRecord]:
        keys = self._keys.get(server_name, {})
        return dict(keys) if key_ids is None else {k: keys[k] for k in key_ids if k in keys}

    async def put_server_keys(self, keys: Sequence[ServerKeyRecord]) -> None:
        for key in keys:
            self._keys.setdefault(key.server_name, {})[key.key_id] = key


class KeyClient(Protocol):
    """The two key endpoints of ``FederationClient`` the key ring uses."""

    async def get_server_keys(self, destination: str) -> dict[str, Any]: ...

    async def query_server_keys(
        self, notary: str, server_keys: Mapping[str, Mapping[str, int]]
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Notary:
    """A notary server. Without ``verify_keys``, its own keys are fetched from it directly."""

    server_name: str
    verify_keys: Mapping[str, VerifyKey] | None = None


def _ed25519_key_ids(pdu: Mapping[str, Any], server: str) -> list[str]:
    sigs = pdu.get("signatures")
    server_sigs = sigs.get(server) if isinstance(sigs, Mapping) else None
    if not isinstance(server_sigs, Mapping):
        return []
    return sorted(k for k in server_sigs if isinstance(k, str) and k.startswith("ed25519:"))


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


class KeyRing:
    """Fetches, validates and caches server keys; verifies event signatures with them."""

    def __init__(
        self,
        client: KeyClient,
        *,
        cache: KeyCache | None = None,
        notaries: Sequence[Notary] = (),
        clock_ms: Callable[[], int] = _wall_clock_ms,
        refetch_interval_ms: int = REFETCH_INTERVAL_MS,
        give_up_after_s: float = GIVE_UP_AFTER_S,
        max_backoff_s: float = MAX_KEY_BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``give_up_after_s``: the most an event waits for the keys of a server that does not
        answer (and how long a server must have been unreachable before events stop waiting
        for it at all). ``clock`` (monotonic seconds) and ``sleep`` drive that wait."""
        self._client = client
        self._cache: KeyCache = cache if cache is not None else InMemoryKeyCache()
        self._notaries = list(notaries)
        self._clock_ms = clock_ms
        self._refetch_interval_ms = refetch_interval_ms
        self._static: dict[str, dict[str, ServerKey]] = {}
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self._looked_up: dict[tuple[str, str], int] = {}  # (server, key ID) -> last fetch ms
        self._answered: dict[str, bool] = {}  # server -> did any source answer last time
        #: Public: the most an event waits for an unreachable server's keys (may be changed).
        self.give_up_after_s = give_up_after_s
        self._clock = clock
        self._sleep = sleep
        # Per server whose keys no source gave: when to ask again, since when, and why.
        self._backoff = Backoff(initial=1.0, maximum=max_backoff_s, clock=clock)
        self._down_since: dict[str, float] = {}
        self._last_error: dict[str, str] = {}
        # Keys lookups found: server -> key ID -> (monotonic time it expires from memory, key);
        # ``_key_changes`` counts fetches and additions, so a lookup that raced one keeps nothing.
        self._hot: dict[str, dict[str, tuple[float, ServerKey]]] = {}
        self._key_changes = 0

    def add_verify_key(
        self,
        server_name: str,
        key_id: str,
        verify_key: VerifyKey,
        valid_until_ts: int = FOREVER_TS,
    ) -> None:
        """Trust ``verify_key`` for ``server_name`` as given (configuration, our own key)."""
        key = ServerKey(server_name, key_id, verify_key, valid_until_ts)
        self._static.setdefault(server_name, {})[key_id] = key
        self._forget_hot(server_name)

    async def share_verify_key(self, server_name: str, key_id: str, verify_key: VerifyKey) -> None:
        """``add_verify_key``, and store the key in the cache, valid forever, so that every key
        ring reading that cache (other processes on the same database) trusts it too."""
        self.add_verify_key(server_name, key_id, verify_key)
        key = ServerKey(server_name, key_id, verify_key, FOREVER_TS)
        await self._cache.put_server_keys([key.to_record()])

    # -- key lookup ---------------------------------------------------------------------------
    async def get_server_keys(
        self, server_name: str, key_ids: Collection[str], *, minimum_valid_until_ts: int = 0
    ) -> dict[str, ServerKey]:
        """The keys of ``server_name`` among ``key_ids``, fetching missing or stale ones.

        A key is stale if it is current but valid only until before ``minimum_valid_until_ts``.
        Never raises for an unreachable server: missing keys are simply absent from the result.
        While the server is backed off (no key source answered recently), nothing is fetched.
        """
        pending = self._inflight.get(server_name)
        if pending is not None:
            await asyncio.shield(pending)  # a fetch for this server is under way: use its answer
        found = await self._known_keys(server_name, key_ids)
        wanted = self._wanted(server_name, key_ids, found, minimum_valid_until_ts)
        if not wanted or self._backoff.retry_at(server_name) is not None:
            return found
        await self._fetch_coalesced(server_name, wanted, minimum_valid_until_ts)
        return await self._known_keys(server_name, key_ids)

    async def _known_keys(self, server: str, key_ids: Collection[str]) -> dict[str, ServerKey]:
        changes = self._key_changes
        records = await self._cache.get_server_keys(server, key_ids)
        hot = self._hot.get(server, {})
        found = {k: _same_or_new(hot.get(k), r) for k, r in records.items() if k in key_ids}
        for key_id, key in self._static.get(server, {}).items():
            fetched = found.get(key_id)
            # An out-of-band key is trusted as given, unless a fetched one is valid for longer.
            if key_id in key_ids and (
                fetched is None
                or fetched.expired_ts is not None
                or fetched.valid_until_ts <= key.valid_until_ts
            ):
                found[key_id] = key
        if changes == self._key_changes and server not in self._inflight:
            expires = self._clock() + HOT_KEY_TTL_S
            remembered = self._hot.setdefault(server, {})
            for key_id in key_ids:
                known = found.get(key_id)
                if known is not None:
                    remembered[key_id] = (expires, known)
                else:
                    remembered.pop(key_id, None)
        return found

    def _forget_hot(self, server: str) -> None:
        """The keys of ``server`` may change: later lookups read them again."""
        self._key_changes += 1
        self._hot.pop(server, None)

    def _wanted(
        self, server: str, key_ids: Iterable[str], found: Mapping[str, ServerKey], min_ts: int
    ) -> list[str]:
        now = self._clock_ms()
        out = []
        for key_id in sorted(set(key_ids)):
            key = found.get(key_id)
            if key is not None and (key.expired_ts is not None or key.valid_until_ts >= min_ts):
                continue
            last = self._looked_up.get((server, key_id))
            if last is not None and now - last < self._refetch_interval_ms:
                continue  # asked recently and not found: do not let events make us hammer it
            out.append(key_id)
        return out

    async def _fetch_coalesced(self, server: str, key_ids: list[str], min_ts: int) -> None:
        pending = self._inflight.get(server)
        if pending is not None:
            await asyncio.shield(pending)
            found = await self._known_keys(server, key_ids)
            key_ids = self._wanted(server, key_ids, found, min_ts)
            if not key_ids or server in self._inflight:
                return
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[server] = future
        self._forget_hot(server)
        answered = False
        try:
            answered = await self._fetch(server, key_ids, min_ts)
        finally:
            self._answered[server] = answered
            if answered:
                self._backoff.record_success(server)
                self._down_since.pop(server, None)
                self._last_error.pop(server, None)
            else:
                self._backoff.record_failure(server)
                self._down_since.setdefault(server, self._clock())
            del self._inflight[server]
            self._forget_hot(server)
            future.set_result(answered)

    async def _fetch(self, server: str, key_ids: list[str], min_ts: int) -> bool:
        """Ask the server, then each notary, until every key in ``key_ids`` is good enough."""
        answered = False
        sources: list[Notary | None] = [None, *self._notaries]
        for notary in sources:
            if notary is not None and notary.server_name == server:
                continue
            try:
                keys = await self._fetch_from(server, notary, key_ids, min_ts)
            except (FederationError, ValueError) as exc:
                source = "itself" if notary is None else notary.server_name
                logger.info("keys of %s from %s failed: %s", server, source, exc)
                self._last_error[server] = f"from {source}: {exc}"
                if isinstance(exc, RemoteRejected):
                    answered = True  # e.g. 404: the source is alive and has no such key
                continue
            answered = True
            await self._cache.put_server_keys([key.to_record() for key in keys])
            found = await self._known_keys(server, key_ids)
            if not [k for k in key_ids if k not in found or not _fresh(found[k], min_ts)]:
                break
        if not answered:
            return False  # nobody answered: the backoff decides when to ask again
        found = await self._known_keys(server, key_ids)
        now = self._clock_ms()
        for key_id in key_ids:
            if key_id not in found or not _fresh(found[key_id], min_ts):
                self._looked_up[(server, key_id)] = now  # not found: do not ask again soon
        return True

    async def _fetch_from(
        self, server: str, notary: Notary | None, key_ids: list[str], min_ts: int
    ) -> list[ServerKey]:
        if notary is None:
            response = await self._client.get_server_keys(server)
            return self._parse_key_response(response, server)
        query = {server: {key_id: min_ts for key_id in key_ids}}
        responses = await self._client.query_server_keys(notary.server_name, query)
        keys: list[ServerKey] = []
        for response in responses:
            if response.get("server_name") != server:
                continue  # a notary may volunteer more; only what was asked for is taken
            await self._check_notary_signature(response, notary)
            keys.extend(self._parse_key_response(response, server))
        return keys

    async def _check_notary_signature(self, response: Mapping[str, Any], notary: Notary) -> None:
        name = notary.server_name
        key_ids = _signature_key_ids(response, name)
        if notary.verify_keys is not None:
            trusted = {k: notary.verify_keys[k] for k in key_ids if k in notary.verify_keys}
        else:
            keys = await self.get_server_keys(name, key_ids)
            trusted = {k: v.verify_key for k, v in keys.items() if v.expired_ts is None}
        if not trusted:
            raise KeyFetchError("no trusted key for the notary's signature", destination=name)
        _check_signatures(response, name, trusted)

    def _parse_key_response(self, response: Mapping[str, Any], server: str) -> list[ServerKey]:
        """Spec §13.9: validate a key object for ``server`` and return its keys."""
        if response.get("server_name") != server:
            raise KeyFetchError("key response is for another server", destination=server)
        valid_until = response.get("valid_until_ts")
        verify_keys = response.get("verify_keys")
        old_keys = response.get("old_verify_keys", {})
        if type(valid_until) is not int or not isinstance(verify_keys, Mapping):
            raise KeyFetchError("malformed key response", destination=server)
        if not isinstance(old_keys, Mapping):
            raise KeyFetchError("malformed old_verify_keys", destination=server)
        current = {k: _verify_key(v, server) for k, v in verify_keys.items() if _is_ed25519(k)}
        _check_signatures(response, server, current)
        valid_until = min(valid_until, self._clock_ms() + MAX_KEY_VALIDITY_MS)
        keys = [ServerKey(server, k, v, valid_until) for k, v in sorted(current.items())]
        for key_id, entry in sorted(old_keys.items()):
            expired = entry.get("expired_ts") if isinstance(entry, Mapping) else None
            if _is_ed25519(key_id) and type(expired) is int and key_id not in current:
                keys.append(ServerKey(server, key_id, _verify_key(entry, server), expired, expired))
        return keys

    # -- event verification -------------------------------------------------------------------
    def cached_verify_keys(
        self, event: Event | Mapping[str, Any], rules: RoomVersion
    ) -> dict[str, dict[str, VerifyKey]] | None:
        """What ``verify_keys_for_event`` would return, answered from memory without awaiting,
        or ``None`` when that needs the full path (a key not in memory, or not good enough for
        the event so that the full path would fetch it; a fetch for a signer under way).

        Raises what ``verify_keys_for_event`` raises before any lookup (``InvalidSignature``
        for an event whose sender is not a user ID)."""
        pdu = event.pdu if isinstance(event, Event) else event
        ts = pdu.get("origin_server_ts")
        ts = ts if type(ts) is int else 0
        enforce = rules.enforce_key_validity
        min_ts = ts if enforce else 0
        now = self._clock()
        out: dict[str, dict[str, VerifyKey]] = {}
        for server in sorted(required_signers(event, rules)):
            hot = self._hot.get(server)
            if hot is None or server in self._inflight:
                return None
            usable: dict[str, VerifyKey] = {}
            for key_id in _ed25519_key_ids(pdu, server):
                entry = hot.get(key_id)
                if entry is None or entry[0] <= now or not _fresh(entry[1], min_ts):
                    return None
                key = entry[1]
                if key.usable_at(ts, enforce_validity=enforce):
                    usable[key_id] = key.verify_key
            out[server] = usable
        return out

    async def verify_keys_for_event(
        self, event: Event | Mapping[str, Any], rules: RoomVersion
    ) -> dict[str, dict[str, VerifyKey]]:
        """The keys usable to check ``event``: required signer -> key ID -> key (spec §9).

        Keys a required signer signed with are fetched if unknown or (room version 5+) valid
        only until before the event's ``origin_server_ts``; only keys usable at that time are
        returned. Raises ``KeysUnobtainable`` when a signer's key sources do not answer within
        ``give_up_after_s`` (see the module docstring).
        """
        cached = self.cached_verify_keys(event, rules)
        if cached is not None:
            return cached
        pdu = event.pdu if isinstance(event, Event) else event
        ts = pdu.get("origin_server_ts")
        ts = ts if type(ts) is int else 0
        enforce = rules.enforce_key_validity
        servers = sorted(required_signers(event, rules))
        deadline = self._clock() + self.give_up_after_s
        found = await asyncio.gather(
            *(
                self._signer_keys(
                    server, _ed25519_key_ids(pdu, server), ts if enforce else 0, deadline
                )
                for server in servers
            )
        )
        out: dict[str, dict[str, VerifyKey]] = {}
        for server, keys in zip(servers, found, strict=True):
            out[server] = {
                k: key.verify_key
                for k, key in sorted(keys.items())
                if key.usable_at(ts, enforce_validity=enforce)
            }
        return out

    async def _signer_keys(
        self, server: str, key_ids: list[str], min_ts: int, deadline: float
    ) -> dict[str, ServerKey]:
        """The keys of one signer, waiting (until ``deadline``) while its key sources do not
        answer and its backoff allows another try."""
        while True:
            remaining = deadline - self._clock()
            try:
                keys = await asyncio.wait_for(
                    asyncio.shield(
                        self.get_server_keys(server, key_ids, minimum_valid_until_ts=min_ts)
                    ),
                    max(remaining, 0.001),
                )
            except TimeoutError:
                raise KeysUnobtainable(
                    server, key_ids, f"no key source answered within {self.give_up_after_s:g} s"
                ) from None
            fresh = [k for k in key_ids if k in keys and _fresh(keys[k], min_ts)]
            if fresh or not key_ids or self._answered.get(server, True):
                return keys  # got them, or a source answered without them (InvalidSignature)
            now = self._clock()
            retry_at = self._backoff.retry_at(server) or now
            down_for = now - self._down_since.get(server, now)
            if down_for >= self.give_up_after_s or retry_at > deadline:
                last = self._last_error.get(server, "unreachable")
                raise KeysUnobtainable(
                    server, key_ids, f"no key source answered for {down_for:.0f} s (last: {last})"
                )
            await self._sleep(retry_at - now)

    async def verify_event(self, event: Event | Mapping[str, Any], room_version: str) -> None:
        """Check the signatures of an event (spec §9), fetching the keys it needs.

        Raises ``InvalidSignature`` if a required signature is missing or wrong, or
        ``KeysUnobtainable`` (an ``InvalidSignature``) if no key source of a signer answered
        within ``give_up_after_s``.
        """
        rules = get_room_version(room_version)
        verify_keys = self.cached_verify_keys(event, rules)
        if verify_keys is None:
            verify_keys = await self.verify_keys_for_event(event, rules)
        core_signatures.verify_event(event, room_version=room_version, verify_keys=verify_keys)


def _same_or_new(hot: tuple[float, ServerKey] | None, record: ServerKeyRecord) -> ServerKey:
    """``record`` as a ``ServerKey``, reusing the one in memory (and its built ``VerifyKey``)
    when it is the same key with the same validity."""
    known = hot[1] if hot is not None else None
    if (
        known is not None
        and known.valid_until_ts == record.valid_until_ts
        and known.expired_ts == record.expired_ts
        and bytes(known.verify_key) == record.verify_key
    ):
        return known
    return ServerKey.from_record(record)


def _fresh(key: ServerKey, min_ts: int) -> bool:
    return key.expired_ts is not None or key.valid_until_ts >= min_ts


def _is_ed25519(key_id: object) -> bool:
    return isinstance(key_id, str) and key_id.startswith("ed25519:")


def _verify_key(entry: Any, server: str) -> VerifyKey:
    try:
        return VerifyKey(decode_base64(entry["key"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyFetchError(f"malformed key: {exc}", destination=server) from None


def _signature_key_ids(value: Mapping[str, Any], server: str) -> list[str]:
    sigs = value.get("signatures")
    server_sigs = sigs.get(server) if isinstance(sigs, Mapping) else None
    return (
        sorted(k for k in server_sigs if _is_ed25519(k)) if isinstance(server_sigs, Mapping) else []
    )


def _check_signatures(
    value: Mapping[str, Any], server: str, verify_keys: Mapping[str, VerifyKey]
) -> None:
    """Every signature of ``server`` under a key of ``verify_keys`` verifies; at least one does."""
    try:
        core_signatures.verify_json(value, server_name=server, verify_keys=verify_keys)
    except InvalidSignature as exc:
        raise KeyFetchError(f"key response signature: {exc}", destination=server) from None


__all__ = [
    "InMemoryKeyCache",
    "InvalidSignature",
    "KeyCache",
    "KeyRing",
    "Notary",
    "ServerKey",
]
