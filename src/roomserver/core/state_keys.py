"""State keys: the ``(event type, state key)`` pair that names one entry of a room's state, and
the well-known entries the rules read. Defined here once; every layer imports them from here."""

from __future__ import annotations

from typing import Final, TypeAlias

StateKey: TypeAlias = tuple[str, str]

CREATE_KEY: Final[StateKey] = ("m.room.create", "")
POWER_LEVELS_KEY: Final[StateKey] = ("m.room.power_levels", "")
JOIN_RULES_KEY: Final[StateKey] = ("m.room.join_rules", "")
HISTORY_VISIBILITY_KEY: Final[StateKey] = ("m.room.history_visibility", "")
SERVER_ACL_KEY: Final[StateKey] = ("m.room.server_acl", "")
MEMBER_TYPE: Final = "m.room.member"


def member_key(user_id: str) -> StateKey:
    """The state key of ``user_id``'s membership."""
    return (MEMBER_TYPE, user_id)
