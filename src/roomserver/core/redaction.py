"""Redaction algorithms (spec: "Redactions"), per room version."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from roomserver.core.room_versions import RedactionAlgorithm, RoomVersion, room_version

_TOP_LEVEL_R1 = frozenset(
    {
        "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
        "signatures", "depth", "prev_events", "prev_state", "auth_events", "origin",
        "origin_server_ts", "membership",
    }
)  # fmt: skip
_TOP_LEVEL_R11 = _TOP_LEVEL_R1 - {"origin", "membership", "prev_state"}

_PL_KEYS_R1 = frozenset(
    {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
)

_R = RedactionAlgorithm
_ALL_CONTENT = None  # sentinel in the table: keep the whole content

# (algorithm, event type) -> content keys kept. Types absent from a row keep nothing.
_CONTENT_KEYS: dict[RedactionAlgorithm, dict[str, frozenset[str] | None]] = {}
_base: dict[str, frozenset[str] | None] = {
    "m.room.member": frozenset({"membership"}),
    "m.room.create": frozenset({"creator"}),
    "m.room.join_rules": frozenset({"join_rule"}),
    "m.room.power_levels": _PL_KEYS_R1,
    "m.room.aliases": frozenset({"aliases"}),
    "m.room.history_visibility": frozenset({"history_visibility"}),
}
_CONTENT_KEYS[_R.R1] = _base
_r6 = {k: v for k, v in _base.items() if k != "m.room.aliases"}
_CONTENT_KEYS[_R.R6] = _r6
_r8 = {**_r6, "m.room.join_rules": frozenset({"join_rule", "allow"})}
_CONTENT_KEYS[_R.R8] = _r8
_r9 = {**_r8, "m.room.member": frozenset({"membership", "join_authorised_via_users_server"})}
_CONTENT_KEYS[_R.R9] = _r9
_CONTENT_KEYS[_R.R11] = {
    **_r9,
    # third_party_invite is special-cased below: only its "signed" sub-key survives.
    "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
    "m.room.create": _ALL_CONTENT,
    "m.room.power_levels": _PL_KEYS_R1 | {"invite"},
    "m.room.redaction": frozenset({"redacts"}),
}


def redact_with(pdu: Mapping[str, Any], rules: RoomVersion) -> dict[str, Any]:
    """Return the redacted form of ``pdu`` under ``rules`` (a new dict; the input is untouched)."""
    keep_top = _TOP_LEVEL_R11 if rules.redaction is _R.R11 else _TOP_LEVEL_R1
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in pdu.items() if k in keep_top}
    content = pdu.get("content")
    event_type = pdu.get("type")
    if "content" not in pdu:
        return out
    if not isinstance(content, Mapping) or not isinstance(event_type, str):
        out["content"] = {}
        return out
    table = _CONTENT_KEYS[rules.redaction]
    if event_type not in table:
        out["content"] = {}
        return out
    keys = table[event_type]
    if keys is _ALL_CONTENT:
        out["content"] = copy.deepcopy(dict(content))
        return out
    new_content = {k: copy.deepcopy(v) for k, v in content.items() if k in keys}
    if (
        rules.redaction is _R.R11
        and event_type == "m.room.member"
        and isinstance(content.get("third_party_invite"), Mapping)
        and "signed" in content["third_party_invite"]
    ):
        new_content["third_party_invite"] = {
            "signed": copy.deepcopy(content["third_party_invite"]["signed"])
        }
    out["content"] = new_content
    return out


def redact(pdu: Mapping[str, Any], room_version_id: str) -> dict[str, Any]:
    """Public form of ``redact_with`` taking a room version identifier."""
    return redact_with(pdu, room_version(room_version_id))
