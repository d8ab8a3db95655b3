"""Canonical JSON (spec appendix: "Canonical JSON").

Compact, keys sorted by code point, raw UTF-8, integers only. ``strict`` (room versions 6+ and all
JSON we produce) enforces the integer range ``[-(2**53 - 1), 2**53 - 1]``, refuses floats with a
fraction and writes integral floats (``1e10``, ``-0.0``) as integers, as the spec's examples show.

Lax mode (room versions 1-5, whose events servers must not strictly check) writes every number as
Python's ``json`` does, floats included (``50.0`` stays ``50.0``). Its only job is to reproduce
the bytes that old events were hashed and signed over, and those servers (Synapse, in practice)
wrote floats that way: an old power levels event with ``"ban": 50.0`` must still verify.

Whatever the input, ``canonical_json`` returns bytes or raises ``CanonicalJSONError``: nesting
deeper than ``MAX_NESTING`` levels is refused, so the walk never runs into Python's recursion
limit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from roomserver.core.errors import CanonicalJSONError

_T = TypeVar("_T")

MAX_SAFE_INTEGER = 2**53 - 1
MIN_SAFE_INTEGER = -(2**53 - 1)

# Deeper values are refused. Real events nest a handful of levels; the bound is generous (other
# servers' JSON parsers stop near Python's default recursion limit of 1,000) while keeping this
# module's walk and the C encoder inside that limit. A RecursionError that still happens (when
# called from an unusually deep stack) is reported as a CanonicalJSONError too.
MAX_NESTING = 512

_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
)
_encode_string: Callable[[str], str] = json.encoder.encode_basestring


def _value_encoder() -> Callable[[Any], str]:
    """``_ENCODER.encode``, without building the C encoder again for every value (``encode``
    does, and ``canonical_json_members`` encodes each member on its own). No circular check:
    ``_normalise`` refuses nesting deeper than ``MAX_NESTING`` before anything is encoded."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _ENCODER.encode
    chunks = make(None, _ENCODER.default, _encode_string, None, ":", ",", True, False, False)

    def encode(value: Any) -> str:
        if type(value) is str:
            return _encode_string(value)
        return "".join(chunks(value, 0))

    return encode


_encode_value = _value_encoder()


# Modes of the walk (``strict`` below is one of these; falsy means lax).
_LAX = 0
_STRICT = 1
_STRICT_NO_FLOATS = 2


