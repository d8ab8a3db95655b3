"""The web console at ``/``: server-rendered HTML, no front-end build.

Pages: the rooms (those with queued input first), and a room page with its summary, its queue,
its state table, its newest events with outcome and reason, and the picture of its DAG (inline
SVG, so hovering a node shows its details). Signing in takes the API token (a form); the
session cookie holds an HMAC of the token, so changing the token signs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
from html import escape
from urllib.parse import quote

from aiohttp import web

from roomserver.api import StoredEvent
from roomserver.service.dag_svg import COLOURS, render_dag_svg, status_of
from roomserver.service.http_api import (
    DEFAULT_DAG_LIMIT,
    MAX_DAG_LIMIT,
    ROOMSERVER_KEY,
    SETTINGS_KEY,
    path_room_id,
    token_matches,
)

COOKIE = "roomserver_console"
LATEST_SHOWN = 50

_STYLE = """
body { font-family: sans-serif; margin: 0; color: #1b2631; background: #f5f7f8; }
header { background: #263238; color: #fff; padding: 10px 20px; display: flex;
         justify-content: space-between; align-items: center; }
header a { color: #fff; text-decoration: none; font-weight: bold; }
main { padding: 16px 20px; }
table { border-collapse: collapse; background: #fff; margin-bottom: 18px; font-size: 13px; }
th, td { border: 1px solid #cfd8dc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eceff1; }
code { font-size: 12px; }
.outcome { font-weight: bold; }
.muted { color: #607d8b; }
#dag { overflow: auto; max-height: 900px; border: 1px solid #cfd8dc; background: #fff; }
form.inline { display: inline; }
.error { color: #c62828; }
"""


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"roomserver console session", hashlib.sha256).hexdigest()


def signed_in(request: web.Request) -> bool:
    token = request.app[SETTINGS_KEY].token
    if token is None:
        return False
    return token_matches(session_value(token), request.cookies.get(COOKIE))


def page(title: str, body: str, *, signed: bool = True) -> web.Response:
    logout = (
        '<form class="inline" method="post" action="/logout">'
        '<button type="submit">Sign out</button></form>'
        if signed
        else ""
    )
    html = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)} — roomserver</title><style>{_STYLE}</style></head><body>"
        f"<header><a href='/'>roomserver console</a>{logout}</header>"
        f"<main>{body}</main></body></html>"
    )
    return web.Response(text=html, content_type="text/html")


def room_link(room_id: str) -> str:
    return f"<a href='/rooms/{quote(room_id, safe='')}'>{escape(room_id)}</a>"


def outcome_cell(stored: StoredEvent) -> str:
    status = status_of(stored)
    return (
        f"<td class='outcome' style='color:{COLOURS[status]}'>{escape(status)}</td>"
        f"<td>{escape(stored.rejection_reason or '')}</td>"
    )


# ---------------------------------------------------------------------------------------------


async def login_form(request: web.Request, *, error: str = "") -> web.Response:
    if request.app[SETTINGS_KEY].token is None:
        body = (
            "<h1>Console disabled</h1><p>No API token is configured. Set <code>http.token</code>"
            " or <code>http.token_file</code> in the roomserver's config and restart it.</p>"
        )
        return page("Console disabled", body, signed=False)
    message = f"<p class='error'>{escape(error)}</p>" if error else ""
    body = (
        "<h1>Sign in</h1>"
        f"{message}"
        "<form method='post' action='/login'>"
        "<label>API token <input type='password' name='token' id='token' autofocus></label> "
        "<button type='submit' id='sign-in'>Sign in</button></form>"
        "<p class='muted'>The token is the roomserver's <code>http.token</code>.</p>"
    )
    return page("Sign in", body, signed=False)


async def get_login(request: web.Request) -> web.Response:
    return await login_form(request)


async def post_login(request: web.Request) -> web.StreamResponse:
    token = request.app[SETTINGS_KEY].token
    form = await request.post()
    presented = form.get("token")
    if token is None or not isinstance(presented, str) or not token_matches(token, presented):
        response = await login_form(request, error="That token is not right.")
        response.set_status(401)
        return response
    redirect = web.HTTPSeeOther("/")
    redirect.set_cookie(COOKIE, session_value(token), httponly=True, samesite="Strict", path="/")
    raise redirect


async def post_logout(_: web.Request) -> web.StreamResponse:
    redirect = web.HTTPSeeOther("/login")
    redirect.del_cookie(COOKIE, path="/")
    raise redirect


async def get_rooms(request: web.Request) -> web.Response:
    if not signed_in(request):
        return await login_form(request)
    rs = request.app[ROOMSERVER_KEY]
    queued = await rs.queued_input()
    rooms = await rs.rooms()
    parts = ["<h1>Rooms</h1>", "<h2>Queued input</h2>"]
    if queued:
        parts.append(
            "<table id='queued-rooms'><tr><th>room</th><th>pending</th><th>deliveries</th>"
            "<th>in flight for</th><th>last error</th></tr>"
        )
        for q in queued:
            age = "" if q.head_age_s is None else f"{q.head_age_s:.1f} s"
            link = room_link(q.room_id) if q.room_id else "<i>unknown (hashed subject)</i>"
            deliveries = "" if q.head_delivery_count is None else str(q.head_delivery_count)
            parts.append(
                f"<tr><td>{link}</td><td>{q.pending}</td><td>{deliveries}</td><td>{age}</td>"
                f"<td>{escape(q.last_error or '')}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p class='muted'>No room has input waiting.</p>")
    parts.append("<h2>All rooms</h2>")
    if rooms:
        parts.append("<table id='rooms'><tr><th>room</th><th>version</th><th>events</th></tr>")
        for room in rooms:
            parts.append(
                f"<tr><td>{room_link(room.room_id)}</td><td>{escape(room.room_version)}</td>"
                f"<td>{room.events}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p class='muted'>No rooms yet.</p>")
    return page("Rooms", "".join(parts))


async def get_room(request: web.Request) -> web.Response:
    if not signed_in(request):
        return await login_form(request)
    rs = request.app[ROOMSERVER_KEY]
    room_id = path_room_id(request)
    info = await rs.room_info(room_id)
    queued = await rs.queued_input_of(room_id)
    if info is None and queued.pending == 0:
        response = page("Unknown room", f"<h1>Unknown room</h1><p>{escape(room_id)}</p>")
        response.set_status(404)
        return response
    try:
        limit = min(max(int(request.query.get("limit", DEFAULT_DAG_LIMIT)), 1), MAX_DAG_LIMIT)
    except ValueError:
        limit = DEFAULT_DAG_LIMIT
    counts = await rs.event_counts(room_id)
    state = await rs.current_state(room_id)
    latest = await rs.latest_events(room_id)
    events = await rs.newest_events(room_id, limit=max(limit, LATEST_SHOWN))
    state_events = await rs.storage.get_events(list(state.values()))
    parts = [f"<h1>{escape(room_id)}</h1>"]
    parts.append(
        "<table id='summary'>"
        f"<tr><th>room version</th><td>{escape(info.room_version if info else '?')}</td></tr>"
        f"<tr><th>events</th><td>{counts.accepted} accepted, {counts.soft_failed} soft-failed,"
        f" {counts.rejected} rejected, {counts.outlier} outliers</td></tr>"
        f"<tr><th>state</th><td>{len(state)} entries</td></tr>"
        "<tr><th>forward extremities</th><td>"
        + "<br>".join(f"<code>{escape(e)}</code>" for e in latest)
        + "</td></tr>"
        f"<tr><th>queued input</th><td>{queued.pending} message(s)"
        + (
            f"; head seq {queued.head_seq}, {queued.head_delivery_count} deliveries,"
            f" {queued.head_age_s or 0:.1f} s; last error: {escape(queued.last_error or '-')}"
            if queued.head_seq is not None
            else ""
        )
        + "</td></tr></table>"
    )
    if queued.pending:
        parts.append(_queue_actions(room_id, request.query.get("done", "")))
    elif request.query.get("done"):
        parts.append(f"<p id='done'>{escape(request.query['done'])}</p>")
    parts.append("<h2>Current state</h2><table id='state-table'>")
    parts.append("<tr><th>type</th><th>state key</th><th>sender</th><th>event ID</th></tr>")
    for (event_type, state_key), event_id in sorted(state.items()):
        stored = state_events.get(event_id)
        sender = stored.event.sender if stored is not None else ""
        parts.append(
            f"<tr><td>{escape(event_type)}</td><td>{escape(state_key)}</td>"
            f"<td>{escape(sender)}</td><td><code>{escape(event_id)}</code></td></tr>"
        )
    parts.append("</table>")
    parts.append(f"<h2>Latest events (newest {LATEST_SHOWN})</h2><table id='latest-events'>")
    parts.append(
        "<tr><th>depth</th><th>type</th><th>sender</th><th>event ID</th><th>outcome</th>"
        "<th>reason</th></tr>"
    )
    for stored in reversed(events[-LATEST_SHOWN:]):
        ev = stored.event
        parts.append(
            f"<tr><td>{ev.depth}</td><td>{escape(ev.type)}</td><td>{escape(ev.sender)}</td>"
            f"<td><code>{escape(ev.event_id)}</code></td>{outcome_cell(stored)}</tr>"
        )
    parts.append("</table>")
    shown = events[-limit:]
    parts.append(
        f"<h2>DAG (newest {len(shown)} events)</h2>"
        "<p class='muted'>Hover a node for its type, sender and event ID. "
        f"<a href='?limit={min(limit * 2, MAX_DAG_LIMIT)}'>show more</a></p>"
    )
    parts.append(
        "<div id='dag'>"
        + render_dag_svg(shown, forward_extremities=latest, title=room_id)
        + "</div>"
    )
    return page(room_id, "".join(parts))


def _queue_actions(room_id: str, done: str) -> str:
    action = f"/rooms/{quote(room_id, safe='')}"
    note = f"<p id='done'>{escape(done)}</p>" if done else ""
    return (
        f"<h2>Queued input</h2>{note}<div id='queue-actions'>"
        f"<form class='inline' method='post' action='{action}/retry'>"
        "<button type='submit'>Retry head now</button></form> "
        f"<form class='inline' method='post' action='{action}/skip'>"
        "<input name='reason' placeholder='why skip it' required> "
        "<button type='submit'>Skip head</button></form> "
        f"<form class='inline' method='post' action='{action}/purge'>"
        "<button type='submit'>Purge queued input</button></form></div>"
    )


def _same_origin(request: web.Request) -> bool:
    """Forms post from our own pages (the cookie is SameSite=Strict too)."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


async def post_queue_action(request: web.Request) -> web.Response:
    if not signed_in(request) or not _same_origin(request):
        response = await login_form(request, error="Sign in first.")
        response.set_status(403)
        return response
    rs = request.app[ROOMSERVER_KEY]
    room_id = path_room_id(request)
    action = request.match_info["action"]
    form = await request.post()
    if action == "purge":
        done = f"purged {await rs.purge_input(room_id)} message(s)"
    else:
        if action == "skip":
            reason = form.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                raise web.HTTPSeeOther(f"/rooms/{quote(room_id, safe='')}?done=say+why")
            outcome = await rs.skip_input(room_id, reason.strip())
        else:
            outcome = await rs.retry_input(room_id)
        done = f"{action}: {outcome.value}"
    raise web.HTTPSeeOther(f"/rooms/{quote(room_id, safe='')}?done={quote(done)}")


def add_console_routes(app: web.Application) -> None:
    app.router.add_get("/", get_rooms)
    app.router.add_get("/login", get_login)
    app.router.add_post("/login", post_login)
    app.router.add_post("/logout", post_logout)
    app.router.add_get("/rooms/{room_id}", get_room)
    app.router.add_post("/rooms/{room_id}/{action:retry|skip|purge}", post_queue_action)
