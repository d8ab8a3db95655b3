"""Invites with ``content.third_party_invite``: every sub-rule, signatures included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from nacl.signing import SigningKey

from roomserver.core.base64 import encode_base64
from roomserver.core.pdu import Event
from roomserver.core.signatures import sign_json
from roomserver.testing.builder import RoomBuilder
from tests.core.auth.helpers import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    DAVE,
    Case,
    case_params,
    make_room,
    member,
    run_case,
)

Built = tuple[RoomBuilder, Event]

IDENTITY_KEY = SigningKey(b"\x42" * 32)
OTHER_KEY = SigningKey(b"\x43" * 32)
TOKEN = "abc123"


def _signed(key: SigningKey = IDENTITY_KEY, **fields: Any) -> dict[str, Any]:
    body = {"mxid": DAVE, "token": TOKEN, "sender": ALICE, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    return sign_json(body, server_name="id.example", signing_key=key, key_id="ed25519:0")


def third_party(
    *,
    signed: Any = "default",
    tpi_sender: str = ALICE,
    invite_sender: str = ALICE,
    key_field: str = "public_key",
    url_safe: bool = False,
    target: str = DAVE,
    target_banned: bool = False,
    token_in_state: str = TOKEN,
    inviter_leaves: bool = False,
    tamper: bool = False,
) -> Callable[[str], Built]:
    def build(v: str) -> Built:
        b = make_room(v, users={BOB: 50})
        public = encode_base64(bytes(IDENTITY_KEY.verify_key), url_safe=url_safe)
        if key_field == "public_key":
            tpi_content: dict[str, Any] = {"public_key": public}
        else:
            tpi_content = {
                "public_key": encode_base64(bytes(OTHER_KEY.verify_key)),
                "public_keys": [{"public_key": "!!"}, {"public_key": public}],
            }
        tpi_content.update(display_name="d...@example.com", key_validity_url="https://id/")
        b.send("m.room.third_party_invite", tpi_sender, tpi_content, state_key=token_in_state)
        if target_banned:
            b.member(ALICE, target, "ban")
        if inviter_leaves:
            b.member(invite_sender, invite_sender, "leave")
        block = _signed() if signed == "default" else signed
        if tamper:
            block = {**block, "extra": 1}
        third: dict[str, Any] = {"display_name": "d...@example.com"}
        if block is not None:
            third["signed"] = block
        return b, member(b, invite_sender, target, "invite", third_party_invite=third)

    return build


CASES = [
    Case("valid", ALL_VERSIONS, third_party(), None),
    Case("valid-url-safe-key", ALL_VERSIONS, third_party(url_safe=True), None),
    Case("valid-key-in-public-keys", ALL_VERSIONS, third_party(key_field="public_keys"), None),
    Case("valid-although-inviter-left", ALL_VERSIONS, third_party(inviter_leaves=True), None),
    Case(
        "bad-signature",
        ALL_VERSIONS,
        third_party(signed=_signed(OTHER_KEY)),
        "invite.third_party.signature",
    ),
    Case("tampered", ALL_VERSIONS, third_party(tamper=True), "invite.third_party.signature"),
    Case(
        "unsigned",
        ALL_VERSIONS,
        third_party(signed={"mxid": DAVE, "token": TOKEN}),
        "invite.third_party.signature",
    ),
    Case(
        "garbage-signature",
        ALL_VERSIONS,
        third_party(
            signed={"mxid": DAVE, "token": TOKEN, "signatures": {"id.example": {"ed25519:0": "%"}}}
        ),
        "invite.third_party.signature",
    ),
    Case(
        "target-banned",
        ALL_VERSIONS,
        third_party(target_banned=True),
        "invite.third_party.target_banned",
    ),
    Case("no-signed", ALL_VERSIONS, third_party(signed=None), "invite.third_party.no_signed"),
    Case(
        "signed-not-object",
        ALL_VERSIONS,
        third_party(signed="x"),
        "invite.third_party.no_signed",
    ),
    Case(
        "no-token",
        ALL_VERSIONS,
        third_party(signed=_signed(token=None)),
        "invite.third_party.signed_fields",
    ),
    Case(
        "no-mxid",
        ALL_VERSIONS,
        third_party(signed=_signed(mxid=None)),
        "invite.third_party.signed_fields",
    ),
    Case(
        "mxid-mismatch",
        ALL_VERSIONS,
        third_party(target="@someone:other.org"),
        "invite.third_party.mxid_mismatch",
    ),
    Case(
        "no-invite-event",
        ALL_VERSIONS,
        third_party(token_in_state="different"),
        "invite.third_party.no_invite_event",
    ),
    Case(
        "sender-mismatch",
        ALL_VERSIONS,
        third_party(invite_sender=BOB),
        "invite.third_party.sender_mismatch",
    ),
]


@pytest.mark.parametrize(("case", "version"), case_params(CASES))
def test_third_party_invite(case: Case, version: str) -> None:
    run_case(case, version)
