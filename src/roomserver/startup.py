"""Opening a roomserver's parts, in order: the signing key ► the SQLite workers' lock ►
storage ► the stream (the embedded nats-server when no URL is configured) ► federation (client,
keyring, fetcher) ► the input pipeline, each closed by the caller's ``AsyncExitStack``.

``app.Roomserver`` opens them with ``open_parts``, composes them and starts the room workers
(after ``flush_unsent_outboxes``).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nacl.signing import SigningKey, VerifyKey

from roomserver.bus import Bus, BusConfig, EmbeddedNatsServer
from roomserver.bus.blobs import JetStreamBlobStore
from roomserver.config import KEY_ID_RE, Config
from roomserver.core.base64 import decode_base64, encode_base64
from roomserver.federation.client import FederationClient
from roomserver.federation.fetcher import FederationFetcher
from roomserver.federation.keyring import KeyRing, Notary
from roomserver.input import InputConfig, InputProcessor
from roomserver.input.bulk import BulkStore, OutlierImporter
from roomserver.ports import Storage
from roomserver.storage import SqlStorage, open_storage

log = logging.getLogger(__name__)


#: The file (under data_dir) where a running embedded nats-server's URL is written, so that
#: ``roomserver input`` / ``state`` on the same data directory can reach the running service.
NATS_URL_FILE = "nats.url"

#: The durable output subscription every roomserver creates on start, so that outputs are kept
#: (the output stream has interest retention) until a consumer reads them with ``outputs()``.
DEFAULT_OUTPUT_DURABLE = "roomserver-outputs"


# ---------------------------------------------------------------------------------------------
# Signing key


#: The key ID of a signing key given without one, and of key files written before key files
#: carried their ID (a bare base64 seed).
DEFAULT_KEY_ID = "ed25519:auto"


def check_key_id(key_id: str) -> str:
    """``key_id`` if it is an ed25519 signing key ID (``config.KEY_ID_RE``); else ``ValueError``."""
    if not KEY_ID_RE.fullmatch(key_id):
        raise ValueError(f"signing key ID {key_id!r}: expected 'ed25519:' then [a-zA-Z0-9_-]")
    return key_id


def load_or_create_signing_key(path: Path) -> tuple[str, SigningKey]:
    """Read ``ed25519 <version> <unpadded base64 seed>`` from ``path`` (key ID
    ``ed25519:<version>``), creating it if missing. A file holding only the base64 seed (or
    ``ed25519 <seed>``) is an older key file: its key ID is ``ed25519:auto``."""
    if path.exists():
        parts = path.read_text(encoding="ascii").split()
        if len(parts) == 1 or (len(parts) == 2 and parts[0] == "ed25519"):
            key_id, encoded = DEFAULT_KEY_ID, parts[-1]
        elif len(parts) == 3 and parts[0] == "ed25519":
            key_id, encoded = f"ed25519:{parts[1]}", parts[2]
        else:
            raise ValueError(f"{path}: expected 'ed25519 <version> <base64 seed>'")
        if not KEY_ID_RE.fullmatch(key_id):
            raise ValueError(f"{path}: the key version must be [a-zA-Z0-9_-]")
        try:
            seed = decode_base64(encoded)
        except ValueError:
            raise ValueError(f"{path}: the key seed is not valid base64") from None
        if len(seed) != 32:
            raise ValueError(f"{path}: the key seed must be 32 bytes")
        return key_id, SigningKey(seed)
    key = SigningKey.generate()
    version = "a_" + encode_base64(bytes(key.verify_key)[:3], url_safe=True).replace("-", "_")
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


#: Time a room worker's handler gets beyond the message's fetch deadline, to process and
#: commit its batch of events (a batch of a few hundred events takes well under a second).
BATCH_PROCESSING_MARGIN_S = 30.0


# ---------------------------------------------------------------------------------------------
# The parts


@dataclass(frozen=True, slots=True)
class Parts:
    """What ``open_parts`` opened (``processor`` and ``bulk`` are None without room workers)."""

    storage: SqlStorage
    bus: Bus
    processor: InputProcessor | None
    keyring: KeyRing
    federation_client: FederationClient
    nats_url: str
    blobs: JetStreamBlobStore
    bulk: OutlierImporter | None


async def open_parts(
    stack: AsyncExitStack,
    config: Config,
    own_key: tuple[str, SigningKey] | None,
    run_workers: bool,
) -> Parts:
    """Open the parts of a roomserver for ``config``, each closed by ``stack``. ``own_key``:
    the signing key ID and key, or None to read (or create) ``config.signing_key_file``."""
    data_dir = Path(config.data_dir)
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    key: SigningKey
    if own_key is None:
        key_id, key = await asyncio.to_thread(load_or_create_signing_key, config.signing_key_file)
    else:
        key_id, key = own_key

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

    # A message's fetches share max_missing_processing_s; the handler also gets time to
    # process and commit the whole batch.
    handler_timeout = config.input.max_missing_processing_s + BATCH_PROCESSING_MARGIN_S
    bus_config = BusConfig(
        prefix=config.nats.stream_prefix,
        replicas=config.nats.replicas,
        **config.nats.bus_limits(),
        # AckWait stays short (the failover time): in-progress acks keep a message while
        # its handler runs.
        handler_timeout=handler_timeout,
        output_max_age=7 * 24 * 3600.0,
    )
    bus = await Bus.connect(nats_url, config=bus_config, name=f"roomserver {config.server_name}")
    stack.push_async_callback(bus.close)
    blobs = await JetStreamBlobStore.open(bus.js, bus.config)
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
    for trusted_server, keys in sorted(fed.trusted_keys.items()):
        for trusted_id, verify_key in sorted(keys.items()):
            keyring.add_verify_key(trusted_server, trusted_id, VerifyKey(decode_base64(verify_key)))
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
    processor: InputProcessor | None = None
    bulk: OutlierImporter | None = None
    if run_workers and isinstance(storage, BulkStore):
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bulk-verify")
        stack.callback(pool.shutdown, wait=False)
        bulk = OutlierImporter(storage, keyring, server_name=config.server_name, executor=pool)
    if run_workers:
        processor = InputProcessor(
            storage,
            keyring,
            fetcher,
            bus,
            server_name=config.server_name,
            config=InputConfig(
                max_missing_processing_s=config.input.max_missing_processing_s,
                verify_threads=config.input.verify_threads,
                verify_processes=config.input.verify_processes,
                optimistic_reads=config.input.optimistic_reads,
                # The federation fetcher verifies what it returns already.
                verify_fetched_events=False,
            ),
        )
    return Parts(
        storage=storage,
        bus=bus,
        processor=processor,
        keyring=keyring,
        federation_client=client,
        nats_url=nats_url,
        blobs=blobs,
        bulk=bulk,
    )
