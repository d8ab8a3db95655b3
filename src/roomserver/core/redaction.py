"""Redaction algorithms (spec: "Redactions"), per room version.

``redacted_view`` builds the redacted form without copying the values it keeps (they are shared
with the input): the hashing and signature code only reads it. ``redact_with``/``redact`` return
an independent deep copy, safe to mutate and store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from roomserver.core.room_versions import RedactionAlgorithm, RoomVersion
from roomserver.core.room_versions import room_version as rules_for

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


def top_level_keys_kept(rules: RoomVersion) -> frozenset[str]:
    """The top-level PDU keys that survive redaction under ``rules``."""
    return _TOP_LEVEL_R11 if rules.redaction is _R.R11 else _TOP_LEVEL_R1


def content_keys_kept(event_type: str, rules: RoomVersion) -> frozenset[str] | None:
    """The ``content`` keys of ``event_type`` that survive redaction; ``None`` means all of them.

    Under R11, ``m.room.member`` also keeps ``third_party_invite`` reduced to its ``signed`` key.
    """
    return _CONTENT_KEYS[rules.redaction].get(event_type, frozenset())


def _redacted_content(event_type: object, content: object, rules: RoomVersion) -> dict[str, Any]:
    if type(content) is not dict and not isinstance(content, Mapping):
        return {}
    if type(event_type) is not str and not isinstance(event_type, str):
        return {}
    keys = content_keys_kept(event_type, rules)
    if keys is _ALL_CONTENT:
        return dict(content)
    new_content = {k: v for k, v in content.items() if k in keys}
    if rules.redaction is _R.R11 and event_type == "m.room.member":
        # The spec keeps "the signed key of third_party_invite". An object without ``signed``
        # stays as an empty object, and a value that is not an object is dropped, as Synapse
        # does (ruma agrees on objects): reference hashes depend on it.
        third_party_invite = content.get("third_party_invite")
        if isinstance(third_party_invite, Mapping):
            new_content["third_party_invite"] = (
                {"signed": third_party_invite["signed"]} if "signed" in third_party_invite else {}
            )
    return new_content


def redacted_view(pdu: Mapping[str, Any], rules: RoomVersion) -> dict[str, Any]:
    """The redacted form of ``pdu`` as new top-level and ``content`` dicts sharing the kept values.

    The result always has a ``content`` object (empty when ``pdu`` has none, or a non-object).

    Read-only use (hashing, signature checks): mutating nested values would change ``pdu``.
    """
    return redacted_view_keeping(pdu, rules, top_level_keys_kept(rules))


def redacted_view_keeping(
    pdu: Mapping[str, Any], rules: RoomVersion, keep_top: frozenset[str]
) -> dict[str, Any]:
    """``redacted_view`` keeping only the top-level keys in ``keep_top`` (a subset of
    ``top_level_keys_kept(rules)`` that includes ``content``)."""
    out: dict[str, Any] = {k: v for k, v in pdu.items() if k in keep_top}
    # Always a ``content`` object, even when the PDU has none (as Synapse and
    # gomatrixserverlib do): hashes and signatures of such a PDU cover ``"content": {}``.
    out["content"] = _redacted_content(pdu.get("type"), pdu.get("content"), rules)
    return out


def _copy_json(value: Any) -> Any:
    """A deep copy of JSON data, one stack frame per nesting level (``copy.deepcopy`` takes
    several, and would hit the recursion limit on nesting that canonical JSON accepts)."""
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            out[k] = _copy_json(v)
        return out
    if isinstance(value, list | tuple):
        items = []
        for v in value:
            items.append(_copy_json(v))
        return items
    return value


def redact_with(pdu: Mapping[str, Any], rules: RoomVersion) -> dict[str, Any]:
    """Return the redacted form of ``pdu`` under ``rules`` (a new dict; the input is untouched)."""
    copied: dict[str, Any] = _copy_json(redacted_view(pdu, rules))
    return copied


def redact(pdu: Mapping[str, Any], room_version: str) -> dict[str, Any]:
    """Public form of ``redact_with`` taking a room version identifier."""
    return redact_with(pdu, rules_for(room_version))
