"""Cheap synthetic events and a minimal linear-room writer for storage tests."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from roomserver.core.pdu import Event, parse_event
from roomserver.ports import (
    EventStatus,
    EventWrite,
    MembershipChange,
    PersistResult,
    RoomUpdate,
    StateDelta,
    StateKey,
)
from roomserver.storage import SqlStorage

VERSION = "10"


def event_id(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "$" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def make_event(
    room_id: str,
    seed: str,
    *,
    event_type: str = "m.room.message",
    state_key: str | None = None,
    sender: str = "@alice:example.org",
    prev: Sequence[str] = (),
    auth: Sequence[str] = (),
    depth: int = 1,
    content: Mapping[str, Any] | None = None,
) -> Event:
    """An unsigned event with a made-up ID (parse_event trusts a given ID)."""
    pdu: dict[str, Any] = {
        "type": event_type,
        "room_id": room_id,
        "sender": sender,
        "content": dict(content or {"body": seed}),
        "origin_server_ts": 1_700_000_000_000 + depth,
        "depth": depth,
        "prev_events": list(prev),
        "auth_events": list(auth),
        "hashes": {"sha256": "x"},
        "signatures": {},
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    return parse_event(
        pdu, VERSION, event_id=event_id(f"{room_id}/{seed}"), check_edge_counts=False
    )


class LinearRoom:
    """Persists events of one linear room the way the input pipeline would (simplified)."""

    def __init__(self, store: SqlStorage, room_id: str) -> None:
        self.store = store
        self.room_id = room_id
        self.version: int | None = None
        self.current: Any = None
        self.state: dict[StateKey, str] = {}
        self.latest: list[str] = []
        self.depth = 0
        self.results: dict[str, PersistResult] = {}
        self.state_before: dict[str, dict[StateKey, str]] = {}

    def next_event(
        self,
        seed: str,
        *,
        event_type: str = "m.room.message",
        state_key: str | None = None,
        content: Mapping[str, Any] | None = None,
        sender: str = "@alice:example.org",
    ) -> Event:
        self.depth += 1
        auth = [
            self.state[k]
            for k in (("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", sender))
            if k in self.state
        ]
        return make_event(
            self.room_id,
            seed,
            event_type=event_type,
            state_key=state_key,
            sender=sender,
            prev=self.latest,
            auth=auth,
            depth=self.depth,
            content=content,
        )

    async def send(self, event: Event, **write: Any) -> PersistResult:
        changes: dict[StateKey, str | None] = {}
        memberships: list[MembershipChange] = []
        if event.state_key is not None:
            changes[event.state_tuple] = event.event_id
            if event.type == "m.room.member" and event.membership is not None:
                memberships.append(
                    MembershipChange(
                        event.state_key, event.membership, event.event_id, event.sender
                    )
                )
        result = await self.store.persist(
            linear_write(
                event,
                expected_version=self.version,
                state_before=StateDelta(self.current, {}),
                current_state=StateDelta(self.current, changes),
                memberships=memberships,
                **write,
            )
        )
        self.state_before[event.event_id] = dict(self.state)
        self.version = (self.version or 0) + 1
        self.current = result.current_state
        if event.state_key is not None:
            self.state[event.state_tuple] = event.event_id
        self.latest = [event.event_id]
        self.results[event.event_id] = result
        return result

    async def create(self, creator: str = "@alice:example.org") -> None:
        await self.send(
            self.next_event("create", event_type="m.room.create", state_key="", sender=creator)
        )
        await self.send(
            self.next_event(
                "creator-join",
                event_type="m.room.member",
                state_key=creator,
                content={"membership": "join"},
                sender=creator,
            )
        )
        await self.send(
            self.next_event("power", event_type="m.room.power_levels", state_key="", sender=creator)
        )


def linear_write(
    event: Event,
    *,
    expected_version: int | None,
    state_before: StateDelta,
    current_state: StateDelta,
    memberships: Sequence[MembershipChange] = (),
    **write: Any,
) -> EventWrite:
    """The write of an accepted event that becomes its room's only forward extremity."""
    return EventWrite(
        event=event,
        status=EventStatus.STATEFUL,
        state_before=state_before,
        room_update=RoomUpdate(
            expected_version=expected_version,
            room_version=VERSION,
            forward_extremities=(event.event_id,),
            current_state=current_state,
            last_sent_event_id=event.event_id,
            membership_changes=memberships,
        ),
        **write,
    )
