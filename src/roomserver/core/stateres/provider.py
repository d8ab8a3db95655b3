"""Where state resolution gets its events: the ``EventProvider`` protocol and per-call lookups.

State resolution is pure: it never fetches in the middle of the algorithm (STYLE rule 2). The
caller gathers what the resolution needs and hands it over as a provider, whose only required
method is a synchronous ``get_event``. A plain mapping of event ID to ``Event`` is accepted too.

A provider backed by storage can also answer the two graph questions from an index (such as a
chain cover index) instead of letting the algorithm walk auth chains in memory:

* ``auth_chain_difference(state_sets)``: see ``SupportsAuthChainDifference``;
* ``conflicted_subgraph(conflicted_event_ids)``: see ``SupportsConflictedSubgraph`` (v2.1);

and say which events were rejected: see ``SupportsRejection``. Each is optional; the algorithm
checks for them once per resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Protocol, TypeAlias, runtime_checkable

from roomserver.core.errors import CoreError
from roomserver.core.pdu import Event, is_create_event

StateKey: TypeAlias = tuple[str, str]
StateMap: TypeAlias = Mapping[StateKey, str]
_POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")
_CREATE_KEY: StateKey = ("m.room.create", "")


class MissingEvent(CoreError, LookupError):
    """State resolution needed an event that the provider does not have.

    The caller did not gather enough: every event of the state sets, their auth chains and
    (room version 12) the create event must be available.
    """

    def __init__(self, event_id: str) -> None:
        super().__init__(f"state resolution needs event {event_id!r}, which was not provided")
        self.event_id = event_id


@runtime_checkable
class EventProvider(Protocol):
    """The events state resolution may read: those of the state sets and their auth chains."""

    def get_event(self, event_id: str) -> Event | None:
        """The event, or ``None`` if it is not known."""
        ...


@runtime_checkable
class SupportsRejection(Protocol):
    """Optional: which events were rejected against their own auth events.

    Such an event is never used as an auth event and never admitted into the resolved state
    (spec: "Rejected events" in the room version documents). Events that passed their auth
    events but failed against the state before them must NOT be reported here: the algorithm
    treats them like any other event. Without this method no event counts as rejected.
    """

    def is_rejected(self, event_id: str) -> bool: ...


@runtime_checkable
class SupportsAuthChainDifference(Protocol):
    """Optional: the auth chain difference, answered from an index.

    Given the state sets (each mapping ``(type, state_key)`` to an event ID), return every event
    that is in the auth chain of some state set but not of all of them, where the auth chain of
    a state set is the set of its events together with every event reachable from them through
    ``auth_events`` (see docs/stateres.md, "Auth chain difference", for why the set's own
    events are included). The answer must not depend on the order of ``state_sets``.
    """

    def auth_chain_difference(self, state_sets: Sequence[StateMap]) -> AbstractSet[str]: ...


@runtime_checkable
class SupportsConflictedSubgraph(Protocol):
    """Optional (state res v2.1): the conflicted state subgraph, answered from an index.

    Every event that lies on an ``auth_events`` path from one event of ``conflicted_event_ids``
    to another, both ends included.
    """

    def conflicted_subgraph(self, conflicted_event_ids: AbstractSet[str]) -> AbstractSet[str]: ...


def _optional(provider: object, name: str) -> Any:
    """The provider's optional method ``name``, or ``None`` (a plain mapping has none)."""
    if isinstance(provider, Mapping):
        return None
    method = getattr(provider, name, None)
    return method if callable(method) else None


@runtime_checkable
class SupportsStateDifference(Protocol):
    """Optional: the keys the state sets disagree on, answered from storage's snapshot deltas.

    Every key not mapped to the same event by all the state sets (a key missing from some
    state set counts). Without it the state sets are compared in memory, which costs time in
    proportion to the size of the room's state (at C speed).
    """

    def state_difference(self, state_sets: Sequence[StateMap]) -> AbstractSet[StateKey]: ...


