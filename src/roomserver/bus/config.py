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
    #: AckWait of room consumers: how long a message in flight at a process that died waits
    #: before another process gets it (the failover time). A live process keeps its message
    #: with in-progress acks while the handler runs, so this does not bound the handler. On a
    #: cluster, a consumer whose leader moves (a node died) waits up to one AckWait from the
    #: election before it redelivers, so the worst failover is about two AckWaits plus the
    #: election: kept short for that.
    ack_wait: float = 6.0
    #: The bus cancels a handler that runs longer than this and retries the message (the
    #: input pipeline's own deadline for fetching missing data is a little shorter).
    handler_timeout: float = MAXIMUM_PROCESSING_TIME + 10.0
    #: While a handler runs longer than this, the worker sends in-progress acks every half of
    #: it; at most half of ack_wait. The first one goes at most 1.5 intervals after delivery,
    #: so an event loop may stall for ack_wait minus that before the message is redelivered.
    progress_interval: float = 1.5
    #: Upper bound on consumers of the input stream (room consumers plus the discovery
    #: consumers). Set on the stream explicitly (nats-server 2.15 otherwise applies a
    #: default of 1000).
    max_room_consumers: int = 1_000_000
    #: A room consumer is deleted by its worker once the room has nothing queued; this is the
    #: server-side expiry of one nobody pulls from (every process gone while the room had
    #: input queued): the input max age by default, so queued input outlives any outage the
    #: stream itself survives. 0 means: the input max age.
    consumer_inactive_threshold: float = 0.0
    #: A process's own discovery consumer outlives a process that died by this much (it is
    #: deleted on a clean stop). Meanwhile it keeps every input message, so rooms keep their
    #: consumers that long; the shared discovery consumer keeps unannounced input regardless.
    discovery_inactive_threshold: float = 60.0
    #: AckWait of the shared discovery consumer: an announcement taken by a process that died
    #: before creating the room's consumer goes to another process after this long.
    discovery_ack_wait: float = 30.0
    #: Server-side expiry of one pull request of a room worker.
    pull_expires: float = 5.0
    #: A worker whose room had nothing for this long stops and deletes its consumer (at once
    #: while other rooms wait for a worker slot, docs/bus.md "Giving a slot up").
    idle_timeout: float = 10.0
    #: First retry delay after a transient failure; doubles per delivery up to the maximum.
    retry_initial_delay: float = 1.0
    retry_max_delay: float = 60.0
    #: At most this many room workers run at once; further rooms wait their turn (FIFO),
    #: without a consumer: a room's consumer is created when it is admitted. Bounds the
    #: handlers, memory and room consumers of a process (docs/bus.md, "Bounds").
    max_workers: int = 256
    #: At most this many JetStream API requests of the pool (consumer create, info and
    #: delete, quiet-room stream checks, unit purges) are outstanding at once per process.
    max_api_requests: int = 32
    #: How long such a request waits for the server's answer. Long, so that a request the
    #: server still has queued is not sent a second time (which only lengthens its queue).
    api_timeout: float = 60.0
    #: How long one attempt to create a room consumer again (after its consumer was found
    #: gone: a cluster node died, an election) waits for the answer before it is sent
    #: again. Short: a request sent while the JetStream cluster elects a leader may never be
    #: answered, and a room must move again within seconds (creating is idempotent).
    recreate_timeout: float = 5.0
    #: While the input stream holds more than this many messages (or rooms wait to be
    #: admitted), quiet rooms' consumers are not deleted at once but queued, and deleted one
    #: at a time while no other API request is outstanding (all at once below it): on an
    #: interest stream a delete costs the server time that grows with the messages times
    #: the consumers on the stream.
    delete_backlog: int = 1000
    #: A worker that holds a room's head message while more of the room's input is queued
    #: reads up to this many messages (the head included) and this many bytes of payload
    #: from the stream, and hands them to the handler as one unit (docs/bus.md, "Units").
    #: 1 turns units off.
    unit_max_messages: int = 64
    unit_max_bytes: int = 1024 * 1024
    #: Announcements the discovery consumer fetches per request.
    discovery_batch: int = 512
    #: How long a publish waits for the stream's ack (a reply lost with a connection).
    publish_timeout: float = 10.0
    #: How long a synchronous submit waits for all replies by default.
    sync_timeout: float = 330.0

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if self.idle_timeout < self.pull_expires:
            raise ValueError("idle_timeout must be at least pull_expires")
        if self.consumer_inactive_threshold and (
            self.consumer_inactive_threshold <= self.idle_timeout + self.pull_expires
        ):
            raise ValueError("consumer_inactive_threshold must exceed idle_timeout")
        if self.max_workers < 1 or self.discovery_batch < 1 or self.max_api_requests < 1:
            raise ValueError("max_workers, max_api_requests and discovery_batch must be positive")
        if self.api_timeout <= 0 or self.recreate_timeout <= 0 or self.delete_backlog < 0:
            raise ValueError(
                "api_timeout and recreate_timeout must be positive, delete_backlog not negative"
            )
        if self.progress_interval <= 0 or self.progress_interval * 2 > self.ack_wait:
            raise ValueError("progress_interval must be positive and at most half of ack_wait")
        if self.unit_max_messages < 1 or self.unit_max_bytes < 1:
            raise ValueError("unit_max_messages and unit_max_bytes must be positive")
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1")

    @property
    def room_consumer_inactive_threshold(self) -> float:
        """The server-side expiry of an unattended room consumer (see the field above)."""
        return self.consumer_inactive_threshold or self.input_max_age
