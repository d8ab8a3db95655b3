"""``BatchVerifier``: a message's signatures checked in a thread pool give, event by event and
in order, exactly what checking each alone through the key ring gives."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from roomserver.api import InputRoomEvent, Kind, Outcome, encode_input_batch
from roomserver.core.base64 import encode_base64
from roomserver.core.pdu import Event, parse_event
from roomserver.federation.errors import RemoteRejected, RemoteUnavailable
from roomserver.federation.keyring import KeyRing
from roomserver.input import Disposition, InputConfig, handle_message
from roomserver.input.verify import INLINE_AT_MOST, BatchVerifier, VerifiedBatch
from roomserver.testing.builder import RoomBuilder
from tests.input.helpers import ALICE, BOB, HarnessFactory, new_room

STRANGER = "@stranger:unknown.test"


class _NoKeys:
    """A key client: every server answers that it has no such key (or is unreachable)."""

    def __init__(self, *, reachable: bool = True) -> None:
        self.reachable = reachable
        self.fetches = 0

    async def get_server_keys(self, destination: str) -> dict[str, Any]:
        self.fetches += 1
        if self.reachable:
            raise RemoteRejected("no keys", destination=destination, status=404)
        raise RemoteUnavailable("connection refused", destination=destination)

    async def query_server_keys(
        self, notary: str, server_keys: Mapping[str, Mapping[str, int]]
    ) -> list[dict[str, Any]]:
        raise AssertionError("no notary configured")


class _CountingKeyRing(KeyRing):
    """A real key ring that counts the events it verifies inline."""

    inline = 0

    async def verify_event(self, event: Event | Mapping[str, Any], room_version: str) -> None:
        self.inline += 1
        await super().verify_event(event, room_version)


def _keyring(builder: RoomBuilder, *, reachable: bool = True) -> _CountingKeyRing:
    ring = _CountingKeyRing(_NoKeys(reachable=reachable), give_up_after_s=0.0)
    for server, (key_id, key) in builder.keys.items():
        if server != STRANGER.split(":")[1]:  # the builder signed as it too: keep it unknown
            ring.add_verify_key(server, key_id, key.verify_key)
    return ring


def _forged(event: Event) -> Event:
    """``event`` with a signature that does not verify (same event ID: v10 IDs omit them)."""
    pdu = copy.deepcopy(dict(event.pdu))
    (server, by_key), *_ = pdu["signatures"].items()
    key_id = next(iter(by_key))
    pdu["signatures"][server][key_id] = encode_base64(bytes(64))
    return parse_event(pdu, event.room_version)


def _events() -> tuple[RoomBuilder, list[Event]]:
    """A room's events: a forged signature, a sender whose server has no keys, and an
    unsigned event among good ones."""
    builder, events = new_room()
    events += [builder.join(BOB)]
    events += [builder.message(ALICE, f"m{i}") for i in range(12)]
    unsigned = dict(builder.message(BOB, "unsigned").pdu)
    unsigned["signatures"] = {}
    events += [
        _forged(builder.message(BOB, "forged")),
        builder.message(ALICE, "after the forged one"),
        parse_event(builder.make_pdu("m.room.message", STRANGER, {"body": "x"}), "10"),
        parse_event(unsigned, "10"),
    ]
    events += [builder.message(BOB, f"n{i}") for i in range(10)]
    return builder, events


async def _alone(ring: KeyRing, events: Sequence[Event]) -> list[str | None]:
    out: list[str | None] = []
    for event in events:
        try:
            await ring.verify_event(event, event.room_version)
        except Exception as exc:
            out.append(f"{type(exc).__name__}: {exc}")
        else:
            out.append(None)
    return out


async def _batched(verifier: BatchVerifier, events: Sequence[Event]) -> list[str | None]:
    return await _taken(verifier, events, verifier.start(events))


async def _taken(
    verifier: BatchVerifier, events: Sequence[Event], batch: VerifiedBatch | None
) -> list[str | None]:
    """Each event's check, in order, taken from ``batch``: ``None`` or the exception raised."""
    out: list[str | None] = []
    for event in events:
        try:
            await verifier.verify(event, batch)
        except Exception as exc:
            out.append(f"{type(exc).__name__}: {exc}")
        else:
            out.append(None)
    return out


