"""Signing and verifying JSON and events.

Spec: appendix "Signing JSON" and "Checking for a signature"; server-server API "Signing events",
"Validating hashes and signatures on received events" and "Signing key validity period".

Received events are checked in two separate steps, in this order:

1. ``verify_event``: the signatures, over the event's *redacted* form, of every server that must
   have signed it (``required_signers``). A failure raises ``InvalidSignature``: drop the event.
2. ``check_content_hash``: whether ``hashes.sha256`` matches the full event. ``False`` is not an
   error: the event must then be used in its redacted form (``redaction.redact``), as the spec
   says, and processing continues with that.

Verification keys are given, never fetched: the key ring (outside the core) fetches them for the
servers ``required_signers`` names.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from roomserver.core.base64 import decode_base64, encode_base64
from roomserver.core.canonical_json import canonical_json
from roomserver.core.errors import CanonicalJSONError, InvalidSignature
from roomserver.core.hashes import content_hash_bytes
from roomserver.core.identifiers import is_valid_user_id, server_name_of
from roomserver.core.pdu import Event
from roomserver.core.redaction import redacted_view
from roomserver.core.room_versions import EventIdFormat, RoomVersion, room_version

ED25519_PREFIX = "ed25519:"
# Spec (signing key validity, room version 5+): a key's validity counts at most 7 days ahead.
KEY_VALIDITY_CAP_MS = 7 * 24 * 60 * 60 * 1000

# --------------------------------------------------------------------------------------------
# Signing


def sign_json(
    value: Mapping[str, Any], *, server_name: str, signing_key: SigningKey, key_id: str
) -> dict[str, Any]:
    """Return a copy of ``value`` with this server's signature added under ``signatures``.

    Spec appendix "Signing JSON": ``signatures`` and ``unsigned`` are not covered; signatures
    already present (ours under other key IDs, other servers') are kept.
    """
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
    """Add the content hash and this server's signature to ``pdu`` (spec: signing events).

    Returns a new PDU: the content hash of the full event goes in ``hashes.sha256``; the
    signature covers the redacted event (so a redacted copy still verifies). From room version 3
    on, a stray ``event_id`` is removed: such PDUs carry none.
    """
    rules = _room_version(room_version)
    out = copy.deepcopy(dict(pdu))
    if rules.event_id_format is not EventIdFormat.SERVER_ASSIGNED:
        out.pop("event_id", None)
    strict = rules.strict_canonical_json
    out["hashes"] = {"sha256": encode_base64(content_hash_bytes(out, strict=strict))}
    signature = signing_key.sign(_event_signed_bytes(out, rules, error=CanonicalJSONError))
    signatures = out.get("signatures")
    signatures = dict(signatures) if isinstance(signatures, Mapping) else {}
    server_sigs = dict(signatures.get(server_name, {}))
    server_sigs[key_id] = encode_base64(signature.signature)
    signatures[server_name] = server_sigs
    out["signatures"] = signatures
    return out


# --------------------------------------------------------------------------------------------
# Checking signatures


def _event_signed_bytes(
    pdu: Mapping[str, Any], rules: RoomVersion, *, error: type[Exception] = InvalidSignature
) -> bytes:
    """The bytes an event's signatures cover: its redacted form, canonical, minus signatures."""
    redacted = redacted_view(pdu, rules)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    if rules.event_id_format is not EventIdFormat.SERVER_ASSIGNED:
        # Room version 3+: a stray event_id is not part of the event (see hashes.reference_hash).
        redacted.pop("event_id", None)
    strict = rules.strict_canonical_json
    try:
        return canonical_json(redacted, strict=strict, integral_floats=not strict)
    except CanonicalJSONError as exc:
        raise error(f"event cannot be encoded for signing: {exc.reason}") from None


def _short(text: str) -> str:
    """Server names and key IDs come from the event: keep error messages short."""
    return text if len(text) <= 64 else text[:61] + "..."


def _usable_key(
    key_id: str,
    keys: Mapping[str, VerifyKey],
    valid_until_ts: int | None,
    event_ts: int | None,
    now_ms: int | None,
) -> tuple[VerifyKey | None, str]:
    """The verify key to check ``key_id``'s signature with, or ``None`` and why it is skipped."""
    if not key_id.startswith(ED25519_PREFIX):
        return None, f"{_short(key_id)}: unknown algorithm"
    key = keys.get(key_id)
    if key is None:
        return None, f"{_short(key_id)}: no known key"
    if valid_until_ts is not None and event_ts is not None:
        effective = valid_until_ts
        if now_ms is not None:
            effective = min(valid_until_ts, now_ms + KEY_VALIDITY_CAP_MS)
        if effective < event_ts:
            return None, f"{key_id}: key valid until {effective}, before the event's timestamp"
    return key, ""


def _check_server_signatures(
    signatures: Mapping[str, Any],
    server_name: str,
    why: str,
    signed_bytes: bytes,
    keys: Mapping[str, VerifyKey],
    *,
    validity: Mapping[str, int] | None = None,
    event_ts: int | None = None,
    now_ms: int | None = None,
) -> None:
    """Spec "Checking for a signature": every usable key of ``server_name`` verifies, >= 1 does.

    Signatures under unknown algorithms, unknown key IDs or (when ``validity`` is given) keys
    that expired before ``event_ts`` are skipped. A signature under a usable key that does not
    verify fails the check, whatever the others say.
    """
    server_sigs = signatures.get(server_name)
    if not isinstance(server_sigs, Mapping) or not server_sigs:
        raise InvalidSignature(
            f"signatures: missing a signature from {_short(server_name)} ({why})",
            field="signatures",
        )
    skipped: list[str] = []
    verified = 0
    for key_id in sorted(k for k in server_sigs if isinstance(k, str)):
        valid_until = validity.get(key_id) if validity is not None else None
        key, skip_reason = _usable_key(key_id, keys, valid_until, event_ts, now_ms)
        if key is None:
            skipped.append(skip_reason)
            continue
        _verify_one(server_name, key_id, server_sigs[key_id], signed_bytes, key)
        verified += 1
    if verified == 0:
        # A flood of junk key IDs must not make a flood of a message.
        detail = "; ".join(skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
        raise InvalidSignature(
            f"signatures: no verifiable signature from {_short(server_name)} ({why}): {detail}",
            field="signatures",
        )


def _verify_one(
    server_name: str, key_id: str, signature_text: object, signed_bytes: bytes, key: VerifyKey
) -> None:
    where = f"signatures.{_short(server_name)}.{_short(key_id)}"
    if not isinstance(signature_text, str):
        raise InvalidSignature(f"{where}: not a string", field=where)
    try:
        signature = decode_base64(signature_text)
    except ValueError:
        raise InvalidSignature(f"{where}: not valid base64", field=where) from None
    try:
        key.verify(signed_bytes, signature)
    except (BadSignatureError, ValueError, TypeError):
        raise InvalidSignature(f"{where}: signature does not verify", field=where) from None


def verify_json(
    value: Mapping[str, Any], *, server_name: str, verify_keys: Mapping[str, VerifyKey]
) -> None:
    """Check that ``server_name`` signed ``value`` (JSON that is not an event).

    For server key responses, X-Matrix requests, third-party invite tokens. ``verify_keys`` maps
    key ID -> key for that server. Raises ``InvalidSignature`` with the reason.
    """
    if not isinstance(value, Mapping):
        raise InvalidSignature("value: must be a JSON object")
    signatures = value.get("signatures")
    if not isinstance(signatures, Mapping):
        raise InvalidSignature("signatures: missing or not an object")
    stripped = {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}
    try:
        # Lax: verification only has to reproduce the signer's bytes, never produce JSON.
        signed_bytes = canonical_json(stripped, strict=False)
    except CanonicalJSONError as exc:
        raise InvalidSignature(f"value cannot be encoded for signing: {exc.reason}") from None
    _check_server_signatures(signatures, server_name, "the signer", signed_bytes, verify_keys)


# --------------------------------------------------------------------------------------------
# Events


def _required_signers_with_reasons(
    pdu: Mapping[str, Any], rules: RoomVersion, event_id: str | None
) -> dict[str, str]:
    """server -> why it must have signed (spec: "Validating hashes and signatures", auth rules)."""
    required: dict[str, str] = {}
    sender = pdu.get("sender")
    content = pdu.get("content")
    content = content if isinstance(content, Mapping) else {}
    is_member = pdu.get("type") == "m.room.member"
    membership = content.get("membership")
    # A third-party invite may be sent by a server other than the sender's: its sender must
    # match the invite token's, which the authorization rules check (with its own signature).
    third_party_invite = is_member and membership == "invite" and "third_party_invite" in content
    if not third_party_invite:
        if not isinstance(sender, str) or not is_valid_user_id(sender):
            raise InvalidSignature("sender: missing or not a user ID", field="sender")
        required[server_name_of(sender)] = "the sender's server"
    if rules.event_id_server_signature:
        if event_id is None:
            event_id = pdu.get("event_id") if isinstance(pdu.get("event_id"), str) else None
        if event_id is not None and ":" in event_id:
            required.setdefault(server_name_of(event_id), "the event ID's server")
    if rules.restricted_joins and is_member and membership == "join":
        authoriser = content.get("join_authorised_via_users_server")
        # An authoriser that is not a user ID is left to the authorization rules to reject.
        if isinstance(authoriser, str) and is_valid_user_id(authoriser):
            required.setdefault(server_name_of(authoriser), "the restricted join's authoriser")
    return required


def required_signers(event: Event | Mapping[str, Any], rules: RoomVersion) -> set[str]:
    """The servers whose signatures ``verify_event`` requires on ``event``.

    The sender's server (not for third-party invites); in room versions 1-2 also the event ID's
    server; from room version 8, on restricted joins, the server of
    ``content.join_authorised_via_users_server``. The key ring fetches keys for these servers.
    """
    if isinstance(event, Event):
        return set(_required_signers_with_reasons(event.pdu, rules, event.event_id))
    return set(_required_signers_with_reasons(event, rules, None))


def verify_event(
    pdu: Mapping[str, Any] | Event,
    *,
    room_version: str,
    verify_keys: Mapping[str, Mapping[str, VerifyKey]],
    now_ms: int | None = None,
    key_validity: Mapping[str, Mapping[str, int]] | None = None,
    signed_bytes: bytes | None = None,
) -> None:
    """Check the signatures on a received event; raise ``InvalidSignature`` if they fail.

    ``pdu`` is the event's JSON (or a parsed ``Event``). ``verify_keys`` maps server name -> key
    ID -> key. The event is redacted first and the signatures checked on that form (spec:
    server-server API, "Validating hashes and signatures on received events"), so this works on
    full and redacted copies alike; the content hash is ``check_content_hash``'s business. Each
    server of ``required_signers`` must have at least one signature under a known ``ed25519``
    key, and every signature of it under a known key must verify; signatures under unknown key
    IDs or algorithms are skipped.

    Room versions 5+: ``key_validity`` (server -> key ID -> ``valid_until_ts``, or an old key's
    ``expired_ts``) makes keys that expired before the event's ``origin_server_ts`` unusable;
    with ``now_ms``, a key's validity counts at most 7 days past now. Keys without an entry are
    not limited. Room versions 1-4 ignore ``key_validity``, as the spec requires.

    ``signed_bytes``: what the signatures sign (the redacted event as canonical JSON, without
    ``signatures`` and ``unsigned``), when the caller has it already (``Event.signed_bytes``
    sent to another process); computed from ``pdu`` otherwise.
    """
    rules = _room_version(room_version)
    event_id: str | None = None
    if isinstance(pdu, Event):
        if pdu.rules is rules and signed_bytes is None:
            signed_bytes = pdu.signed_bytes  # computed for the event ID already
        event_id, pdu = pdu.event_id, pdu.pdu
    if not isinstance(pdu, Mapping):
        raise InvalidSignature("event: must be a JSON object")
    signatures = pdu.get("signatures")
    if not isinstance(signatures, Mapping):
        raise InvalidSignature("signatures: missing or not an object", field="signatures")
    required = _required_signers_with_reasons(pdu, rules, event_id)
    if not required:
        return
    if signed_bytes is None:
        signed_bytes = _event_signed_bytes(pdu, rules)
    # Room versions 1-4: valid_until_ts must be ignored (spec: signing key validity period).
    validity = key_validity if rules.enforce_key_validity else None
    event_ts: int | None = None
    if validity is not None:
        ts = pdu.get("origin_server_ts")
        if type(ts) is not int:
            raise InvalidSignature("origin_server_ts: must be an integer", field="origin_server_ts")
        event_ts = ts
    for server_name in sorted(required):
        _check_server_signatures(
            signatures,
            server_name,
            required[server_name],
            signed_bytes,
            verify_keys.get(server_name, {}),
            validity=validity.get(server_name) if validity is not None else None,
            event_ts=event_ts,
            now_ms=now_ms,
        )


def check_content_hash(event: Event | Mapping[str, Any]) -> bool:
    """Whether the event's ``hashes.sha256`` matches its content (spec: checking content hashes).

    ``False`` does not make the event invalid: it must be used in its redacted form from then
    on (``redaction.redact``), stored and processed like any other. Pass ``Event.pdu`` (or the
    ``Event``): for room version 3+ it has no stray ``event_id``, which would change the hash.
    """
    known = event.content_hash if isinstance(event, Event) else None
    pdu = event.pdu if isinstance(event, Event) else event
    hashes = pdu.get("hashes")
    if not isinstance(hashes, Mapping):
        return False
    expected = hashes.get("sha256")
    if not isinstance(expected, str):
        return False
    try:
        expected_digest = decode_base64(expected)
        actual_digest = known if known is not None else content_hash_bytes(pdu)
    except (ValueError, CanonicalJSONError):
        return False
    return expected_digest == actual_digest


_room_version = room_version
