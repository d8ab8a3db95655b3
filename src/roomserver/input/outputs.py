"""Output events as outbox entries: encoded once, with stable message IDs.

A message ID is ``<event_id>:<output type>:<n>`` where ``n`` numbers the outputs of that type
caused by one event, so reprocessing an event yields the same IDs and the bus drops duplicates.
"""

from __future__ import annotations

from roomserver.api import OutputEvent, OutputPayload, encode_output_event
from roomserver.ports import OutboxEntry


class OutboxBuilder:
    """Collects the outputs caused by one event, in publication order."""

    def __init__(self, room_id: str, event_id: str) -> None:
        self._room_id = room_id
        self._event_id = event_id
        self._counts: dict[str, int] = {}
        self.entries: list[OutboxEntry] = []

    def add(self, payload: OutputPayload) -> None:
        output = OutputEvent(room_id=self._room_id, payload=payload)
        output_type = output.type.value
        n = self._counts.get(output_type, 0)
        self._counts[output_type] = n + 1
        self.entries.append(
            OutboxEntry(
                msg_id=f"{self._event_id}:{output_type}:{n}",
                output_type=output_type,
                payload=encode_output_event(output),
            )
        )
