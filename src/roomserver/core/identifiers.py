"""Identifier grammars (spec appendix: "Identifier Grammar") as cheap predicates.

User IDs follow the historical grammar, which events over federation must accept: any code
points but ``:`` and NUL in the localpart (even an empty one), then ``:`` and a server name.
"""

from __future__ import annotations

import re
from functools import lru_cache

from roomserver.core.ids import ServerName

MAX_ID_BYTES = 255
# Room IDs, senders and server names repeat from event to event: their answers are kept.
_GRAMMAR_CACHE_SIZE = 16_384

_IPV4 = re.compile(r"\A(?:[0-9]{1,3}\.){3}[0-9]{1,3}\Z")
_IPV6 = re.compile(r"\A\[[0-9A-Fa-f:.]{2,45}\]\Z")
_DNS = re.compile(r"\A[A-Za-z0-9.\-]{1,255}\Z")
_PORT = re.compile(r"\A[0-9]{1,5}\Z")
_B64_URL_43 = re.compile(r"\A[A-Za-z0-9_\-]{43}\Z")
_BAD_CODE_POINTS = re.compile("[\x00\ud800-\udfff]")


def _byte_len(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def is_valid_server_name(name: str) -> bool:
    """``host[:port]`` where host is an IPv4 literal, a bracketed IPv6 literal or a DNS name."""
    if not isinstance(name, str) or not name:
        return False
    return _is_valid_server_name(str(name))


@lru_cache(maxsize=_GRAMMAR_CACHE_SIZE)
def _is_valid_server_name(name: str) -> bool:
    host, port = name, None
    if name.startswith("["):
        end = name.find("]")
        if end < 0:
            return False
        host, rest = name[: end + 1], name[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return False
            port = rest[1:]
        if not _IPV6.match(host):
            return False
    else:
        if ":" in name:
            host, port = name.split(":", 1)
        if not (_IPV4.match(host) or _DNS.match(host)):
            return False
    return port is None or bool(_PORT.match(port))


def _has_bad_code_points(value: str) -> bool:
    return _BAD_CODE_POINTS.search(value) is not None


def _is_sigil_id(value: object, sigil: str) -> bool:
    """``<sigil>opaque:server_name``, opaque without ``:``/NUL/surrogates, at most 255 bytes."""
    if not isinstance(value, str) or not value.startswith(sigil):
        return False
    return _is_valid_sigil_id(str(value))


@lru_cache(maxsize=_GRAMMAR_CACHE_SIZE)
def _is_valid_sigil_id(value: str) -> bool:
    """``_is_sigil_id`` for a string that starts with its sigil."""
    if _byte_len(value) > MAX_ID_BYTES:
        return False
    local, sep, server = value[1:].partition(":")
    if not sep or _has_bad_code_points(local):
        return False
    return is_valid_server_name(server)


def is_valid_user_id(value: object) -> bool:
    """Historical user ID grammar (events over federation must accept these)."""
    return _is_sigil_id(value, "@")


def is_valid_room_id(value: object, *, hashed: bool = False) -> bool:
    """``!opaque:domain``; with ``hashed`` (room version 12), ``!`` + 43 URL-safe base64 chars."""
    if hashed:
        return (
            isinstance(value, str) and value.startswith("!") and bool(_B64_URL_43.match(value[1:]))
        )
    return _is_sigil_id(value, "!")


# "$" and 43 base64 characters (v3; v4+), matched whole without slicing the sigil off.
_EVENT_ID_STD = re.compile(r"\$[A-Za-z0-9+/]{43}").fullmatch
_EVENT_ID_URL = re.compile(r"\$[A-Za-z0-9_\-]{43}").fullmatch


def is_valid_event_id(value: object, *, format_name: str) -> bool:
    """Event ID grammar for a room version's ``EventIdFormat`` value."""
    if not isinstance(value, str) or not value.startswith("$"):
        return False
    if format_name == "server_assigned":
        return _is_sigil_id(value, "$")
    if format_name == "base64":
        return _EVENT_ID_STD(value) is not None
    return _EVENT_ID_URL(value) is not None


def server_name_of(identifier: str) -> ServerName:
    """The server name part of a ``@user:server``/``!room:server``/``$event:server`` ID."""
    _, _, server = identifier.partition(":")
    return ServerName(server)
