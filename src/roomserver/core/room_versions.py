"""Room versions 1 to 12 as data.

Every difference between room versions that the rules need is a named flag on a frozen
``RoomVersion``; each version is built from the one before it with ``dataclasses.replace`` so the
table reads as the spec's changelog. Code asks ``rules.knocking``, never ``version in (...)``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass

from roomserver.core.errors import UnknownRoomVersion


class EventIdFormat(enum.Enum):
    """How an event's ID is formed (spec: room versions, "Event IDs")."""

    SERVER_ASSIGNED = "server_assigned"  # v1-v2: "$opaque:domain", carried in the PDU
    BASE64 = "base64"  # v3: "$" + standard unpadded base64 of the reference hash
    URL_SAFE_BASE64 = "url_safe_base64"  # v4+: "$" + URL-safe unpadded base64


class StateResAlgorithm(enum.Enum):
    V1 = "v1"
    V2 = "v2"
    V2_1 = "v2.1"  # room version 12 (MSC4297)


class RedactionAlgorithm(enum.Enum):
    """Which keys survive redaction; named after the first version that introduced each."""

    R1 = "r1"
    R6 = "r6"
    R8 = "r8"
    R9 = "r9"
    R11 = "r11"


class StabilityLevel(enum.Enum):
    STABLE = "stable"
    UNSTABLE = "unstable"


@dataclass(frozen=True, slots=True)
class RoomVersion:
    """The rules of one room version."""

    identifier: str
    stability: StabilityLevel
    event_id_format: EventIdFormat
    state_res: StateResAlgorithm
    redaction: RedactionAlgorithm
    # Auth rules
    aliases_rule: bool  # v1-v5: the m.room.aliases rule exists
    redaction_auth_rule: bool  # v1-v2: m.room.redaction domain rule in the auth rules
    notifications_power_levels: bool  # v6+: PL change checks cover "notifications"
    knocking: bool  # v7+
    restricted_joins: bool  # v8+
    knock_restricted_joins: bool  # v10+
    integer_only_power_levels: bool  # v10+: PL values must be JSON integers
    string_power_levels: bool  # v1-v9: "50" is read as 50
    float_power_levels: bool  # v1-v5: 50.0 is tolerated (no strict canonical JSON)
    creator_in_content: bool  # v1-v10: m.room.create content.creator is required
    redacts_in_content: bool  # v11+: m.room.redaction has content.redacts
    room_id_from_create_event: bool  # v12: room ID is "!" + the create event's ID hash
    create_event_in_auth_events: bool  # v1-v11: events cite the create event
    additional_creators: bool  # v12: creators are sender + content.additional_creators
    privileged_creators: bool  # v12: creators have infinite power, not in PL users
    # Format and signing
    strict_canonical_json: bool  # v6+: integers within +-(2**53 - 1), no floats
    enforce_key_validity: bool  # v5+: signing key valid_until_ts >= origin_server_ts
    event_id_server_signature: bool  # v1-v2: the event ID's server must also sign
    prev_auth_events_with_hashes: bool  # v1-v2: [event_id, {"sha256": ...}] pairs

    @property
    def max_depth(self) -> int:
        """The largest valid ``depth``: the limit a room's depth saturates at (spec: PDU ``depth``:
        "if the room's depth is already at the limit, the depth must be set to the limit")."""
        return 2**53 - 1 if self.strict_canonical_json else 2**63 - 1


_V1 = RoomVersion(
    identifier="1",
    stability=StabilityLevel.STABLE,
    event_id_format=EventIdFormat.SERVER_ASSIGNED,
    state_res=StateResAlgorithm.V1,
    redaction=RedactionAlgorithm.R1,
    aliases_rule=True,
    redaction_auth_rule=True,
    notifications_power_levels=False,
    knocking=False,
    restricted_joins=False,
    knock_restricted_joins=False,
    integer_only_power_levels=False,
    string_power_levels=True,
    float_power_levels=True,
    creator_in_content=True,
    redacts_in_content=False,
    room_id_from_create_event=False,
    create_event_in_auth_events=True,
    additional_creators=False,
    privileged_creators=False,
    strict_canonical_json=False,
    enforce_key_validity=False,
    event_id_server_signature=True,
    prev_auth_events_with_hashes=True,
)
_V2 = dataclasses.replace(_V1, identifier="2", state_res=StateResAlgorithm.V2)
_V3 = dataclasses.replace(
    _V2,
    identifier="3",
    event_id_format=EventIdFormat.BASE64,
    redaction_auth_rule=False,
    event_id_server_signature=False,
    prev_auth_events_with_hashes=False,
)
_V4 = dataclasses.replace(_V3, identifier="4", event_id_format=EventIdFormat.URL_SAFE_BASE64)
_V5 = dataclasses.replace(_V4, identifier="5", enforce_key_validity=True)
_V6 = dataclasses.replace(
    _V5,
    identifier="6",
    redaction=RedactionAlgorithm.R6,
    aliases_rule=False,
    notifications_power_levels=True,
    strict_canonical_json=True,
    float_power_levels=False,
)
_V7 = dataclasses.replace(_V6, identifier="7", knocking=True)
_V8 = dataclasses.replace(
    _V7, identifier="8", redaction=RedactionAlgorithm.R8, restricted_joins=True
)
_V9 = dataclasses.replace(_V8, identifier="9", redaction=RedactionAlgorithm.R9)
_V10 = dataclasses.replace(
    _V9,
    identifier="10",
    knock_restricted_joins=True,
    integer_only_power_levels=True,
    string_power_levels=False,
)
_V11 = dataclasses.replace(
    _V10,
    identifier="11",
    redaction=RedactionAlgorithm.R11,
    creator_in_content=False,
    redacts_in_content=True,
)
_V12 = dataclasses.replace(
    _V11,
    identifier="12",
    state_res=StateResAlgorithm.V2_1,
    room_id_from_create_event=True,
    create_event_in_auth_events=False,
    additional_creators=True,
    privileged_creators=True,
)

KNOWN_ROOM_VERSIONS: Mapping[str, RoomVersion] = {
    v.identifier: v for v in (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10, _V11, _V12)
}

DEFAULT_ROOM_VERSION = "12"  # the default the spec recommends for new rooms


def room_version(version_id: object) -> RoomVersion:
    """Return the rules of ``version_id``, or raise ``UnknownRoomVersion`` (also for what is not
    a string: the parameter is ``object`` so that compiled code raises that, not ``TypeError``)."""
    rules = KNOWN_ROOM_VERSIONS.get(version_id) if isinstance(version_id, str) else None
    if rules is None:
        raise UnknownRoomVersion(version_id)
    return rules
