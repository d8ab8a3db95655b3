"""Authorization rule throughput on a generated room.

Run: ``.venv/bin/python bench/bench_auth.py [--version 10] [--members 1000] [--events 5000]``

Builds (signed, with ``RoomBuilder``) a room of ``--members`` joined users and ``--events``
events in all: joins, messages, topic and power level changes, invites, kicks and bans. Then
times ``check_auth_rules`` for every event against its own auth events (the mapping built
beforehand, as the input pipeline does), several rounds, and prints the median rate. The rates
of ``check_auth_events`` (list checks included) and of ``check_auth_rules`` against the full
final state (the soft-fail check, messages only) are printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time
from collections.abc import Callable

from roomserver.core.auth import (
    CREATE_KEY,
    check_auth_events,
    check_auth_rules,
    select_auth_events,
)
from roomserver.core.errors import Rejected
from roomserver.core.pdu import Event
from roomserver.testing.builder import RoomBuilder

ADMIN = "@admin:example.org"


def build_room(version: str, members: int, total: int, seed: int = 7) -> RoomBuilder:
    rnd = random.Random(seed)
    b = RoomBuilder(version)
    users = [f"@user{i}:server{i % 17}.example" for i in range(members)]
    admins = {ADMIN: 100} if not b.rules.privileged_creators else {}
    admins.update({u: 50 for u in users[:20]})
    b.create_room(
        ADMIN,
        power_levels={
            "users": admins,
            "users_default": 0,
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 0,
            "events": {"m.room.name": 50, "m.room.power_levels": 100},
        },
    )
    for user in users[: members - 1]:
        b.join(user)
    joined = list(users[: members - 1])
    outsider = users[members - 1]
    moderators = users[:20]
    while len(b.events) < total:
        roll = rnd.random()
        if roll < 0.8:
            b.message(rnd.choice(joined), "hello")
        elif roll < 0.88:
            b.send("m.room.topic", rnd.choice(moderators), {"topic": "t"}, state_key="")
        elif roll < 0.9:
            pl = dict(b.events[b.state[("m.room.power_levels", "")]].content)
            pl["users"] = {**pl["users"], rnd.choice(joined[20:]): rnd.randint(0, 40)}
            b.send("m.room.power_levels", ADMIN, pl, state_key="")
        elif roll < 0.94:
            b.member(rnd.choice(moderators), outsider, "invite")
            b.member(outsider, outsider, "leave")
        elif roll < 0.97:
            victim = rnd.choice(joined[20:])
            b.member(rnd.choice(moderators), victim, "leave")
            b.join(victim)
        else:
            victim = rnd.choice(joined[20:])
            b.member(rnd.choice(moderators), victim, "ban")
            b.member(rnd.choice(moderators), victim, "leave")
            b.join(victim)
    return b


def median_rate(fn: Callable[[], int], rounds: int) -> float:
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        count = fn()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="10")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()

    t0 = time.perf_counter()
    b = build_room(args.version, args.members, args.events)
    events = list(b.events.values())
    create = events[0]
    build_s = time.perf_counter() - t0
    cited: list[tuple[Event, list[Event]]] = []
    mappings: list[tuple[Event, dict[tuple[str, str], Event]]] = []
    for event in events:
        auth = [b.events[i] for i in event.auth_event_ids]
        mapping = {e.state_tuple: e for e in auth}
        if event is not create:
            mapping.setdefault(CREATE_KEY, create)
        cited.append((event, auth if event is create else [*auth, create]))
        mappings.append((event, mapping))
    final_state = b.state_events()
    messages = [
        (e, select_auth_events(e, final_state))
        for e in events
        if e.type == "m.room.message" and ("m.room.member", e.sender) in final_state
    ]
    # Every generated event is allowed; fail loudly if the rules disagree.
    for event, mapping in mappings:
        check_auth_rules(event, mapping)

    def run_rules() -> int:
        for event, mapping in mappings:
            check_auth_rules(event, mapping)
        return len(mappings)

    def run_auth_events() -> int:
        for event, auth in cited:
            check_auth_events(event, auth)
        return len(cited)

    def run_current_state() -> int:
        n = 0
        for event, state in messages:
            with contextlib.suppress(Rejected):
                check_auth_rules(event, state)
            n += 1
        return n

    rules_rate = median_rate(run_rules, args.rounds)
    list_rate = median_rate(run_auth_events, args.rounds)
    state_rate = median_rate(run_current_state, args.rounds)
    print(
        f"room version {args.version}: {len(events)} events, {len(b.state)} state entries,"
        f" built in {build_s:.1f}s"
    )
    print(f"check_auth_events (list checks + rules): {list_rate:,.0f} checks/s (median)")
    print(f"check_auth_rules vs current state (messages): {state_rate:,.0f} checks/s (median)")
    print(f"check_auth_rules vs auth events: {rules_rate:,.0f} checks/s (median)")


if __name__ == "__main__":
    main()
