"""Helpers for end-to-end tests of the ``Roomserver`` facade over a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from roomserver.api import (
    InputRoomEvent,
    InputRoomEventsRequest,
    InputRoomEventsResponse,
    Kind,
    OutputEvent,
    decode_output_event,
)
from roomserver.app import Roomserver
from roomserver.bus import OutputSubscription
from roomserver.testing.builder import RoomBuilder

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
MALLORY = "@mallory:example.org"


def trust(rs: Roomserver, *builders: RoomBuilder) -> None:
    """Give the roomserver the builders' signing keys out of band."""
    for builder in builders:
        for server, (key_id, key) in builder.keys.items():
            rs.keyring.add_verify_key(server, key_id, key.verify_key, 2**62)


def request(
    pdus: Iterable[Mapping[str, Any]], *, asynchronous: bool = False, **kwargs: Any
) -> InputRoomEventsRequest:
    return InputRoomEventsRequest(
        events=[InputRoomEvent(event=p, **kwargs) for p in pdus], asynchronous=asynchronous
    )


async def submit(
    rs: Roomserver, pdus: Iterable[Mapping[str, Any]], *, asynchronous: bool = False,
    kind: Kind = Kind.NEW, **kwargs: Any,
) -> InputRoomEventsResponse:  # fmt: skip
    return await rs.input_room_events(request(pdus, asynchronous=asynchronous, kind=kind, **kwargs))


async def wait_for(
    condition: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05
) -> Any:
    """Poll an async (or sync) ``condition`` until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def read_outputs(
    subscription: OutputSubscription, count: int, *, timeout: float = 30.0
) -> list[OutputEvent]:
    """Read exactly ``count`` outputs (acking each) or fail."""
    out: list[OutputEvent] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"got {len(out)} of {count} outputs within {timeout} s")
        message = await subscription.next_within(remaining)
        if message is None:
            continue
        out.append(decode_output_event(message.payload))
        await message.ack()
    return out


async def drain_outputs(
    subscription: OutputSubscription, *, quiet: float = 1.0
) -> list[OutputEvent]:
    """Read outputs until none arrives for ``quiet`` seconds."""
    out: list[OutputEvent] = []
    while True:
        message = await subscription.next_within(quiet)
        if message is None:
            return out
        out.append(decode_output_event(message.payload))
        await message.ack()
