"""``FakeRemote``: a real Matrix homeserver's federation API on 127.0.0.1, for tests.

It serves rooms built with ``RoomBuilder`` (events signed with the remote's own key) over the
real endpoints: ``/_matrix/key/v2/server``, ``/_matrix/key/v2/query`` (it is a notary too),
``/event``, ``/event_auth``, ``/get_missing_events``, ``/state_ids``, ``/state`` and
``/backfill``. Federation requests must carry a valid X-Matrix signature from a server in
``trusted`` (so the client's signing is tested). Faults are injected through attributes:
``delay``, ``fail_status``, ``tamper``, ``pad_bytes``, ``hidden``.

Reusable by end-to-end tests of the pipeline::

    remote = FakeRemote("remote.test", trusted={"us.test": {key_id: our_verify_key}})
    room = remote.add_room(builder)
    await remote.start()      # remote.base_url -> FederationClient(overrides={...})
    ...
    await remote.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from nacl.signing import SigningKey, VerifyKey

from roomserver.core.base64 import encode_base64
from roomserver.core.pdu import Event
from roomserver.core.signatures import sign_json
from roomserver.federation.xmatrix import parse_authorization, verify_request
from roomserver.testing.builder import RoomBuilder

StateKey = tuple[str, str]
Tamper = Callable[[str, dict[str, Any]], dict[str, Any]]
NOW_MS = 1_700_000_000_000
DAY_MS = 24 * 3600 * 1000


@dataclass
class RecordedRequest:
    method: str
    path: str
    origin: str | None
    endpoint: str
    body: Any = None


@dataclass
class RemoteRoom:
    """One room as the remote knows it: events (in creation order) and the state before each."""

    room_id: str
    room_version: str
    events: dict[str, Event] = field(default_factory=dict)
    state_before: dict[str, dict[StateKey, str]] = field(default_factory=dict)
    state_after: dict[str, dict[StateKey, str]] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        before: dict[StateKey, str] = {}
        for prev in event.prev_event_ids:  # a naive merge: fine for the linear rooms of tests
            for key, value in self.state_after.get(prev, {}).items():
                before.setdefault(key, value)
        after = dict(before)
        if event.state_key is not None:
            after[event.state_tuple] = event.event_id
        self.events[event.event_id] = event
        self.state_before[event.event_id] = before
        self.state_after[event.event_id] = after

    def auth_chain(self, event_ids: Iterable[str]) -> list[str]:
        """Every auth ancestor of ``event_ids`` (not themselves), sorted by depth then ID."""
        seen: set[str] = set()
        todo = [a for e in event_ids if e in self.events for a in self.events[e].auth_event_ids]
        while todo:
            eid = todo.pop()
            if eid in seen or eid not in self.events:
                continue
            seen.add(eid)
            todo.extend(self.events[eid].auth_event_ids)
        return sorted(seen, key=lambda e: (self.events[e].depth, e))


class FakeRemote:
    """A homeserver called ``server_name`` with one signing key, on 127.0.0.1."""

    def __init__(
        self,
        server_name: str,
        *,
        signing_key: SigningKey | None = None,
        key_id: str = "ed25519:remote",
        trusted: Mapping[str, Mapping[str, VerifyKey]] | None = None,
        valid_until_ts: int = NOW_MS + 30 * DAY_MS,
    ) -> None:
        self.server_name = server_name
        self.signing_key = signing_key or SigningKey.generate()
        self.key_id = key_id
        self.trusted = {k: dict(v) for k, v in (trusted or {}).items()}
        self.valid_until_ts = valid_until_ts
        self.old_verify_keys: dict[str, tuple[VerifyKey, int]] = {}
        self.rooms: dict[str, RemoteRoom] = {}
        self.notarised: dict[str, dict[str, Any]] = {}  # server -> its self-signed key object
        self.requests: list[RecordedRequest] = []
        self.auth_failures: list[str] = []
        # Faults
        self.delay: float = 0.0
        self.fail_status: int | None = None
        self.tamper: Tamper | None = None
        self.tamper_keys: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.pad_bytes: int = 0
        self.chunked = False  # stream bodies without a Content-Length
        self.hidden: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.base_url = ""

    # -- content ------------------------------------------------------------------------------
    @property
    def verify_key(self) -> VerifyKey:
        return self.signing_key.verify_key

    def builder_keys(self) -> dict[str, tuple[str, SigningKey]]:
        """``RoomBuilder(keys=...)`` so events of this server's users carry its signature."""
        return {self.server_name: (self.key_id, self.signing_key)}

    def add_room(self, builder: RoomBuilder, events: Iterable[Event] | None = None) -> RemoteRoom:
        """Serve ``builder``'s room (or the given events of it, in order)."""
        room = self.rooms.get(builder.room_id) or RemoteRoom(builder.room_id, builder.version)
        for event in builder.events.values() if events is None else events:
            room.add(event)
        self.rooms[builder.room_id] = room
        return room

    def key_object(self) -> dict[str, Any]:
        """This server's self-signed ``/_matrix/key/v2/server`` object."""
        body: dict[str, Any] = {
            "server_name": self.server_name,
            "valid_until_ts": self.valid_until_ts,
            "verify_keys": {self.key_id: {"key": encode_base64(bytes(self.verify_key))}},
            "old_verify_keys": {
                kid: {"key": encode_base64(bytes(key)), "expired_ts": ts}
                for kid, (key, ts) in self.old_verify_keys.items()
            },
        }
        return sign_json(
            body, server_name=self.server_name, signing_key=self.signing_key, key_id=self.key_id
        )

    def notarise(self, other: FakeRemote) -> None:
        """Vouch for ``other``'s keys in ``/_matrix/key/v2/query`` answers."""
        self.notarised[other.server_name] = other.key_object()

    def _find(self, event_id: str) -> Event | None:
        if event_id in self.hidden:
            return None
        for room in self.rooms.values():
            if event_id in room.events:
                return room.events[event_id]
        return None

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(client_max_size=1024 * 1024)
        fed = "/_matrix/federation/v1"
        app.router.add_get("/_matrix/key/v2/server", self._keys_server)
        app.router.add_post("/_matrix/key/v2/query", self._keys_query)
        app.router.add_get(fed + "/event/{event_id}", self._wrap("event", self._event))
        app.router.add_get(
            fed + "/event_auth/{room_id}/{event_id}", self._wrap("event_auth", self._event_auth)
        )
        app.router.add_post(
            fed + "/get_missing_events/{room_id}",
            self._wrap("get_missing_events", self._missing_events),
        )
        app.router.add_get(fed + "/state_ids/{room_id}", self._wrap("state_ids", self._state_ids))
        app.router.add_get(fed + "/state/{room_id}", self._wrap("state", self._state))
        app.router.add_get(fed + "/backfill/{room_id}", self._wrap("backfill", self._backfill))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up when the server stops (so tests end quickly)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def count(self, endpoint: str) -> int:
        return sum(1 for r in self.requests if r.endpoint == endpoint)

    # -- plumbing -----------------------------------------------------------------------------
    async def _reply(
        self, request: web.Request, endpoint: str, body: dict[str, Any], status: int = 200
    ) -> web.StreamResponse:
        if status == 200 and self.tamper is not None:
            body = self.tamper(endpoint, body)
        if self.pad_bytes:
            body = {**body, "padding": "x" * self.pad_bytes}
        payload = json.dumps(body).encode()
        if not self.chunked:
            return web.Response(status=status, body=payload, content_type="application/json")
        response = web.StreamResponse(status=status)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(payload), 16 * 1024):
            await response.write(payload[start : start + 16 * 1024])
        await response.write_eof()
        return response

    def _wrap(
        self, endpoint: str, handler: Callable[[web.Request, Any], Any]
    ) -> Callable[[web.Request], Any]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            body = await request.json() if request.can_read_body else None
            origin = self._authenticate(request, body)
            self.requests.append(
                RecordedRequest(request.method, request.path, origin, endpoint, body)
            )
            if origin is None:
                return await self._reply(request, endpoint, {"errcode": "M_UNAUTHORIZED"}, 401)
            if self.delay:
                await self._sleep(self.delay)
            if self.fail_status is not None:
                return await self._reply(
                    request, endpoint, {"errcode": "M_UNKNOWN"}, self.fail_status
                )
            result: web.StreamResponse = await handler(request, body)
            return result

        return wrapped

    def _authenticate(self, request: web.Request, body: Any) -> str | None:
        header = request.headers.get("Authorization", "")
        try:
            auth = parse_authorization(header)
            verify_request(
                auth,
                method=request.method,
                uri=request.raw_path,
                destination=self.server_name,
                verify_keys=self.trusted.get(auth.origin, {}),
                content=body,
            )
        except ValueError as exc:
            self.auth_failures.append(str(exc))
            return None
        if auth.destination is None:
            self.auth_failures.append("no destination")
            return None
        return auth.origin

    def _room(self, request: web.Request) -> RemoteRoom | None:
        return self.rooms.get(request.match_info["room_id"])

    async def _not_found(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        body = {"errcode": "M_NOT_FOUND", "error": "not found"}
        return await self._reply(request, endpoint, body, 404)

    def _pdus(self, room: RemoteRoom, ids: Iterable[str]) -> list[dict[str, Any]]:
        return [dict(room.events[e].pdu) for e in ids if e not in self.hidden]

    # -- key endpoints ------------------------------------------------------------------------
    async def _keys_server(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(RecordedRequest("GET", request.path, None, "key_server"))
        if self.delay:
            await self._sleep(self.delay)
        if self.fail_status is not None:
            return await self._reply(
                request, "key_server", {"errcode": "M_UNKNOWN"}, self.fail_status
            )
        body = self.key_object()
        if self.tamper_keys is not None:
            body = self.tamper_keys(body)
        return web.json_response(body)

    async def _keys_query(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(RecordedRequest("POST", request.path, None, "key_query", body))
        out = []
        for server in sorted(body.get("server_keys", {})):
            if server == self.server_name:
                obj = self.key_object()
            elif server in self.notarised:
                obj = self.notarised[server]
            else:
                continue
            out.append(
                sign_json(
                    obj,
                    server_name=self.server_name,
                    signing_key=self.signing_key,
                    key_id=self.key_id,
                )
            )
        return web.json_response({"server_keys": out})

    # -- federation endpoints -----------------------------------------------------------------
    async def _event(self, request: web.Request, _body: Any) -> web.StreamResponse:
        event = self._find(request.match_info["event_id"])
        if event is None:
            return await self._not_found(request, "event")
        body = {"origin": self.server_name, "origin_server_ts": NOW_MS, "pdus": [dict(event.pdu)]}
        return await self._reply(request, "event", body)

    async def _event_auth(self, request: web.Request, _body: Any) -> web.StreamResponse:
        room = self._room(request)
        event_id = request.match_info["event_id"]
        if room is None or event_id not in room.events:
            return await self._not_found(request, "event_auth")
        chain = self._pdus(room, room.auth_chain([event_id]))
        return await self._reply(request, "event_auth", {"auth_chain": chain})

    async def _missing_events(self, request: web.Request, body: Any) -> web.StreamResponse:
        """Breadth-first over prev events from ``latest_events``, not into ``earliest_events``."""
        room = self._room(request)
        if room is None:
            return await self._not_found(request, "get_missing_events")
        earliest = set(body.get("earliest_events", []))
        limit = int(body.get("limit", 10))
        min_depth = int(body.get("min_depth", 0))
        seen = set(earliest) | set(body.get("latest_events", []))
        queue = deque(
            p
            for e in body.get("latest_events", [])
            if e in room.events
            for p in room.events[e].prev_event_ids
        )
        out: list[str] = []
        while queue and len(out) < limit:
            eid = queue.popleft()
            if eid in seen or eid not in room.events:
                continue
            seen.add(eid)
            event = room.events[eid]
            if event.depth < min_depth:
                continue
            out.append(eid)
            queue.extend(event.prev_event_ids)
        return await self._reply(request, "get_missing_events", {"events": self._pdus(room, out)})

    def _state_at(self, request: web.Request) -> tuple[RemoteRoom, list[str], list[str]] | None:
        room = self._room(request)
        event_id = request.query.get("event_id", "")
        if room is None or event_id not in room.events:
            return None
        state = sorted(room.state_before[event_id].values())
        return room, state, room.auth_chain(state)

    async def _state_ids(self, request: web.Request, _body: Any) -> web.StreamResponse:
        found = self._state_at(request)
        if found is None:
            return await self._not_found(request, "state_ids")
        _, state, auth = found
        return await self._reply(request, "state_ids", {"pdu_ids": state, "auth_chain_ids": auth})

    async def _state(self, request: web.Request, _body: Any) -> web.StreamResponse:
        found = self._state_at(request)
        if found is None:
            return await self._not_found(request, "state")
        room, state, auth = found
        body = {"pdus": self._pdus(room, state), "auth_chain": self._pdus(room, auth)}
        return await self._reply(request, "state", body)

    async def _backfill(self, request: web.Request, _body: Any) -> web.StreamResponse:
        room = self._room(request)
        if room is None:
            return await self._not_found(request, "backfill")
        limit = int(request.query.get("limit", "10"))
        queue = deque(request.query.getall("v", []))
        seen: set[str] = set()
        out: list[str] = []
        while queue and len(out) < limit:
            eid = queue.popleft()
            if eid in seen or eid not in room.events:
                continue
            seen.add(eid)
            out.append(eid)
            queue.extend(room.events[eid].prev_event_ids)
        body = {
            "origin": self.server_name,
            "origin_server_ts": NOW_MS,
            "pdus": self._pdus(room, out),
        }
        return await self._reply(request, "backfill", body)
