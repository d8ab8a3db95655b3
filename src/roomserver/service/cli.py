"""The ``roomserver`` command: ``serve``, ``input``, ``state``, ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from roomserver import __version__
from roomserver.config import Config, ConfigError, load_config
from roomserver.core.ids import RoomId
from roomserver.service.logs import configure_logging

log = logging.getLogger("roomserver")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomserver",
        description="A Matrix roomserver: ingests room events over NATS JetStream and keeps "
        "each room's DAG and state true.",
    )
    parser.add_argument("--version", action="version", version=f"roomserver {__version__}")
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config file (default: embedded defaults, ./data)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the roomserver until SIGTERM/SIGINT")
    serve.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS)

    inp = sub.add_parser(
        "input", help="submit a room's events from a JSON-lines file (one PDU per line)"
    )
    inp.add_argument("file", metavar="FILE", help="JSON lines: one PDU per line ('-' = stdin)")
    inp.add_argument("--room-version", required=True, help="the room version of the events")
    inp.add_argument(
        "--kind", choices=("new", "old", "outlier"), default="new", help="input kind (new)"
    )
    inp.add_argument(
        "--verified",
        action="store_true",
        help="the events were already checked (skip hash, signature and ACL checks)",
    )
    inp.add_argument("--batch", type=int, default=100, help="events per sync request (100)")
    inp.add_argument("--no-progress", action="store_true", help="no progress bar")
    inp.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS)

    state = sub.add_parser("state", help="print a room's current state as JSON")
    state.add_argument("room_id", metavar="ROOM_ID")
    state.add_argument("--full", action="store_true", help="print the events, not only their IDs")
    state.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS)

    demo = sub.add_parser(
        "demo", help="build a sample room signed by three servers, ingest it, and explain it"
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument("--json", action="store_true", help="print the results as JSON")
    demo.add_argument(
        "--svg", metavar="FILE", help="where to write the DAG picture (<data_dir>/demo-dag.svg)"
    )
    demo.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"roomserver: {exc}", file=sys.stderr)
        return 2
    configure_logging(config)
    try:
        if args.command == "serve":
            from roomserver.service.serve import serve

            return asyncio.run(serve(config))
        if args.command == "input":
            return asyncio.run(_input(config, args))
        if args.command == "state":
            return asyncio.run(_state(config, args.room_id, full=args.full))
        if args.command == "demo":
            from roomserver.service.demo import run_demo

            return asyncio.run(run_demo(config, args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the CLI's last line of defence: say what failed, no traceback
        log.debug("command failed", exc_info=True)
        print(f"roomserver {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 2


def _read_pdus(path: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    pdus: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not JSON: {exc.msg}") from None
        if not isinstance(value, dict):
            raise ValueError(f"{path}:{lineno}: not a JSON object")
        pdus.append(value)
    return pdus


class _Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal, unless forced)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self.enabled = enabled

    def advance(self, n: int, summary: str) -> None:
        self.done += n
        if not self.enabled:
            return
        width = 30
        filled = width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} {summary}")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _client_or_standalone(config: Config) -> tuple[Config, bool]:
    """When a ``roomserver serve`` with an embedded nats-server runs on the same data directory,
    submit through its stream (its workers process the events); otherwise run standalone."""
    from roomserver.startup import NATS_URL_FILE

    url_file = Path(config.data_dir) / NATS_URL_FILE
    if config.nats.url is None and url_file.exists():
        url = url_file.read_text(encoding="ascii").strip()
        host, _, port = url.removeprefix("nats://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except (OSError, ValueError):
            log.info("stale %s (%s does not answer): running standalone", url_file, url)
        else:
            log.info("submitting through the running roomserver at %s", url)
            return replace(config, nats=replace(config.nats, url=url)), False
    return config, True


async def _input(config: Config, args: argparse.Namespace) -> int:
    from roomserver.api import InputRoomEvent, InputRoomEventsRequest, Kind, Outcome
    from roomserver.app import Roomserver

    pdus = await asyncio.to_thread(_read_pdus, args.file)
    kind = {"new": Kind.NEW, "old": Kind.OLD, "outlier": Kind.OUTLIER}[args.kind]
    from roomserver.federation.errors import unobtainable_keys

    counts: dict[str, int] = {}
    failures: list[str] = []
    missing_keys: dict[str, set[str]] = {}
    progress = _Progress(len(pdus), enabled=not args.no_progress and sys.stderr.isatty())
    standalone_config, run_workers = await asyncio.to_thread(_client_or_standalone, config)
    async with Roomserver.from_config(standalone_config, run_workers=run_workers) as rs:
        for start in range(0, len(pdus), max(1, args.batch)):
            batch = pdus[start : start + max(1, args.batch)]
            request = InputRoomEventsRequest(
                events=[
                    InputRoomEvent(
                        event=p, kind=kind, verified=args.verified, room_version=args.room_version
                    )
                    for p in batch
                ]
            )
            response = await rs.input_room_events(request)
            for result in response.results:
                counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
                if result.outcome not in (Outcome.ACCEPTED, Outcome.SOFT_FAILED):
                    failures.append(f"{result.event_id}: {result.outcome.value}: {result.reason}")
                unobtainable = unobtainable_keys(result.reason)
                if result.outcome is Outcome.INVALID and unobtainable is not None:
                    missing_keys.setdefault(unobtainable[0], set()).update(unobtainable[1])
            progress.advance(len(batch), " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    for line in failures[:20]:
        print(line, file=sys.stderr)
    if len(failures) > 20:
        print(f"... and {len(failures) - 20} more", file=sys.stderr)
    if missing_keys:
        print(_out_of_band_keys_hint(missing_keys), file=sys.stderr)
    print(json.dumps({"submitted": len(pdus), "outcomes": counts}, sort_keys=True))
    return 0 if not failures else 1


def _out_of_band_keys_hint(missing: dict[str, set[str]]) -> str:
    """How to give signing keys that could not be fetched, for the servers in ``missing``."""
    entries = "".join(
        f"    {server}:\n" + "".join(f'      "{key_id}": <verify key>\n' for key_id in sorted(ids))
        for server, ids in sorted(missing.items())
    )
    return (
        "Some events are INVALID because a server's signing key could not be fetched (the\n"
        "server did not answer). If you know the key (unpadded base64 of the ed25519 verify\n"
        "key, e.g. from the server's /_matrix/key/v2/server or its admin), give it out of band\n"
        "and submit the events again. In the config file:\n"
        "  federation:\n"
        "    trusted_keys:\n"
        f"{entries}"
        "or from Python: rs.keyring.add_verify_key(server_name, key_id, VerifyKey(key_bytes))."
    )


async def _state(config: Config, room_id: str, *, full: bool) -> int:
    from roomserver.app import open_storage_for

    async with open_storage_for(config) as store:
        info = await store.room(RoomId(room_id))
        if info is None:
            print(f"roomserver state: unknown room {room_id}", file=sys.stderr)
            return 1
        state = await store.state_map(info.current_state)
        events = await store.get_events(state.values()) if full else {}
    out: list[dict[str, Any]] = []
    for (event_type, state_key), event_id in sorted(state.items()):
        entry: dict[str, Any] = {"type": event_type, "state_key": state_key, "event_id": event_id}
        if full and event_id in events:
            entry["event"] = dict(events[event_id].event.pdu)
        out.append(entry)
    print(
        json.dumps(
            {"room_id": room_id, "room_version": info.room_version, "state": out},
            indent=2,
            ensure_ascii=False,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
