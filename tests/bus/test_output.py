"""Output stream: deduplication by Nats-Msg-Id, durable subscriptions."""

from roomserver.bus import Bus, EmbeddedNatsServer, OutputItem
from tests.bus.helpers import fast_config


async def test_outputs_are_deduplicated_by_message_id(nats_server: EmbeddedNatsServer) -> None:
    bus = await Bus.connect(nats_server.url, config=fast_config())
    subscription = await bus.output_subscription("reader")
    await bus.publish_output("!a:x", "new_room_event", b"first", msg_id="$e1/0")
    await bus.publish_output("!a:x", "new_room_event", b"first again", msg_id="$e1/0")
    await bus.publish_outputs(
        [
            OutputItem("!a:x", "new_room_event", b"first, third time", "$e1/0"),
            OutputItem("!a:x", "redacted_event", b"second", "$e2/0"),
        ]
    )
    assert bus.output.duplicates == 2
    info = await bus.js.stream_info("OutputRoomEvent")
    assert info.state.messages == 2
    first = await subscription.next_within(5)
    second = await subscription.next_within(5)
    assert first is not None and second is not None
    assert (first.room_id, first.event_type, first.payload, first.msg_id) == (
        "!a:x",
        "new_room_event",
        b"first",
        "$e1/0",
    )
    assert (second.event_type, second.payload) == ("redacted_event", b"second")
    assert second.stream_seq > first.stream_seq
    await first.ack()
    await second.ack()
    assert await subscription.next_within(0.5) is None
    await bus.close()


async def test_a_durable_subscription_resumes_after_the_last_ack(
    nats_server: EmbeddedNatsServer,
) -> None:
    bus = await Bus.connect(nats_server.url, config=fast_config())
    subscription = await bus.output_subscription("resumer")
    for n in range(5):
        await bus.publish_output("!r:x", "new_room_event", b"%d" % n, msg_id=f"m{n}")
    for _ in range(2):
        msg = await subscription.next_within(5)
        assert msg is not None
        await msg.ack()
    await bus.close()

    again = await Bus.connect(nats_server.url, config=fast_config())
    resumed = await again.output_subscription("resumer")
    got = []
    async for msg in resumed:
        got.append(msg.payload)
        await msg.ack()
        if len(got) == 3:
            break
    assert got == [b"2", b"3", b"4"]
    await again.close()


async def test_interest_retention_keeps_outputs_until_every_reader_acked(
    nats_server: EmbeddedNatsServer,
) -> None:
    bus = await Bus.connect(nats_server.url, config=fast_config())
    one = await bus.output_subscription("one")
    two = await bus.output_subscription("two")
    await bus.publish_output("!i:x", "new_room_event", b"x", msg_id="only")
    msg = await one.next_within(5)
    assert msg is not None
    await msg.ack()
    assert (await bus.js.stream_info("OutputRoomEvent")).state.messages == 1
    msg = await two.next_within(5)
    assert msg is not None
    await msg.ack()
    assert (await bus.js.stream_info("OutputRoomEvent")).state.messages == 0
    await bus.close()
