"""The wire codec's encoder (``roomserver.wire_json``) keeps ``json.dumps``'s bytes and
errors, and its decoders the same answers for every kind and outcome value (they look values
up instead of calling the enums)."""

from __future__ import annotations

import enum
import json
import math
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomserver.api import (
    InputRoomEvent,
    Kind,
    Outcome,
    OutputEvent,
    OutputNewRoomEvent,
    OutputRedactedEvent,
    TransactionId,
    WireFormatError,
    decode_event_results,
    decode_input_message,
    decode_output_event,
    encode_input_item,
    encode_output_event,
)
from roomserver.wire_json import dumps as _dumps
from roomserver.wire_json import plain as _plain


def _standard(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _same(value: Any) -> None:
    try:
        expected: bytes | tuple[type, str] = _standard(value)
    except Exception as exc:  # the same exception, type and message
        expected = (type(exc), str(exc))
    try:
        got: bytes | tuple[type, str] = _dumps(value)
    except RecursionError:  # _dumps reports it as ValueError (checked below)
        raise
    except Exception as exc:
        got = (type(exc), str(exc))
    assert got == expected


_KEYS = st.text(max_size=5) | st.integers(-3, 3) | st.booleans() | st.none() | st.floats()
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.text(st.characters(codec="utf-8"), max_size=8)
)
_VALUES = st.recursive(
    _LEAVES,
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children)
        | st.dictionaries(_KEYS, children, max_size=3)
    ),
    max_leaves=12,
)


@given(value=st.dictionaries(st.text(max_size=5), _VALUES, max_size=4))
def test_dumps_writes_what_json_dumps_writes(value: dict[str, Any]) -> None:
    _same(value)


_PLAIN_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**64), 2**64)
    | st.text(max_size=8)
    | st.text(st.characters(codec="utf-8"), max_size=8)
)
_PLAIN_VALUES = st.recursive(
    _PLAIN_LEAVES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=16,
)


@given(value=st.dictionaries(st.text(max_size=5), _PLAIN_VALUES, max_size=4))
def test_plain_values_written_by_orjson_are_what_json_dumps_writes(value: dict[str, Any]) -> None:
    assert _plain(value, 0)
    _same(value)


def test_what_is_not_plain() -> None:
    for value in ({"f": 1.0}, {"t": (1,)}, {1: "k"}, {"s": _Name("x")}, {"k": Kind.NEW}):
        assert not _plain(value, 0)
    deep: Any = {}
    for _ in range(300):
        deep = {"k": [deep]}
    assert not _plain(deep, 0)
    _same(deep)


class _Colour(enum.Enum):
    RED = "red"


class _Name(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        {"nan": math.nan, "inf": math.inf, "-inf": -math.inf},
        {"big": 10**40, "keys": {3: "a", 2.5: "b", None: "c", True: "d"}},
        {"tuple": (1, "a"), "sub": _Name("x"), "int": Kind.NEW},
        {"enum": _Colour.RED},
        {"set": {1}},
        {"proxy": MappingProxyType({"a": 1})},
        {"ordered": OrderedDict(b=1, a=2)},
        {"surrogate": "\ud800"},
    ],
)
def test_dumps_edge_cases(value: dict[str, Any]) -> None:
    _same(value)


def test_dumps_reports_deep_nesting_as_value_error() -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        _dumps({"event": deep})


def test_an_input_item_of_any_mapping_encodes_as_before() -> None:
    pdu = {"type": "m.room.message", "content": {"body": "é"}, "room_id": "!r:x"}
    for event in (pdu, MappingProxyType(pdu), OrderedDict(pdu)):
        item = InputRoomEvent(event=event, kind=Kind.OUTLIER, origin="o.example")
        assert encode_input_item(item) == _standard(
            {"event": dict(event), "kind": 1, "origin": "o.example"}
        )


@pytest.mark.parametrize("kind", [*list(Kind), 0, 4, -1, True, 2.0, "2", None])
def test_decoding_kinds(kind: object) -> None:
    body = json.dumps({"v": 2, "events": [{"event": {}, "kind": kind}]}).encode()
    sent = json.loads(body)["events"][0]["kind"]
    if type(sent) is int and sent in {k.value for k in Kind}:
        assert decode_input_message(body)[1][0].kind is Kind(sent)
    else:
        with pytest.raises(WireFormatError, match=r"events\[0\]: kind: unknown value"):
            decode_input_message(body)


@pytest.mark.parametrize("outcome", [*[o.value for o in Outcome], "nope", 1, None, ["accepted"]])
def test_decoding_outcomes(outcome: object) -> None:
    body = json.dumps({"v": 2, "results": [{"event_id": "$e", "outcome": outcome}]}).encode()
    if outcome in [o.value for o in Outcome]:
        assert decode_event_results(body)[0].outcome is Outcome(outcome)
    else:
        with pytest.raises(WireFormatError, match="outcome: unknown value"):
            decode_event_results(body)


def test_output_payload_fields_encode_as_before() -> None:
    pdu = {"type": "m.room.message", "content": {"n": 1}}
    new = OutputNewRoomEvent(
        event=MappingProxyType(pdu),
        event_id="$e",
        room_version="10",
        latest_event_ids=("$a", "$b"),
        adds_state_event_ids=("$s",),
        transaction_id=TransactionId(3, "t"),
        rewrites_state=True,
    )
    encoded = encode_output_event(OutputEvent(room_id="!r:x", payload=new))
    body = json.loads(encoded)["new_room_event"]
    assert body["event"] == pdu
    assert body["latest_event_ids"] == ["$a", "$b"]
    assert body["transaction_id"] == {"session_id": 3, "transaction_id": "t"}
    assert body["rewrites_state"] is True
    assert body["last_sent_event_id"] is None
    assert decode_output_event(encoded).payload == OutputNewRoomEvent(
        event=pdu,
        **{k: getattr(new, k) for k in OutputNewRoomEvent.__dataclass_fields__ if k != "event"},
    )
    redacted = OutputRedactedEvent(redacted_event_id="$t", redacted_because=pdu)
    encoded = encode_output_event(OutputEvent(room_id="!r:x", payload=redacted))
    assert json.loads(encoded)["redacted_event"] == {
        "redacted_event_id": "$t",
        "redacted_because": pdu,
    }
