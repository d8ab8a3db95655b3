"""Per-destination exponential backoff: a dead server is not hammered.

After ``n`` consecutive failures a destination is not contacted for
``min(initial * 2**(n-1), maximum)`` seconds; a success forgets its failures. Only transport
failures count (timeouts, connection errors, 5xx): a 404 or a bad event is an answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from roomserver.ports import backoff_delay


@dataclass(slots=True)
class _State:
    failures: int
    retry_at: float


class Backoff:
    """Tracks failures per destination. ``clock`` is a monotonic clock in seconds."""

    def __init__(
        self,
        *,
        initial: float = 1.0,
        maximum: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self._clock = clock
        self._states: dict[str, _State] = {}

    def retry_at(self, destination: str) -> float | None:
        """When ``destination`` may be contacted again, or ``None`` if it may be now."""
        state = self._states.get(destination)
        if state is None or state.retry_at <= self._clock():
            return None
        return state.retry_at

    def failures(self, destination: str) -> int:
        state = self._states.get(destination)
        return 0 if state is None else state.failures

    def record_failure(self, destination: str) -> None:
        state = self._states.get(destination)
        failures = 1 if state is None else state.failures + 1
        delay = backoff_delay(failures, initial=self.initial, maximum=self.maximum)
        self._states[destination] = _State(failures, self._clock() + delay)

    def record_success(self, destination: str) -> None:
        self._states.pop(destination, None)
