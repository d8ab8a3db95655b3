"""Transient fetch failures are told apart by type (the ``transient`` flag), never by name."""

from __future__ import annotations

import pytest

from roomserver.federation.errors import (
    BackingOff,
    BadResponse,
    KeyFetchError,
    KeysUnobtainable,
    MissingDataTimeout,
    NoServerSucceeded,
    RemoteRejected,
    RemoteTimeout,
    RemoteUnavailable,
    ResponseTooLarge,
)
from roomserver.input.errors import MissingData, is_transient_fetch_error


class _Lookalike(Exception):
    """Named like a federation error but not one: not transient."""


_Lookalike.__name__ = "RemoteTimeout"

CASES: list[tuple[str, BaseException, bool]] = [
    ("remote timeout", RemoteTimeout("slow", destination="a.test"), True),
    ("remote unavailable", RemoteUnavailable("down", destination="a.test"), True),
    ("backing off", BackingOff("a.test", 12.0), True),
    ("missing data timeout", MissingDataTimeout("deadline"), True),
    ("key fetch error", KeyFetchError("no keys", destination="a.test"), True),
    ("bad response", BadResponse("not JSON", destination="a.test"), False),
    ("too large", ResponseTooLarge("a.test", 10), False),
    ("4xx", RemoteRejected("nope", destination="a.test", status=404), False),
    ("keys unobtainable", KeysUnobtainable("a.test", ["ed25519:k"], "gone"), False),
    (
        "one server timed out",
        NoServerSucceeded("x", {"a": BadResponse("b"), "c": RemoteTimeout("t")}),
        True,
    ),
    ("a connection reset", NoServerSucceeded("x", {"a": ConnectionResetError("reset")}), True),
    ("all bad data", NoServerSucceeded("x", {"a": BadResponse("b")}), False),
    ("nobody to ask", NoServerSucceeded("x", {}), False),
    (
        "nested",
        NoServerSucceeded("x", {"a": NoServerSucceeded("y", {"b": RemoteTimeout("t")})}),
        True,
    ),
    ("timeout", TimeoutError(), True),
    ("connection", ConnectionRefusedError(), True),
    ("missing data, transient", MissingData("x", transient=True), True),
    ("missing data, permanent", MissingData("x", transient=False), False),
    ("a bug", ValueError("x"), False),
    ("only the name of a transient error", _Lookalike("x"), False),
]


@pytest.mark.parametrize(("exc", "transient"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_transient_fetch_failures(exc: BaseException, transient: bool) -> None:
    assert is_transient_fetch_error(exc) is transient
