"""``roomserver serve``: run until SIGTERM/SIGINT, with one HTTP listener for metrics, health,
the HTTP API and the web console (service/listener.py)."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from roomserver.config import Config
from roomserver.service.gc_tuning import tune_gc
from roomserver.service.listener import build_app, load_api_token

log = logging.getLogger("roomserver.serve")


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"metrics.listen: expected host:port, got {listen!r}")
    return host.strip("[]"), int(port)


async def serve(config: Config) -> int:
    """Run the roomserver described by ``config`` until a termination signal arrives.

    On SIGTERM or SIGINT each room's worker finishes (or releases) its in-flight event, then the
    stream connection, the database and the embedded nats-server are closed in that order.
    """
    from roomserver import _native
    from roomserver.app import Roomserver

    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with Roomserver.from_config(config) as rs:
        runner: web.AppRunner | None = None
        if config.metrics.listen:
            token = await load_api_token(config.http)
            app = build_app(rs, token=token, max_body_bytes=int(config.http.max_body_bytes))
            runner = web.AppRunner(app)
            await runner.setup()
            host, port = _split_listen(config.metrics.listen)
            await web.TCPSite(runner, host, port).start()
            log.info("metrics and admin endpoint on http://%s:%d/metrics", host, port)
            if token is None:
                log.warning("HTTP API and console disabled: no http.token or http.token_file")
            else:
                log.info("console on http://%s:%d/, API under /_roomserver/v1/", host, port)
        log.info(
            "roomserver %s ready (nats %s, database %s; per-event modules: %s)",
            config.server_name,
            rs.nats_url,
            rs.database_description,
            (
                _native.STATE.reason
                if _native.STATE.compiled
                else f"pure Python: {_native.STATE.reason}"
            ),
        )
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            if runner is not None:
                await runner.cleanup()
    log.info("stopped")
    return 0
