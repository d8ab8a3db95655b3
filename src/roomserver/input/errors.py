"""Error categories of the input pipeline (beyond the core's ``InvalidEvent`` / ``Rejected``).

* ``InputInvalid``: the input cannot be processed as given (unknown room version, wrong room,
  state IDs that are not stored); dropped with a reason, never stored.
* ``MissingData``: events the pipeline needs could not be obtained. ``transient`` says whether
  trying again later may help (a federation timeout) or not (no fetcher configured, every
  server answered without them).

Why an event is rejected is a ``roomserver.core.decide.RejectionKind``, not a string prefix.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from roomserver.api import InputRoomEvent
from roomserver.core.ids import EventId


class InputError(Exception):
    """Base of the input pipeline's own errors."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InputInvalid(InputError):
    """The input is unusable as given; drop it (outcome ``INVALID``)."""


class MissingData(InputError):
    """Needed events could not be obtained."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.transient = transient


@runtime_checkable
class MayBeTransient(Protocol):
    """A failure that says whether trying again later may help (``StorageError``,
    ``MissingData``, the federation layer's ``FederationError``)."""

    transient: bool


def is_transient_fetch_error(exc: BaseException) -> bool:
    """Whether a failure of the ``MissingEventFetcher`` may go away by itself: a timeout or a
    connection error, or an error whose ``transient`` flag says so (``input`` never imports
    the federation layer; its errors carry the flag, ``NoServerSucceeded`` from the errors of
    the servers it tried)."""
    if isinstance(exc, TimeoutError | OSError):
        return True
    return isinstance(exc, MayBeTransient) and exc.transient is True


def event_id_of_failure(exc: BaseException, item: InputRoomEvent) -> EventId | None:
    """The ID of the event whose processing raised ``exc``: the one the pipeline noted on the
    exception (``input_event_id``) when it got that far, else ``item.event_id_hint()``."""
    known = getattr(exc, "input_event_id", None)
    return EventId(known) if isinstance(known, str) else item.event_id_hint()
