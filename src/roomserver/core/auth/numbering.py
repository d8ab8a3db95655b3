"""Rule numbers of the authorization rules, per room version.

The spec numbers its rules differently in different room versions (v12 inserts the "room ID is
a create event" rule, v1-v5 have the ``m.room.aliases`` rule, v8 adds the authorising-server
signature rule, ...). Rejection messages cite the number the rule has in the event's own room
version, so the numbering is computed here from the version's flags and looked up only when an
event is rejected: the allow path never touches it.
"""

from __future__ import annotations

import functools

from roomserver.core.errors import Rejected
from roomserver.core.room_versions import RoomVersion, room_version


def _member_numbers(member: int, rules: RoomVersion) -> dict[str, str]:
    m = str(member)
    out = {"member.malformed": f"{m}.1"}
    sub = 2
    if rules.restricted_joins:
        out["member.authorising_signature"] = f"{m}.2"
        sub = 3
    join = f"{m}.{sub}"
    out.update(
        {
            "join.initial_creator": f"{join}.1",
            "join.sender_not_target": f"{join}.2",
            "join.banned": f"{join}.3",
            "join.invite_rule": f"{join}.4",
        }
    )
    step = 5
    if rules.restricted_joins:
        out["join.restricted_member"] = f"{join}.5.1"
        out["join.restricted_authoriser"] = f"{join}.5.2"
        step = 6
    out["join.public"] = f"{join}.{step}"
    out["join.otherwise"] = f"{join}.{step + 1}"
    invite = f"{m}.{sub + 1}"
    for i, name in enumerate(
        (
            "target_banned",
            "no_signed",
            "signed_fields",
            "mxid_mismatch",
            "no_invite_event",
            "sender_mismatch",
            "signature",
            "otherwise",
        ),
        start=1,
    ):
        out[f"invite.third_party.{name}"] = f"{invite}.1.{i}"
    out["invite.sender_not_joined"] = f"{invite}.2"
    out["invite.target_joined_or_banned"] = f"{invite}.3"
    out["invite.power"] = f"{invite}.4"
    out["invite.otherwise"] = f"{invite}.5"
    leave = f"{m}.{sub + 2}"
    out["leave.self"] = f"{leave}.1"
    out["leave.sender_not_joined"] = f"{leave}.2"
    out["leave.unban_power"] = f"{leave}.3"
    out["leave.kick_power"] = f"{leave}.4"
    out["leave.otherwise"] = f"{leave}.5"
    ban = f"{m}.{sub + 3}"
    out["ban.sender_not_joined"] = f"{ban}.1"
    out["ban.power"] = f"{ban}.2"
    out["ban.otherwise"] = f"{ban}.3"
    nxt = sub + 4
    if rules.knocking:
        knock = f"{m}.{nxt}"
        out["knock.join_rule"] = f"{knock}.1"
        out["knock.sender_not_target"] = f"{knock}.2"
        out["knock.membership"] = f"{knock}.3"
        out["knock.otherwise"] = f"{knock}.4"
        nxt += 1
    out["member.unknown"] = f"{m}.{nxt}"
    return out


def _power_levels_numbers(p: int, rules: RoomVersion) -> dict[str, str]:
    names: list[str] = []
    if rules.integer_only_power_levels:
        names += ["pl.top_level_type", "pl.maps_type", "pl.users"]
        if rules.privileged_creators:
            names.append("pl.creators_in_users")
    else:
        names.append("pl.users")
    names += [
        "pl.no_previous",
        "pl.top_level_change",
        "pl.maps_old",
        "pl.maps_new",
        "pl.users_old",
        "pl.users_new",
        "pl.otherwise",
    ]
    return {name: f"{p}.{i}" for i, name in enumerate(names, start=1)}


def rule_numbers(rules: RoomVersion) -> dict[str, str]:
    """Symbolic rule name -> the rule's number in ``rules``' version of the spec."""
    # Cached by identifier: hashing the whole RoomVersion on every rejection is measurable
    # inside state resolution.
    return _rule_numbers_of(rules.identifier)


@functools.cache
def _rule_numbers_of(identifier: str) -> dict[str, str]:
    rules = room_version(identifier)
    out: dict[str, str] = {
        "create.state_key": "1",  # not a numbered rule of the spec: see check_create_event
        "create.prev_events": "1.1",
        "create.room_id": "1.2",
        "create.room_version": "1.3",
    }
    if rules.additional_creators:
        out["create.additional_creators"] = "1.4"
    elif rules.creator_in_content:
        out["create.creator"] = "1.4"
    top = 2
    if rules.room_id_from_create_event:
        out["room_id_is_create"] = "2"
        top = 3
    a = str(top)
    out.update(
        {
            "auth_events.duplicate": f"{a}.1",
            "auth_events.unexpected": f"{a}.2",
            "auth_events.rejected": f"{a}.3",
            "auth_events.same_room": f"{a}.5",
        }
    )
    if rules.create_event_in_auth_events:
        out["auth_events.no_create"] = f"{a}.4"
    top += 1
    out["federate"] = str(top)
    top += 1
    if rules.aliases_rule:
        out["aliases.no_state_key"] = f"{top}.1"
        out["aliases.domain"] = f"{top}.2"
        top += 1
    out.update(_member_numbers(top, rules))
    out["sender_joined"] = str(top + 1)
    out["third_party_invite"] = str(top + 2)
    out["required_power"] = str(top + 3)
    out["state_key_user"] = str(top + 4)
    out.update(_power_levels_numbers(top + 5, rules))
    top += 6
    if rules.redaction_auth_rule:
        out["redaction.otherwise"] = f"{top}.3"
        top += 1
    out["otherwise"] = str(top)
    return out


def reject(rules: RoomVersion, rule: str, message: str) -> Rejected:
    """A ``Rejected`` whose message ends with the rule's number, e.g. ``(rule 4.3.3)``."""
    return Rejected(f"{message} (rule {rule_numbers(rules)[rule]})")
