"""The web console in headless Chromium: sign in, open a room, find its state table and the
DAG picture; the screenshot is kept as a test artifact (path printed)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import submit, trust
from tests.service.cdp import chromium_path, headless_chromium
from tests.service.http_helpers import TOKEN, listening
from tests.service.test_http_api import sample_room

ARTIFACTS = Path(
    os.environ.get(
        "ROOMSERVER_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"
    )
)


@pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (.ci/run installs it)")
async def test_console_sign_in_room_page_state_table_and_dag(
    open_roomserver: OpenRoomserver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rs = await open_roomserver()
    b, pdus, expected = sample_room()
    trust(rs, b)
    await submit(rs, pdus)
    async with listening(rs) as base, headless_chromium(tmp_path / "profile") as page:
        await page.goto(base + "/")
        assert await page.evaluate("document.querySelector('#token') !== null")
        await page.evaluate_and_wait_for_load(
            "document.getElementById('token').value = 'wrong';"
            "document.querySelector('form[action=\"/login\"]').submit()"
        )
        assert "not right" in await page.evaluate("document.body.innerText")

        await page.evaluate_and_wait_for_load(
            f"document.getElementById('token').value = {json.dumps(TOKEN)};"
            "document.querySelector('form[action=\"/login\"]').submit()"
        )
        links = await page.evaluate(
            "Array.from(document.querySelectorAll('#rooms a')).map(a => a.textContent)"
        )
        assert links == [b.room_id]
        await page.evaluate_and_wait_for_load("document.querySelector('#rooms a').click()")
        assert await page.evaluate("location.pathname") == "/rooms/" + quote(b.room_id, safe="")

        rows = await page.evaluate(
            "Array.from(document.querySelectorAll('#state-table tr')).slice(1)"
            ".map(r => Array.from(r.cells).map(c => c.textContent))"
        )
        assert {(r[0], r[1]): r[3] for r in rows} == await rs.current_state(b.room_id)
        outcomes = await page.evaluate(
            "Array.from(document.querySelectorAll('#latest-events tr')).slice(1)"
            ".map(r => r.cells[4].textContent)"
        )
        assert sorted(outcomes) == sorted(expected)
        nodes = await page.evaluate("document.querySelectorAll('#dag svg g.node').length")
        edges = await page.evaluate("document.querySelectorAll('#dag svg path.edge').length")
        assert nodes == len(expected)
        assert edges > 0
        box = await page.evaluate(
            "(() => { const r = document.querySelector('#dag svg').getBoundingClientRect();"
            " return [r.width, r.height]; })()"
        )
        assert box[0] > 300 and box[1] > 300, box  # drawn, not collapsed

        screenshot = ARTIFACTS / "console-room.png"
        await page.screenshot(screenshot)
        with capsys.disabled():
            print(f"\nconsole screenshot: {screenshot}")
        assert screenshot.stat().st_size > 10_000

        # Signing out ends the session.
        await page.evaluate_and_wait_for_load(
            "document.querySelector('form[action=\"/logout\"]').submit()"
        )
        await page.goto(base + "/rooms/" + quote(b.room_id, safe=""))
        assert await page.evaluate("document.querySelector('#token') !== null")
