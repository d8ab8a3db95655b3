"""Shared pieces of the bus tests: a fast configuration and a recording handler."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from roomserver.bus import BusConfig, DeliveryInfo, HandlerResult


def fast_config(**overrides: Any) -> BusConfig:
    """Short pulls and idle times so tests see workers come and go quickly."""
    base = BusConfig(
        pull_expires=0.3,
        idle_timeout=0.6,
        consumer_inactive_threshold=30.0,
        discovery_inactive_threshold=30.0,
        retry_initial_delay=0.1,
        retry_max_delay=1.0,
    )
    return dataclasses.replace(base, **overrides)


@dataclasses.dataclass
class Delivery:
    room_id: str
    payload: bytes
    info: DeliveryInfo
    at: float


class OverlapCheck:
    """Counts the handlings of a room that began while another handling of that room ran (a
    broken per-room exclusivity); one check may be shared by several processes' handlers."""

    def __init__(self) -> None:
        self.overlaps = 0
        self.active: set[str] = set()

    def enter(self, room_id: str) -> None:
        if room_id in self.active:
            self.overlaps += 1
        self.active.add(room_id)

    def leave(self, room_id: str) -> None:
        self.active.discard(room_id)

    async def hold(self, room_id: str, seconds: float = 0.002) -> None:
        """One handling of ``room_id`` that lasts ``seconds``."""
        self.enter(room_id)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.leave(room_id)


class Recorder:
    """A handler that records deliveries and acks with ``ok:<payload>`` unless ``decide`` says
    otherwise. Tracks per-room concurrency (in ``check``, which several recorders may share)."""

    def __init__(
        self,
        decide: Callable[[str, bytes, DeliveryInfo], Awaitable[HandlerResult | None]] | None = None,
        *,
        check: OverlapCheck | None = None,
    ) -> None:
        self.deliveries: list[Delivery] = []
        self.by_room: dict[str, list[bytes]] = defaultdict(list)
        self.acked: dict[str, list[bytes]] = defaultdict(list)
        self.check = check or OverlapCheck()
        self.decide = decide
        self.changed = asyncio.Event()

    @property
    def active(self) -> set[str]:
        return self.check.active

    @property
    def overlaps(self) -> int:
        return self.check.overlaps

    async def __call__(self, room_id: str, payload: bytes, info: DeliveryInfo) -> HandlerResult:
        self.check.enter(room_id)
        try:
            self.deliveries.append(Delivery(room_id, payload, info, time.monotonic()))
            self.by_room[room_id].append(payload)
            self.changed.set()
            result = None
            if self.decide is not None:
                result = await self.decide(room_id, payload, info)
            if result is None:
                result = HandlerResult.ack(reply=b"ok:" + payload)
            if result.disposition.value == "ack":
                self.acked[room_id].append(payload)
            return result
        finally:
            self.check.leave(room_id)
            self.changed.set()

    def total_acked(self) -> int:
        return sum(len(v) for v in self.acked.values())

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, interval: float = 0.05
) -> None:
    """Poll ``check`` (for conditions no event signals, such as server-side state)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - server state has no event to wait on
            await asyncio.sleep(interval)