class MappingEventProvider:
    """An ``EventProvider`` over a mapping of event ID to ``Event``, with optional rejections."""

    __slots__ = ("events", "rejected")

    def __init__(
        self, events: Mapping[str, Event], *, rejected: AbstractSet[str] = frozenset()
    ) -> None:
        self.events = events
        self.rejected = rejected

    def get_event(self, event_id: str) -> Event | None:
        return self.events.get(event_id)

    def is_rejected(self, event_id: str) -> bool:
        return event_id in self.rejected


class EventLookup:
    """One resolution's view of the provider: lookups that fail loudly, and memoised answers.

    Everything cached here lives for one call of ``resolve_state`` only. The optional provider
    methods are looked up once here (``auth_chain_difference``, ``conflicted_subgraph``,
    ``state_difference``, ``rejected``), as bound methods or ``None``.
    """

    __slots__ = (
        "_auth_by_key",
        "_create_by_room",
        "_events",
        "_fetch",
        "auth_chain_difference",
        "conflicted_subgraph",
        "mapping",
        "provider",
        "rejected",
        "state_difference",
    )

    def __init__(self, events: Mapping[str, Event] | EventProvider) -> None:
        self.provider: object = events
        self.mapping: Mapping[str, Event] | None
        self._fetch: Callable[[str], Event | None]
        if isinstance(events, Mapping):
            self.mapping = events
            self._fetch = events.get
            # A dict is its own cache; other mappings are read through one.
            self._events: dict[str, Event] = events if type(events) is dict else {}
        else:
            self.mapping = None
            self._fetch = events.get_event
            self._events = {}
        self.rejected: Callable[[str], bool] | None = _optional(events, "is_rejected")
        self.auth_chain_difference: Callable[[Sequence[StateMap]], AbstractSet[str]] | None = (
            _optional(events, "auth_chain_difference")
        )
        self.conflicted_subgraph: Callable[[AbstractSet[str]], AbstractSet[str]] | None = _optional(
            events, "conflicted_subgraph"
        )
        self.state_difference: Callable[[Sequence[StateMap]], AbstractSet[StateKey]] | None = (
            _optional(events, "state_difference")
        )
        self._auth_by_key: dict[str, dict[StateKey, Event]] = {}
        self._create_by_room: dict[str, Event] = {}

    def get(self, event_id: str) -> Event:
        """The event; raises ``MissingEvent`` when the provider does not have it."""
        event = self._events.get(event_id)
        if event is None:
            event = self._fetch(event_id)
            if event is None:
                raise MissingEvent(event_id)
            self._events[event_id] = event
        return event

    def find(self, event_id: str) -> Event | None:
        """The event, or ``None`` when the provider does not have it."""
        event = self._events.get(event_id)
        if event is None:
            event = self._fetch(event_id)
            if event is not None:
                self._events[event_id] = event
        return event

    def is_rejected(self, event_id: str) -> bool:
        return self.rejected is not None and self.rejected(event_id)

    def auth_events_by_key(self, event: Event) -> dict[StateKey, Event]:
        """``event``'s known auth events by ``(type, state_key)``, memoised (do not mutate)."""
        found = self._auth_by_key.get(event.event_id)
        if found is None:
            get = self.find
            found = {}
            for auth_id in event.auth_event_ids:
                auth_event = get(auth_id)
                if auth_event is not None and auth_event.state_key is not None:
                    found[(auth_event.type, auth_event.state_key)] = auth_event
            self._auth_by_key[event.event_id] = found
        return found

    def power_levels_auth_event(self, event: Event) -> Event | None:
        """The ``m.room.power_levels`` event among ``event``'s auth events, if it cites one."""
        return self.auth_events_by_key(event).get(_POWER_LEVELS_KEY)

    def create_event_for(self, event: Event) -> Event | None:
        """The room's create event as ``event`` knows it.

        Events cite it in their auth events up to room version 11; in room version 12 the room
        ID is derived from its event ID (spec: room version 12, "Room IDs").
        """
        if is_create_event(event):
            return event
        if not event.rules.create_event_in_auth_events:
            room_id = event.room_id
            create = self._create_by_room.get(room_id)
            if create is None:
                create = self.find("$" + room_id[1:])
                if create is None or not is_create_event(create):
                    return None  # the room ID names no create event
                self._create_by_room[room_id] = create
            return create
        return self.auth_events_by_key(event).get(_CREATE_KEY)
