"""Seeded mutations of valid PDUs, for fuzzing the input pipeline through the facade.

Each mutation takes a valid PDU of a room and returns one hostile input derived from it. Two
families:

* **Tampered** (not signed again): fields deleted or retyped, huge strings, deep nesting,
  unusual Unicode, numbers out of range, a wrong room ID, forged signatures, oversize events.
  A change to a signed field makes the signature fail; a change that redaction removes (most of
  ``content``, unknown top-level keys, ``unsigned``) leaves the event ID unchanged, so it is the
  same event as its source (the pipeline uses its redacted form or finds it stored already).
* **Re-signed** with the room's trusted key, so that they pass the signature check and reach
  the DAG and auth logic: unknown, duplicated and cyclic prev events, unknown and duplicated
  auth events, another room, a second create event. They are sent by a user who never joined
  (or cite prev events that cannot be had, federation being off), so no correct roomserver may
  accept them: the room's state must stay what the valid events alone make it.

Room IDs longer than the spec's 255 bytes are left out: that case is covered on its own.
"""

from __future__ import annotations

import copy
import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from roomserver.core.base64 import encode_base64
from roomserver.core.signatures import sign_event
from roomserver.testing.builder import RoomBuilder

MALLORY = "@mallory:example.org"

UNUSUAL_STRINGS = (
    "\u0000",
    "nul\u0000inside",
    "\ud800",  # a lone surrogate: not encodable as UTF-8
    "\udfff\ud800",
    "\u202eevil\u202c",  # right-to-left override
    "e\u0301\u0301\u0301\u0301",  # stacked combining marks
    "\ufeffbom",
    "\uffff\ufffe",  # noncharacters
    "\U0010ffff",
    "\U0001f600" * 50,
    "line\u2028sep\u2029",
    "tab\there\r\nnewline",
    "\x7f\x80\x9f",
    "💥" * 1000,
    "ǅǈǋ İı ß ﬀ",
)

OUT_OF_RANGE_NUMBERS: tuple[Any, ...] = (
    2**53,
    -(2**53) - 1,
    2**63,
    2**64 + 1,
    -(2**63) - 1,
    10**400,
    -1,
    1.5,
    1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    True,
)

WRONG_ROOM_IDS: tuple[Any, ...] = (
    "!other:example.org",
    "",
    "!",
    "!nocolon",
    "#alias:example.org",
    "!room:example.org\r\nNats-Msg-Id: injected",
    "!spa ce:example.org",
    "!ünïcødé:example.org",
    "!\ud800:example.org",
    "!a.b*c>d:example.org",
    "!" + "x" * 200 + ":example.org",
    42,
    None,
    ["!room:example.org"],
    {"room": "!room:example.org"},
)

#: Rooms re-signed events are moved to (a create event moved there makes a new room). One set
#: per room version: events of two versions for one unknown room are a known bug (see
#: tests/e2e/test_fuzz_findings.py).
OTHER_ROOMS = {
    version: (f"!elsewhere{version}:example.org", f"!nowhere{version}:example.org")
    for version in ("1", "10")
}

OTHER_TYPES: tuple[Any, ...] = (None, 0, -1, 1.5, True, "", "x", [], [1, "a"], {}, {"a": {}})


@dataclass(frozen=True, slots=True)
class Mutant:
    """One hostile input: which mutation made it, and the PDU (or non-object) to submit."""

    kind: str
    event: Any
    resigned: bool = False


