"""A harness around ``InputProcessor`` with the in-memory fakes (or a real storage)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from roomserver.api import EventResult, InputRoomEvent, Kind, Outcome, StoredEvent
from roomserver.core.pdu import Event
from roomserver.input import InputConfig, InputProcessor, InputStore
from roomserver.ports import EventWrite, InputAssumption, MissingEventFetcher, PersistResult
from roomserver.testing.builder import RoomBuilder
from tests.input.fakes import FakeKeyRing, MemoryStorage, RecordingPublisher

SERVER = "example.org"
ALICE = "@alice:example.org"
BOB = "@bob:remote.test"
CAROL = "@carol:example.org"


class FaultyStore:
    """Wraps a storage; ``fail_next_persist`` makes the next ``persist`` raise."""

    def __init__(self, inner: InputStore) -> None:
        self.inner = inner
        self.fail_next_persist: Exception | None = None
        self.persists_before_failing = 0  # successful persists before fail_next_persist raises
        self.poisoned: dict[str, Exception] = {}  # event ID -> what every write of it raises

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def persist_many(
        self, writes: Sequence[EventWrite], *, expect: InputAssumption | None = None
    ) -> list[PersistResult]:
        """One transaction: a failure planned for any of ``writes`` fails them all."""
        for write in writes:
            if write.event.event_id in self.poisoned:
                raise self.poisoned[write.event.event_id]
        if self.fail_next_persist is not None:
            if self.persists_before_failing >= len(writes):
                self.persists_before_failing -= len(writes)
            else:
                exc, self.fail_next_persist = self.fail_next_persist, None
                self.persists_before_failing = 0
                raise exc
        result: list[PersistResult] = await self.inner.persist_many(writes, expect=expect)
        return result

    async def persist(self, write: EventWrite) -> PersistResult:
        if write.event.event_id in self.poisoned:
            raise self.poisoned[write.event.event_id]
        if self.fail_next_persist is not None:
            if self.persists_before_failing > 0:
                self.persists_before_failing -= 1
            else:
                exc, self.fail_next_persist = self.fail_next_persist, None
                raise exc
        return await self.inner.persist(write)


class Harness:
    def __init__(
        self,
        builder: RoomBuilder,
        *,
        store: InputStore | None = None,
        fetcher: MissingEventFetcher | None = None,
        config: InputConfig | None = None,
        keyring: FakeKeyRing | None = None,
    ) -> None:
        self.builder = builder
        self.store: Any = FaultyStore(store if store is not None else MemoryStorage())
        self.keyring = keyring if keyring is not None else FakeKeyRing(builder)
        self.publisher = RecordingPublisher()
        self.processor = InputProcessor(
            self.store,
            self.keyring,
            fetcher,
            self.publisher,
            server_name=SERVER,
            config=config,
        )

    async def submit(
        self,
        event: Event | dict[str, Any],
        kind: Kind = Kind.NEW,
        **kwargs: Any,
    ) -> EventResult:
        pdu = dict(event.pdu) if isinstance(event, Event) else event
        return await self.processor.process(InputRoomEvent(event=pdu, kind=kind, **kwargs))

    async def submit_all(
        self, events: Iterable[Event], kind: Kind = Kind.NEW, **kwargs: Any
    ) -> list[EventResult]:
        return [await self.submit(e, kind, **kwargs) for e in events]

    async def accept_all(self, events: Sequence[Event], kind: Kind = Kind.NEW) -> None:
        for event in events:
            result = await self.submit(event, kind)
            assert result.outcome is Outcome.ACCEPTED, (event, result)

    async def stored(self, event_id: str) -> StoredEvent:
        found: StoredEvent | None = (await self.store.get_events([event_id])).get(event_id)
        assert found is not None, event_id
        return found

    async def has(self, event_id: str) -> bool:
        return event_id in await self.store.get_events([event_id])

    async def state_before(self, event_id: str) -> dict[tuple[str, str], str]:
        stored = await self.stored(event_id)
        assert not stored.outlier
        return dict(await self.store.state_map(stored.state_snapshot))

    async def current_state(self) -> dict[tuple[str, str], str]:
        room = await self.store.room(self.builder.room_id)
        assert room is not None
        return dict(await self.store.state_map(room.current_state))

    async def extremities(self) -> set[str]:
        room = await self.store.room(self.builder.room_id)
        assert room is not None
        return set(room.forward_extremities)


def new_room(version: str = "10", **kwargs: Any) -> tuple[RoomBuilder, list[Event]]:
    builder = RoomBuilder(version, server_name=SERVER, **kwargs)
    events = builder.create_room(ALICE)
    return builder, events


class HarnessFactory(Protocol):
    async def __call__(
        self,
        builder: RoomBuilder,
        *,
        fetcher: MissingEventFetcher | None = None,
        config: InputConfig | None = None,
        keyring: FakeKeyRing | None = None,
    ) -> Harness: ...
