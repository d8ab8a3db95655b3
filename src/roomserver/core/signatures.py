"""Signing and verifying JSON and events (spec appendix: "Signing JSON", "Signing events").

UNFINISHED: verification (``verify_json``, ``verify_event``) is being completed; signing is done.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from nacl.signing import SigningKey

from roomserver.core.base64 import encode_base64
from roomserver.core.canonical_json import canonical_json
from roomserver.core.hashes import compute_content_hash
from roomserver.core.redaction import redact_with
from roomserver.core.room_versions import room_version


def sign_json(
    value: Mapping[str, Any], *, server_name: str, signing_key: SigningKey, key_id: str
) -> dict[str, Any]:
    """Return a copy of ``value`` with this server's signature added under ``signatures``."""
    out = copy.deepcopy(dict(value))
    unsigned = out.pop("unsigned", None)
    signatures = out.pop("signatures", {})
    signed = signing_key.sign(canonical_json(out)).signature
    server_sigs = dict(signatures.get(server_name, {}))
    server_sigs[key_id] = encode_base64(signed)
    out["signatures"] = {**signatures, server_name: server_sigs}
    if unsigned is not None:
        out["unsigned"] = unsigned
    return out


def sign_event(
    pdu: Mapping[str, Any],
    *,
    server_name: str,
    signing_key: SigningKey,
    key_id: str,
    room_version: str,
) -> dict[str, Any]:
    """Add the content hash and this server's signature to ``pdu`` (spec: signing events)."""
    rules = _room_version(room_version)
    out = copy.deepcopy(dict(pdu))
    out["hashes"] = {"sha256": compute_content_hash(out)}
    redacted = redact_with(out, rules)
    redacted.pop("unsigned", None)
    signed = sign_json(redacted, server_name=server_name, signing_key=signing_key, key_id=key_id)
    out["signatures"] = signed["signatures"]
    return out


_room_version = room_version
