"""State ID lists too large for an input message travel beside it, in a blob store.

A ``has_state`` event names the whole state before it: for a room of 100,000 members that is
about 4.7 MB of event IDs, above the input message cap (``MAX_INPUT_MESSAGE_BYTES``) and above
nats-server's 1 MiB payload limit. Such a list is stored first as one blob (a JetStream object
store, ``roomserver.bus.blobs``) under a fresh random name, and the input item carries
``"state_event_ids_ref": {"name", "count", "sha256"}`` instead of ``"state_event_ids"``.

Crash and redelivery safety:

* the blob is stored *before* the message is published, so a stored message always finds it;
  a publish that fails leaves an orphan blob, which expires with the store's max age (the
  input stream's);
* the room worker resolves the reference before decoding (``resolve_payload``); a decoder
  meeting an unresolved reference raises ``WireFormatError`` (``roomserver.api``), so no event
  is ever processed with an empty state by mistake;
* the blob is deleted only once the event is *stored with a final outcome* (accepted,
  soft-failed, or rejected by the rules; not rejected for missing data, which is processed
  again), read back from storage after the message was handled (``release``). A crash
  between that deletion and the ack redelivers the message: its blob is gone, but the event
  is stored, so the processor answers from storage without reading the list
  (``resolve_payload`` checks that and stands an empty list in). Any other outcome (invalid,
  rejected for missing data, error) keeps the blob until it expires, so a redelivery or a
  resubmission processes the same list;
* a reference whose blob is gone while its event is not stored (deleted by hand, or expired)
  raises ``StateListLost``: the message is terminated with that reason, never guessed at.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from roomserver.api import STATE_LIST_REF_FIELD, InputRoomEvent, encode_input_item

#: State ID lists whose JSON is larger than this travel as blobs.
INLINE_STATE_IDS_MAX_BYTES = 64 * 1024


class BlobStore(Protocol):
    """Where large state ID lists wait for their message (``roomserver.bus.blobs``)."""

    async def put(self, name: str, data: bytes) -> None: ...

    async def get(self, name: str) -> bytes | None:
        """The blob, or None if there is no blob of that name."""
        ...

    async def delete(self, name: str) -> None: ...


class StateListLost(Exception):
    """A message references a state ID list that is gone while its event is not stored."""


@dataclass(frozen=True, slots=True)
class StateListRef:
    name: str
    count: int
    sha256: str
    item: dict[str, Any]  # the item's JSON, without its state list


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


async def encode_item(
    item: InputRoomEvent, store: BlobStore | None, *, inline_max_bytes: int
) -> bytes:
    """``encode_input_item``, with a large ``state_event_ids`` list stored in ``store`` first
    and referenced. Raises whatever storing the blob raises."""
    if store is None or not item.has_state or not item.state_event_ids:
        return encode_input_item(item)
    listed = _dumps(list(item.state_event_ids))
    if len(listed) <= inline_max_bytes:
        return encode_input_item(item)
    name = uuid.uuid4().hex
    await store.put(name, listed)
    body = json.loads(encode_input_item(replace(item, state_event_ids=())))
    body[STATE_LIST_REF_FIELD] = {
        "name": name,
        "count": len(item.state_event_ids),
        "sha256": hashlib.sha256(listed).hexdigest(),
    }
    return _dumps(body)


def _ref_of(element: Any, index: int) -> StateListRef | None:
    if not isinstance(element, dict) or STATE_LIST_REF_FIELD not in element:
        return None
    ref = element[STATE_LIST_REF_FIELD]
    if not (
        isinstance(ref, dict)
        and isinstance(ref.get("name"), str)
        and type(ref.get("count")) is int
        and isinstance(ref.get("sha256"), str)
    ):
        return None  # left in place: the decoder rejects the message (WireFormatError)
    item = {k: v for k, v in element.items() if k != STATE_LIST_REF_FIELD}
    return StateListRef(ref["name"], ref["count"], ref["sha256"], item)


def _decode_list(data: bytes, ref: StateListRef) -> list[str]:
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise StateListLost(f"state list {ref.name}: content does not match its sha256")
    ids = json.loads(data)
    if not isinstance(ids, list) or len(ids) != ref.count:
        raise StateListLost(f"state list {ref.name}: not a list of {ref.count} event IDs")
    return ids


@dataclass(frozen=True, slots=True)
class ResolvedPayload:
    payload: bytes
    refs: tuple[StateListRef, ...]


async def resolve_payload(
    payload: bytes,
    store: BlobStore | None,
    is_final: Callable[[dict[str, Any]], Awaitable[bool]],
) -> ResolvedPayload:
    """The message with every state list reference replaced by its list.

    ``is_final(item_json)`` says whether the item's event is stored with a final outcome
    (then a missing blob is no loss: the processor answers from storage). Raises
    ``StateListLost`` otherwise. A payload without references is returned untouched, unparsed.
    """
    if store is None or STATE_LIST_REF_FIELD.encode() not in payload:
        return ResolvedPayload(payload, ())
    try:
        body = json.loads(payload)
    except ValueError:
        return ResolvedPayload(payload, ())  # the decoder reports it
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        return ResolvedPayload(payload, ())
    refs: list[StateListRef] = []
    for index, element in enumerate(events):
        ref = _ref_of(element, index)
        if ref is None:
            continue
        refs.append(ref)
        data = await store.get(ref.name)
        if data is not None:
            element["state_event_ids"] = _decode_list(data, ref)
        elif await is_final(element):
            element["state_event_ids"] = []  # never read: the stored outcome is answered
        else:
            raise StateListLost(
                f"state list {ref.name} of events[{index}] is gone and its event is not stored"
            )
        del element[STATE_LIST_REF_FIELD]
    return ResolvedPayload(_dumps(body), tuple(refs))


async def release(
    store: BlobStore,
    refs: Sequence[StateListRef],
    is_final: Callable[[dict[str, Any]], Awaitable[bool]],
) -> list[str]:
    """Delete the blobs whose events are stored with a final outcome; the names deleted."""
    deleted: list[str] = []
    for ref in refs:
        if await is_final(ref.item):
            await store.delete(ref.name)
            deleted.append(ref.name)
    return deleted
