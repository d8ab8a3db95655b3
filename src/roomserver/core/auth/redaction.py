"""Whether a redaction may be applied to its target (spec: client-server API, "Redactions",
and the v1-v2 ``m.room.redaction`` auth rule).

A redaction event is authorised like any other event; removing its target's content is decided
once both are known. v3+: the redacting user has the redact level, or is on the same server as
the target's sender. v1-v2: the redact level, or the two event IDs are of the same server.
"""

from __future__ import annotations

from collections.abc import Mapping

from roomserver.core.auth.numbering import rule_numbers
from roomserver.core.auth.power import (
    CREATE_KEY,
    POWER_LEVELS_KEY,
    StateKey,
    named_level,
    user_power_level,
)
from roomserver.core.errors import Rejected
from roomserver.core.identifiers import server_name_of
from roomserver.core.pdu import Event


def check_redaction_allowed(
    redaction: Event, target: Event, state: Mapping[StateKey, Event]
) -> None:
    """Raise ``Rejected`` unless ``redaction`` may redact ``target`` now.

    ``state`` supplies the power levels (and, for v12 creators, the create event): the state
    at the redaction, or the current state. A ``Rejected`` here only means "do not apply (yet)";
    the redaction event itself stays accepted.
    """
    rules = redaction.rules
    if redaction.redacts != target.event_id:
        raise Rejected("m.room.redaction: does not redact this event (redaction handling)")
    if target.room_id != redaction.room_id:
        raise Rejected("m.room.redaction: target is in another room (redaction handling)")
    power_levels = state.get(POWER_LEVELS_KEY)
    level = user_power_level(
        redaction.sender, power_levels=power_levels, create=state.get(CREATE_KEY), rules=rules
    )
    if level >= named_level(power_levels, "redact", rules):
        return
    if rules.redaction_auth_rule:
        if server_name_of(target.event_id) == server_name_of(redaction.event_id):
            return
        number = rule_numbers(rules)["redaction.otherwise"]
        raise Rejected(
            "m.room.redaction: needs the redact level or an event of the same server"
            f" (rule {number})"
        )
    if server_name_of(target.sender) == server_name_of(redaction.sender):
        return
    raise Rejected(
        "m.room.redaction: needs the redact level or a target sent from the same server"
        " (redaction handling)"
    )
