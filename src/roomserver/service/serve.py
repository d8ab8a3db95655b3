"""``roomserver serve``: run until SIGTERM/SIGINT, with a small HTTP endpoint for metrics,
health and per-room admin queries."""

from __future__ import annotations

import asyncio
import json
import logging
import signal

from aiohttp import web

from roomserver.service.config import Config

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
    from roomserver.app import Roomserver

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with Roomserver.from_config(config) as rs:
        runner: web.AppRunner | None = None
        if config.metrics.listen:
            app = web.Application()

            async def metrics(_: web.Request) -> web.Response:
                await rs.refresh_gauges()
                return web.Response(body=rs.metrics.render(), content_type="text/plain")

            async def health(_: web.Request) -> web.Response:
                return web.json_response({"status": "ok"})

            async def room_state(request: web.Request) -> web.Response:
                room_id = request.match_info["room_id"]
                state = await rs.current_state(room_id)
                body = [
                    {"type": t, "state_key": k, "event_id": e}
                    for (t, k), e in sorted(state.items())
                ]
                return web.Response(text=json.dumps(body), content_type="application/json")

            app.router.add_get("/metrics", metrics)
            app.router.add_get("/healthz", health)
            app.router.add_get("/admin/rooms/{room_id}/state", room_state)
            runner = web.AppRunner(app)
            await runner.setup()
            host, port = _split_listen(config.metrics.listen)
            await web.TCPSite(runner, host, port).start()
            log.info("metrics and admin endpoint on http://%s:%d/metrics", host, port)
        log.info(
            "roomserver %s ready (nats %s, database %s)",
            config.server_name,
            rs.nats_url,
            rs.database_description,
        )
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            if runner is not None:
                await runner.cleanup()
    log.info("stopped")
    return 0
