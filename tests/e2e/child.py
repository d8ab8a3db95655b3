"""A roomserver process for fault tests: ``python -m tests.e2e.child CONFIG.json``.

CONFIG: {"data_dir", "nats_url", "database_url", "keys": {server: [key_id, seed_b64]},
"max_missing_processing_s", "replicas"}. Prints "ready" once its workers run; runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from nacl.signing import SigningKey

from roomserver.app import Roomserver
from roomserver.core.base64 import decode_base64


async def main(path: str) -> None:
    config = json.loads(Path(path).read_text(encoding="utf-8"))  # noqa: ASYNC240 (start-up)
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
    asyncio.run(main(sys.argv[1]))
