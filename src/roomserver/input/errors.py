"""Error categories of the input pipeline (beyond the core's ``InvalidEvent`` / ``Rejected``).

* ``InputInvalid``: the input cannot be processed as given (unknown room version, wrong room,
  state IDs that are not stored); dropped with a reason, never stored.
* ``MissingData``: events the pipeline needs could not be obtained. ``transient`` says whether
  trying again later may help (a federation timeout) or not (no fetcher configured, every
  server answered without them).
"""

from __future__ import annotations

from roomserver.state_view import REJECTED_BY_STATE_BEFORE as REJECTED_BY_STATE_BEFORE

MISSING_AUTH = "missing auth events"
MISSING_PREVS = "missing prev events"
"""Prefixes of rejections for lack of data: such events are processed again when resubmitted."""


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


_TRANSIENT_NAMES = frozenset(
    {"RemoteTimeout", "RemoteUnavailable", "BackingOff", "MissingDataTimeout", "KeyFetchError"}
)


def is_transient_fetch_error(exc: BaseException) -> bool:
    """Whether a failure of the ``MissingEventFetcher`` may go away by itself.

    ``input`` never imports the federation layer, so its error classes are recognised by name
    (their MRO) or by a ``transient`` attribute; a ``NoServerSucceeded``-like error carrying
    ``errors`` is transient when any of the per-server errors is.
    """
    if isinstance(exc, TimeoutError | ConnectionError | OSError):
        return True
    flag = getattr(exc, "transient", None)
    if isinstance(flag, bool):
        return flag
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict):
        return any(
            isinstance(e, BaseException) and is_transient_fetch_error(e) for e in errors.values()
        )
    return False
