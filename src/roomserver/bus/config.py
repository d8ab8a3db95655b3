"""Settings of the bus (streams, consumers, workers). Every field is documented in docs/bus.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from roomserver.bus.subjects import check_prefix

#: The longest the input pipeline may spend on one event (fetching missing data included).
MAXIMUM_PROCESSING_TIME = 300.0


@dataclass(frozen=True, slots=True)
class BusConfig:
    """How the bus lays out its streams and runs its room workers. Durations in seconds."""

    #: Prepended to stream and consumer names (``<prefix>InputRoomEvent``).
    prefix: str = ""
    #: Input messages older than this are discarded by the server, processed or not.
    input_max_age: float = 24 * 3600.0
    #: ``interest``: an output is kept until every durable output consumer acked it (it is
    #: dropped at once when no output consumer exists); ``limits``: kept for output_max_age.
    output_retention: Literal["interest", "limits"] = "interest"
    #: Output max age (0: unlimited; bounded by acks under interest retention).
    output_max_age: float = 0.0
    #: Window in which a second output with the same ``Nats-Msg-Id`` is dropped. Covers a
    #: redelivery after a crash (AckWait + restart); older duplicates are stopped by the
    #: input layer's stored "sent" marker.
    duplicate_window: float = 900.0
    #: ``file`` (default) or ``memory`` stream storage.
    storage: Literal["file", "memory"] = "file"
    #: Stream replicas (1 on a single server; 3 on a cluster).
    replicas: int = 1
    #: AckWait of room consumers: the processing bound plus a margin (5 min 10 s).
    ack_wait: float = MAXIMUM_PROCESSING_TIME + 10.0
    #: The bus cancels a handler that runs longer than this and retries the message.
    handler_timeout: float = MAXIMUM_PROCESSING_TIME
    #: While a handler runs longer than this, the worker sends in-progress acks this often.
    progress_interval: float = 60.0
    #: Upper bound on consumers of the input stream (room consumers plus one discovery
    #: consumer per process): the rooms that had input within consumer_inactive_threshold.
    #: Set on the stream explicitly (nats-server 2.15 otherwise applies a default of 1000).
    max_room_consumers: int = 1_000_000
    #: A room consumer nobody pulled from for this long is deleted by the server, and with
    #: it the interest in any input still queued for the room: this is the longest outage
    #: of every bus process that loses nothing. It also bounds the number of consumers on
    #: the input stream, and the server's cost per message grows with that number (see
    #: docs/bus.md), hence an hour rather than the input max age.
    consumer_inactive_threshold: float = 3600.0
    #: The discovery consumer outlives a dead process by this much (keeps interest meanwhile).
    discovery_inactive_threshold: float = 300.0
    #: Server-side expiry of one pull request of a room worker.
    pull_expires: float = 5.0
    #: A worker whose room had nothing for this long stops (its consumer stays).
    idle_timeout: float = 10.0
    #: First retry delay after a transient failure; doubles per delivery up to the maximum.
    retry_initial_delay: float = 1.0
    retry_max_delay: float = 60.0
    #: At most this many room workers run at once; further rooms wait their turn (FIFO).
    max_workers: int = 10_000
    #: Announcements the discovery consumer fetches per request.
    discovery_batch: int = 512
    #: How long a publish waits for the stream's ack (a reply lost with a connection).
    publish_timeout: float = 10.0
    #: How long a synchronous submit waits for all replies by default.
    sync_timeout: float = 330.0

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if self.handler_timeout >= self.ack_wait:
            raise ValueError("handler_timeout must be shorter than ack_wait")
        if self.idle_timeout < self.pull_expires:
            raise ValueError("idle_timeout must be at least pull_expires")
        if self.consumer_inactive_threshold <= self.idle_timeout + self.pull_expires:
            raise ValueError("consumer_inactive_threshold must exceed idle_timeout")
        if self.max_workers < 1 or self.discovery_batch < 1:
            raise ValueError("max_workers and discovery_batch must be positive")
        if self.progress_interval <= 0 or self.progress_interval >= self.ack_wait:
            raise ValueError("progress_interval must be positive and below ack_wait")
