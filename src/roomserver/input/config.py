"""Settings of the input pipeline."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InputConfig:
    """Tunables of ``InputProcessor`` (defaults follow the reference behaviour).

    ``max_missing_processing_s``: the most one event may spend fetching missing auth events,
    missing prev events and state over federation (the stream's AckWait is set a little above).
    ``missing_events_limit``: ``limit`` of one ``get_missing_events`` request.
    ``verify_fetched_events``: check signatures (via the KeyRing) of events the fetcher returns.
    ``concurrent_update_retries``: in-process retries when another writer moved the room on.
    ``outbox_mark_idle_s``: published outputs are marked sent with the room's next write, or
    after the room has been idle this long (storage permitting; see ``OutboxSender``).
    ``verify_threads``: threads that check a message's signatures beside the event loop
    (``input/verify.py``); 0 checks every event inline, at its turn.
    ``verify_processes``: worker processes that check them instead (``verify_workers.py``;
    the threads check while they start); 0: none.
    ``optimistic_reads``: a message of a cached room whose prev events are cached reads
    nothing before deciding; what it assumed is checked when it commits, and the message is
    processed again with real reads if that fails (``processor.InputProcessor._gather``).
    """

    max_missing_processing_s: float = 300.0
    missing_events_limit: int = 20
    verify_fetched_events: bool = True
    concurrent_update_retries: int = 3
    outbox_mark_idle_s: float = 0.5
    verify_threads: int = 2
    verify_processes: int = 0
    optimistic_reads: bool = True
