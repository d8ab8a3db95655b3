"""Server ACLs: may a server take part in a room? (spec: "Server Access Control Lists").

Pure: the caller passes the content of the room's current ``m.room.server_acl`` state event
(``None`` if there is none). The ACL is enforced at the network edge (the origin of incoming
events, the servers asked for data), never by the authorization rules or state resolution.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any


def strip_port(server_name: str) -> str:
    """The host part of ``host[:port]``; IPv6 literals keep their brackets."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[: end + 1] if end >= 0 else server_name
    host, sep, port = server_name.rpartition(":")
    return host if sep and port.isdigit() else server_name


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 literal or a bracketed IPv6 literal."""
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=4096)
def glob_to_regex(glob: str) -> re.Pattern[str]:
    """An anchored, case-insensitive regex for a server glob: ``*`` any run, ``?`` one char."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile(r"\A" + "".join(parts) + r"\Z", re.IGNORECASE | re.DOTALL)


def _globs(content: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = content.get(key)
    if not isinstance(value, list):
        return ()
    return tuple(g for g in value if isinstance(g, str))


def acl_predicate(acl_content: Mapping[str, Any] | None) -> Callable[[str], bool]:
    """``server_allowed`` with the ACL compiled once, for checking many servers."""
    if acl_content is None:
        return lambda _server: True
    allow = [glob_to_regex(g) for g in _globs(acl_content, "allow")]
    deny = [glob_to_regex(g) for g in _globs(acl_content, "deny")]
    allow_ip = acl_content.get("allow_ip_literals", True)
    allow_ip_literals = allow_ip if isinstance(allow_ip, bool) else True

    def allowed(server_name: str) -> bool:
        host = strip_port(server_name)
        # Step 2: IP literals, when the ACL forbids them.
        if not allow_ip_literals and is_ip_literal(host):
            return False
        # Step 3: deny beats allow.
        if any(p.match(host) for p in deny):
            return False
        # Steps 4 and 5: allowed only if some allow glob matches.
        return any(p.match(host) for p in allow)

    return allowed


def server_allowed(server_name: str, acl_content: Mapping[str, Any] | None) -> bool:
    """Spec §14: whether ``server_name`` passes the ACL ``acl_content`` (``None``: no ACL).

    1. No ACL: allowed. 2. An IP literal while ``allow_ip_literals`` is false (default true, also
    when not a boolean): denied. 3. Matches a ``deny`` glob: denied. 4. Matches an ``allow`` glob
    (default ``[]``): allowed. 5. Otherwise denied. The port is removed before matching; globs
    match the whole name, case-insensitively.
    """
    return acl_predicate(acl_content)(server_name)
