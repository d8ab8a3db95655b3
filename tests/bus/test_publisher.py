"""Publishing: stream acks on the publisher's inbox, and sync replies handed over locally."""

import asyncio
from typing import Any

import pytest
from nats.js.errors import APIError, NoStreamResponseError

from roomserver.bus import Bus, EmbeddedNatsServer
from tests.bus.helpers import Recorder, fast_config


class _Published:
    """Records the subjects a bus's connection publishes to."""

    def __init__(self, bus: Bus) -> None:
        self.subjects: list[str] = []
        publish = bus.nc.publish

        async def recording(subject: str, *args: Any, **kwargs: Any) -> None:
            self.subjects.append(subject)
            await publish(subject, *args, **kwargs)

        bus.nc.publish = recording  # type: ignore[method-assign]


async def test_a_caller_on_the_workers_connection_gets_its_replies_in_the_process(
    nats_server: EmbeddedNatsServer,
) -> None:
    bus = await Bus.connect(nats_server.url, config=fast_config())
    await bus.start_workers(Recorder())
    caller = await Bus.connect(nats_server.url, config=fast_config())
    published = _Published(bus)
    items = [("!local:x", b"%d" % i) for i in range(5)] + [("!other:x", b"o")]
    assert await bus.submit_sync(items, reply_timeout=10) == [b"ok:%d" % i for i in range(5)] + [
        b"ok:o"
    ]
    inbox = bus.input._inbox + "."
    assert not [s for s in published.subjects if s.startswith(inbox)]  # nothing went out
    # A caller on another connection gets its replies through the server, as before.
    assert await caller.submit_sync([("!local:x", b"remote")], reply_timeout=10) == [b"ok:remote"]
    assert [s for s in published.subjects if s.startswith(caller.input._inbox + ".")]
    await caller.close()
    await bus.close()


async def test_stream_acks_raise_the_stream_errors_and_forget_their_tickets(
    nats_server: EmbeddedNatsServer,
) -> None:
    bus = await Bus.connect(nats_server.url, config=fast_config())
    acks = bus.input.acks
    seqs = await acks.publish(
        [("InputRoomEvent.a", b"1", {}), ("InputRoomEvent.a", b"2", {})], within=5
    )
    assert [s for s, _ in seqs] == [seqs[0][0], seqs[0][0] + 1]
    with pytest.raises(NoStreamResponseError):
        await acks.publish([("nostream.subject", b"x", {})], within=5)
    with pytest.raises(APIError):
        expect_other = {"Nats-Expected-Stream": "NotThisStream"}
        await acks.publish(
            [("InputRoomEvent.a", b"x", expect_other), ("InputRoomEvent.a", b"y", expect_other)],
            within=5,
        )
    # A subject someone listens to but no stream stores: no ack ever comes.
    listener = await bus.nc.subscribe("noanswer.x")
    with pytest.raises(TimeoutError):
        await acks.publish([("noanswer.x", b"x", {})], within=0.2)
    assert not acks._waiting
    await listener.unsubscribe()
    await asyncio.sleep(0)
    await bus.close()
