"""Writes the seed inputs of each fuzz target under ``tests/fuzz/corpus/<target>/seed-*``.

Run: ``.venv/bin/python -m tests.fuzz.make_corpus`` (from the repository root). Seeds are valid
inputs (signed events of every room version built by ``RoomBuilder``, canonical JSON values,
wire messages of every kind) from which the fuzzer mutates. Inputs that once broke an invariant
are kept beside them as ``crash-*`` files (written by hand, never by this script).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from roomserver.api import (
    EventResult,
    InputRoomEvent,
    Kind,
    Outcome,
    OutputEvent,
    OutputNewInviteEvent,
    OutputNewRoomEvent,
    OutputOldRoomEvent,
    OutputRedactedEvent,
    OutputRetireInviteEvent,
    TransactionId,
    encode_event_result,
    encode_input_room_event,
    encode_output_event,
)
from roomserver.testing.builder import RoomBuilder
from tests.fuzz.targets import VERSIONS

CORPUS = Path(__file__).parent / "corpus"
ALICE = "@alice:example.org"
BOB = "@bob:other.example"


def _room(version: str) -> RoomBuilder:
    b = RoomBuilder(version, room_id=f"!fuzz{version}:example.org")
    b.create_room(ALICE)
    b.join(BOB)
    b.message(BOB, "hi")
    b.send("m.room.topic", ALICE, {"topic": "t"}, state_key="")
    target = b.message(BOB, "to redact")
    redacts = {"redacts": target.event_id}
    if b.rules.redacts_in_content:
        b.send("m.room.redaction", ALICE, redacts)
    else:
        b.send("m.room.redaction", ALICE, {}, extra=redacts)
    return b


def parse_event_seeds() -> list[bytes]:
    out = []
    for index, version in enumerate(VERSIONS):
        for event in _room(version).events.values():
            out.append(bytes([index]) + json.dumps(event.pdu).encode())
    return out


def canonical_json_seeds() -> list[bytes]:
    values = [
        {"b": 1, "a": [True, False, None, "é", "\u2028"], "c": {"d": -(2**53) + 1}},
        [1.0, -0.0, 1e10, 2**53 - 1],
        {"auth": {"success": True, "mxid": "@john.doe:example.com", "profile": {"x": "日本"}}},
        'string with \\ and " and \u0000',
        {"nested": [[[[{"k": [1, 2, {"z": 0}]}]]]]},
    ]
    return [bytes([mode]) + json.dumps(v).encode() for v in values for mode in range(3)]


def wire_codec_seeds() -> list[bytes]:
    b = _room("10")
    event = next(iter(b.events.values()))
    pdu = dict(event.pdu)
    txn = TransactionId(1, "t1")
    inputs = [
        InputRoomEvent(event=pdu),
        InputRoomEvent(
            event=pdu,
            kind=Kind.OLD,
            origin="other.example",
            has_state=True,
            state_event_ids=(event.event_id,),
            send_as_server="example.org",
            transaction_id=txn,
            verified=True,
            room_version="10",
        ),
    ]
    outputs = [
        OutputNewRoomEvent(
            event=pdu,
            event_id=event.event_id,
            room_version="10",
            latest_event_ids=(event.event_id,),
            adds_state_event_ids=(event.event_id,),
            last_sent_event_id=event.event_id,
            rewrites_state=True,
            transaction_id=txn,
        ),
        OutputOldRoomEvent(event=pdu, event_id=event.event_id, room_version="10"),
        OutputNewInviteEvent(event=pdu, event_id=event.event_id, room_version="10"),
        OutputRetireInviteEvent(event.event_id, b.room_id, BOB, "join", event.event_id),
        OutputRedactedEvent(event.event_id, pdu),
    ]
    results = [
        EventResult(event.event_id, Outcome.ACCEPTED),
        EventResult(None, Outcome.INVALID, "content: missing"),
    ]
    return (
        [b"\x00" + encode_input_room_event(item) for item in inputs]
        + [b"\x01" + encode_output_event(OutputEvent(b.room_id, o)) for o in outputs]
        + [b"\x02" + encode_event_result(r) for r in results]
    )


SEEDS = {
    "parse_event": parse_event_seeds,
    "canonical_json": canonical_json_seeds,
    "wire_codec": wire_codec_seeds,
}


def main() -> None:
    for target, seeds in SEEDS.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
        for data in seeds():
            (directory / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
        print(f"{target}: {len(list(directory.glob('seed-*')))} seeds")


if __name__ == "__main__":
    main()
