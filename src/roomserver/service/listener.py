"""The one HTTP listener of ``roomserver serve`` (``metrics.listen``): Prometheus metrics,
health, the HTTP API under ``/_roomserver/v1/`` and the web console at ``/``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from roomserver.app import Roomserver
from roomserver.config import ConfigError, HttpConfig
from roomserver.service.console import add_console_routes
from roomserver.service.http_api import (
    ROOMSERVER_KEY,
    SETTINGS_KEY,
    ApiSettings,
    add_api_routes,
    bearer_auth,
    matrix_errors,
    path_room_id,
)


def _read_token_file(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"http.token_file: cannot read {path}: {exc.strerror}") from None
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"http.token_file: {path} is empty")
    return token


async def load_api_token(config: HttpConfig) -> str | None:
    """The configured bearer token (``http.token``, else the first line of
    ``http.token_file``), or None: the API and console then refuse every request."""
    if config.token is not None and config.token_file is not None:
        raise ConfigError("http.token and http.token_file: set one, not both")
    if config.token is not None:
        if not config.token.strip():
            raise ConfigError("http.token: must not be empty")
        return config.token.strip()
    if config.token_file is not None:
        return await asyncio.to_thread(_read_token_file, config.token_file)
    return None


def build_app(rs: Roomserver, *, token: str | None, max_body_bytes: int) -> web.Application:
    app = web.Application(middlewares=[matrix_errors, bearer_auth], client_max_size=max_body_bytes)
    app[ROOMSERVER_KEY] = rs
    app[SETTINGS_KEY] = ApiSettings(token=token)

    async def metrics(_: web.Request) -> web.Response:
        await rs.refresh_gauges()
        return web.Response(body=rs.metrics.render(), content_type="text/plain")

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def room_state(request: web.Request) -> web.Response:
        room_id = path_room_id(request)
        state = await rs.current_state(room_id)
        body = [{"type": t, "state_key": k, "event_id": e} for (t, k), e in sorted(state.items())]
        return web.Response(text=json.dumps(body), content_type="application/json")

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    app.router.add_get("/admin/rooms/{room_id}/state", room_state)
    add_api_routes(app)
    add_console_routes(app)
    return app
