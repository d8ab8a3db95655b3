"""``roomserver demo``: a sample room, ingested and explained.

The room (room version 11) is built by three servers, ``north.example``, ``south.example`` and
``east.example``, each signing its users' events. It has a fork of concurrent messages, a fork
of concurrent topic changes that state resolution settles, one event rejected by the
authorization rules and one soft-failed event (allowed by the state before it, refused by the
room's current state). Every outcome is known in advance, so the command doubles as a smoke
test: it exits 1 when any outcome differs from the expected one.

Keys: the three servers sign with fixed keys (``ed25519:demo``, seeds derived from the server
name: public, so never trust them for anything else; the ``.example`` names are reserved and
never belong to a real server). The demo trusts them as given, in two ways: out of band in its
own key ring, and in the key store of the database (``server_keys``, valid forever), which every
roomserver on that database consults before fetching keys. That is how a ``roomserver serve``
already running on the same data directory learns them without a restart.

Ingestion goes through that running ``serve`` when there is one (found through
``<data_dir>/nats.url``, as ``roomserver input`` does), otherwise through a roomserver run for
the duration of the command. Either way the events travel through the input stream to the
room's worker, one synchronous request per event, in the order of the story.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nacl.signing import SigningKey, VerifyKey

from roomserver.api import InputRoomEvent, InputRoomEventsRequest, Kind, Outcome, StoredEvent
from roomserver.config import Config
from roomserver.core.ids import EventId, RoomId
from roomserver.core.pdu import Event
from roomserver.core.state_keys import StateKey
from roomserver.service.dag_svg import render_dag_svg
from roomserver.testing.builder import RoomBuilder

if TYPE_CHECKING:
    from roomserver.app import Roomserver

DEMO_ROOM_VERSION = "11"
DEMO_ROOM_ID = "!demo:north.example"
DEMO_KEY_ID = "ed25519:demo"
DEMO_SERVERS = ("north.example", "south.example", "east.example")

ALICE = "@alice:north.example"
BOB = "@bob:south.example"
CAROL = "@carol:east.example"
DAVE = "@dave:south.example"


def demo_signing_key(server_name: str) -> SigningKey:
    """The demo key of ``server_name``: deterministic, so every run builds the same room and a
    running ``serve`` can be given the keys in advance. Its seed is public: demo use only."""
    return SigningKey(hashlib.sha256(b"roomserver demo key " + server_name.encode()).digest())


def demo_verify_keys() -> dict[str, dict[str, VerifyKey]]:
    """server name -> {key ID: verify key} of the demo's three servers."""
    return {s: {DEMO_KEY_ID: demo_signing_key(s).verify_key} for s in DEMO_SERVERS}


@dataclass(frozen=True, slots=True)
class DemoEvent:
    """One event of the story: its PDU, what it shows, and the outcome it must get."""

    event: Event
    summary: str
    expected: Outcome


@dataclass(frozen=True, slots=True)
class DemoRoom:
    room_id: RoomId
    room_version: str
    events: tuple[DemoEvent, ...]


class _Story:
    """Collects the demo's events in submission order."""

    def __init__(self, builder: RoomBuilder) -> None:
        self.b = builder
        self.events: list[DemoEvent] = []

    def told(self, event: Event, summary: str, expected: Outcome = Outcome.ACCEPTED) -> Event:
        self.events.append(DemoEvent(event, summary, expected))
        return event

    def send(
        self, event_type: str, sender: str, content: Mapping[str, Any], summary: str, **kw: Any
    ) -> Event:
        return self.told(self.b.send(event_type, sender, content, **kw), summary)


def build_demo_room() -> DemoRoom:
    """The demo room, the same on every call (pure: no I/O, no clock)."""
    b = RoomBuilder(
        DEMO_ROOM_VERSION,
        server_name="north.example",
        keys={s: (DEMO_KEY_ID, demo_signing_key(s)) for s in DEMO_SERVERS},
        start_ts=1_767_225_600_000,  # 2026-01-01T00:00:00Z
        room_id=DEMO_ROOM_ID,
    )
    story = _Story(b)
    _setup(story)
    _forks(story)
    _rejected_and_soft_failed(story)
    return DemoRoom(b.room_id, DEMO_ROOM_VERSION, tuple(story.events))


