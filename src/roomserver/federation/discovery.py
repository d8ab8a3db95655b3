"""Server discovery (spec: server-server API, "Resolving server names").

``ServerResolver.resolve(server_name)`` returns where to connect, what ``Host`` header to send
and which name the TLS certificate must carry. A static override map
(``{"example.org": "http://127.0.0.1:8008"}``) short-circuits discovery for tests and private
deployments. SRV records are looked up only when a DNS resolver is available: pass ``srv_lookup``,
or install the optional ``aiodns`` package; otherwise discovery is ``.well-known`` then port 8448.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8448
WELL_KNOWN_MAX_BYTES = 50 * 1024
WELL_KNOWN_TIMEOUT = 10.0
WELL_KNOWN_TTL = 24 * 3600.0
WELL_KNOWN_FAILURE_TTL = 600.0

SrvLookup = Callable[[str], Awaitable[Sequence[tuple[str, int]]]]
"""Looks up SRV records of a name (``_matrix-fed._tcp.host``), returning ``(target, port)``s in
the order to try them (priority, then weight); empty if there are none."""


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """Where to send requests for one server name.

    ``base_url`` is scheme, host and port; ``host_header`` is the ``Host`` to send; ``tls_name`` is
    the name the certificate must be valid for (``None``: the host of ``base_url``).
    """

    base_url: str
    host_header: str | None = None
    tls_name: str | None = None


def split_host_port(name: str) -> tuple[str, int | None]:
    """``host[:port]`` -> (host, port); IPv6 literals keep their brackets."""
    if name.startswith("["):
        end = name.find("]")
        host, rest = name[: end + 1], name[end + 1 :]
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = name.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return name, None


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 literal or a bracketed (or bare) IPv6 literal."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        return False
    return True


def aiodns_srv_lookup() -> SrvLookup | None:
    """An SRV lookup backed by ``aiodns`` if it is installed, else ``None``."""
    try:
        aiodns: Any = importlib.import_module("aiodns")
    except ImportError:
        return None
    resolver = aiodns.DNSResolver()

    async def lookup(name: str) -> Sequence[tuple[str, int]]:
        try:
            records = await resolver.query(name, "SRV")
        except Exception:  # aiodns.error.DNSError: no such record, NXDOMAIN, ...
            return []
        ordered = sorted(records, key=lambda r: (r.priority, -r.weight, r.host, r.port))
        return [(str(r.host).rstrip("."), int(r.port)) for r in ordered]

    return lookup


class ServerResolver:
    """Resolves server names to ``ServerAddress``es, caching ``.well-known`` answers."""

    def __init__(
        self,
        *,
        overrides: Mapping[str, str] | None = None,
        srv_lookup: SrvLookup | None = None,
        use_aiodns: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._overrides = {k: v.rstrip("/") for k, v in (overrides or {}).items()}
        self._srv = (
            srv_lookup if srv_lookup is not None else (aiodns_srv_lookup() if use_aiodns else None)
        )
        self._clock = clock
        self._well_known: dict[str, tuple[float, str | None]] = {}
        self._well_known_locks: dict[str, asyncio.Lock] = {}

    def set_override(self, server_name: str, base_url: str) -> None:
        self._overrides[server_name] = base_url.rstrip("/")

    async def resolve(self, server_name: str, session: aiohttp.ClientSession) -> ServerAddress:
        """Steps 1-6 of the spec's resolution algorithm, after the static overrides."""
        override = self._overrides.get(server_name)
        if override is not None:
            return ServerAddress(override)
        host, port = split_host_port(server_name)
        if is_ip_literal(host) or port is not None:
            # Steps 1 and 2: an IP literal or an explicit port is used as is.
            return ServerAddress(
                f"https://{host}:{port or DEFAULT_PORT}", server_name, None if port else host
            )
        delegated = await self._well_known_server(host, session)
        if delegated is not None:
            return await self._resolve_delegated(delegated)
        # Steps 4-6: SRV records of the server name itself, then port 8448.
        srv = await self._lookup_srv(host)
        if srv is not None:
            return ServerAddress(f"https://{srv[0]}:{srv[1]}", host, host)
        return ServerAddress(f"https://{host}:{DEFAULT_PORT}", host, host)

    async def _resolve_delegated(self, delegated: str) -> ServerAddress:
        """Step 3: the ``m.server`` of ``.well-known`` (IP literal, explicit port, SRV, 8448)."""
        host, port = split_host_port(delegated)
        if is_ip_literal(host) or port is not None:
            return ServerAddress(f"https://{host}:{port or DEFAULT_PORT}", delegated, host)
        srv = await self._lookup_srv(host)
        if srv is not None:
            return ServerAddress(f"https://{srv[0]}:{srv[1]}", host, host)
        return ServerAddress(f"https://{host}:{DEFAULT_PORT}", host, host)

    async def _lookup_srv(self, host: str) -> tuple[str, int] | None:
        if self._srv is None:
            return None
        for prefix in ("_matrix-fed._tcp.", "_matrix._tcp."):  # the second one is deprecated
            records = await self._srv(prefix + host)
            if records:
                return records[0]
        return None

    async def _well_known_server(self, host: str, session: aiohttp.ClientSession) -> str | None:
        cached = self._well_known.get(host)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        lock = self._well_known_locks.setdefault(host, asyncio.Lock())
        async with lock:  # one lookup per host at a time; the others read its answer
            cached = self._well_known.get(host)
            if cached is not None and cached[0] > self._clock():
                return cached[1]
            delegated, ttl = await self._fetch_well_known(host, session)
            self._well_known[host] = (self._clock() + ttl, delegated)
            return delegated

    async def _fetch_well_known(
        self, host: str, session: aiohttp.ClientSession
    ) -> tuple[str | None, float]:
        url = f"https://{host}/.well-known/matrix/server"
        try:
            async with asyncio.timeout(WELL_KNOWN_TIMEOUT), session.get(url) as resp:
                if resp.status != 200:
                    return None, WELL_KNOWN_FAILURE_TTL
                body = await resp.content.read(WELL_KNOWN_MAX_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            logger.debug("no .well-known for %s: %s", host, exc)
            return None, WELL_KNOWN_FAILURE_TTL
        if len(body) > WELL_KNOWN_MAX_BYTES:
            return None, WELL_KNOWN_FAILURE_TTL
        try:
            value = json.loads(body)
        except ValueError:
            return None, WELL_KNOWN_FAILURE_TTL
        server = value.get("m.server") if isinstance(value, dict) else None
        if not isinstance(server, str) or not server or "/" in server:
            return None, WELL_KNOWN_FAILURE_TTL
        return server, WELL_KNOWN_TTL
