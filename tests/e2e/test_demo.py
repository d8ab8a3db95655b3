"""``roomserver demo``: the sample room itself, its DAG picture, and the command run standalone
and through a running ``roomserver serve`` (whose logs are JSON lines here)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roomserver.api import Outcome
from roomserver.bus.embedded import free_port
from roomserver.core.signatures import verify_event
from roomserver.service.demo import (
    DEMO_ROOM_ID,
    DEMO_SERVERS,
    build_demo_room,
    demo_verify_keys,
    render_dag_svg,
)
from tests.e2e.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
ROOMSERVER = [sys.executable, "-m", "roomserver.service.cli"]
SVG = "{http://www.w3.org/2000/svg}"


def test_demo_room_is_deterministic_signed_by_three_servers() -> None:
    room = build_demo_room()
    again = build_demo_room()
    assert [e.event.event_id for e in room.events] == [e.event.event_id for e in again.events]
    keys = demo_verify_keys()
    for item in room.events:
        verify_event(item.event.pdu, room_version=room.room_version, verify_keys=keys)
    senders = {e.event.sender.split(":", 1)[1] for e in room.events}
    assert senders == set(DEMO_SERVERS)
    expected = [e.expected for e in room.events]
    assert expected.count(Outcome.REJECTED) == 1 and expected.count(Outcome.SOFT_FAILED) == 1
    # Forks: some events have two prev events (merges), and two events share one prev.
    assert sum(len(e.event.prev_event_ids) == 2 for e in room.events) >= 2
    prevs = [p for e in room.events for p in e.event.prev_event_ids]
    assert len(prevs) > len(set(prevs))


def _parse_svg(text: str) -> tuple[list[ET.Element], list[ET.Element]]:
    root = ET.fromstring(text)
    assert root.tag == SVG + "svg"
    nodes = [g for g in root.iter(SVG + "g") if g.get("class") == "node"]
    edges = [e for e in root.iter(SVG + "line") if e.get("class") == "edge"]
    return nodes, edges


def test_dag_svg_has_one_node_per_event_and_one_edge_per_prev() -> None:
    room = build_demo_room()
    events = [(e.event, e.expected) for e in room.events]
    last = room.events[-1].event.event_id
    nodes, edges = _parse_svg(render_dag_svg(events, [last]))
    assert [n.get("data-event-id") for n in nodes] == [e.event_id for e, _ in events]
    assert sorted((e.get("data-from"), e.get("data-to")) for e in edges) == sorted(
        (e.event_id, p) for e, _ in events for p in e.prev_event_ids
    )
    by_id = {n.get("data-event-id"): n for n in nodes}
    assert {n.get("data-outcome") for n in nodes} == {"accepted", "rejected", "soft_failed"}
    title = by_id[last].find(SVG + "title")
    assert title is not None and title.text is not None
    assert "m.room.message" in title.text and "@alice:north.example" in title.text
    assert last in title.text
    assert 'stroke-width="3"' in ET.tostring(by_id[last], encoding="unicode")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "ROOMSERVER_DATA_DIR": str(tmp_path / "data"),
        "ROOMSERVER_FEDERATION__ENABLED": "false",
        "ROOMSERVER_METRICS__LISTEN": f"127.0.0.1:{free_port()}",
        **extra,
    }


async def _run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *ROOMSERVER, *args, env=env, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _check_demo_json(result: dict[str, Any]) -> None:
    room = build_demo_room()
    assert result["room_id"] == DEMO_ROOM_ID
    assert [e["event_id"] for e in result["events"]] == [e.event.event_id for e in room.events]
    assert [e["outcome"] for e in result["events"]] == [e["expected"] for e in result["events"]]
    state = {(s["type"], s["state_key"]): s["event_id"] for s in result["state"]}
    by_id = {e.event.event_id: e.event for e in room.events}
    topic = by_id[state[("m.room.topic", "")]]
    assert topic.content["topic"] == "East's topic"  # the later of two concurrent topics
    assert by_id[state[("m.room.member", "@dave:south.example")]].content["membership"] == "ban"
    assert ("m.room.name", "") not in state  # the rename was rejected
    assert result["latest_events"] == [room.events[-1].event.event_id]


async def test_demo_standalone_exits_0_and_reruns_the_same(tmp_path: Path) -> None:
    env = _env(tmp_path)
    code, out, _ = await _run("--help", env=env)
    assert code == 0 and "demo" in out
    code, out, err = await _run("demo", env=env)
    assert code == 0, err
    outcomes = {line.split()[1] for line in out.splitlines() if line[:4].strip().isdigit()}
    assert outcomes == {"accepted", "rejected", "soft_failed"}
    assert "through a roomserver run for this command" in out
    assert f"http://{env['ROOMSERVER_METRICS__LISTEN']}/" in out
    svg_path = tmp_path / "data" / "demo-dag.svg"
    assert str(svg_path) in out
    nodes, _ = _parse_svg(svg_path.read_text())
    assert len(nodes) == len(build_demo_room().events)

    # Again on the same data directory: every event is already stored with its outcome.
    code, out, err = await _run("demo", "--json", "--svg", str(tmp_path / "again.svg"), env=env)
    assert code == 0, err
    _check_demo_json(json.loads(out))
    assert (tmp_path / "again.svg").exists()


@pytest.mark.slow
async def test_demo_through_a_running_serve_with_json_logs(tmp_path: Path) -> None:
    env = _env(tmp_path, ROOMSERVER_LOG_FORMAT="json", ROOMSERVER_SERVER_NAME="demo.test")
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
            code, out, err = await _run("demo", "--json", env=env)
            assert code == 0, err
            assert "submitting through the running roomserver" in err
            result = json.loads(out)
            _check_demo_json(result)
            # The serve process did the work, and its state is the demo's.
            async with http.get(base + f"/admin/rooms/{DEMO_ROOM_ID}/state") as response:
                body = await response.json()
            assert body == result["state"]
            async with http.get(base + "/metrics") as response:
                metrics = await response.text()
            assert 'roomserver_events_processed_total{outcome="soft_failed"} 1.0' in metrics
            assert 'roomserver_events_processed_total{outcome="rejected"} 1.0' in metrics
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), timeout=60) == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    assert server.stderr is not None
    lines = (await server.stderr.read()).decode().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"timestamp", "level", "logger", "message"} <= set(e) for e in entries)
    messages = [e["message"] for e in entries]
    assert any(m.startswith("roomserver demo.test ready") for m in messages)
    assert any("soft-failed" in m for m in messages) and messages[-1] == "stopped"
