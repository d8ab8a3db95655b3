"""The room workers' handler of input messages: a bus message in, a ``HandlerResult`` out.

``InputHandler.handle`` takes one message of a room: it resolves the state lists that travel
beside it (``input/statelists.py``), gives a message of many outliers to the bulk path
(``input/bulk.py``), hands the rest to ``input.handle_message`` and turns its ``Decision``
into the bus's ``HandlerResult`` (counting the outcomes). ``handle_unit`` takes several queued
messages of one room at once (``input.handle_messages``). ``app.Roomserver`` creates one and
starts the bus's room workers with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from roomserver.api import (
    INPUT_WIRE_VERSION,
    STATE_LIST_REF_FIELD,
    EventResult,
    Kind,
    WireFormatError,
    decode_input_message,
    encode_event_results,
)
from roomserver.bus import DeliveryInfo, HandlerResult
from roomserver.core.hashes import compute_event_id
from roomserver.core.ids import RoomId
from roomserver.input import Decision, InputProcessor, handle_message, handle_messages, statelists
from roomserver.input.bulk import OutlierImporter
from roomserver.input.store import rejected_for_missing_data
from roomserver.metrics import Metrics
from roomserver.ports import Disposition, Storage

log = logging.getLogger(__name__)

#: Present in an encoded input message that holds an outlier (``kind`` 1).
_OUTLIER_MARK = b'"kind":1'


class InputHandler:
    """Handles the input messages of the room workers of one process (``processor`` is None
    in a process that runs no room workers: then nothing calls it)."""

    def __init__(
        self,
        *,
        processor: InputProcessor | None,
        storage: Storage,
        metrics: Metrics,
        blobs: statelists.BlobStore | None,
        bulk: OutlierImporter | None,
    ) -> None:
        self.processor = processor
        self.storage = storage
        self.metrics = metrics
        #: Where large ``state_event_ids`` lists travel (``input/statelists.py``).
        self.blobs = blobs
        #: The bulk path for messages of many outliers (``input/bulk.py``); None: off.
        self.bulk = bulk

    async def handle(self, room_id: str, payload: bytes, info: DeliveryInfo) -> HandlerResult:
        assert self.processor is not None
        started = time.perf_counter()
        if info.num_delivered > 1:
            self.metrics.redeliveries.inc()
        try:
            resolved = await statelists.resolve_payload(payload, self.blobs, self._final_and_stored)
        except statelists.StateListLost as exc:
            log.error("input message %d of %s: %s", info.stream_seq, room_id, exc)
            return HandlerResult.terminate(str(exc))
        except Exception as exc:  # the blob store is unreachable: try again later
            return HandlerResult.retry(1.0, reason=f"state list not read: {exc}")
        if self.bulk is not None and _OUTLIER_MARK in resolved.payload:
            try:
                answered = await self._import_outliers(RoomId(room_id), resolved.payload)
            except Exception as exc:  # nothing decided is lost: the normal path does it all
                log.warning("bulk path for message %d failed: %s", info.stream_seq, exc)
                answered = None
            if answered is not None:  # every event of the message has its stored outcome
                self.metrics.processing_seconds.observe(time.perf_counter() - started)
                for result in answered:
                    self.metrics.events_processed.labels(outcome=result.outcome.value).inc()
                return HandlerResult.ack(encode_event_results(answered))
        decision = await handle_message(
            self.processor, RoomId(room_id), resolved.payload, info, max_attempts=10
        )
        if resolved.refs and decision.disposition is Disposition.ACK:
            assert self.blobs is not None
            try:
                await statelists.release(self.blobs, resolved.refs, self._final_and_stored)
            except Exception as exc:  # kept until the bucket's max age removes them
                log.warning("state lists of message %d not deleted: %s", info.stream_seq, exc)
        self.metrics.processing_seconds.observe(time.perf_counter() - started)
        return self._handler_result(decision)

    async def handle_unit(
        self, room_id: str, messages: Sequence[tuple[bytes, DeliveryInfo]]
    ) -> list[HandlerResult]:
        """Several queued messages of one room as one unit (see ``handle_messages``). A message
        with a state list reference or outliers is handled on its own (``handle``: it resolves
        the references and takes the bulk path): the unit stops before it, and when it is the
        head, no result tells the worker to handle the head alone (with its retry backoff)."""
        assert self.processor is not None
        if self._handled_alone(messages[0][0]):
            return []
        cut = next(
            (i for i, (payload, _) in enumerate(messages) if self._handled_alone(payload)),
            len(messages),
        )
        messages = messages[:cut]
        started = time.perf_counter()
        decisions = await handle_messages(
            self.processor, RoomId(room_id), messages, max_attempts=10
        )
        self.metrics.processing_seconds.observe(time.perf_counter() - started)
        return [self._handler_result(decision) for decision in decisions]

    def _handled_alone(self, payload: bytes) -> bool:
        """Whether a message needs ``handle`` itself: it carries a state list reference (to
        resolve before decoding) or outliers (the bulk path's), which units do not handle."""
        return (self.blobs is not None and STATE_LIST_REF_FIELD.encode() in payload) or (
            self.bulk is not None and _OUTLIER_MARK in payload
        )

    def _handler_result(self, decision: Decision) -> HandlerResult:
        if decision.stale_reads:
            self.metrics.stale_reads.inc(decision.stale_reads)
        if decision.disposition is Disposition.RETRY:
            return HandlerResult.retry(decision.delay_s, reason=decision.reason)
        for result in decision.results:
            self.metrics.events_processed.labels(outcome=result.outcome.value).inc()
        if decision.disposition is Disposition.TERMINATE:
            reason = decision.results[0].reason if decision.results else None
            return HandlerResult.terminate(reason or "terminated", decision.reply)
        return HandlerResult.ack(decision.reply)

    async def _import_outliers(self, room_id: RoomId, payload: bytes) -> list[EventResult] | None:
        """The bulk path over the message's outliers. Returns the reply's results when it
        answered every event of the message; otherwise the normal path handles the message
        (answering what the bulk path stored from storage)."""
        assert self.bulk is not None
        try:
            version, items = decode_input_message(payload)
        except WireFormatError:
            return None  # handle_message terminates it
        if sum(1 for i in items if i.kind is Kind.OUTLIER) < self.bulk.min_outliers:
            return None
        report = await self.bulk.import_outliers(room_id, items)
        if version != INPUT_WIRE_VERSION or len(report.results) != len(items):
            return None
        return [report.results[i] for i in range(len(items))]

    async def _final_and_stored(self, item_json: dict[str, Any]) -> bool:
        """Whether the event of an input item (its JSON) is stored with a final outcome."""
        pdu = item_json.get("event")
        room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
        if not isinstance(pdu, dict) or not isinstance(room_id, str):
            return False
        version = await self.storage.room_version_of(RoomId(room_id))
        if version is None:
            return False
        try:
            event_id = compute_event_id(pdu, version)
        except Exception:
            return False
        stored = (await self.storage.get_events([event_id])).get(event_id)
        return stored is not None and not rejected_for_missing_data(stored)
