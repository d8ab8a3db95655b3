"""A room to join: its state and auth chain as a ``send_join`` response gives them (outliers,
oldest first), and the joining event with the state before it. For tests and
``bench/bench_join.py``.

``odd=True`` mixes in what a real response may hold besides plain joins: members who left, a
ban and the banned user's rejected join, a rejected topic change, an event whose signature is
broken (invalid), one whose content does not match its hash (stored redacted), and one citing
an auth event nobody has (rejected for missing auth events).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from roomserver.core.ids import EventId
from roomserver.core.signatures import sign_event
from roomserver.testing.builder import RoomBuilder

ADMIN = "@admin:origin.test"
JOINER = "@joiner:join.test"


@dataclass(frozen=True, slots=True)
class JoinRoom:
    room_id: str
    room_version: str
    outliers: list[dict[str, Any]]
    join: dict[str, Any]
    state_event_ids: list[EventId]
    #: server -> (key ID, base64 of the 32-byte seed), to trust the signers.
    keys: dict[str, tuple[str, bytes]]


def build_join_room(
    members: int, *, version: str = "10", seed: int = 0, odd: bool = False, servers: int = 5
) -> JoinRoom:
    """A room of ``members`` joined users (plus its admin), ready to be joined by ``JOINER``."""
    rng = random.Random(seed)
    b = RoomBuilder(version, server_name="origin.test")
    outliers: list[dict[str, Any]] = [dict(e.pdu) for e in b.create_room(ADMIN)]
    for i in range(members):
        user = f"@u{i}:s{i % servers}.test"
        outliers.append(dict(b.join(user).pdu))
        if odd and rng.random() < 0.05:
            outliers.append(dict(b.member(user, user, "leave").pdu))
    if odd:
        outliers += _odd_events(b, rng)
    join_pdu = b.make_pdu("m.room.member", JOINER, {"membership": "join"}, state_key=JOINER)
    state_event_ids = sorted(b.state.values())
    keys = {server: (kid, bytes(key)) for server, (kid, key) in b.keys.items()}
    return JoinRoom(b.room_id, version, outliers, join_pdu, state_event_ids, keys)


def _odd_events(b: RoomBuilder, rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    victim = f"@banned{rng.randrange(1000)}:bad.test"
    out.append(dict(b.join(victim).pdu))
    out.append(dict(b.member(ADMIN, victim, "ban").pdu))
    # The banned user tries again: rejected by its own auth events (the ban).
    out.append(dict(b.add(b.make_pdu(
        "m.room.member", victim, {"membership": "join"}, state_key=victim
    ), update_state=False).pdu))  # fmt: skip
    # A member without power sets the topic: rejected (state_default 50).
    member = "@plain:s3.test"
    out.append(dict(b.join(member).pdu))
    out.append(dict(b.add(b.make_pdu(
        "m.room.topic", member, {"topic": "mine"}, state_key=""
    ), update_state=False).pdu))  # fmt: skip
    # A broken signature: invalid, never stored.
    broken = b.make_pdu("m.room.member", "@forger:s0.test", {"membership": "join"},
                        state_key="@forger:s0.test")  # fmt: skip
    sig = broken["signatures"]["s0.test"]
    key_id = next(iter(sig))
    sig[key_id] = ("A" if sig[key_id][0] != "A" else "B") + sig[key_id][1:]
    out.append(broken)
    # Content changed after signing: the hash does not match, the redacted form is used.
    changed = b.make_pdu("m.room.member", "@changed:s1.test",
                         {"membership": "join", "displayname": "before"},
                         state_key="@changed:s1.test")  # fmt: skip
    b.add(dict(changed))
    changed = dict(changed, content={"membership": "join", "displayname": "after"})
    out.append(changed)
    # An auth event nobody has: rejected for missing auth events (no federation here).
    orphan = b.make_pdu("m.room.member", "@orphan:s2.test", {"membership": "join"},
                        state_key="@orphan:s2.test")  # fmt: skip
    missing = f"${'A' * 43}" if isinstance(orphan["auth_events"][0], str) else None
    orphan["auth_events"] = [
        *orphan["auth_events"],
        missing if missing is not None else ["$nobody0:nowhere.test", {"sha256": "x"}],
    ]
    out.append(_resign(b, orphan))
    return out


def _resign(b: RoomBuilder, pdu: dict[str, Any]) -> dict[str, Any]:
    unsigned = {k: v for k, v in pdu.items() if k not in ("signatures", "hashes")}
    server = pdu["sender"].split(":", 1)[1]
    key_id, key = b.key_for(server)
    return sign_event(
        unsigned, server_name=server, signing_key=key, key_id=key_id, room_version=b.version
    )
