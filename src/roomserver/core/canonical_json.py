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

Values are checked (and integral floats made integers) by this module's walk, then written by
orjson with sorted keys: its output is the same canonical JSON as the standard library's
encoder writes (compact, keys by code point, raw UTF-8, the same string escapes and integer
text); lax-mode floats are handed to it already written as Python writes them. What orjson does
not take (integers beyond 64 bits, nesting beyond its depth limit, lone surrogates) is written
by the standard library's encoder as before, which also raises the errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson

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


# Modes of the walk (``strict`` below is one of these; 0 or less means lax).
_LAX = 0
_STRICT = 1
_STRICT_NO_FLOATS = 2
#: Lax, for orjson: floats become ``orjson.Fragment`` of their text as the standard library
#: writes it (``float.__repr__``; orjson writes some exponents otherwise: ``1e-7``, not ``1e-07``).
_LAX_FRAGMENTS = -1

_Fragment = orjson.Fragment
_float_text = float.__repr__
_SORT_KEYS = orjson.OPT_SORT_KEYS
_orjson_dumps = orjson.dumps
_OrjsonError = orjson.JSONEncodeError


def _dumps_sorted(normalised: Any) -> bytes:
    """Canonical JSON of a value ``_normalise`` returned (lax mode: ``_LAX_FRAGMENTS``).
    Raises ``orjson.JSONEncodeError`` for what orjson does not write (see the module doc)."""
    return _orjson_dumps(normalised, option=_SORT_KEYS)


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


def _normalise(value: Any, strict: int, depth: int) -> Any:
    """Return ``value`` with integral floats as ints (strict), lax floats as fragments
    (``_LAX_FRAGMENTS``) and tuples as lists; raise ``_Problem`` on what canonical JSON forbids.
    Containers with nothing to change are returned as they are. The path of a problem is only
    built on the way out of an error."""
    # Exact type checks: bool is a subclass of int and must pass through untouched.
    t = type(value)
    if t is str or value is None or t is bool:
        return value
    if t is int:
        if strict > 0 and not MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise _Problem(f"integer {value} out of range")
        return value
    if t is float:
        if not math.isfinite(value):
            raise _Problem(f"{value} is not a JSON number")
        if strict <= 0:
            return value if strict == _LAX else _Fragment(_float_text(value))
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
    # nesting the recursion limit allows). Leaves that need no work are checked inline, so
    # that most values cost no call.
    if t is dict:
        out: dict[str, Any] | None = None
        for k, v in value.items():
            if type(k) is not str:
                raise _Problem(f"object key {k!r} is not a string")
            tv = type(v)
            if tv is str or tv is bool or v is None:
                continue
            if tv is int and (strict <= 0 or MIN_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER):
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
    items: list[Any] | None = None if t is list else []
    for i, v in enumerate(value):
        tv = type(v)
        plain = tv is str or tv is bool or v is None
        if not plain and not (
            tv is int and (strict <= 0 or MIN_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER)
        ):
            try:
                nv = _normalise(v, strict, depth + 1)
            except _Problem as problem:
                problem.steps.append(f"[{i}]")
                raise
            if nv is not v and items is None:
                items = list(value[:i])
            v = nv
        if items is not None:
            items.append(v)
    return value if items is None else items


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
    return _encoded(value, strict, integral_floats, _whole)


def canonical_json_members(
    value: Mapping[str, Any], *, strict: bool = True, integral_floats: bool = True
) -> tuple[bytes, dict[str, str]]:
    """``canonical_json(value)`` of an object, and each of its members as ``"key":value`` text.

    Canonical JSON of the object without some members, or with some replaced, is then the
    sorted join of the others (``join_members``): no second walk over the values. Raises as
    ``canonical_json`` does.
    """
    return _encoded(value, strict, integral_floats, _members)


def join_members(members: Mapping[str, str]) -> bytes:
    """The canonical JSON object made of ``members`` (from ``canonical_json_members``)."""
    return ("{" + ",".join([members[k] for k in sorted(members)]) + "}").encode("utf-8")


def member(key: str, value: Any) -> str:
    """One ``"key":value`` member, ``value`` encoded lax (``canonical_json(strict=False)``)."""
    return _encode_string(key) + ":" + canonical_json(value, strict=False).decode("utf-8")


#: ``canonical_json_parts``: the encoding, the value as checked, and the encoder of its parts.
CanonicalParts = tuple[bytes, dict[str, Any], Callable[[Any], bytes]]


def canonical_json_parts(
    value: Mapping[str, Any], *, strict: bool = True, integral_floats: bool = True
) -> CanonicalParts:
    """``canonical_json(value)`` of an object, with the object as checked and an encoder.

    Canonical JSON of an object built from the checked object's members (some left out,
    ``content`` redacted: views that share its values) is ``encode(view)``, with no second
    check of the values. The checked object may share values with ``value`` (read it only);
    it is in the mode asked for, so ``encode`` of a view agrees with ``canonical_json`` of the
    same view of ``value`` in that mode (and in lax mode too, when the modes agree for
    ``value``). Raises as ``canonical_json`` does.
    """
    return _encoded(value, strict, integral_floats, _parts)


def _whole(encoded: bytes, normalised: Any, encode: Callable[[Any], bytes]) -> bytes:
    return encoded


def _parts(encoded: bytes, normalised: Any, encode: Callable[[Any], bytes]) -> CanonicalParts:
    return encoded, normalised, encode


def _members(
    encoded: bytes, normalised: Any, encode: Callable[[Any], bytes]
) -> tuple[bytes, dict[str, str]]:
    key = _encode_string
    return encoded, {k: key(k) + ":" + encode(v).decode("utf-8") for k, v in normalised.items()}


def _encode_whole(normalised: Any) -> bytes:
    return _encode_value(normalised).encode("utf-8")


def _encoded(
    value: Any,
    strict: bool,
    integral_floats: bool,
    finish: Callable[[bytes, Any, Callable[[Any], bytes]], _T],
) -> _T:
    mode = (_STRICT if integral_floats else _STRICT_NO_FLOATS) if strict else _LAX
    try:
        try:
            normalised = _normalise(value, mode or _LAX_FRAGMENTS, 0)
            return finish(_dumps_sorted(normalised), normalised, _dumps_sorted)
        except _OrjsonError:
            pass  # beyond orjson: the standard library's encoder writes it, or says why not
        normalised = _normalise(value, mode, 0)
        return finish(_encode_whole(normalised), normalised, _encode_whole)
    except _Problem as problem:
        path = problem.path()
        raise CanonicalJSONError(f"{_where(path)}: {problem.message}", field=path) from None
    except UnicodeEncodeError:
        path = _surrogate_path(value, "")
        raise CanonicalJSONError(f"{_where(path)}: contains a lone surrogate", field=path) from None
    except (ValueError, RecursionError) as exc:
        # ValueError: lax-mode integers beyond the interpreter's int-to-text digit limit.
        raise CanonicalJSONError(f"value cannot be encoded: {exc}") from None