def _setup(story: _Story) -> None:
    b = story.b
    story.send(
        "m.room.create",
        ALICE,
        {"room_version": DEMO_ROOM_VERSION},
        "north creates the room",
        state_key="",
    )
    story.told(b.join(ALICE), "alice joins (the creator)")
    power = {"users": {ALICE: 100, CAROL: 50}, "users_default": 0, "events_default": 0,
             "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0}  # fmt: skip
    story.send("m.room.power_levels", ALICE, power, "power: alice 100, carol 50", state_key="")
    story.send(
        "m.room.join_rules", ALICE, {"join_rule": "public"}, "the room is public", state_key=""
    )
    story.told(b.join(BOB), "bob joins from south.example")
    story.told(b.join(CAROL), "carol joins from east.example")
    story.told(b.join(DAVE), "dave joins from south.example")
    story.send(
        "m.room.topic", ALICE, {"topic": "Welcome to the demo"}, "alice sets a topic", state_key=""
    )
    story.told(b.message(ALICE, "Hello from north!"), "alice says hello")


def _forks(story: _Story) -> None:
    b = story.b
    fork = list(b.latest)
    south = story.told(b.message(BOB, "Hi from south!"), "bob answers (fork: same prev as carol's)")
    b.latest = list(fork)
    east = story.told(
        b.message(CAROL, "Hi from east!"), "carol answers at the same time (two extremities)"
    )
    b.latest = [south.event_id, east.event_id]
    story.told(b.message(ALICE, "Both of you, welcome."), "alice merges the fork")
    fork = list(b.latest)
    north_topic = story.send(
        "m.room.topic", ALICE, {"topic": "North's topic"}, "alice changes the topic", state_key=""
    )
    b.latest = list(fork)
    east_topic = story.send(
        "m.room.topic", CAROL, {"topic": "East's topic"},
        "carol changes it concurrently (a state fork)", state_key="",
    )  # fmt: skip
    b.latest = [north_topic.event_id, east_topic.event_id]
    # State resolution v2 orders conflicted non-power events by their place on the power levels
    # mainline (the same here), then by origin_server_ts: carol's later topic is applied last.
    b.state[("m.room.topic", "")] = east_topic.event_id
    story.told(b.message(BOB, "Which topic won?"), "bob merges: the later topic (carol's) wins")


def _rejected_and_soft_failed(story: _Story) -> None:
    b = story.b
    rename = b.make_pdu("m.room.name", BOB, {"name": "Bob's room"}, state_key="")
    story.told(
        b.add(rename, update_state=False),
        "bob renames the room without the power to (state_default 50)",
        Outcome.REJECTED,
    )
    before_ban = list(b.latest)
    dave_auth = b.auth_event_ids_for("m.room.message", DAVE, None, {})
    story.told(b.member(ALICE, DAVE, "ban", reason="spam"), "alice bans dave")
    stale = b.make_pdu(
        "m.room.message", DAVE, {"msgtype": "m.text", "body": "I'm still here"},
        prev_events=before_ban, auth_events=dave_auth,
    )  # fmt: skip
    story.told(
        b.add(stale, update_state=False),
        "dave writes from before his ban: allowed then, not now",
        Outcome.SOFT_FAILED,
    )
    story.told(b.message(ALICE, "That's the demo."), "alice closes the demo")


# ---------------------------------------------------------------------------------------------
# Ingesting


@dataclass(frozen=True, slots=True)
class DemoResult:
    event: DemoEvent
    outcome: Outcome
    reason: str | None


async def run_demo(config: Config, args: argparse.Namespace) -> int:
    """``roomserver demo``: build, trust the keys, ingest, print what happened and where to look."""
    from roomserver.app import Roomserver
    from roomserver.service.cli import _client_or_standalone, _Progress

    room = await asyncio.to_thread(build_demo_room)
    client_config, run_workers = await asyncio.to_thread(_client_or_standalone, config)
    progress = _Progress(len(room.events), enabled=not args.no_progress and sys.stderr.isatty())
    results: list[DemoResult] = []
    async with Roomserver.from_config(client_config, run_workers=run_workers) as rs:
        await _trust_demo_keys(rs)
        counts: dict[str, int] = {}
        for item in room.events:
            request = InputRoomEventsRequest(
                events=[
                    InputRoomEvent(
                        event=item.event.pdu, kind=Kind.NEW, room_version=room.room_version
                    )
                ]
            )
            (result,) = (await rs.input_room_events(request)).results
            results.append(DemoResult(item, result.outcome, result.reason))
            counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
            progress.advance(1, " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        state = await rs.current_state(room.room_id)
        latest = await rs.latest_events(room.room_id)
    svg_path = Path(args.svg) if args.svg else Path(config.data_dir) / "demo-dag.svg"
    svg = render_dag_svg(
        [_stored(r) for r in results], forward_extremities=latest, title=room.room_id
    )
    await asyncio.to_thread(_write_text, svg_path, svg)
    through_serve = not run_workers
    if args.json:
        print(json.dumps(_as_json(room, results, state, latest, svg_path), indent=2))
    else:
        _print_report(config, room, results, state, latest, svg_path, through_serve)
    mismatches = [r for r in results if r.outcome is not r.event.expected]
    for r in mismatches:
        print(
            f"roomserver demo: {r.event.event.event_id} ({r.event.summary}): expected "
            f"{r.event.expected.value}, got {r.outcome.value}: {r.reason}",
            file=sys.stderr,
        )
    return 1 if mismatches else 0


def _stored(result: DemoResult) -> StoredEvent:
    """The event as the roomserver stored it (for the picture)."""
    return StoredEvent(
        event=result.event.event,
        outlier=False,
        rejected=result.outcome is Outcome.REJECTED,
        rejection_reason=result.reason if result.outcome is Outcome.REJECTED else None,
        soft_failed=result.outcome is Outcome.SOFT_FAILED,
    )


async def _trust_demo_keys(rs: Roomserver) -> None:
    """Trust the demo servers' keys here and, through the database's key store, in the running
    ``serve`` that may process the events (see the module docstring)."""
    for server, keys in sorted(demo_verify_keys().items()):
        for key_id, verify_key in keys.items():
            await rs.keyring.share_verify_key(server, key_id, verify_key)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Reporting


def _describe(event: Event) -> str:
    content = event.content
    if event.type == "m.room.member":
        return f"{event.state_key}: {content.get('membership')}"
    for field in ("topic", "name", "join_rule", "body", "room_version"):
        if isinstance(content.get(field), str):
            return f"{field}: {content[field]}"
    if event.type == "m.room.power_levels":
        return f"users: {json.dumps(content.get('users', {}), sort_keys=True)}"
    return ""


def _print_report(
    config: Config,
    room: DemoRoom,
    results: Sequence[DemoResult],
    state: Mapping[StateKey, EventId],
    latest: Sequence[str],
    svg_path: Path,
    through_serve: bool,
) -> None:
    by_id = {e.event.event_id: e.event for e in room.events}
    where = "the running roomserver" if through_serve else "a roomserver run for this command"
    print(f"Demo room {room.room_id} (room version {room.room_version}), through {where}.")
    print(f"Signed by {', '.join(DEMO_SERVERS)} with demo keys {DEMO_KEY_ID}, trusted as given.")
    print("\nOutcomes:")
    for i, r in enumerate(results, 1):
        mark = "" if r.outcome is r.event.expected else f"  (expected {r.event.expected.value})"
        print(f"{i:3} {r.outcome.value:<12} {r.event.event.type:<20} {r.event.summary}{mark}")
        if r.reason:
            print(f"{'':16} reason: {r.reason}")
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
    print("Summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("\nFinal state:")
    for (event_type, state_key), event_id in sorted(state.items()):
        known = by_id.get(event_id)
        detail = _describe(known) if known is not None else ""
        print(f"  {event_type:<20} {state_key!r:<24} {detail}")
    print(f"Forward extremities: {', '.join(latest)}")
    print("\nWhere to look:")
    if config.metrics.listen:
        url = f"http://{config.metrics.listen}/"
        hint = "" if through_serve else " (start `./dev run` on this data directory first)"
        print(f"  the console: {url}{hint}")
    print(f"  the DAG picture: {svg_path}")
    print(f"  the state as JSON: roomserver state '{room.room_id}'")


def _as_json(
    room: DemoRoom,
    results: Sequence[DemoResult],
    state: Mapping[StateKey, EventId],
    latest: Sequence[str],
    svg_path: Path,
) -> dict[str, Any]:
    return {
        "room_id": room.room_id,
        "room_version": room.room_version,
        "events": [
            {
                "event_id": r.event.event.event_id,
                "type": r.event.event.type,
                "sender": r.event.event.sender,
                "summary": r.event.summary,
                "outcome": r.outcome.value,
                "expected": r.event.expected.value,
                "reason": r.reason,
            }
            for r in results
        ],
        "state": [
            {"type": t, "state_key": k, "event_id": e} for (t, k), e in sorted(state.items())
        ],
        "latest_events": list(latest),
        "dag_svg": str(svg_path),
    }


# ---------------------------------------------------------------------------------------------
# The DAG picture


__all__ = [
    "DEMO_KEY_ID",
    "DEMO_ROOM_ID",
    "DEMO_SERVERS",
    "DemoRoom",
    "build_demo_room",
    "demo_signing_key",
    "demo_verify_keys",
    "run_demo",
]
