"""The error categories of the pure core.

Each category maps to one handling at the bus edge (see ``roomserver.input``):

* ``InvalidEvent``: the input is not a well-formed event; drop it with a reason.
* ``InvalidSignature``: hashes or signatures do not check out (a kind of ``InvalidEvent``).
* ``Rejected``: a well-formed event that fails authorization; store it as rejected.
* ``SoftFailed``: allowed by its auth events and the state before it, but not by current state.
* ``UnknownRoomVersion``: a room version this server does not implement.
"""

from __future__ import annotations


class CoreError(Exception):
    """Base of every error the pure core raises."""


class UnknownRoomVersion(CoreError, ValueError):
    """A room version identifier this server does not implement."""

    def __init__(self, version_id: object) -> None:
        super().__init__(f"unknown room version {version_id!r}")
        self.version_id = version_id


class InvalidEvent(CoreError, ValueError):
    """The input is not a valid event for its room version. The message names the field."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class InvalidSignature(InvalidEvent):
    """A content hash, signature or signing key does not check out."""


class CanonicalJSONError(InvalidEvent):
    """A value cannot be encoded as canonical JSON (floats, out-of-range integers, ...)."""


class Rejected(CoreError):
    """The event fails the authorization rules. The message names the rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SoftFailed(CoreError):
    """The event passes its auth events and state before, but not the room's current state."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
