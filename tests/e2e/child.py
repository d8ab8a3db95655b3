"""A roomserver process for fault tests: ``python -m tests.e2e.child CONFIG.json``.

CONFIG: {"data_dir", "nats_url", "database_url", "keys": {server: [key_id, seed_b64]},
"max_missing_processing_s", "replicas", "log_file"}. Prints "ready" once its workers run; runs
until killed. With "log_file", it logs at INFO (the room workers at DEBUG) to that file, for a
failing test to show; otherwise warnings go to stderr.
It sets the garbage collector as ``roomserver serve`` does.

``write_child_config``, ``start_child`` and ``stop_children`` run such processes for the fault
and cluster tests and for ``bench/bench_scaleout.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from nacl.signing import SigningKey

from roomserver.app import Roomserver
from roomserver.core.base64 import decode_base64, encode_base64
from roomserver.service.gc_tuning import tune_gc

REPO = Path(__file__).resolve().parents[2]


def write_child_config(
    path: Path,
    *,
    data_dir: Path,
    nats_url: str,
    database_url: str,
    keys: Mapping[str, tuple[str, SigningKey | bytes]],
    **extra: object,
) -> Path:
    """Write the CONFIG of a child process to ``path`` (returned): it trusts ``keys`` (server ->
    key ID, signing key or its 32-byte seed); ``extra``: the optional settings above."""
    config = {
        "data_dir": str(data_dir), "nats_url": nats_url, "database_url": database_url,
        "keys": {s: [kid, encode_base64(bytes(key))] for s, (kid, key) in keys.items()},
        **extra,
    }  # fmt: skip
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


async def start_child(
    config_path: Path, *, ready_within: float = 120.0, stderr: IO[bytes] | None = None
) -> asyncio.subprocess.Process:
    """Start ``python -m tests.e2e.child CONFIG`` and wait until it prints "ready"."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e.child", str(config_path), cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"},
        stdout=asyncio.subprocess.PIPE, stderr=stderr,
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=ready_within)
    if line.strip() != b"ready":
        raise RuntimeError(f"roomserver process did not start: {line!r}")
    return process


async def stop_children(
    processes: Sequence[asyncio.subprocess.Process], *, within: float = 60.0
) -> list[asyncio.subprocess.Process]:
    """SIGTERM the processes still running, wait up to ``within`` seconds for each, kill the
    ones that did not stop (returned)."""
    running = [p for p in processes if p.returncode is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    killed = []
    for process in running:
        try:
            await asyncio.wait_for(process.wait(), timeout=within)
        except TimeoutError:
            process.kill()
            await process.wait()
            killed.append(process)
    return killed


async def main(path: str) -> None:
    config = json.loads(Path(path).read_text(encoding="utf-8"))  # noqa: ASYNC240 (start-up)
    if config.get("log_file"):
        logging.basicConfig(
            filename=config["log_file"],
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        # How the room workers settle units and purges (debug: only in these test logs).
        for name in ("roomserver.bus.workers", "roomserver.bus.units"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Roomserver.open(
        data_dir=config["data_dir"],
        server_name="rs.test",
        nats_url=config["nats_url"],
        database_url=config["database_url"],
        federation=False,
        max_missing_processing_s=config.get("max_missing_processing_s", 300.0),
        nats_replicas=config.get("replicas", 1),
    ) as rs:
        for server, (key_id, seed) in config["keys"].items():
            rs.keyring.add_verify_key(
                server, key_id, SigningKey(decode_base64(seed)).verify_key, 2**62
            )
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    tune_gc()  # the collector as `roomserver serve` sets it
    asyncio.run(main(sys.argv[1]))
