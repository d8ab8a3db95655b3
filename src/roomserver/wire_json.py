"""JSON text of wire messages: what ``json.dumps(value, separators=(",", ":"),
ensure_ascii=False)`` writes, as UTF-8, with less work per message.

Plain values (``plain``) are written by orjson, whose output for them is the same bytes; the
rest (floats, subclasses, non-string keys, other types, deep nesting, integers beyond 64 bits,
lone surrogates) by the standard library's C encoder with the same arguments, built without an
encoder object per call: the same bytes and the same errors as ``json.dumps``.
``tests/test_api_encoder.py`` compares the two.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Mapping
from typing import Any

import orjson

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_basestring = json.encoder.encode_basestring

#: Deeper values go to the standard library's encoder (orjson stops near 255 levels).
_PLAIN_DEPTH = 200


def plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds nothing but dicts with string keys, lists, strings, integers,
    booleans and None (exact types, no subclasses, no floats) within ``_PLAIN_DEPTH`` levels:
    the values orjson writes as the standard library's encoder does (compact, keys in their
    order, the same escapes and integers; it refuses integers beyond 64 bits and lone
    surrogates). Floats are left out: the two write some of them (``1e-07``) and NaN
    otherwise."""
    t = type(value)
    if t is dict:
        if depth > _PLAIN_DEPTH:
            return False
        for k in value:
            if type(k) is not str:
                return False
        values: Any = value.values()
    elif t is list:
        if depth > _PLAIN_DEPTH:
            return False
        values = value
    else:
        return t is str or t is int or t is bool or value is None
    for v in values:
        tv = type(v)
        if tv is str or tv is int or tv is bool or v is None:
            continue
        if (tv is dict or tv is list) and plain(v, depth + 1):
            continue
        return False
    return True


def dumps(value: Mapping[str, Any]) -> bytes:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` as UTF-8 (the same
    bytes, the same errors), except that nesting too deep to encode raises ``ValueError``."""
    if plain(value):
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError:
            pass  # integers beyond 64 bits, lone surrogates: as the standard library says
    try:
        if _c_make_encoder is None:
            return _ENCODER.encode(value).encode("utf-8")
        chunks = _c_make_encoder(
            {}, _ENCODER.default, _encode_basestring, None, ":", ",", False, False, True
        )(value, 0)
        return "".join(chunks).encode("utf-8")
    except RecursionError:  # a hostile event nested thousands deep: say so, as ValueError does
        raise ValueError("event: nested too deeply to encode") from None
