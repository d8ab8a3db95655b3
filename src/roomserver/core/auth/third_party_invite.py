"""Third-party invite signatures (spec: auth rules, ``m.room.member`` invite, last sub-rules).

An invite carrying ``content.third_party_invite`` is allowed when a signature in its ``signed``
block verifies with one of the public keys of the room's ``m.room.third_party_invite`` event.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from roomserver.core.base64 import decode_base64
from roomserver.core.errors import InvalidSignature
from roomserver.core.pdu import Event
from roomserver.core.signatures import verify_json


def _verify_key(encoded: object) -> VerifyKey | None:
    if not isinstance(encoded, str):
        return None
    try:
        raw = decode_base64(encoded)
    except ValueError:
        return None
    if len(raw) != 32:
        return None
    try:
        return VerifyKey(raw)
    except (CryptoError, ValueError, TypeError):
        return None


def invite_public_keys(invite_event: Event) -> Iterator[VerifyKey]:
    """The keys of an ``m.room.third_party_invite`` event: ``public_key``, then ``public_keys``."""
    content = invite_event.content
    key = _verify_key(content.get("public_key"))
    if key is not None:
        yield key
    listed = content.get("public_keys")
    if isinstance(listed, list):
        for entry in listed:
            if isinstance(entry, Mapping):
                key = _verify_key(entry.get("public_key"))
                if key is not None:
                    yield key


def _verify(value: Mapping[str, Any], server_name: str, key_id: str, key: VerifyKey) -> bool:
    try:
        verify_json(value, server_name=server_name, verify_keys={key_id: key})
    except InvalidSignature:
        return False
    return True


def signed_block_verifies(signed: Mapping[str, Any], invite_event: Event) -> bool:
    """Whether any signature in ``signed.signatures`` verifies with any of the event's keys."""
    sigs_by_server = signed.get("signatures")
    if not isinstance(sigs_by_server, Mapping):
        return False
    keys = list(invite_public_keys(invite_event))
    if not keys:
        return False
    for server_name, sigs in sigs_by_server.items():
        if not isinstance(server_name, str) or not isinstance(sigs, Mapping):
            continue
        for key_id in sigs:
            if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
                continue
            for key in keys:
                if _verify(signed, server_name, key_id, key):
                    return True
    return False
