"""The input and output streams: their settings, created or brought up to date on start.

Input (``<prefix>InputRoomEvent``, subjects ``<prefix>InputRoomEvent.>``): **interest**
retention, file storage, max age ``input_max_age``. Every input message is wanted by the
discovery consumers (the whole stream) and by its room's durable consumer (the room's subject)
while that exists. Under interest retention a message is deleted once every consumer whose
filter matches it has acked it, so a processed message costs no disk, while a message stays as
long as its room consumer has not acked it. The shared discovery consumer is durable and acks an
announcement only after the room consumer exists, and a room consumer is deleted only as
docs/bus.md ("No input lost") allows, so no unprocessed message is ever wanted by nobody.

Work-queue retention is not possible (its consumers may not overlap, and discovery overlaps
every room), and limits retention would keep every processed event for ``input_max_age``.

Output (``<prefix>OutputRoomEvent``, subjects ``<prefix>OutputRoomEvent`` and ``.>``): interest
retention by default, file storage, a duplicate window for ``Nats-Msg-Id`` deduplication.
"""

from __future__ import annotations

import logging
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from roomserver.bus.config import BusConfig
from roomserver.bus.embedded import DEFAULT_MAX_PAYLOAD
from roomserver.bus.subjects import input_stream_name, output_stream_name

log = logging.getLogger(__name__)


class StreamConfigConflict(RuntimeError):
    """An existing stream differs from the wanted settings in a way the server refuses to
    update. The bus never deletes a stream to fix this (that would lose queued input)."""


def _storage(config: BusConfig) -> StorageType:
    return StorageType.MEMORY if config.storage == "memory" else StorageType.FILE


def input_stream_config(config: BusConfig) -> StreamConfig:
    name = input_stream_name(config.prefix)
    return StreamConfig(
        name=name,
        description="roomserver input: one subject per room",
        subjects=[f"{name}.>"],
        retention=RetentionPolicy.INTEREST,
        storage=_storage(config),
        max_age=config.input_max_age,
        max_consumers=config.max_room_consumers,
        max_msg_size=DEFAULT_MAX_PAYLOAD,
        num_replicas=config.replicas,
        duplicate_window=120.0,
        # Workers read the messages queued behind a room's head in one batched direct get.
        allow_direct=True,
    )


def output_stream_config(config: BusConfig) -> StreamConfig:
    name = output_stream_name(config.prefix)
    retention = (
        RetentionPolicy.INTEREST
        if config.output_retention == "interest"
        else RetentionPolicy.LIMITS
    )
    return StreamConfig(
        name=name,
        description="roomserver output events",
        subjects=[name, f"{name}.>"],
        retention=retention,
        storage=_storage(config),
        max_age=config.output_max_age,
        max_msg_size=DEFAULT_MAX_PAYLOAD,
        num_replicas=config.replicas,
        duplicate_window=config.duplicate_window,
    )


_COMPARED = (
    "subjects",
    "retention",
    "storage",
    "max_age",
    "max_consumers",
    "max_msg_size",
    "num_replicas",
    "duplicate_window",
    "allow_direct",
)


def _differences(want: StreamConfig, have: StreamConfig) -> dict[str, tuple[Any, Any]]:
    diff: dict[str, tuple[Any, Any]] = {}
    for field in _COMPARED:
        wanted, actual = getattr(want, field), getattr(have, field)
        if field == "subjects":
            wanted, actual = sorted(wanted or []), sorted(actual or [])
        elif field == "max_consumers" and (wanted is None or actual is None or wanted <= 0):
            continue  # the output stream leaves it to the server
        elif field == "allow_direct":
            wanted, actual = bool(wanted), bool(actual)  # unset is off
        elif isinstance(wanted, float) or isinstance(actual, float):
            wanted, actual = round(float(wanted or 0), 3), round(float(actual or 0), 3)
        if wanted != actual:
            diff[field] = (actual, wanted)
    return diff


async def ensure_stream(js: JetStreamContext, want: StreamConfig) -> None:
    """Create ``want`` or update the existing stream of that name to match it."""
    assert want.name is not None
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        await js.add_stream(want)
        log.info("created stream %s", want.name)
        return
    diff = _differences(want, info.config)
    if not diff:
        return
    log.warning("stream %s differs from the wanted settings: %s; updating", want.name, diff)
    try:
        await js.update_stream(want)
    except APIError as exc:
        raise StreamConfigConflict(
            f"stream {want.name} cannot be updated ({exc}); differences (have, want): {diff}"
        ) from exc


async def ensure_streams(js: JetStreamContext, config: BusConfig) -> None:
    await ensure_stream(js, input_stream_config(config))
    await ensure_stream(js, output_stream_config(config))
