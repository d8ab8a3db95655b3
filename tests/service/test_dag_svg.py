"""The DAG picture: valid SVG, one node per event, one edge per prev-event reference, marks
for outcome, state events and forward extremities; over HTTP on a room with forks."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from roomserver.api import StoredEvent
from roomserver.core.pdu import parse_event
from roomserver.service.dag_svg import layout, render_dag_svg
from roomserver.testing.builder import RoomBuilder
from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import ALICE, BOB, submit, trust
from tests.service.http_helpers import api_client, listening
from tests.service.test_http_api import sample_room

SVG = "{http://www.w3.org/2000/svg}"
GONE = "$" + "A" * 43  # a well-formed event ID of an event not in the picture


def _classes(element: ET.Element) -> set[str]:
    return set(element.get("class", "").split())


def parse_svg(text: str) -> tuple[ET.Element, list[ET.Element], list[ET.Element]]:
    root = ET.fromstring(text)
    assert root.tag == SVG + "svg"
    nodes = [g for g in root.iter(SVG + "g") if "node" in _classes(g)]
    edges = [p for p in root.iter(SVG + "path") if "edge" in _classes(p)]
    return root, nodes, edges


def forked_room(branches: int, length: int) -> tuple[RoomBuilder, list[StoredEvent]]:
    """A room whose history forks into ``branches`` chains of ``length`` that merge again."""
    b = RoomBuilder("10")
    b.create_room(ALICE)
    b.join(BOB)
    base = list(b.latest)
    tips = []
    for n in range(branches):
        prev = base
        for i in range(length):
            event = b.send(
                "m.room.message", ALICE if n % 2 else BOB, {"body": f"{n}.{i}"}, prev_events=prev
            )
            prev = [event.event_id]
        tips.append(prev[0])
    b.send("m.room.message", ALICE, {"body": "merge"}, prev_events=tips)
    stored = [StoredEvent(event=e, outlier=False) for e in b.events.values()]
    return b, stored


def test_forks_lay_out_one_row_per_depth_and_one_column_per_branch() -> None:
    _, stored = forked_room(branches=4, length=3)
    nodes = layout(stored)
    by_body = {n.stored.event.content.get("body"): n for n in nodes.values()}
    # Each branch keeps one column of its own; events at the same depth share a row.
    columns = [{by_body[f"{n}.{i}"].column for i in range(3)} for n in range(4)]
    assert all(len(c) == 1 for c in columns)
    assert set().union(*columns) == {0, 1, 2, 3}
    for n in range(4):
        assert [by_body[f"{n}.{i}"].level for i in range(3)] == [
            by_body["0.0"].level + i for i in range(3)
        ]
    assert by_body["merge"].level == by_body["0.2"].level + 1
    assert len({(n.level, n.column) for n in nodes.values()}) == len(nodes)


def test_svg_has_a_node_per_event_and_an_edge_per_prev_reference() -> None:
    b, stored = forked_room(branches=5, length=40)  # ~200 events with forks
    svg = render_dag_svg(stored, forward_extremities=b.latest, title=b.room_id)
    _, nodes, edges = parse_svg(svg)
    assert len(nodes) == len(stored) >= 200
    assert len(edges) == sum(len(s.event.prev_event_ids) for s in stored)
    assert {(e.get("data-from"), e.get("data-to")) for e in edges} == {
        (s.event.event_id, p) for s in stored for p in s.event.prev_event_ids
    }
    extremities = [g for g in nodes if "extremity" in _classes(g)]
    assert [g.get("data-event-id") for g in extremities] == b.latest
    state_nodes = {g.get("data-event-id") for g in nodes if "state" in _classes(g)}
    assert state_nodes == {s.event.event_id for s in stored if s.event.state_key is not None}
    for g in nodes:
        title = g.find(SVG + "title")
        assert title is not None and title.text is not None
        event_id = g.get("data-event-id")
        assert f"event ID: {event_id}" in title.text
        assert "type: " in title.text and "sender: " in title.text
    # Readable: no two nodes closer than a row apart vertically or a column horizontally.
    positions = sorted((n.level, n.column) for n in layout(stored).values())
    assert len(set(positions)) == len(positions)


def test_outcomes_colour_the_nodes_and_a_missing_prev_gets_a_stub() -> None:
    b = RoomBuilder("10")
    b.create_room(ALICE)
    orphan = parse_event(b.make_pdu("m.room.message", ALICE, {}, prev_events=[GONE]), "10")
    stored = [StoredEvent(event=e, outlier=False) for e in b.events.values()]
    stored.append(
        StoredEvent(event=orphan, outlier=False, rejected=True, rejection_reason="not allowed")
    )
    _, nodes, edges = parse_svg(render_dag_svg(stored))
    rejected = [g for g in nodes if "rejected" in _classes(g)]
    assert [g.get("data-event-id") for g in rejected] == [orphan.event_id]
    stubs = [e for e in edges if "outside" in _classes(e)]
    assert [(e.get("data-from"), e.get("data-to")) for e in stubs] == [(orphan.event_id, GONE)]


async def test_dag_svg_over_http_matches_the_stored_room(open_roomserver: OpenRoomserver) -> None:
    rs = await open_roomserver()
    b, pdus, expected = sample_room()
    trust(rs, b)
    await submit(rs, pdus)
    async with listening(rs) as base, api_client(base) as api:
        status, svg = await api.call("GET", "/rooms/{roomId}/dag.svg", params={"roomId": b.room_id})
        assert status == 200
        _, nodes, edges = parse_svg(svg)
        stored_ids = [g.get("data-event-id") for g in nodes]
        stored = [await rs.event(i or "") for i in stored_ids]
        assert len(nodes) == len(expected)  # every stored event (the invalid ones are not)
        assert len(edges) == sum(len(s.event.prev_event_ids) for s in stored if s is not None)
        statuses = {
            g.get("data-event-id"): (_classes(g) & {"accepted", "rejected", "soft_failed"}).pop()
            for g in nodes
        }
        for s in stored:
            assert s is not None and statuses[s.event.event_id] == s.outcome.value
        status, svg = await api.call(
            "GET", "/rooms/{roomId}/dag.svg", params={"roomId": b.room_id}, query={"limit": "3"}
        )
        _, nodes, _ = parse_svg(svg)
        assert len(nodes) == 3