class _Problem(Exception):
    """Raised inside the walk; each container on the way out adds its step to ``path``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.steps: list[str] = []

    def path(self) -> str:
        return "".join(reversed(self.steps)).lstrip(".")


def _where(path: str) -> str:
    if len(path) > 80:
        return path[:80] + "..."
    return path or "value"


def _is_plain_leaf(value: Any, strict: int) -> bool:
    """Leaves that need no work: checked inline so that most values cost no call."""
    t = type(value)
    return t is str or t is bool or value is None or (t is int and not strict)


def _normalise(value: Any, strict: int, depth: int) -> Any:
    """Return ``value`` with integral floats as ints (strict); raise ``_Problem`` on what
    canonical JSON forbids. The path of a problem is only built on the way out of an error."""
    # Exact type checks: bool is a subclass of int and must pass through untouched.
    t = type(value)
    if t is str or value is None or t is bool:
        return value
    if t is int:
        if strict and not MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise _Problem(f"integer {value} out of range")
        return value
    if t is float:
        if not math.isfinite(value):
            raise _Problem(f"{value} is not a JSON number")
        if not strict:
            return value
        if strict == _STRICT_NO_FLOATS:
            raise _Problem("floats are not allowed")
        if value.is_integer():
            return _normalise(int(value), strict, depth)
        raise _Problem("floats are not allowed")
    if t is not dict and t is not list and t is not tuple:
        if isinstance(value, Mapping):
            return _normalise(dict(value), strict, depth)
        raise _Problem(f"{t.__name__} is not a JSON type")
    if depth >= MAX_NESTING:
        raise _Problem(f"nested deeper than {MAX_NESTING} levels")
    # Containers are walked here, in plain loops: one stack frame per nesting level (a helper
    # function or a comprehension is a frame of its own in Python 3.11, and would halve the
    # nesting the recursion limit allows).
    if t is dict:
        out: dict[str, Any] | None = None
        for k, v in value.items():
            if type(k) is not str:
                raise _Problem(f"object key {k!r} is not a string")
            if _is_plain_leaf(v, strict):
                continue
            try:
                nv = _normalise(v, strict, depth + 1)
            except _Problem as problem:
                problem.steps.append(f".{k}")
                raise
            if nv is not v:
                if out is None:
                    out = dict(value)
                out[k] = nv
        return value if out is None else out
    items = []
    for i, v in enumerate(value):
        if not _is_plain_leaf(v, strict):
            try:
                v = _normalise(v, strict, depth + 1)
            except _Problem as problem:
                problem.steps.append(f"[{i}]")
                raise
        items.append(v)
    return items


def _surrogate_path(value: Any, path: str) -> str:
    """Where the first string that is not valid UTF-8 (a lone surrogate) is; error path only."""
    if isinstance(value, str):
        return path if _has_surrogate(value) else ""
    children: list[tuple[str, Any]] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str) and _has_surrogate(k):
                return path
            children.append((f"{path}.{k}" if path else str(k), v))
    elif isinstance(value, list | tuple):
        children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    for child_path, child in children:
        found = _surrogate_path(child, child_path)
        if found:
            return found
    return ""


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def canonical_json(value: Any, *, strict: bool = True, integral_floats: bool = True) -> bytes:
    """Encode ``value`` as canonical JSON bytes, raising ``CanonicalJSONError`` if it cannot be.

    ``integral_floats=False`` (strict only) refuses every float, integral or not: the event
    checks of room versions 6+ use it, so that a float never reaches a hash whose bytes would
    depend on the mode (``2.0`` is ``2`` strict, ``2.0`` lax).
    """
    return _encoded(value, strict, integral_floats, _encode_whole)


def canonical_json_members(
    value: Mapping[str, Any], *, strict: bool = True, integral_floats: bool = True
) -> tuple[bytes, dict[str, str]]:
    """``canonical_json(value)`` of an object, and each of its members as ``"key":value`` text.

    Canonical JSON of the object without some members, or with some replaced, is then the
    sorted join of the others (``join_members``): no second walk over the values. Raises as
    ``canonical_json`` does.
    """
    return _encoded(value, strict, integral_floats, _encode_members)


def join_members(members: Mapping[str, str]) -> bytes:
    """The canonical JSON object made of ``members`` (from ``canonical_json_members``)."""
    return ("{" + ",".join([members[k] for k in sorted(members)]) + "}").encode("utf-8")


def member(key: str, value: Any) -> str:
    """One ``"key":value`` member, ``value`` encoded lax (``canonical_json(strict=False)``)."""
    return _encode_string(key) + ":" + canonical_json(value, strict=False).decode("utf-8")


def _encode_whole(normalised: Any) -> bytes:
    return _encode_value(normalised).encode("utf-8")


def _encode_members(normalised: Any) -> tuple[bytes, dict[str, str]]:
    key, value = _encode_string, _encode_value
    members = {k: key(k) + ":" + value(v) for k, v in normalised.items()}
    # Raises UnicodeEncodeError for a lone surrogate, as the whole encoding would.
    return join_members(members), members


def _encoded(value: Any, strict: bool, integral_floats: bool, encode: Callable[[Any], _T]) -> _T:
    try:
        mode = (_STRICT if integral_floats else _STRICT_NO_FLOATS) if strict else _LAX
        return encode(_normalise(value, mode, 0))
    except _Problem as problem:
        path = problem.path()
        raise CanonicalJSONError(f"{_where(path)}: {problem.message}", field=path) from None
    except UnicodeEncodeError:
        path = _surrogate_path(value, "")
        raise CanonicalJSONError(f"{_where(path)}: contains a lone surrogate", field=path) from None
    except (ValueError, RecursionError) as exc:
        # ValueError: lax-mode integers beyond the interpreter's int-to-text digit limit.
        raise CanonicalJSONError(f"value cannot be encoded: {exc}") from None
