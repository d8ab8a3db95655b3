"""The HTTP API and console on a running ``roomserver serve`` (token from a token file)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from roomserver.config import ConfigError, HttpConfig
from roomserver.service.listener import load_api_token
from tests.e2e.helpers import wait_for
from tests.e2e.test_cli import REPO, ROOMSERVER, _setup
from tests.service.http_helpers import api_client

TOKEN = "token-from-a-file"


async def test_serve_answers_the_api_with_the_token_file(tmp_path: Path) -> None:
    b, env, _ = _setup(tmp_path, messages=5)
    token_file = tmp_path / "api.token"
    token_file.write_text(TOKEN + "\n")
    env["ROOMSERVER_HTTP__TOKEN_FILE"] = str(token_file)
    base = "http://" + env["ROOMSERVER_METRICS__LISTEN"]
    server = await asyncio.create_subprocess_exec(
        *ROOMSERVER,
        "serve",
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                try:
                    async with http.get(base + "/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, timeout=60, interval=0.2)
            async with http.get(base + "/") as response:
                assert response.status == 200 and "Sign in" in await response.text()
        async with api_client(base, TOKEN) as api:
            status, body = await api.call(
                "POST", "/input", json_body={"events": [{"event": p} for p in b.pdus()]}
            )
            assert status == 200
            assert {r["outcome"] for r in body["results"]} == {"accepted"}, body
            status, state = await api.call(
                "GET", "/rooms/{roomId}/state", params={"roomId": b.room_id}
            )
            assert status == 200
            assert {(s["type"], s["state_key"]): s["event_id"] for s in state["state"]} == b.state
            status, body = await api.call("GET", "/admin/rooms", token="not-it")
            assert status == 401
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), timeout=60) == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


async def test_token_configuration(tmp_path: Path) -> None:
    assert await load_api_token(HttpConfig()) is None
    assert await load_api_token(HttpConfig(token=" abc ")) == "abc"
    path = tmp_path / "t"
    path.write_text("from-file\nignored\n")
    assert await load_api_token(HttpConfig(token_file=str(path))) == "from-file"
    bad = [
        (HttpConfig(token="a", token_file=str(path)), "set one, not both"),
        (HttpConfig(token="  "), "must not be empty"),
        (HttpConfig(token_file=str(tmp_path / "missing")), "cannot read"),
    ]
    path.write_text("\n")
    bad.append((HttpConfig(token_file=str(path)), "is empty"))
    for config, message in bad:
        try:
            await load_api_token(config)
        except ConfigError as exc:
            assert message in str(exc) and "http.token" in str(exc)
        else:
            raise AssertionError(f"{config} was accepted")
