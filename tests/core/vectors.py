"""Spec appendix test vectors (matrix-spec-notes §15), shared by the core tests."""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey

from roomserver.core.base64 import decode_base64

SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SERVER = "domain"
KEY_ID = "ed25519:1"
PUBLIC_KEY = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"  # derived, not in the spec


def signing_key() -> SigningKey:
    return SigningKey(decode_base64(SEED))


def minimal_event() -> dict[str, Any]:
    return {
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "signatures": {},
        "hashes": {},
        "type": "X",
        "content": {},
        "prev_events": [],
        "auth_events": [],
        "depth": 3,
        "unsigned": {"age_ts": 1000000},
    }


def message_event() -> dict[str, Any]:
    return {
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {},
        "unsigned": {"age_ts": 1000000},
    }


MINIMAL_HASH = "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
MINIMAL_SIG = (
    "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
)
MESSAGE_HASH = "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"
MESSAGE_SIG = (
    "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
)

# Derived regression data (not spec vectors): the same inputs under R11 redaction.
MINIMAL_SIG_R11 = (
    "Jxp+1glFcZM+nnHpY0EkedRR7u0VmKsJYGnQqIvqus3UvL5X/p1y6wSkLhGoTBel6MZ9lrMIzUqrjqFquWJKBw"
)
MESSAGE_SIG_R11 = (
    "4WQB/6LN2OtkUN/+18xUNB/U4RTX1N3EeKBdlCxux08YO8izKDrSRqML1XB8V97IK7AujkNO1xMl7TaBLA4kDw"
)
# Derived reference hashes of the signed events.
MINIMAL_REF_PRE_R11 = "8yif6p8EqgoSten2BLje9ntKm720NyFLWQv9tn8memc"
MINIMAL_REF_R11_STD = "70O/oKlXzFbkfu0KE88USi98DjSWrOELrPj+8tisl8I"
MINIMAL_REF_R11_URL = "70O_oKlXzFbkfu0KE88USi98DjSWrOELrPj-8tisl8I"
MESSAGE_REF_PRE_R11_STD = "oFAil2fHTGY66j9PIsC3hnc+/6r2SQGxCzd1/FUgtOE"
MESSAGE_REF_PRE_R11_URL = "oFAil2fHTGY66j9PIsC3hnc-_6r2SQGxCzd1_FUgtOE"
MESSAGE_REF_R11 = "4Wse3wARkU3vfz3WvvTUUlWan9kETgdNEiY6CTbJGTQ"

ALL_VERSIONS = [str(v) for v in range(1, 13)]
PRE_R11_VERSIONS = [str(v) for v in range(1, 11)]
R11_VERSIONS = ["11", "12"]
