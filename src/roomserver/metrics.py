"""Prometheus metrics. No metric carries a room ID label (unbounded cardinality)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """The roomserver's metrics, in a registry of their own (several instances may share a
    process, as tests do)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_processed = Counter(
            "roomserver_events_processed",
            "Input events processed, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.processing_seconds = Histogram(
            "roomserver_input_message_seconds",
            "Time to process one input message (a batch of one room's events), from fetch to ack.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 300),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "roomserver_input_queue_depth",
            "Input messages published but not yet processed (sum over rooms).",
            registry=self.registry,
        )
        self.active_rooms = Gauge(
            "roomserver_active_room_workers",
            "Rooms with a running worker.",
            registry=self.registry,
        )
        self.redeliveries = Counter(
            "roomserver_input_redeliveries",
            "Input messages delivered more than once (retries after failures or crashes).",
            registry=self.registry,
        )
        self.stale_reads = Counter(
            "roomserver_input_stale_reads",
            "Input messages processed a second time at once because what their optimistic "
            "gather assumed had changed (another process handled the room, a redelivery, a "
            "redaction before its target).",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
