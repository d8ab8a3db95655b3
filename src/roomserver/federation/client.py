"""``FederationClient``: X-Matrix signed requests to other homeservers, over aiohttp.

The transport (``request``) adds request signing, server discovery, TLS verification (on by
default), a per-request timeout, a response size bound enforced while streaming and a
per-destination backoff. The endpoint methods return the remote's JSON checked for shape only:
events in it are untrusted PDUs; ``FederationFetcher`` parses and verifies them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import yarl
from nacl.signing import SigningKey

from roomserver.core.ids import EventId
from roomserver.federation.backoff import Backoff
from roomserver.federation.discovery import ServerResolver
from roomserver.federation.errors import (
    BackingOff,
    BadResponse,
    FederationError,
    RemoteRejected,
    RemoteTimeout,
    RemoteUnavailable,
    ResponseTooLarge,
)
from roomserver.federation.xmatrix import authorization_header

logger = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
JSONObject = dict[str, Any]

_FEDERATION = "/_matrix/federation/v1"


def _q(value: str) -> str:
    """Percent-encode one path segment (event and room IDs contain ``$``, ``!``, ``:``)."""
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class StateIds:
    """``/state_ids`` answer: the state before an event and its auth chain, as event IDs."""

    pdu_ids: tuple[EventId, ...]
    auth_chain_ids: tuple[EventId, ...]


@dataclass(frozen=True, slots=True)
class StatePdus:
    """``/state`` answer: the state before an event and its auth chain, as untrusted PDUs."""

    pdus: tuple[JSONObject, ...]
    auth_chain: tuple[JSONObject, ...]


class FederationClient:
    """Signed federation requests as ``server_name`` with ``signing_key`` under ``key_id``.

    ``overrides`` maps server names to base URLs (``"http://127.0.0.1:8448"``) and bypasses
    discovery. Create it inside a running event loop or call ``close()`` when done (it owns an
    ``aiohttp.ClientSession`` unless one is passed in).
    """

    def __init__(
        self,
        *,
        server_name: str,
        signing_key: SigningKey,
        key_id: str,
        overrides: Mapping[str, str] | None = None,
        resolver: ServerResolver | None = None,
        verify_tls: bool = True,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        backoff: Backoff | None = None,
        session: aiohttp.ClientSession | None = None,
        user_agent: str = "roomserver",
    ) -> None:
        self.server_name = server_name
        self._signing_key = signing_key
        self._key_id = key_id
        self.resolver = resolver or ServerResolver(overrides=overrides)
        if resolver is not None and overrides:
            for name, url in overrides.items():
                resolver.set_override(name, url)
        self._verify_tls = verify_tls
        self.request_timeout = request_timeout
        self.max_response_bytes = max_response_bytes
        self.backoff = backoff or Backoff()
        self._session = session
        self._owns_session = session is None
        self._user_agent = user_agent

    async def __aenter__(self) -> FederationClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._verify_tls, limit=200, limit_per_host=32)
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": self._user_agent}
            )
            self._owns_session = True
        return self._session

    # -- transport ----------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Mapping[str, str | int | Sequence[str]] | None = None,
        body: JSONObject | None = None,
        time_limit: float | None = None,
        max_bytes: int | None = None,
        authenticated: bool = True,
    ) -> Any:
        """Send one request and return the decoded JSON body of a 200 answer.

        ``path`` is already percent-encoded. Raises the ``FederationError`` subclasses only.
        Transport failures (timeout, connection, 5xx, 429) start or extend the destination's
        backoff; while it lasts, requests fail at once with ``BackingOff``.
        """
        retry_at = self.backoff.retry_at(destination)
        if retry_at is not None:
            raise BackingOff(destination, retry_at)
        uri = path + ("?" + urlencode(query, doseq=True) if query else "")
        limit = self.max_response_bytes if max_bytes is None else max_bytes
        try:
            async with asyncio.timeout(self.request_timeout if time_limit is None else time_limit):
                status, payload = await self._send(
                    method, destination, uri, body, limit, authenticated
                )
        except TimeoutError:
            self.backoff.record_failure(destination)
            raise RemoteTimeout("request timed out", destination=destination) from None
        except (aiohttp.ClientError, OSError) as exc:
            self.backoff.record_failure(destination)
            reason = f"{type(exc).__name__}: {exc}"
            raise RemoteUnavailable(reason, destination=destination) from exc
        return self._decode(destination, status, payload)

    async def _send(
        self,
        method: str,
        destination: str,
        uri: str,
        body: JSONObject | None,
        limit: int,
        authenticated: bool,
    ) -> tuple[int, bytes]:
        session = self._get_session()
        address = await self.resolver.resolve(destination, session)
        headers: dict[str, str] = {}
        if address.host_header is not None:
            headers["Host"] = address.host_header
        if authenticated:
            headers["Authorization"] = authorization_header(
                method=method,
                uri=uri,
                origin=self.server_name,
                destination=destination,
                signing_key=self._signing_key,
                key_id=self._key_id,
                content=body,
            )
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        url = yarl.URL(address.base_url + uri, encoded=True)
        extra: dict[str, Any] = {}
        if address.tls_name is not None and url.scheme == "https":
            extra["server_hostname"] = address.tls_name
        async with session.request(
            method, url, data=data, headers=headers, allow_redirects=False, **extra
        ) as resp:
            declared = resp.content_length
            if declared is not None and declared > limit:
                raise ResponseTooLarge(destination, limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise ResponseTooLarge(destination, limit)
                chunks.append(chunk)
            return resp.status, b"".join(chunks)

    def _decode(self, destination: str, status: int, payload: bytes) -> Any:
        try:
            value = json.loads(payload) if payload else None
        except ValueError:
            value = None
            if status == 200:
                raise BadResponse("body is not JSON", destination=destination) from None
        if status == 200:
            self.backoff.record_success(destination)
            return value
        errcode = value.get("errcode") if isinstance(value, dict) else None
        error = value.get("error") if isinstance(value, dict) else None
        if status >= 500 or status == 429:
            self.backoff.record_failure(destination)
            raise RemoteUnavailable(f"HTTP {status} {errcode or ''}", destination=destination)
        # A client error is an answer: the remote is alive, so its backoff is cleared.
        self.backoff.record_success(destination)
        raise RemoteRejected(
            str(error or ""),
            destination=destination,
            status=status,
            errcode=errcode if isinstance(errcode, str) else None,
        )

    async def get_json(self, destination: str, path: str, **kwargs: Any) -> Any:
        return await self.request("GET", destination, path, **kwargs)

    async def post_json(self, destination: str, path: str, body: JSONObject, **kwargs: Any) -> Any:
        return await self.request("POST", destination, path, body=body, **kwargs)

    # -- federation endpoints -----------------------------------------------------------------
    async def get_event(
        self, destination: str, event_id: str, *, time_limit: float | None = None
    ) -> JSONObject:
        """``GET /event/{eventId}``: the one PDU of the transaction-shaped answer."""
        path = f"{_FEDERATION}/event/{_q(event_id)}"
        answer = await self.get_json(destination, path, time_limit=time_limit)
        pdus = _objects(destination, answer, "pdus")
        if len(pdus) != 1:
            raise BadResponse(f"/event returned {len(pdus)} PDUs", destination=destination)
        return pdus[0]

    async def get_event_auth(
        self, destination: str, room_id: str, event_id: str, *, time_limit: float | None = None
    ) -> list[JSONObject]:
        """``GET /event_auth/{roomId}/{eventId}``: the event's full auth chain."""
        path = f"{_FEDERATION}/event_auth/{_q(room_id)}/{_q(event_id)}"
        answer = await self.get_json(destination, path, time_limit=time_limit)
        return _objects(destination, answer, "auth_chain")

    async def get_missing_events(
        self,
        destination: str,
        room_id: str,
        *,
        earliest: Sequence[str],
        latest: Sequence[str],
        limit: int,
        min_depth: int = 0,
        time_limit: float | None = None,
    ) -> list[JSONObject]:
        """``POST /get_missing_events/{roomId}``."""
        body = {
            "earliest_events": list(earliest),
            "latest_events": list(latest),
            "limit": limit,
            "min_depth": min_depth,
        }
        path = f"{_FEDERATION}/get_missing_events/{_q(room_id)}"
        answer = await self.post_json(destination, path, body, time_limit=time_limit)
        return _objects(destination, answer, "events")

    async def get_state_ids(
        self, destination: str, room_id: str, event_id: str, *, time_limit: float | None = None
    ) -> StateIds:
        """``GET /state_ids/{roomId}?event_id=``: the state before ``event_id``, as IDs."""
        path = f"{_FEDERATION}/state_ids/{_q(room_id)}"
        query = {"event_id": event_id}
        answer = await self.get_json(destination, path, query=query, time_limit=time_limit)
        return StateIds(
            tuple(_event_ids(destination, answer, "pdu_ids")),
            tuple(_event_ids(destination, answer, "auth_chain_ids")),
        )

    async def get_state(
        self, destination: str, room_id: str, event_id: str, *, time_limit: float | None = None
    ) -> StatePdus:
        """``GET /state/{roomId}?event_id=``: the state before ``event_id``, as PDUs."""
        path = f"{_FEDERATION}/state/{_q(room_id)}"
        query = {"event_id": event_id}
        answer = await self.get_json(destination, path, query=query, time_limit=time_limit)
        return StatePdus(
            tuple(_objects(destination, answer, "pdus")),
            tuple(_objects(destination, answer, "auth_chain")),
        )

    async def backfill(
        self,
        destination: str,
        room_id: str,
        event_ids: Sequence[str],
        limit: int,
        *,
        time_limit: float | None = None,
    ) -> list[JSONObject]:
        """``GET /backfill/{roomId}?v=...&limit=``: the ``v`` events and their predecessors."""
        path = f"{_FEDERATION}/backfill/{_q(room_id)}"
        query = {"v": list(event_ids), "limit": limit}
        answer = await self.get_json(destination, path, query=query, time_limit=time_limit)
        return _objects(destination, answer, "pdus")

    # -- key endpoints (unauthenticated) ------------------------------------------------------
    async def get_server_keys(self, destination: str) -> JSONObject:
        """``GET /_matrix/key/v2/server``: the server's own signed key object."""
        answer = await self.get_json(destination, "/_matrix/key/v2/server", authenticated=False)
        if not isinstance(answer, dict):
            raise BadResponse("key response is not an object", destination=destination)
        return answer

    async def query_server_keys(
        self, notary: str, server_keys: Mapping[str, Mapping[str, int]]
    ) -> list[JSONObject]:
        """``POST /_matrix/key/v2/query`` asking ``notary`` for keys of other servers.

        ``server_keys`` maps server -> key ID -> ``minimum_valid_until_ts`` (an empty inner
        mapping asks for all of that server's keys).
        """
        body = {
            "server_keys": {
                server: {kid: {"minimum_valid_until_ts": ts} for kid, ts in keys.items()}
                for server, keys in server_keys.items()
            }
        }
        answer = await self.post_json(notary, "/_matrix/key/v2/query", body, authenticated=False)
        return _objects(notary, answer, "server_keys")


def _field(destination: str, answer: Any, key: str) -> list[Any]:
    if not isinstance(answer, dict) or not isinstance(answer.get(key), list):
        raise BadResponse(f"answer lacks a {key!r} list", destination=destination)
    value: list[Any] = answer[key]
    return value


def _objects(destination: str, answer: Any, key: str) -> list[JSONObject]:
    items = _field(destination, answer, key)
    if not all(isinstance(item, dict) for item in items):
        raise BadResponse(f"{key!r} holds a non-object", destination=destination)
    return items


def _strings(destination: str, answer: Any, key: str) -> list[str]:
    items: list[str] = _checked_strings(destination, answer, key)
    return items


def _event_ids(destination: str, answer: Any, key: str) -> list[EventId]:
    """The event IDs the remote names (their grammar is checked where they are used)."""
    items: list[EventId] = _checked_strings(destination, answer, key)
    return items


def _checked_strings(destination: str, answer: Any, key: str) -> Any:
    """``answer[key]``, checked to be a list of strings."""
    items = _field(destination, answer, key)
    if not all(isinstance(item, str) for item in items):
        raise BadResponse(f"{key!r} holds a non-string", destination=destination)
    return items


__all__ = ["FederationClient", "FederationError", "StateIds", "StatePdus"]
