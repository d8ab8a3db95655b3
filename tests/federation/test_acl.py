"""Server ACL matching (spec §14), as a table."""

from __future__ import annotations

from typing import Any

import pytest

from roomserver.core.acl import acl_predicate, server_allowed, strip_port

ACL: dict[str, Any] = {
    "allow": ["*.example.org", "example.org", "good?.net", "[::1]", "10.0.0.*"],
    "deny": ["bad.example.org", "*.evil.*"],
    "allow_ip_literals": True,
}

CASES: list[tuple[str, dict[str, Any] | None, bool]] = [
    # No ACL: everyone is allowed.
    ("anything.test", None, True),
    # Allow globs, anchored: a substring match is not enough.
    ("example.org", ACL, True),
    ("matrix.example.org", ACL, True),
    ("notexample.org", ACL, False),
    ("example.org.attacker.test", ACL, False),
    # The port is ignored.
    ("matrix.example.org:8448", ACL, True),
    ("example.org:443", ACL, True),
    # Case-insensitive.
    ("MATRIX.Example.ORG", ACL, True),
    # Deny beats allow.
    ("bad.example.org", ACL, False),
    ("BAD.example.org:8448", ACL, False),
    ("x.evil.example.org", ACL, False),
    # ? matches exactly one character.
    ("good1.net", ACL, True),
    ("good.net", ACL, False),
    ("good12.net", ACL, False),
    # Not in allow: denied.
    ("other.test", ACL, False),
    # IP literals, allowed here if a glob allows them.
    ("10.0.0.5", ACL, True),
    ("10.0.0.5:8448", ACL, True),
    ("[::1]", ACL, True),
    ("[::1]:8448", ACL, True),
    ("192.168.0.1", ACL, False),
    # IP literals forbidden outright.
    ("10.0.0.5", {**ACL, "allow_ip_literals": False}, False),
    ("[::1]:8448", {**ACL, "allow_ip_literals": False}, False),
    ("example.org", {**ACL, "allow_ip_literals": False}, True),
    # allow_ip_literals that is not a boolean counts as true.
    ("10.0.0.5", {**ACL, "allow_ip_literals": "no"}, True),
    # Empty or missing allow: nobody, not even the room's own servers.
    ("example.org", {"deny": []}, False),
    ("example.org", {}, False),
    # "*" allows all; malformed lists and entries are ignored.
    ("example.org", {"allow": ["*"]}, True),
    ("example.org", {"allow": "*"}, False),
    ("example.org", {"allow": ["*", 5], "deny": [None, "example.org"]}, False),
    # Regex metacharacters are literal.
    ("exampleXorg", {"allow": ["example.org"]}, False),
    ("a+b.test", {"allow": ["a+b.test"]}, True),
]


@pytest.mark.parametrize(("server", "acl", "allowed"), CASES)
def test_server_allowed(server: str, acl: dict[str, Any] | None, allowed: bool) -> None:
    assert server_allowed(server, acl) is allowed
    assert acl_predicate(acl)(server) is allowed


@pytest.mark.parametrize(
    ("name", "host"),
    [("a.test", "a.test"), ("a.test:80", "a.test"), ("[::1]:80", "[::1]"), ("[::1]", "[::1]")],
)
def test_strip_port(name: str, host: str) -> None:
    assert strip_port(name) == host
