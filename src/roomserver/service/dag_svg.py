"""A picture of a room's DAG as SVG, laid out here (pure; no Graphviz).

Layout: each event sits on the row of its *topological level* within the picture (0 for an
event none of whose prev events are in the picture, else one more than its highest prev);
for a well-formed room this is its depth, counted from the oldest event shown. Within a row,
events are ordered by the mean column of their prev events (so a chain stays in its column
and a fork opens a new one to the right), then by depth and event ID. Edges run from an event
to each of its prev events; a prev event outside the picture gets a dashed stub.

Marks: fill colour is the outcome (accepted, soft-failed, rejected, outlier); state events
are squares, other events circles; forward extremities have a thick blue ring. Each node has a
``<title>`` (shown on hover): type, state key, sender, event ID, outcome and reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from roomserver.api import StoredEvent
from roomserver.core.ids import EventId

ROW_HEIGHT = 44
COLUMN_WIDTH = 230
MARGIN_X = 24
TOP = 70
RADIUS = 8
LABEL_CHARS = 30

COLOURS = {
    "accepted": "#2e7d32",
    "soft_failed": "#ef8f00",
    "rejected": "#c62828",
    "outlier": "#9e9e9e",
}
EXTREMITY_RING = "#1565c0"


@dataclass(frozen=True, slots=True)
class _Node:
    stored: StoredEvent
    level: int
    column: int

    @property
    def x(self) -> int:
        return MARGIN_X + RADIUS + self.column * COLUMN_WIDTH

    @property
    def y(self) -> int:
        return TOP + self.level * ROW_HEIGHT


def status_of(stored: StoredEvent) -> str:
    return "outlier" if stored.outlier else stored.outcome.value


def topological_levels(events: Sequence[StoredEvent]) -> dict[EventId, int]:
    """Level of each event: 0 without a prev event in ``events``, else 1 + the highest."""
    by_id = {e.event.event_id: e for e in events}
    children: dict[EventId, list[EventId]] = {i: [] for i in by_id}
    waiting: dict[EventId, int] = {}
    for event_id, stored in by_id.items():
        prevs = [p for p in dict.fromkeys(stored.event.prev_event_ids) if p in by_id]
        waiting[event_id] = len(prevs)
        for prev in prevs:
            children[prev].append(event_id)
    level = {i: 0 for i in by_id}
    ready = sorted(i for i, n in waiting.items() if n == 0)
    while ready:
        event_id = ready.pop()
        for child in children[event_id]:
            level[child] = max(level[child], level[event_id] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    # A cycle cannot occur in a room's DAG; if stored data had one, its events keep level 0
    # plus whatever their placed prev events gave them rather than looping.
    return level


def layout(events: Sequence[StoredEvent]) -> dict[str, _Node]:
    levels = topological_levels(events)
    rows: dict[int, list[StoredEvent]] = {}
    for stored in events:
        rows.setdefault(levels[stored.event.event_id], []).append(stored)
    placed: dict[str, _Node] = {}
    for level in sorted(rows):

        def key(stored: StoredEvent) -> tuple[float, int, str]:
            columns = [placed[p].column for p in stored.event.prev_event_ids if p in placed]
            mean = sum(columns) / len(columns) if columns else float("inf")
            return (mean, stored.event.depth, stored.event.event_id)

        for column, stored in enumerate(sorted(rows[level], key=key)):
            placed[stored.event.event_id] = _Node(stored, level, column)
    return placed


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _label(stored: StoredEvent) -> str:
    event = stored.event
    sender = event.sender.split(":", 1)[0]
    kind = event.type
    if event.state_key is not None and event.type == "m.room.member":
        membership = event.content.get("membership")
        kind = f"{event.state_key.split(':', 1)[0]} {membership}" if membership else kind
    return _short(f"{kind} · {sender}")


def _hover(stored: StoredEvent, is_extremity: bool) -> str:
    event = stored.event
    lines = [f"type: {event.type}"]
    if event.state_key is not None:
        lines.append(f"state_key: {event.state_key!r}")
    lines += [f"sender: {event.sender}", f"event ID: {event.event_id}", f"depth: {event.depth}"]
    status = status_of(stored)
    lines.append(
        f"outcome: {status}" + (f": {stored.rejection_reason}" if stored.rejection_reason else "")
    )
    if is_extremity:
        lines.append("forward extremity")
    return "\n".join(lines)


def _edge_path(child: _Node, parent: _Node) -> str:
    x1, y1, x2, y2 = child.x, child.y - RADIUS, parent.x, parent.y + RADIUS
    if x1 == x2:
        return f"M{x1},{y1} L{x2},{y2}"
    middle = (y1 + y2) / 2
    return f"M{x1},{y1} C{x1},{middle} {x2},{middle} {x2},{y2}"


def _legend(width: int) -> list[str]:
    out = ['<g class="legend" font-size="12">']
    x = MARGIN_X
    for name, colour in COLOURS.items():
        out.append(f'<circle cx="{x + 6}" cy="38" r="6" fill="{colour}"/>')
        out.append(f'<text x="{x + 16}" y="42">{name.replace("_", "-")}</text>')
        x += 100
    out.append(f'<rect x="{x}" y="32" width="12" height="12" fill="#607d8b"/>')
    out.append(f'<text x="{x + 18}" y="42">state event</text>')
    x += 100
    out.append(
        f'<circle cx="{x + 6}" cy="38" r="6" fill="#fff" stroke="{EXTREMITY_RING}" '
        'stroke-width="3"/>'
    )
    out.append(f'<text x="{x + 16}" y="42">forward extremity</text>')
    out.append("</g>")
    return out


def render_dag_svg(
    events: Sequence[StoredEvent], *, forward_extremities: Iterable[str] = (), title: str = ""
) -> str:
    """An SVG document of ``events`` (a room's newest events) and their prev-event edges."""
    nodes = layout(events)
    extremities = set(forward_extremities)
    columns = max((n.column for n in nodes.values()), default=0) + 1
    levels = max((n.level for n in nodes.values()), default=0) + 1
    width = max(760, MARGIN_X * 2 + columns * COLUMN_WIDTH)
    height = TOP + levels * ROW_HEIGHT + 10
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" class="room-dag" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif">',
        f"<title>{escape(title)} — {len(nodes)} events</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{MARGIN_X}" y="20" font-size="14" font-weight="bold">'
        f"{escape(_short(title, 90))} — newest {len(nodes)} events</text>",
        *_legend(width),
        '<g class="edges" fill="none" stroke="#78909c" stroke-width="1.3">',
    ]
    for node in nodes.values():
        event = node.stored.event
        for prev in event.prev_event_ids:
            parent = nodes.get(prev)
            attrs = f'data-from="{escape(event.event_id)}" data-to="{escape(prev)}"'
            if parent is not None:
                out.append(f'<path class="edge" {attrs} d="{_edge_path(node, parent)}"/>')
            else:
                x, y = node.x, node.y - RADIUS
                out.append(
                    f'<path class="edge outside" {attrs} stroke-dasharray="3,3" '
                    f'd="M{x},{y} L{x + 10},{y - 18}"/>'
                )
    out.append("</g>")
    out.append('<g class="nodes" font-size="11">')
    for event_id, node in nodes.items():
        stored = node.stored
        status = status_of(stored)
        is_state = stored.event.state_key is not None
        is_extremity = event_id in extremities
        classes = ["node", status]
        if is_state:
            classes.append("state")
        if is_extremity:
            classes.append("extremity")
        colour = COLOURS[status]
        ring = (
            f' stroke="{EXTREMITY_RING}" stroke-width="3.5"'
            if is_extremity
            else ' stroke="#263238" stroke-width="0.8"'
        )
        out.append(f'<g class="{" ".join(classes)}" data-event-id="{escape(event_id)}">')
        out.append(f"<title>{escape(_hover(stored, is_extremity))}</title>")
        if is_state:
            side = RADIUS * 2
            out.append(
                f'<rect x="{node.x - RADIUS}" y="{node.y - RADIUS}" width="{side}" '
                f'height="{side}" rx="2" fill="{colour}"{ring}/>'
            )
        else:
            out.append(f'<circle cx="{node.x}" cy="{node.y}" r="{RADIUS}" fill="{colour}"{ring}/>')
        out.append(
            f'<text x="{node.x + RADIUS + 5}" y="{node.y + 4}">{escape(_label(stored))}</text>'
        )
        out.append("</g>")
    out.append("</g></svg>")
    return "\n".join(out)
