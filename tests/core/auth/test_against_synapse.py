"""Differential check of the authorization rules against Synapse's ``event_auth``
(``matrix-synapse`` in .synapse-venv, run by ``bench/synapse_auth.py``).

Random rooms in every room version: memberships of every kind between users of three servers
(restricted joins with and without the authorising server's signature), power level edits
(string, float and unreadable values where the version has them), join rules, topics and other
state (state keys that are user IDs), messages, redactions, aliases, third-party invites (good
and bad signatures), second create events, and auth event lists with an entry dropped,
duplicated or added. Every event is checked twice by both implementations:

* against its own auth events (ours: ``check_auth_events``; Synapse:
  ``check_state_independent_auth_rules`` then ``check_state_dependent_auth_rules``);
* against the state before it (ours: ``check_auth_rules`` over ``select_auth_events``;
  Synapse: ``check_state_dependent_auth_rules``).

Allowed events join the room's state, so later events meet the room their predecessors made.
The verdicts (allowed or not) must agree, except for the known differences in docs/auth.md,
which are recognised precisely (``_known_difference``) and counted. Slow. Without .synapse-venv
it is skipped, or fails when ``ROOMSERVER_REQUIRE_SYNAPSE=1`` (CI).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from nacl.signing import SigningKey

from roomserver.core.auth import check_auth_events, check_auth_rules, select_auth_events
from roomserver.core.base64 import encode_base64
from roomserver.core.errors import Rejected
from roomserver.core.identifiers import server_name_of
from roomserver.core.pdu import Event, parse_event
from roomserver.core.room_versions import KNOWN_ROOM_VERSIONS
from roomserver.core.signatures import sign_event, sign_json
from roomserver.testing.builder import RoomBuilder
from tests.synapse_venv import run_in_synapse

pytestmark = pytest.mark.slow

VERSIONS = tuple(KNOWN_ROOM_VERSIONS)
ROOMS_PER_VERSION = 12
EVENTS_PER_ROOM = 60
USERS = [
    "@u0:example.org",  # creates every room
    "@u1:example.org",
    "@u2:other.org",
    "@u3:other.org",
    "@u4:third.org",
]
IDENTITY_KEY = SigningKey(b"\x42" * 32)
CREATE_KEY = ("m.room.create", "")
PL_KEY = ("m.room.power_levels", "")


def _verdict(check: Callable[[], None]) -> str | None:
    try:
        check()
    except Rejected as exc:
        return exc.reason
    return None


@dataclass
class Check:
    event: Event
    state: list[str]  # the state before the event (event IDs)
    ours_auth_events: str | None
    ours_state: str | None


@dataclass
class RandomRoom:
    """A room grown one random event at a time; each candidate is checked by our rules."""

    version: str
    seed: int
    b: RoomBuilder = field(init=False)
    rng: random.Random = field(init=False)
    checks: list[Check] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.version}/{self.seed}")
        self.b = RoomBuilder(self.version, room_id=f"!auth{self.seed}:example.org")
        b, creator = self.b, USERS[0]
        create: dict[str, Any] = {"room_version": self.version}
        if b.rules.creator_in_content:
            create["creator"] = creator
        if self.rng.random() < 0.25:
            create["m.federate"] = False
        if b.rules.privileged_creators and self.rng.random() < 0.3:
            create["additional_creators"] = [USERS[2]]
        users: dict[str, Any] = {} if b.rules.privileged_creators else {creator: 100}
        users[USERS[1]] = 50
        power_levels = {
            "users": users,
            "users_default": 0,
            "events_default": 0,
            "state_default": 50,
            "ban": self.rng.choice([50, 75]),  # 75: moderators may kick but not unban
            "kick": 50,
            "redact": 50,
            "invite": 0,
            "events": {},
        }
        join_rule = self.rng.choice(["public", "public", "invite", "knock"])
        self.submit(b.make_pdu("m.room.create", creator, create, state_key=""))
        self.submit(b.make_pdu("m.room.member", creator, {"membership": "join"}, state_key=creator))
        self.submit(b.make_pdu("m.room.power_levels", creator, power_levels, state_key=""))
        join_rules = {"join_rule": join_rule}
        self.submit(b.make_pdu("m.room.join_rules", creator, join_rules, state_key=""))
        for user in USERS[1:4]:  # joins (allowed in a public room): a room with members
            self.submit(b.make_pdu("m.room.member", user, {"membership": "join"}, state_key=user))

    def grow(self) -> None:
        for _ in range(EVENTS_PER_ROOM):
            pdu = self._candidate()
            if self.rng.random() < 0.08 and pdu["type"] != "m.room.create":
                pdu = self._tamper_auth_events(pdu)
            self.submit(pdu)

    def submit(self, pdu: dict[str, Any]) -> None:
        """Check the event both ways; an event both allow joins the room's state and DAG, any
        other is kept (for Synapse to see) outside them."""
        event = parse_event(pdu, self.version)
        state = self.b.state_events()
        ours_auth = _verdict(lambda: check_auth_events(event, self._cited(event)))
        ours_state = _verdict(lambda: check_auth_rules(event, select_auth_events(event, state)))
        state_ids = [e.event_id for e in state.values()]
        self.checks.append(Check(event, state_ids, ours_auth, ours_state))
        if ours_auth is None and ours_state is None:
            self.b.add(pdu)
        else:
            self.b.events[event.event_id] = event

    def _cited(self, event: Event) -> list[Event]:
        cited = [self.b.events[e] for e in event.auth_event_ids if e in self.b.events]
        if event.rules.room_id_from_create_event and event.type != "m.room.create":
            cited.append(self.b.events[self.b.state[CREATE_KEY]])
        return cited

    # -- random events ------------------------------------------------------------------------
    def _user(self) -> str:
        return self.rng.choice(USERS)

    def _membership_of(self, user: str) -> str | None:
        event_id = self.b.state.get(("m.room.member", user))
        return None if event_id is None else self.b.events[event_id].content.get("membership")

    def _sender(self) -> str:
        """Mostly a joined member (so that events get past the membership rules), else anyone."""
        joined = [user for user in USERS if self._membership_of(user) == "join"]
        return self.rng.choice(joined) if joined and self.rng.random() < 0.75 else self._user()

    def _candidate(self) -> dict[str, Any]:
        rng, b = self.rng, self.b
        kind = rng.random()
        if kind < 0.35:
            return self._membership(self._user())
        sender = self._sender()
        if kind < 0.5:
            return self._power_levels(sender)
        if kind < 0.56:
            rule = rng.choice(["public", "invite", "knock", "restricted", "knock_restricted"])
            content: dict[str, Any] = {"join_rule": rule}
            if "restricted" in rule:
                content["allow"] = [{"type": "m.room_membership", "room_id": "!other:example.org"}]
            return b.make_pdu("m.room.join_rules", sender, content, state_key="")
        if kind < 0.64:
            event_type = rng.choice(["m.room.topic", "m.room.name", "org.example.custom"])
            state_key = rng.choice(["", "", sender, self._user(), "@x:example.org", "x"])
            if event_type != "org.example.custom":
                state_key = ""
            return b.make_pdu(event_type, sender, {"topic": "t"}, state_key=state_key)
        if kind < 0.72:
            return b.make_pdu("m.room.message", sender, {"msgtype": "m.text", "body": "hi"})
        if kind < 0.8:
            return self._redaction(sender)
        if kind < 0.84:
            server = rng.choice([server_name_of(sender), "example.org", "other.org"])
            return b.make_pdu("m.room.aliases", sender, {"aliases": []}, state_key=server)
        if kind < 0.95:
            return self._third_party(sender)
        content = {"room_version": self.version, "creator": sender}
        return b.make_pdu("m.room.create", sender, content, state_key="")

    def _membership(self, sender: str) -> dict[str, Any]:
        rng, b = self.rng, self.b
        target = sender if rng.random() < 0.5 else self._user()
        membership = rng.choice(["join", "join", "invite", "leave", "ban", "knock"])
        banned = [u for u in USERS if self._membership_of(u) == "ban"]
        if membership == "leave" and banned and rng.random() < 0.5:  # unbans
            target, sender = rng.choice(banned), self._sender()
        content: dict[str, Any] = {"membership": membership}
        authoriser = None
        if membership == "join" and b.rules.restricted_joins and rng.random() < 0.4:
            authoriser = self._user()
            content["join_authorised_via_users_server"] = authoriser
        pdu = b.make_pdu("m.room.member", sender, content, state_key=target)
        if authoriser is not None and rng.random() < 0.7:
            pdu = self._cosign(pdu, server_name_of(authoriser))
        return pdu

    def _cosign(self, pdu: dict[str, Any], server: str) -> dict[str, Any]:
        key_id, key = self.b.key_for(server)
        signed = sign_event(
            pdu, server_name=server, signing_key=key, key_id=key_id, room_version=self.version
        )
        return {**pdu, "signatures": {**pdu["signatures"], server: signed["signatures"][server]}}

    def _power_levels(self, sender: str) -> dict[str, Any]:
        rng, b = self.rng, self.b
        current = b.events[b.state[PL_KEY]].content if PL_KEY in b.state else {}
        content = {k: (dict(v) if isinstance(v, dict) else v) for k, v in current.items()}
        values: list[Any] = [0, 10, 25, 50, 75, 100, 101, -5]
        if b.rules.string_power_levels:
            values += ["50", " 7 ", "abc"]
        if b.rules.float_power_levels:
            values += [50.0, 75.5]
        for _ in range(rng.randint(1, 2)):
            where = rng.random()
            if where < 0.5:
                content.setdefault("users", {})[self._user()] = rng.choice(values)
            elif where < 0.8:
                name = rng.choice(["ban", "kick", "invite", "redact", "state_default",
                                   "events_default", "users_default"])  # fmt: skip
                content[name] = rng.choice(values)
            else:
                events = content.setdefault("events", {})
                events[rng.choice(["m.room.topic", "m.room.power_levels"])] = rng.choice(values)
        return b.make_pdu("m.room.power_levels", sender, content, state_key="")

    def _redaction(self, sender: str) -> dict[str, Any]:
        target = self.rng.choice(list(self.b.events))
        if self.b.rules.redacts_in_content:
            return self.b.make_pdu("m.room.redaction", sender, {"redacts": target})
        return self.b.make_pdu("m.room.redaction", sender, {}, extra={"redacts": target})

    def _third_party(self, sender: str) -> dict[str, Any]:
        rng, b = self.rng, self.b
        if not self.tokens or rng.random() < 0.3:
            token = f"tok{len(self.tokens)}"
            self.tokens.append(token)
            content = {
                "display_name": "d",
                "key_validity_url": "https://id.example/isvalid",
                "public_key": encode_base64(bytes(IDENTITY_KEY.verify_key)),
            }
            return b.make_pdu("m.room.third_party_invite", sender, content, state_key=token)
        token = rng.choice(self.tokens)
        target = self._user()
        body = {"mxid": target, "token": token, "sender": sender}
        if rng.random() < 0.2:
            body["mxid"] = self._user()  # may name someone else
        key = IDENTITY_KEY if rng.random() < 0.8 else SigningKey(b"\x43" * 32)
        signed = sign_json(body, server_name="id.example", signing_key=key, key_id="ed25519:0")
        content = {"membership": "invite", "third_party_invite": {"display_name": "d",
                                                                  "signed": signed}}  # fmt: skip
        return b.make_pdu("m.room.member", sender, content, state_key=target)

    def _tamper_auth_events(self, pdu: dict[str, Any]) -> dict[str, Any]:
        """Drop, duplicate or add an auth event (to exercise the auth event list checks)."""
        rng, b = self.rng, self.b
        auth = list(b.auth_event_ids_for(pdu["type"], pdu["sender"], pdu.get("state_key"),
                                         pdu["content"]))  # fmt: skip
        how = rng.choice(["drop", "duplicate", "add"])
        if how == "drop" and auth:
            auth.pop(rng.randrange(len(auth)))
        elif how == "duplicate" and auth:
            auth.append(rng.choice(auth))
        else:
            auth.append(rng.choice(list(b.state.values())))
        return b.make_pdu(
            pdu["type"],
            pdu["sender"],
            pdu["content"],
            state_key=pdu.get("state_key"),
            auth_events=auth,
            extra={"redacts": pdu["redacts"]} if "redacts" in pdu else None,
        )


def _known_difference(room: RandomRoom, check: Check, ours: str | None, theirs: str | None) -> str:
    """The documented difference (docs/auth.md, "Cross-check") that explains a disagreement,
    or "" when none does."""
    event = check.event
    create = room.b.events[room.b.state[CREATE_KEY]]
    if (
        ours is None
        and theirs == "This room has been marked as unfederatable."
        and event.type == "m.room.member"
        and create.content.get("m.federate", True) is not True
        and server_name_of(create.sender) == server_name_of(event.sender)
        and server_name_of(create.sender) != server_name_of(event.state_key or "")
    ):
        return "m.federate: Synapse also compares the target's server"
    authoriser = event.content.get("join_authorised_via_users_server")
    if (
        theirs is None
        and ours is not None
        and "not signed by the server of join_authorised_via_users_server" in ours
        and isinstance(authoriser, str)
        and server_name_of(authoriser) not in event.pdu.get("signatures", {})
    ):
        return "authorising server's signature: Synapse checks it outside event_auth"
    return ""


@pytest.fixture(scope="module")
def compared() -> dict[str, Any]:
    """Every room of every version, checked by both, in one Synapse run."""
    rooms: list[RandomRoom] = []
    for version in VERSIONS:
        for seed in range(ROOMS_PER_VERSION):
            room = RandomRoom(version, seed)
            room.grow()
            rooms.append(room)
    request = {
        "rooms": [
            {
                "room_version": room.version,
                "pdus": [dict(e.pdu) for e in room.b.events.values()],
                "event_ids": list(room.b.events),
                "checks": [{"event_id": c.event.event_id, "state": c.state} for c in room.checks],
            }
            for room in rooms
        ]
    }
    answers = run_in_synapse("synapse_auth.py", request)["rooms"]
    return {"rooms": rooms, "answers": answers}


@pytest.mark.parametrize("version", VERSIONS)
def test_random_events_authorised_like_synapse(compared: dict[str, Any], version: str) -> None:
    verdicts: Counter[str] = Counter()
    known: Counter[str] = Counter()
    disagreements: list[str] = []
    for room, answer in zip(compared["rooms"], compared["answers"], strict=True):
        if room.version != version:
            continue
        for check, theirs in zip(room.checks, answer["checks"], strict=True):
            pairs = [
                ("auth events", check.ours_auth_events, theirs["auth_events"]),
                ("state before", check.ours_state, theirs["state"]),
            ]
            for against, ours, synapse in pairs:
                verdicts["allowed" if ours is None else "rejected"] += 1
                if (ours is None) == (synapse is None):
                    continue
                reason = _known_difference(room, check, ours, synapse)
                if reason:
                    known[reason] += 1
                    continue
                disagreements.append(
                    f"{check.event.event_id} ({check.event.type} {check.event.state_key!r} "
                    f"by {check.event.sender}, {against}): ours {ours!r}, Synapse {synapse!r}"
                )
    print(f"v{version}: {dict(verdicts)}, known differences {dict(known)}")
    assert not disagreements, "\n".join(disagreements[:20])
    # The rooms exercise both outcomes, or the comparison would prove little.
    assert verdicts["allowed"] > 100 and verdicts["rejected"] > 100, verdicts
