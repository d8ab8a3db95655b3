"""The authorization rules state resolution relies on, from ``roomserver.core.auth``.

One import site, so the algorithm modules name the rules the same way everywhere.
"""

from __future__ import annotations

from roomserver.core.auth import (
    auth_types_for_event,
    check_auth_rules,
    is_power_event,
    user_power_level,
)

__all__ = ["auth_types_for_event", "check_auth_rules", "is_power_event", "user_power_level"]
