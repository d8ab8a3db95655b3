"""Canonical JSON is written by orjson after the module's own checks; these tests compare it
with an independent reference built on the standard library's encoder (the way the module
wrote it before), over generated values and over the cases where the two libraries differ."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomserver.core.canonical_json import (
    MAX_NESTING,
    MAX_SAFE_INTEGER,
    canonical_json,
    canonical_json_parts,
)
from roomserver.core.errors import CanonicalJSONError
from tests.core.helpers import whole_or_same_error

MODES = [(False, True), (True, True), (True, False)]  # (strict, integral_floats)


class _Refused(Exception):
    pass


def _reference_value(value: Any, strict: bool, integral_floats: bool) -> Any:
    """What canonical JSON writes for ``value``, as plain Python values (independent of the
    module: the spec's rules, written out)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if strict and abs(value) > MAX_SAFE_INTEGER:
            raise _Refused
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or (strict and not integral_floats):
            raise _Refused
        if not strict:
            return value
        if not value.is_integer():
            raise _Refused
        return _reference_value(int(value), strict, integral_floats)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _Refused
        return {k: _reference_value(v, strict, integral_floats) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reference_value(v, strict, integral_floats) for v in value]
    raise _Refused


def reference(value: Any, strict: bool, integral_floats: bool) -> bytes | None:
    """The standard library's canonical JSON of ``value``, or None where it is refused."""
    try:
        plain = _reference_value(value, strict, integral_floats)
        text = json.dumps(
            plain, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        return text.encode("utf-8")
    except (_Refused, ValueError):  # ValueError: lone surrogates, the int-to-text digit limit
        return None


def check(value: Any) -> None:
    for strict, integral_floats in MODES:
        expected = reference(value, strict, integral_floats)
        if expected is None:
            with pytest.raises(CanonicalJSONError):
                canonical_json(value, strict=strict, integral_floats=integral_floats)
        else:
            got = canonical_json(value, strict=strict, integral_floats=integral_floats)
            assert got == expected, (strict, integral_floats)


_TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.text(max_size=6)  # with surrogates
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.sampled_from([MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, 2**63, 2**64, -(2**63) - 1])
    | st.floats()
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f * 1e-300)
    | st.sampled_from([1e16, 1e-7, 1e22, -0.0, 5e-324, 1.7976931348623157e308, 2.0, 50.0])
    | _TEXT
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(_TEXT, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400)
@given(value=_JSON)
def test_the_encoding_equals_the_standard_library_reference(value: Any) -> None:
    check(value)


@pytest.mark.parametrize(
    "value",
    [
        # Floats whose text orjson writes otherwise (lax mode keeps Python's).
        [1e16, 1e-7, 1e22, 1.5e300, -0.0, 5e-324, 0.0001, 123456789.123, 1e15],
        {"ban": 50.0, "n": 2.0},
        # Integers beyond orjson's 64 bits (lax mode writes them as Python does).
        {"big": 2**64, "neg": -(2**63) - 1, "huge": 10**40},
        # Escapes, and keys sorted by code point (not UTF-16 units).
        {"\uffff": 1, "\U00010000": 2, "\ue000": 3, "a": '\x00\x1f\x7f\u2028"\\/\b\t\n\f\r é'},
        # Lone surrogates: refused either way.
        {"a": "\ud800"},
        {"\udfff": 1},
        # Not JSON values.
        {"a": float("nan")},
        {"a": float("inf")},
        {"a": b"bytes"},
        {1: "x"},
    ],
)
def test_cases_where_the_libraries_differ(value: Any) -> None:
    check(value)


def test_nesting_beyond_orjson_and_up_to_the_limit() -> None:
    value: Any = [1.5]
    for _ in range(150):  # 300 levels: orjson stops near 255; the standard library writes it
        value = {"k": [value]}
    check(value)
    deep: Any = 1
    for _ in range(MAX_NESTING):
        deep = [deep]
    assert canonical_json(deep) == b"[" * MAX_NESTING + b"1" + b"]" * MAX_NESTING


@pytest.mark.parametrize(("strict", "integral_floats"), MODES)
@given(value=st.dictionaries(_TEXT, _JSON, max_size=6), drop=st.sets(_TEXT, max_size=3))
def test_parts_encode_views_like_canonical_json(
    strict: bool, integral_floats: bool, value: dict[str, Any], drop: set[str]
) -> None:
    whole = whole_or_same_error(canonical_json_parts, value, strict, integral_floats)
    if whole is None:
        return
    encoded, checked, encode = canonical_json_parts(
        value, strict=strict, integral_floats=integral_floats
    )
    assert encoded == whole
    assert set(checked) == set(value)
    view = {k: v for k, v in checked.items() if k not in drop}
    expected = canonical_json(
        {k: v for k, v in value.items() if k not in drop},
        strict=strict,
        integral_floats=integral_floats,
    )
    assert encode(view) == expected
