"""Canonical JSON: strict and lax modes, and that every failure is a ``CanonicalJSONError``."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from roomserver.core.canonical_json import MAX_NESTING, canonical_json
from roomserver.core.errors import CanonicalJSONError, InvalidEvent


def nested(levels: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(levels - 1):
        value = [value] if kind == "list" else {"k": value}
    return [value] if kind == "list" else {"k": value}


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_nesting_limit(kind: str) -> None:
    assert canonical_json(nested(MAX_NESTING, kind))
    with pytest.raises(CanonicalJSONError, match="nested deeper than 512 levels"):
        canonical_json(nested(MAX_NESTING + 1, kind))
    with pytest.raises(CanonicalJSONError):
        canonical_json(nested(100_000, kind))


def test_deep_stack_gives_canonical_json_error_not_recursion_error() -> None:
    def at_depth(n: int, action: Callable[[], object]) -> object:
        return action() if n == 0 else at_depth(n - 1, action)

    value = nested(MAX_NESTING, "list")
    with pytest.raises(CanonicalJSONError):
        at_depth(800, lambda: canonical_json(value))


@pytest.mark.parametrize(
    ("value", "strict_ok", "lax_ok"),
    [
        (2**53 - 1, True, True),
        (-(2**53 - 1), True, True),
        (2**53, False, True),
        (-(2**53), False, True),
        (10**5000, False, False),  # beyond the interpreter's int-to-text limit
        (1.5, False, True),
        (2.0, True, True),
        (float("nan"), False, False),
        (float("-inf"), False, False),
        ("\ud800", False, False),
        (b"bytes", False, False),
        ({1: "x"}, False, False),
        (object(), False, False),
        ({1, 2}, False, False),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, bool) else str(value),
)
def test_strict_and_lax(value: Any, strict_ok: bool, lax_ok: bool) -> None:
    for strict, ok in ((True, strict_ok), (False, lax_ok)):
        if ok:
            canonical_json({"v": value}, strict=strict)
        else:
            with pytest.raises(CanonicalJSONError) as info:
                canonical_json({"v": value}, strict=strict)
            assert isinstance(info.value, InvalidEvent)
            assert info.value.field in ("v", "", None)


def test_error_names_the_path() -> None:
    with pytest.raises(CanonicalJSONError) as info:
        canonical_json({"content": {"list": [1, {"x": 0.5}]}})
    assert info.value.field == "content.list[1].x"
    assert info.value.reason == "content.list[1].x: floats are not allowed"


def test_strict_integral_floats_become_integers() -> None:
    assert canonical_json({"a": 1e10, "b": -0.0, "c": [3.0]}) == b'{"a":10000000000,"b":0,"c":[3]}'
    with pytest.raises(CanonicalJSONError):
        canonical_json({"a": 1e16})  # integral, but out of range


def test_escapes_and_ordering() -> None:
    value = {"\u00e9": 1, "z": 2, "a": '\x00\x1f"\\/\n\t\u2028', "B": True}
    assert (
        canonical_json(value)
        == '{"B":true,"a":"\\u0000\\u001f\\"\\\\/\\n\\t\u2028","z":2,"é":1}'.encode()
    )


def test_mappings_and_tuples() -> None:
    assert canonical_json(MappingProxyType({"b": (1, 2), "a": {}})) == b'{"a":{},"b":[1,2]}'


def test_integral_floats_refused_on_request() -> None:
    assert canonical_json({"a": 2.0}) == b'{"a":2}'
    with pytest.raises(CanonicalJSONError) as info:
        canonical_json({"a": [2.0]}, integral_floats=False)
    assert info.value.field == "a[0]"
    assert canonical_json({"a": 2.0}, strict=False, integral_floats=False) == b'{"a":2.0}'
