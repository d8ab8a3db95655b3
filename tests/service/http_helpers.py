"""Helpers for the HTTP API tests: an in-process listener over a real Roomserver, a client
that checks every answer against the OpenAPI document, and sample rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from jsonschema import Draft202012Validator

from roomserver.app import Roomserver
from roomserver.service.listener import build_app
from roomserver.service.openapi import openapi_document

TOKEN = "s3cret-token"
PREFIX = "/_roomserver/v1"


@asynccontextmanager
async def listening(
    rs: Roomserver, *, token: str | None = TOKEN, max_body_bytes: int = 1024 * 1024
) -> AsyncIterator[str]:
    """The serve listener's app on a free port of 127.0.0.1; yields its base URL."""
    app = build_app(rs, token=token, max_body_bytes=max_body_bytes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def path_of(template: str, **params: str) -> str:
    """``/rooms/{roomId}/state`` with ``roomId`` percent-encoded."""
    out = template
    for name, value in params.items():
        out = out.replace("{" + name + "}", quote(value, safe=""))
    return out


class CheckedClient:
    """Calls the API and checks each JSON answer against the documented response schema of
    its route and status (an undocumented status fails the test)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.session = session
        self.base = base
        self.token = token
        self.document = openapi_document()
        self.checked = 0

    def _schema(self, template: str, method: str, status: int) -> dict[str, Any] | None:
        operation = self.document["paths"][template][method.lower()]
        response = operation["responses"].get(str(status))
        assert response is not None, f"{method} {template}: status {status} not documented"
        content = response.get("content", {})
        if "application/json" not in content:
            return None
        return {
            **content["application/json"]["schema"],
            "components": self.document["components"],
        }

    async def call(
        self,
        method: str,
        template: str,
        *,
        params: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        token: str | bool | None = True,
    ) -> tuple[int, Any]:
        headers: dict[str, str] = {}
        presented = self.token if token is True else token
        if isinstance(presented, str):
            headers["Authorization"] = f"Bearer {presented}"
        url = self.base + PREFIX + path_of(template, **(params or {}))
        async with self.session.request(
            method, url, headers=headers, json=json_body, data=data, params=query
        ) as response:
            status = response.status
            if response.content_type == "application/json":
                body: Any = await response.json()
            else:
                body = await response.text()
        schema = self._schema(template, method, status)
        if schema is not None:
            Draft202012Validator(schema).validate(body)
            self.checked += 1
        return status, body


@asynccontextmanager
async def api_client(base: str, token: str | None = TOKEN) -> AsyncIterator[CheckedClient]:
    async with aiohttp.ClientSession() as session:
        yield CheckedClient(session, base, token)
