import dataclasses
from pathlib import Path

import nats
import pytest
from nats.js.api import RetentionPolicy, StorageType

from roomserver.bus import Bus, BusConfig, EmbeddedNatsServer, nats_server_path
from roomserver.bus.embedded import EmbeddedServerError
from roomserver.bus.streams import ensure_streams


def test_binary_comes_from_the_wheel() -> None:
    path = nats_server_path()
    assert path.is_file()
    assert path.name == "nats-server"


async def test_start_restart_stop_keeps_the_store(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path)
    async with server:
        assert server.url.startswith("nats://127.0.0.1:")
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        js = nc.jetstream()
        await js.add_stream(name="S", subjects=["s"])
        await js.publish("s", b"kept")
        first_pid = server.pid
        await server.restart()
        assert server.pid != first_pid
        msg = await js.get_msg("S", 1)
        assert msg.data == b"kept"
        await server.restart(hard=True)
        assert (await js.stream_info("S")).state.messages == 1
        await nc.close()
    assert not server.running
    assert (tmp_path / "nats" / "jetstream").is_dir()


async def test_a_taken_port_fails_cleanly(tmp_path: Path) -> None:
    async with EmbeddedNatsServer(tmp_path / "a") as first:
        second = EmbeddedNatsServer(tmp_path / "b", port=first.port, ready_timeout=5)
        with pytest.raises(EmbeddedServerError):
            await second.start()
        assert not second.running


async def test_streams_have_the_documented_settings(nats_server: EmbeddedNatsServer) -> None:
    config = BusConfig(prefix="Pfx")
    bus = await Bus.connect(nats_server.url, config=config)
    try:
        info = await bus.js.stream_info("PfxInputRoomEvent")
        assert info.config.retention == RetentionPolicy.INTEREST
        assert info.config.storage == StorageType.FILE
        assert info.config.max_age == 24 * 3600
        assert info.config.subjects == ["PfxInputRoomEvent.>"]
        out = await bus.js.stream_info("PfxOutputRoomEvent")
        assert out.config.duplicate_window == config.duplicate_window
        assert sorted(out.config.subjects or []) == ["PfxOutputRoomEvent", "PfxOutputRoomEvent.>"]
        # A changed setting is applied to the existing stream on the next start.
        await ensure_streams(bus.js, dataclasses.replace(config, input_max_age=3600.0))
        assert (await bus.js.stream_info("PfxInputRoomEvent")).config.max_age == 3600
    finally:
        await bus.close()
