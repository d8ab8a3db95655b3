"""The NATS JetStream layer: streams, discovery, per-room workers, publishers, embedded server.

It knows subjects, headers and acks, not Matrix rules: payloads are opaque bytes. See
docs/bus.md.
"""

from roomserver.bus.bus import Bus
from roomserver.bus.config import BusConfig
from roomserver.bus.embedded import EmbeddedNatsServer, nats_server_path
from roomserver.bus.output import OutputItem, OutputMessage, OutputPublisher, OutputSubscription
from roomserver.bus.pool import WorkerStats
from roomserver.bus.streams import StreamConfigConflict
from roomserver.bus.subjects import room_id_from_token, room_token
from roomserver.bus.types import (
    BusError,
    DeliveryInfo,
    Disposition,
    Handler,
    HandlerResult,
    SyncReplyTimeout,
    UnitHandler,
)

__all__ = [
    "Bus",
    "BusConfig",
    "BusError",
    "DeliveryInfo",
    "Disposition",
    "EmbeddedNatsServer",
    "Handler",
    "HandlerResult",
    "OutputItem",
    "OutputMessage",
    "OutputPublisher",
    "OutputSubscription",
    "StreamConfigConflict",
    "SyncReplyTimeout",
    "UnitHandler",
    "WorkerStats",
    "nats_server_path",
    "room_id_from_token",
    "room_token",
]
