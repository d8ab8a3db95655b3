"""Our signing key's ID through ``Roomserver.open``, and server keys trusted through
``federation.trusted_keys``."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.signing import SigningKey

from roomserver.api import Outcome
from roomserver.app import Roomserver
from roomserver.bus.embedded import free_port
from roomserver.config import FederationConfig
from roomserver.core.base64 import encode_base64
from roomserver.testing.builder import RoomBuilder
from tests.e2e.conftest import OpenRoomserver
from tests.e2e.helpers import ALICE, BOB, submit


async def test_signing_key_id_is_ours_to_choose(open_roomserver: OpenRoomserver) -> None:
    key = SigningKey(b"\x21" * 32)
    rs = await open_roomserver(signing_key=key, signing_key_id="ed25519:k2024")
    keys = await rs.keyring.get_server_keys("rs.test", ["ed25519:k2024", "ed25519:auto"])
    assert list(keys) == ["ed25519:k2024"]
    assert keys["ed25519:k2024"].verify_key == key.verify_key
    # A second process on the same database (SQLite: one with room workers per file).
    plain = await open_roomserver(signing_key=key, run_workers=False)
    assert list(await plain.keyring.get_server_keys("rs.test", ["ed25519:auto"])) == [
        "ed25519:auto"
    ]


async def test_key_file_id_is_used(open_roomserver: OpenRoomserver, tmp_path: Path) -> None:
    key = SigningKey(b"\x22" * 32)
    data = tmp_path / "keyfile"
    data.mkdir()
    (data / "signing.key").write_text(f"ed25519 from_file {encode_base64(bytes(key))}\n")
    rs = await open_roomserver(data_dir=data)
    keys = await rs.keyring.get_server_keys("rs.test", ["ed25519:from_file"])
    assert keys["ed25519:from_file"].verify_key == key.verify_key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"signing_key_id": "ed25519:x"}, "signing_key_id: given without signing_key"),
        (
            {"signing_key": SigningKey(b"\x23" * 32), "signing_key_id": "auto"},
            "expected 'ed25519:'",
        ),
        ({"signing_key": SigningKey(b"\x23" * 32), "signing_key_id": "ed25519:a b"}, "ed25519:a b"),
    ],
)
def test_bad_signing_key_id_is_refused(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Roomserver.open(data_dir=tmp_path, server_name="rs.test", **kwargs)  # type: ignore[arg-type]


async def test_trusted_keys_from_config_verify_a_remote_room(
    open_roomserver: OpenRoomserver,
) -> None:
    b = RoomBuilder("10", server_name="remote.example", room_id="!trusted:remote.example")
    alice, bob = ALICE.replace("example.org", "remote.example"), BOB
    key_id, key = b.key_for("remote.example")
    _, other = b.key_for("example.org")
    unreachable = f"http://127.0.0.1:{free_port()}"  # keys could not be fetched from here
    federation = FederationConfig(
        enabled=False,
        server_overrides={"remote.example": unreachable, "example.org": unreachable},
        trusted_keys={
            "remote.example": {key_id: encode_base64(bytes(key.verify_key))},
            "example.org": {"ed25519:auto": encode_base64(bytes(other.verify_key))},
        },
        request_timeout_s=2.0,
    )
    rs = await open_roomserver(federation=federation)
    trusted = await rs.keyring.get_server_keys("remote.example", [key_id])
    assert trusted[key_id].verify_key == key.verify_key

    setup = [*b.create_room(alice), b.join(bob), b.message(bob, "signed by example.org")]
    response = await submit(rs, [e.pdu for e in setup])
    assert [r.outcome for r in response.results] == [Outcome.ACCEPTED] * len(setup), [
        r.reason for r in response.results
    ]
    assert await rs.current_state(b.room_id) == b.state


async def test_a_shared_key_reaches_a_roomserver_already_running_on_the_database(
    open_roomserver: OpenRoomserver,
) -> None:
    """``KeyRing.share_verify_key`` (what ``roomserver demo`` does): another roomserver on the
    same database, started before, verifies with the key without fetching it."""
    unreachable = f"http://127.0.0.1:{free_port()}"
    federation = FederationConfig(
        enabled=False,
        server_overrides={"shared.example": unreachable},
        request_timeout_s=2.0,
    )
    running = await open_roomserver(federation=federation)
    client = await open_roomserver(federation=federation, run_workers=False)
    b = RoomBuilder("10", server_name="shared.example", room_id="!shared:shared.example")
    key_id, key = b.key_for("shared.example")
    await client.keyring.share_verify_key("shared.example", key_id, key.verify_key)
    setup = b.create_room("@alice:shared.example")
    response = await submit(running, [e.pdu for e in setup])
    assert [r.outcome for r in response.results] == [Outcome.ACCEPTED] * len(setup), [
        r.reason for r in response.results
    ]