@pytest.mark.parametrize("threads", [0, 1, 2, 4])
async def test_outcomes_in_order_as_each_event_checked_alone(threads: int) -> None:
    builder, events = _events()
    expected = await _alone(_keyring(builder), events)
    assert expected.count(None) == len(events) - 3
    forged = expected[len(events) - 14]
    assert forged is not None and "signature does not verify" in forged
    assert "no verifiable signature from unknown.test" in (expected[len(events) - 12] or "")
    assert "missing a signature" in (expected[len(events) - 11] or "")

    ring = _keyring(builder)
    await _alone(ring, events[:-14])  # the senders' keys are in memory from now on
    ring.inline = 0
    verifier = BatchVerifier(ring, threads=threads)
    try:
        assert await _batched(verifier, events) == expected
    finally:
        verifier.close()
    # In the pool: all but the stranger's event (its keys are not in memory: checked inline).
    assert ring.inline == (len(events) if threads == 0 else 1)


async def test_a_key_that_cannot_be_fetched_gives_keys_unobtainable_in_a_batch() -> None:
    builder, events = _events()
    ring = _keyring(builder, reachable=False)
    expected = await _alone(_keyring(builder, reachable=False), events)
    stranger = expected[len(events) - 12]
    assert stranger is not None and stranger.startswith("KeysUnobtainable")
    verifier = BatchVerifier(ring, threads=2)
    await _alone(ring, events[:-14])
    try:
        assert await _batched(verifier, events) == expected
    finally:
        verifier.close()


async def test_small_messages_and_unknown_keys_are_checked_inline() -> None:
    builder, events = _events()
    ring = _keyring(builder)
    verifier = BatchVerifier(ring, threads=2)
    try:
        assert verifier.start(events) is None  # no key in memory yet
        await _alone(ring, events[:-14])
        assert verifier.start(events[:INLINE_AT_MOST]) is None
        batch = verifier.start(events[: INLINE_AT_MOST + 1])
        assert batch is not None and len(batch) == INLINE_AT_MOST + 1
        # A result is taken once, and only for the very Event object that was started.
        copy_of_first = parse_event(dict(events[0].pdu), "10")
        assert batch.take(copy_of_first) is None
        assert batch.take(events[0]) is not None
        assert batch.take(events[0]) is None
    finally:
        verifier.close()
    with pytest.raises(ValueError, match="verify_threads"):
        BatchVerifier(ring, threads=-1)


@dataclass
class _Info:
    num_delivered: int = 1
    stream_seq: int = 1


@pytest.mark.parametrize("threads", [0, 2])
async def test_a_message_with_a_forged_event_in_the_middle(
    harness: HarnessFactory, threads: int
) -> None:
    """Through ``handle_message``: the forged event is INVALID with the reason the key ring
    gives it alone; the events after it are processed as usual; pool or not, same results."""
    builder, events = new_room()
    good = [builder.join(BOB), *(builder.message(ALICE, f"m{i}") for i in range(4))]
    side = builder.message(BOB, "forged")  # cited by nothing: the room goes on without it
    builder.latest = [good[-1].event_id]
    forged = _forged(side)
    rest = [builder.message(ALICE, f"n{i}") for i in range(4)]
    batch = [*good, forged, *rest]
    ring = _keyring(builder)
    config = InputConfig(verify_threads=threads)
    h = await harness(builder, keyring=ring, config=config)  # type: ignore[arg-type]
    await h.accept_all(events)
    await _alone(ring, good[:1])  # Bob's server's key in memory too
    [alone] = await _alone(_keyring(builder), [forged])
    ring.inline = 0
    payload = encode_input_batch([InputRoomEvent(event=dict(e.pdu), kind=Kind.NEW) for e in batch])
    decision = await handle_message(h.processor, builder.room_id, payload, _Info())
    assert decision.disposition is Disposition.ACK
    outcomes = [(r.event_id, r.outcome) for r in decision.results]
    assert outcomes == [
        (e.event_id, Outcome.INVALID if e is forged else Outcome.ACCEPTED) for e in batch
    ]
    assert decision.results[len(good)].reason == (alone or "").split(": ", 1)[1]
    assert ring.inline == (len(batch) if threads == 0 else 0)
    assert await h.extremities() == {rest[-1].event_id}