def _string_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(value, str):
        out.append(path)
    elif isinstance(value, Mapping):
        for key in sorted(value):
            if key != "signatures":
                out += _string_paths(value[key], (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _string_paths(item, (*path, i))
    return out


def _set(pdu: Any, path: tuple[Any, ...], value: Any) -> None:
    target = pdu
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


def _nested(depth: int, rng: random.Random) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"n": value}
    return value


class Mutator:
    """Derives mutants from a room's valid PDUs (``rng`` makes it deterministic)."""

    def __init__(
        self, builder: RoomBuilder, rng: random.Random, *, exclude: frozenset[str] = frozenset()
    ) -> None:
        self.builder = builder
        self.exclude = exclude
        self.rng = rng
        self.tampered: dict[str, Callable[[dict[str, Any]], Any]] = {
            "delete_field": self.delete_field,
            "retype_field": self.retype_field,
            "retype_content": self.retype_content,
            "huge_string": self.huge_string,
            "deep_nesting": self.deep_nesting,
            "unusual_unicode": self.unusual_unicode,
            "number_out_of_range": self.number_out_of_range,
            "wrong_room_id": self.wrong_room_id,
            "forged_signature": self.forged_signature,
            "oversize_event": self.oversize_event,
            "junk_unsigned_and_extra_keys": self.junk_extra_keys,
            "not_an_object": self.not_an_object,
        }
        self.resigned: dict[str, Callable[[dict[str, Any]], Any]] = {
            "unknown_prev_events": self.unknown_prev_events,
            "duplicated_prev_events": self.duplicated_prev_events,
            "unknown_auth_events": self.unknown_auth_events,
            "duplicated_auth_events": self.duplicated_auth_events,
            "resigned_other_room": self.resigned_other_room,
            "second_create_event": self.second_create_event,
        }
        if self.builder.rules.prev_auth_events_with_hashes:  # event IDs chosen by the sender
            self.resigned["cyclic_prev_events"] = self.cyclic_prev_events
            self.resigned["cyclic_auth_events"] = self.cyclic_auth_events
        self._cycle_counter = 0
        #: IDs of the room's valid events submitted so far (the caller keeps it up to date).
        self.sent: list[str] = []
        #: The room's next valid event, not submitted yet: forged copies of it reach the
        #: signature check (a copy of a stored event is found stored first).
        self.upcoming: Mapping[str, Any] | None = None

    def mutate(self, source: Mapping[str, Any]) -> list[Mutant]:
        """One mutant of ``source`` (two for a cycle: both ends are submitted)."""
        names = [n for n in sorted(self.tampered) + sorted(self.resigned) if n not in self.exclude]
        name = self.rng.choice(names)
        pdu = copy.deepcopy(dict(source))
        if name in self.tampered:
            return [Mutant(name, self.tampered[name](pdu))]
        made = self.resigned[name](pdu)
        events = made if isinstance(made, list) else [made]
        return [Mutant(name, e, resigned=True) for e in events]

    # -- tampered ---------------------------------------------------------------------------
    def delete_field(self, pdu: dict[str, Any]) -> Any:
        choices = sorted(pdu)
        if isinstance(pdu.get("content"), dict) and pdu["content"]:
            choices += [("content", k) for k in sorted(pdu["content"])]
        victim = self.rng.choice(choices)
        if isinstance(victim, tuple):
            del pdu["content"][victim[1]]
        else:
            del pdu[victim]
        return pdu

    def retype_field(self, pdu: dict[str, Any]) -> Any:
        pdu[self.rng.choice(sorted(pdu))] = self.rng.choice(OTHER_TYPES)
        return pdu

    def retype_content(self, pdu: dict[str, Any]) -> Any:
        content = pdu.get("content")
        if not isinstance(content, dict) or not content:
            pdu["content"] = self.rng.choice(OTHER_TYPES)
            return pdu
        content[self.rng.choice(sorted(content))] = self.rng.choice(OTHER_TYPES)
        return pdu

    def huge_string(self, pdu: dict[str, Any]) -> Any:
        size = self.rng.choice((256, 1_000, 60_000, 70_000, 300_000))
        text = self.rng.choice(string.ascii_letters) * size
        paths = [p for p in _string_paths(pdu) if p != ("room_id",)]
        if self.rng.random() < 0.3 or not paths:
            pdu.setdefault("content", {})
            if isinstance(pdu["content"], dict):
                pdu["content"]["huge"] = text
                return pdu
        _set(pdu, self.rng.choice(paths), text)
        return pdu

    def deep_nesting(self, pdu: dict[str, Any]) -> Any:
        depth = self.rng.choice((10, 100, 200, 1_000, 5_000, 20_000))
        where = self.rng.choice(("content", "top", "unsigned", "prev_events"))
        value = _nested(depth, self.rng)
        if where == "content" and isinstance(pdu.get("content"), dict):
            pdu["content"]["deep"] = value
        elif where == "unsigned":
            pdu["unsigned"] = {"deep": value}
        elif where == "prev_events":
            pdu["prev_events"] = [value]
        else:
            pdu["deep"] = value
        return pdu

    def unusual_unicode(self, pdu: dict[str, Any]) -> Any:
        text = self.rng.choice(UNUSUAL_STRINGS)
        paths = [p for p in _string_paths(pdu) if p != ("room_id",)]
        if self.rng.random() < 0.2:  # as a key
            if isinstance(pdu.get("content"), dict):
                pdu["content"][text] = "value"
            return pdu
        path = self.rng.choice(paths)
        _set(pdu, path, text if self.rng.random() < 0.5 else f"{text}{_get(pdu, path)}")
        return pdu

    def number_out_of_range(self, pdu: dict[str, Any]) -> Any:
        number = self.rng.choice(OUT_OF_RANGE_NUMBERS)
        where = self.rng.choice(("depth", "origin_server_ts", "content"))
        if where == "content" and isinstance(pdu.get("content"), dict):
            pdu["content"][self.rng.choice(("n", "body", "membership"))] = number
        else:
            pdu[where if where != "content" else "depth"] = number
        return pdu

    def wrong_room_id(self, pdu: dict[str, Any]) -> Any:
        pdu["room_id"] = self.rng.choice(WRONG_ROOM_IDS)
        return pdu

    def forged_signature(self, pdu: dict[str, Any]) -> Any:
        if self.upcoming is not None and self.rng.random() < 0.7:
            pdu = copy.deepcopy(dict(self.upcoming))
        signatures = pdu.setdefault("signatures", {})
        server = self.rng.choice(sorted(signatures) or ["example.org"])
        variant = self.rng.randrange(7)
        key_id = self.builder.key_for(server)[0]
        if variant == 0:
            signatures[server] = {key_id: encode_base64(self.rng.randbytes(64))}
        elif variant == 1:
            signatures[server] = {key_id: "not base64 !!"}
        elif variant == 2:
            signatures[server] = {key_id: encode_base64(self.rng.randbytes(12))}
        elif variant == 3:
            signatures[server] = {}
        elif variant == 4:
            signatures[server] = {"ed25519:unknown": encode_base64(self.rng.randbytes(64))}
        elif variant == 5:
            del signatures[server]
        else:  # signed by the right server name with a key nobody trusts
            unsigned = {k: v for k, v in pdu.items() if k not in ("signatures", "hashes")}
            pdu = rogue_sign(unsigned, server, key_id, self.builder.version)
        return pdu

    def oversize_event(self, pdu: dict[str, Any]) -> Any:
        size = self.rng.choice((65_537, 70_000, 1_000_000, 2_500_000))
        if isinstance(pdu.get("content"), dict):
            pdu["content"]["pad"] = "p" * size
        else:
            pdu["pad"] = "p" * size
        return pdu

    def junk_extra_keys(self, pdu: dict[str, Any]) -> Any:
        pdu["unsigned"] = {"age": self.rng.choice(OUT_OF_RANGE_NUMBERS[:6]), "junk": "j" * 1000}
        pdu[self.rng.choice(("origin", "membership", "x_extra", "age_ts"))] = self.rng.choice(
            OTHER_TYPES
        )
        return pdu

    def not_an_object(self, pdu: dict[str, Any]) -> Any:
        return self.rng.choice(([pdu], "a string", 42, None, [], list(pdu.items())))

    # -- re-signed --------------------------------------------------------------------------
    def _resign(
        self, pdu: dict[str, Any], *, sender: str = MALLORY, keep_id: bool = False
    ) -> dict[str, Any]:
        """``pdu`` from ``sender``, signed with its server's trusted key. Where the sender
        chooses event IDs (versions 1-2) it gets a fresh one unless ``keep_id``."""
        pdu = {k: v for k, v in pdu.items() if k not in ("signatures", "hashes", "unsigned")}
        if pdu.get("type") == "m.room.create" and "second_create_event" in self.exclude:
            pdu["type"] = "m.room.topic"  # not a second create event while that bug stands
            pdu["content"] = {"topic": "re-signed"}
        if self.builder.rules.prev_auth_events_with_hashes and not keep_id:
            pdu["event_id"] = self._random_id()
        pdu["sender"] = sender  # a member event keeps its target: Mallory may not change it
        server = sender.split(":", 1)[1]
        key_id, key = self.builder.key_for(server)
        return sign_event(
            pdu,
            server_name=server,
            signing_key=key,
            key_id=key_id,
            room_version=self.builder.version,
        )

    def _ref(self, event_id: str) -> Any:
        if self.builder.rules.prev_auth_events_with_hashes:
            return [event_id, {"sha256": "x"}]
        return event_id

    def _random_id(self) -> str:
        """An event ID of the room version's format that no event has."""
        if self.builder.rules.prev_auth_events_with_hashes:
            return "$" + "".join(self.rng.choices(string.ascii_letters, k=20)) + ":example.org"
        return "$" + encode_base64(self.rng.randbytes(32), url_safe=True)

    def _known_ids(self) -> list[str]:
        """Events a re-signed mutant may cite: those submitted so far (``sent``), or every event
        of the room, future ones included, with ``cite_future_events``."""
        if "cite_future_events" in self.exclude or not self.sent:
            return list(self.sent) or list(self.builder.events)[:1]
        return list(self.builder.events)

    def unknown_prev_events(self, pdu: dict[str, Any]) -> Any:
        count = self.rng.randint(1, 25)
        prevs = [self._ref(self._random_id()) for _ in range(count)]
        if self.rng.random() < 0.5:
            prevs.append(self._ref(self.rng.choice(self._known_ids())))
        pdu["prev_events"] = prevs
        pdu["content"] = {"msgtype": "m.text", "body": "unknown prevs"}
        pdu["type"] = "m.room.message"
        pdu.pop("state_key", None)
        # A joined user citing prev events that cannot be had (federation is off), or Mallory.
        sender = self.rng.choice(("@alice:example.org", MALLORY))
        return self._resign(pdu, sender=sender)

    def duplicated_prev_events(self, pdu: dict[str, Any]) -> Any:
        known = self.rng.choice(self._known_ids())
        pdu["prev_events"] = [self._ref(known)] * self.rng.randint(2, 20)
        return self._resign(pdu)

    def unknown_auth_events(self, pdu: dict[str, Any]) -> Any:
        auths = list(pdu.get("auth_events") or [])
        auths += [self._ref(self._random_id()) for _ in range(self.rng.randint(1, 10))]
        pdu["auth_events"] = auths
        sender = self.rng.choice(("@alice:example.org", MALLORY))
        if sender != MALLORY:  # a known sender's auth events, plus ones nobody can find
            pdu["prev_events"] = [self._ref(self._random_id())]
        return self._resign(pdu, sender=sender)

    def duplicated_auth_events(self, pdu: dict[str, Any]) -> Any:
        auths = list(pdu.get("auth_events") or [self._ref(self._known_ids()[0])])
        pdu["auth_events"] = auths + auths
        return self._resign(pdu)

    def resigned_other_room(self, pdu: dict[str, Any]) -> Any:
        room = self.rng.choice(OTHER_ROOMS[self.builder.version])
        pdu["room_id"] = room
        return self._resign(pdu, sender=self.rng.choice(("@alice:example.org", MALLORY)))

    def second_create_event(self, pdu: dict[str, Any]) -> Any:
        create = {
            "type": "m.room.create",
            "state_key": "",
            "content": {"room_version": self.builder.version, "creator": MALLORY},
            "prev_events": self.rng.choice(([], [self._ref(self._known_ids()[-1])])),
            "auth_events": [],
            "depth": self.rng.choice((1, 2, 100)),
            "origin_server_ts": pdu.get("origin_server_ts", 0),
            "room_id": self.builder.room_id,
        }
        return self._resign(create)

    def _cycle_ids(self) -> tuple[str, str]:
        self._cycle_counter += 1
        return (
            f"$cycleA{self._cycle_counter}:example.org",
            f"$cycleB{self._cycle_counter}:example.org",
        )

    def cyclic_prev_events(self, pdu: dict[str, Any]) -> Any:
        a, b = self._cycle_ids()
        latest = self._ref(self._known_ids()[-1])
        first = dict(pdu, event_id=a, prev_events=[self._ref(b), latest], type="m.room.message")
        second = dict(pdu, event_id=b, prev_events=[self._ref(a)], type="m.room.message")
        if self.rng.random() < 0.3:  # an event citing itself
            return self._resign(dict(first, prev_events=[self._ref(a), latest]), keep_id=True)
        for event in (first, second):
            event.pop("state_key", None)
            event["content"] = {"msgtype": "m.text", "body": "cycle"}
        return [self._resign(first, keep_id=True), self._resign(second, keep_id=True)]

    def cyclic_auth_events(self, pdu: dict[str, Any]) -> Any:
        a, b = self._cycle_ids()
        auths = list(pdu.get("auth_events") or [])
        first = dict(pdu, event_id=a, auth_events=[*auths, self._ref(b)])
        second = dict(pdu, event_id=b, auth_events=[*auths, self._ref(a)])
        return [self._resign(first, keep_id=True), self._resign(second, keep_id=True)]


def _get(pdu: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        pdu = pdu[step]
    return pdu


def _rogue_key() -> Any:
    from nacl.signing import SigningKey

    return SigningKey(b"\x66" * 32)


def rogue_sign(pdu: dict[str, Any], server: str, key_id: str, version: str) -> dict[str, Any]:
    return sign_event(
        pdu, server_name=server, signing_key=_rogue_key(), key_id=key_id, room_version=version
    )
