"""Canonical JSON (spec appendix: "Canonical JSON").

Compact, keys sorted by code point, raw UTF-8, integers only. ``strict`` (room versions 6+ and all
non-event JSON) also enforces the integer range ``[-(2**53 - 1), 2**53 - 1]`` and refuses floats
with a fraction; lax mode (room versions 1-5, whose events servers must not strictly check)
keeps such numbers as Python's ``json`` writes them. Integral floats (``1e10``, ``-0.0``) are
written as integers in both modes, as the spec's examples show.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from roomserver.core.errors import CanonicalJSONError

MAX_SAFE_INTEGER = 2**53 - 1
MIN_SAFE_INTEGER = -(2**53 - 1)

_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
)


def _normalise(value: Any, strict: bool, path: str) -> Any:
    """Return ``value`` with integral floats as ints; raise on what canonical JSON forbids."""
    # Exact type checks: bool is a subclass of int and must pass through untouched.
    t = type(value)
    if t is str or value is None or t is bool:
        return value
    if t is int:
        if strict and not MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJSONError(f"{path or 'value'}: integer {value} out of range", field=path)
        return value
    if t is dict:
        out: dict[str, Any] | None = None
        for k, v in value.items():
            if type(k) is not str:
                raise CanonicalJSONError(f"{path or 'value'}: object key {k!r} is not a string")
            nv = _normalise(v, strict, f"{path}.{k}" if path else k)
            if nv is not v:
                if out is None:
                    out = dict(value)
                out[k] = nv
        return value if out is None else out
    if t is list or t is tuple:
        items = [_normalise(v, strict, f"{path}[{i}]") for i, v in enumerate(value)]
        return items
    if t is float:
        if not math.isfinite(value):
            raise CanonicalJSONError(f"{path or 'value'}: {value} is not a JSON number", field=path)
        if value.is_integer():
            return _normalise(int(value), strict, path)
        if strict:
            raise CanonicalJSONError(f"{path or 'value'}: floats are not allowed", field=path)
        return value
    if isinstance(value, Mapping):
        return _normalise(dict(value), strict, path)
    raise CanonicalJSONError(f"{path or 'value'}: {t.__name__} is not a JSON type", field=path)


def canonical_json(value: Any, *, strict: bool = True) -> bytes:
    """Encode ``value`` as canonical JSON bytes, raising ``CanonicalJSONError`` if it cannot be."""
    normalised = _normalise(value, strict, "")
    try:
        return _ENCODER.encode(normalised).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalJSONError(f"value contains a lone surrogate: {exc.reason}") from None
