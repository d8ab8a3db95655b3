"""Runs Synapse's authorization rules on events written by tests/core/auth/test_against_synapse.py.

Runs inside .synapse-venv (matrix-synapse from PyPI, see bench/setup_synapse_venv.sh), never
inside the project's venv. Reads a JSON document on stdin:

    {"rooms": [{"room_version": "10", "pdus": [...], "event_ids": [...],
                "checks": [{"event_id": ..., "state": [event_id, ...]}, ...]}, ...]}

and writes ``{"rooms": [{"checks": [{"auth_events": null | reason, "state": null | reason}]}]}``
on stdout: for each check, ``null`` when Synapse allows the event, else its reason.

* ``auth_events``: the event against its own auth events, as Synapse checks an event on
  receipt: ``check_state_independent_auth_rules`` (the auth event list checks) and then
  ``check_state_dependent_auth_rules`` over the cited events.
* ``state``: ``check_state_dependent_auth_rules`` against the given state (the state before
  the event), narrowed to the types Synapse's ``auth_types_for_event`` selects (and, for a
  create event, whose rules Synapse keeps in the state-independent part, those rules).

An exception other than Synapse's own errors is reported as ``"crash: ..."``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import synapse.event_auth
import synapse.events
from synapse.api.errors import SynapseError
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS


class _Store:
    """The one store method the state-independent checks use."""

    def __init__(self, events: dict[str, Any]) -> None:
        self.events = events

    async def get_events(self, event_ids: Any, **_kwargs: Any) -> dict[str, Any]:
        return {e: self.events[e] for e in event_ids if e in self.events}


def _verdict(check: Any) -> str | None:
    try:
        check()
    except SynapseError as exc:
        return str(exc.msg)
    except Exception as exc:  # reported to the test as a disagreement
        return f"crash: {type(exc).__name__}: {exc}"
    return None


def check_room(request: dict[str, Any]) -> dict[str, Any]:
    room_version = KNOWN_ROOM_VERSIONS[request["room_version"]]
    events: dict[str, Any] = {}
    for pdu, event_id in zip(request["pdus"], request["event_ids"], strict=True):
        event = synapse.events.make_event_from_dict(pdu, room_version)
        if event.event_id != event_id:
            raise SystemExit(f"event ID mismatch: ours {event_id}, synapse {event.event_id}")
        events[event_id] = event
    store = _Store(events)
    loop = asyncio.new_event_loop()
    out = []
    for check in request["checks"]:
        event = events[check["event_id"]]

        def against_auth_events(event: Any = event) -> None:
            loop.run_until_complete(
                synapse.event_auth.check_state_independent_auth_rules(store, event)
            )
            cited = [events[e] for e in event.auth_event_ids() if e in events]
            synapse.event_auth.check_state_dependent_auth_rules(event, cited)

        # The create event too: in room version 12 it is not among the selected types, but
        # the rules read it (Synapse adds it through ``auth_event_ids``).
        wanted = set(synapse.event_auth.auth_types_for_event(room_version, event))
        wanted.add(("m.room.create", ""))
        state = [events[e] for e in check["state"]]
        selected = [e for e in state if (e.type, e.state_key) in wanted]

        def against_state(event: Any = event, selected: Any = selected) -> None:
            if event.type == "m.room.create":
                # Synapse checks a create event in its state-independent part only.
                loop.run_until_complete(
                    synapse.event_auth.check_state_independent_auth_rules(store, event)
                )
            synapse.event_auth.check_state_dependent_auth_rules(event, selected)

        out.append({"auth_events": _verdict(against_auth_events), "state": _verdict(against_state)})
    loop.close()
    return {"checks": out}


def main() -> None:
    request = json.load(sys.stdin)
    json.dump({"rooms": [check_room(room) for room in request["rooms"]]}, sys.stdout)


if __name__ == "__main__":
    main()
