"""The ``roomserver`` command: --version, input + state standalone, and serve with its
metrics endpoint, client-mode input and graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from roomserver import __version__
from roomserver.bus.embedded import free_port
from roomserver.core.base64 import encode_base64
from roomserver.testing.builder import RoomBuilder
from tests.e2e.helpers import ALICE, BOB, wait_for

REPO = Path(__file__).resolve().parents[2]
ROOMSERVER = [sys.executable, "-m", "roomserver.service.cli"]


def _setup(tmp_path: Path, messages: int = 20) -> tuple[RoomBuilder, dict[str, str], Path]:
    """A room signed by example.org, whose key the roomserver uses as its own."""
    b = RoomBuilder("10", room_id="!cli:example.org")
    b.create_room(ALICE)
    b.join(BOB)
    for i in range(messages):
        b.message(BOB, f"cli {i}")
    data = tmp_path / "data"
    data.mkdir()
    key_id, key = b.key_for("example.org")
    (data / "signing.key").write_text(
        f"ed25519 {key_id.split(':', 1)[1]} {encode_base64(bytes(key))}\n"
    )
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(p) + "\n" for p in b.pdus()))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "ROOMSERVER_DATA_DIR": str(data),
        "ROOMSERVER_SERVER_NAME": "example.org",
        "ROOMSERVER_FEDERATION__ENABLED": "false",
        "ROOMSERVER_METRICS__LISTEN": f"127.0.0.1:{free_port()}",
    }
    return b, env, events


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *ROOMSERVER, *args, env=env, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_version_and_help() -> None:
    code, out, _ = await _run("--version")
    assert code == 0 and out.strip() == f"roomserver {__version__}"
    code, out, _ = await _run("--help")
    assert code == 0 and "serve" in out and "input" in out and "state" in out


async def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("database:\n  ulr: sqlite:///x.db\n")
    code, _, err = await _run("--config", str(config), "state", "!x:y")
    assert code == 2 and "database.ulr: unknown configuration key" in err


async def test_input_then_state_standalone(tmp_path: Path) -> None:
    b, env, events = _setup(tmp_path)
    code, out, err = await _run("input", str(events), "--room-version", "10", env=env)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary == {"submitted": len(b.events), "outcomes": {"accepted": len(b.events)}}
    code, out, err = await _run("state", b.room_id, env=env)
    assert code == 0, err
    state = json.loads(out)
    assert {(e["type"], e["state_key"]): e["event_id"] for e in state["state"]} == b.state
    code, _, err = await _run("state", "!unknown:example.org", env=env)
    assert code == 1 and "unknown room" in err


async def test_input_reports_rejections_and_bad_lines(tmp_path: Path) -> None:
    b, env, events = _setup(tmp_path, messages=0)
    intruder = b.make_pdu("m.room.message", "@mallory:example.org", {"body": "x"})
    events.write_text(events.read_text() + json.dumps(intruder) + "\n")
    code, out, err = await _run("input", str(events), "--room-version", "10", env=env)
    assert code == 1
    assert json.loads(out.strip().splitlines()[-1])["outcomes"] == {
        "accepted": len(b.events), "rejected": 1
    }  # fmt: skip
    assert "rejected" in err
    events.write_text("{not json\n")
    code, _, err = await _run("input", str(events), "--room-version", "10", env=env)
    assert code == 1 and "events.jsonl:1: not JSON" in err


@pytest.mark.slow
async def test_serve_metrics_client_input_and_sigterm(tmp_path: Path) -> None:
    b, env, events = _setup(tmp_path)
    base = "http://" + env["ROOMSERVER_METRICS__LISTEN"]
    server = await asyncio.create_subprocess_exec(
        *ROOMSERVER, "serve", env=env, cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                try:
                    async with http.get(base + "/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, timeout=60, interval=0.2)
            code, _, err = await _run("input", str(events), "--room-version", "10", env=env)
            assert code == 0, err
            assert "submitting through the running roomserver" in err
            async with http.get(base + f"/admin/rooms/{b.room_id}/state") as response:
                body = await response.json()
            assert {(e["type"], e["state_key"]): e["event_id"] for e in body} == b.state
            async with http.get(base + "/metrics") as response:
                metrics = await response.text()
            line = f'roomserver_events_processed_total{{outcome="accepted"}} {len(b.events)}.0'
            assert line in metrics
            assert "roomserver_input_message_seconds_count" in metrics
            assert "roomserver_input_queue_depth 0.0" in metrics
            assert "roomserver_active_room_workers" in metrics
            assert "room_id" not in metrics
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), timeout=60) == 0
        assert not (Path(env["ROOMSERVER_DATA_DIR"]) / "nats.url").exists()
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


async def test_input_says_how_to_give_keys_a_server_does_not_answer_for(tmp_path: Path) -> None:
    """Events of a server nobody listens for (a closed loopback port) are INVALID within the
    key ring's bound, naming server and key, and ``input`` explains the out-of-band way."""
    from nacl.signing import SigningKey

    server = "gone.test"
    keys = {server: ("ed25519:gone", SigningKey.generate())}
    b = RoomBuilder("10", server_name=server, keys=keys)
    b.create_room(f"@alice:{server}")
    data = tmp_path / "data"
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(p) + "\n" for p in b.pdus()[:1]))
    config = tmp_path / "roomserver.yaml"
    config.write_text(
        f"server_name: example.org\ndata_dir: {data}\n"
        f"federation:\n  server_overrides: {{{server}: 'http://127.0.0.1:{free_port()}'}}\n"
        f"metrics:\n  listen: null\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    started = asyncio.get_running_loop().time()
    code, out, err = await _run(
        "--config", str(config), "input", str(events), "--room-version", "10", env=env
    )
    elapsed = asyncio.get_running_loop().time() - started
    assert code == 1, err
    assert json.loads(out.strip().splitlines()[-1])["outcomes"] == {"invalid": 1}
    assert "signing key unobtainable: server gone.test key ed25519:gone" in err
    assert "trusted_keys:" in err and '"ed25519:gone": <verify key>' in err
    assert "add_verify_key" in err
    assert elapsed < 30 + 15  # the key ring's bound (30 s) plus start-up, not minutes
