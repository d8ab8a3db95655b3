"""Authorization: auth event selection and the authorization rules of room versions 1-12.

Pure and synchronous. Every rejection raises ``roomserver.core.errors.Rejected`` whose message
names the rule, e.g. ``m.room.member: sender is banned (rule 4.3.3)``. See ``docs/auth.md``.
"""

from roomserver.core.auth.auth_events import check_auth_events
from roomserver.core.auth.membership import join_rule_of
from roomserver.core.auth.numbering import rule_numbers
from roomserver.core.auth.power import (
    CREATE_KEY,
    CREATOR_POWER_LEVEL,
    JOIN_RULES_KEY,
    POWER_LEVELS_KEY,
    PowerLevel,
    StateKey,
    creators_of,
    is_creator,
    is_power_event,
    membership_of,
    named_level,
    parse_power_level,
    power_level_of,
    required_power_level,
    sender_power_level,
    user_power_level,
)
from roomserver.core.auth.redaction import check_redaction_allowed
from roomserver.core.auth.rules import check_auth_rules, check_soft_fail
from roomserver.core.auth.selection import auth_types_for, auth_types_for_event, select_auth_events

__all__ = [
    "CREATE_KEY",
    "CREATOR_POWER_LEVEL",
    "JOIN_RULES_KEY",
    "POWER_LEVELS_KEY",
    "PowerLevel",
    "StateKey",
    "auth_types_for",
    "auth_types_for_event",
    "check_auth_events",
    "check_auth_rules",
    "check_redaction_allowed",
    "check_soft_fail",
    "creators_of",
    "is_creator",
    "is_power_event",
    "join_rule_of",
    "membership_of",
    "named_level",
    "parse_power_level",
    "power_level_of",
    "required_power_level",
    "rule_numbers",
    "select_auth_events",
    "sender_power_level",
    "user_power_level",
]
