"""``RoomBuilder``: builds a room's events, hashed and signed, for tests and benchmarks.

It tracks the room's linear state so each new event cites sensible auth events and the latest
event as its prev, unless told otherwise. It does not check the authorization rules: tests use it
to build both allowed and forbidden events.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nacl.signing import SigningKey

from roomserver.core.hashes import room_id_from_create_event_id
from roomserver.core.ids import EventId, RoomId
from roomserver.core.pdu import Event, parse_event
from roomserver.core.room_versions import RoomVersion, room_version
from roomserver.core.signatures import sign_event
from roomserver.core.state_keys import StateKey


def test_signing_key(seed_byte: int = 1) -> SigningKey:
    """A deterministic signing key (never use outside tests)."""
    return SigningKey(bytes([seed_byte]) * 32)


_BUILDERS = itertools.count(1)


class RoomBuilder:
    """Builds one room's events. Every event is signed by the server of its sender.

    ``keys`` maps server name -> (key ID, signing key); servers without an entry get a
    deterministic key derived from their name.
    """

    def __init__(
        self,
        version: str = "10",
        *,
        server_name: str = "example.org",
        keys: Mapping[str, tuple[str, SigningKey]] | None = None,
        start_ts: int = 1_700_000_000_000,
        room_id: str | None = None,
    ) -> None:
        self.version = version
        self.rules: RoomVersion = room_version(version)
        self.server_name = server_name
        self.keys: dict[str, tuple[str, SigningKey]] = dict(keys or {})
        self._ts = itertools.count(start_ts)
        self._counter = itertools.count(1)
        # Unique per builder in this process (``id(self)`` modulo something was not: two rooms of
        # one test could share a room ID).
        self._number = next(_BUILDERS)
        self.room_id = RoomId(room_id or f"!built{self._number}:{server_name}")
        self.events: dict[str, Event] = {}
        self.state: dict[StateKey, EventId] = {}
        self.latest: list[str] = []
        # Known from the start, so a test can trust the builder's keys before it signs anything.
        self.key_for(server_name)
        self.key_for(server_name)  # so its key is known before the first event is signed

    # -- keys ---------------------------------------------------------------------------------
    def key_for(self, server: str) -> tuple[str, SigningKey]:
        if server not in self.keys:
            seed = (sum(server.encode()) % 250) + 1
            self.keys[server] = ("ed25519:auto", SigningKey(bytes([seed]) * 31 + b"\x07"))
        return self.keys[server]

    def verify_keys(self) -> dict[str, dict[str, Any]]:
        """server -> {key_id: VerifyKey} for every server this builder signed as."""
        return {s: {kid: k.verify_key} for s, (kid, k) in self.keys.items()}

    # -- building -----------------------------------------------------------------------------
    def auth_event_ids_for(
        self, event_type: str, sender: str, state_key: str | None, content: Mapping[str, Any]
    ) -> list[str]:
        """A spec-like auth event selection from the builder's current state."""
        wanted: list[StateKey] = []
        if event_type == "m.room.create":
            return []
        if self.rules.create_event_in_auth_events:
            wanted.append(("m.room.create", ""))
        wanted += [("m.room.power_levels", ""), ("m.room.member", sender)]
        if event_type == "m.room.member" and state_key is not None:
            wanted.append(("m.room.member", state_key))
            membership = content.get("membership")
            if membership in ("join", "invite", "knock"):
                wanted.append(("m.room.join_rules", ""))
            via = content.get("join_authorised_via_users_server")
            if membership == "join" and isinstance(via, str):
                wanted.append(("m.room.member", via))
            tpi = content.get("third_party_invite")
            if membership == "invite" and isinstance(tpi, Mapping):
                signed = tpi.get("signed")
                if isinstance(signed, Mapping) and isinstance(signed.get("token"), str):
                    wanted.append(("m.room.third_party_invite", signed["token"]))
        out: list[str] = []
        for key in wanted:
            eid = self.state.get(key)
            if eid is not None and eid not in out:
                out.append(eid)
        return out

    def make_pdu(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        prev_events: Sequence[str] | None = None,
        auth_events: Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
        origin_server_ts: int | None = None,
    ) -> dict[str, Any]:
        """A signed PDU (not yet added to the builder's state)."""
        prevs = list(self.latest if prev_events is None else prev_events)
        auths = list(
            self.auth_event_ids_for(event_type, sender, state_key, content)
            if auth_events is None
            else auth_events
        )
        depth = max((self.events[p].depth for p in prevs if p in self.events), default=0) + 1
        pdu: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": dict(content),
            "origin_server_ts": next(self._ts) if origin_server_ts is None else origin_server_ts,
            "depth": depth,
            "prev_events": prevs,
            "auth_events": auths,
            "room_id": self.room_id,
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if self.rules.prev_auth_events_with_hashes:
            pdu["prev_events"] = [[p, {"sha256": "x"}] for p in prevs]
            pdu["auth_events"] = [[a, {"sha256": "x"}] for a in auths]
            server = sender.split(":", 1)[1]
            pdu["event_id"] = f"${next(self._counter)}x{self._number}:{server}"
        is_create = event_type == "m.room.create" and state_key == ""
        if is_create and self.rules.room_id_from_create_event:
            del pdu["room_id"]
        if extra:
            pdu.update(extra)
        server = sender.split(":", 1)[1]
        key_id, key = self.key_for(server)
        return sign_event(
            pdu, server_name=server, signing_key=key, key_id=key_id, room_version=self.version
        )

    def add(self, pdu: Mapping[str, Any], *, update_state: bool = True) -> Event:
        """Parse ``pdu`` and record it as the newest event (and state, for state events)."""
        event = parse_event(pdu, self.version)
        if event.type == "m.room.create" and self.rules.room_id_from_create_event:
            self.room_id = room_id_from_create_event_id(event.event_id)
        self.events[event.event_id] = event
        if update_state:
            if event.state_key is not None:
                self.state[(event.type, event.state_key)] = event.event_id
            self.latest = [event.event_id]
        return event

    def send(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        **kwargs: Any,
    ) -> Event:
        """Build, sign and add an event in one step."""
        return self.add(self.make_pdu(event_type, sender, content, state_key=state_key, **kwargs))

    # -- conveniences -------------------------------------------------------------------------
    def create_room(
        self,
        creator: str,
        *,
        join_rule: str = "public",
        power_levels: Mapping[str, Any] | None = None,
        extra_create_content: Mapping[str, Any] | None = None,
    ) -> list[Event]:
        """Create, creator join, power levels and join rules: a usable room."""
        create_content: dict[str, Any] = {"room_version": self.version}
        if self.rules.creator_in_content:
            create_content["creator"] = creator
        create_content.update(extra_create_content or {})
        out = [self.send("m.room.create", creator, create_content, state_key="")]
        out.append(self.join(creator))
        pl: dict[str, Any] = (
            dict(power_levels)
            if power_levels is not None
            else {
                "users": {} if self.rules.privileged_creators else {creator: 100},
                "users_default": 0,
                "events_default": 0,
                "state_default": 50,
                "ban": 50,
                "kick": 50,
                "redact": 50,
                "invite": 0,
                "events": {},
            }
        )
        out.append(self.send("m.room.power_levels", creator, pl, state_key=""))
        out.append(self.send("m.room.join_rules", creator, {"join_rule": join_rule}, state_key=""))
        return out

    def join(self, user: str, **content: Any) -> Event:
        return self.send("m.room.member", user, {"membership": "join", **content}, state_key=user)

    def member(self, sender: str, target: str, membership: str, **content: Any) -> Event:
        return self.send(
            "m.room.member", sender, {"membership": membership, **content}, state_key=target
        )

    def message(self, sender: str, body: str = "hello") -> Event:
        return self.send("m.room.message", sender, {"msgtype": "m.text", "body": body})

    def state_events(self) -> dict[StateKey, Event]:
        return {k: self.events[v] for k, v in self.state.items()}

    def pdus(self, events: Iterable[Event] | None = None) -> list[dict[str, Any]]:
        return [dict(e.pdu) for e in (self.events.values() if events is None else events)]
