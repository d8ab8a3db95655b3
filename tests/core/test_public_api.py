"""The public names of the core, called exactly as the issue documents them (keywords too)."""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from roomserver.core.canonical_json import canonical_json
from roomserver.core.errors import InvalidEvent, InvalidSignature
from roomserver.core.hashes import compute_content_hash, compute_event_id
from roomserver.core.pdu import parse_event
from roomserver.core.redaction import redact
from roomserver.core.room_versions import room_version
from roomserver.core.signatures import sign_event, sign_json, verify_event, verify_json
from tests.core.helpers import valid_pdu


@pytest.mark.parametrize("version", [str(n) for n in range(1, 13)])
def test_public_names_with_keywords(version: str) -> None:
    rules = room_version(version_id=version)
    assert rules.identifier == version and rules is room_version(version)
    key = SigningKey(b"\x07" * 32)
    pdu = valid_pdu(version)
    signed = sign_event(
        pdu,
        server_name="example.org",
        signing_key=key,
        key_id="ed25519:k",
        room_version=version,
    )
    assert signed["hashes"]["sha256"] == compute_content_hash(pdu=signed)
    verify_event(
        signed, room_version=version, verify_keys={"example.org": {"ed25519:k": key.verify_key}}
    )
    event = parse_event(pdu=signed, room_version=version)
    assert (event.type, event.sender, event.room_version) == (pdu["type"], pdu["sender"], version)
    assert event.event_id == compute_event_id(pdu=signed, room_version=version)
    trusted = parse_event(signed, version, event_id=event.event_id)
    assert trusted.event_id == event.event_id
    assert redact(pdu=signed, room_version=version)["content"] == {}
    assert canonical_json(value={"b": 1, "a": 2}) == b'{"a":2,"b":1}'
    value = sign_json({"x": 1}, server_name="example.org", signing_key=key, key_id="ed25519:k")
    verify_json(value, server_name="example.org", verify_keys={"ed25519:k": key.verify_key})
    with pytest.raises(InvalidSignature):
        verify_json(value, server_name="example.org", verify_keys={})
    assert issubclass(InvalidSignature, InvalidEvent)


def test_core_stands_alone() -> None:
    """``roomserver.core`` is usable as a library (README, "stability"): it imports no other
    part of ``roomserver`` and no third-party package but PyNaCl and orjson."""
    import ast
    import sys
    from pathlib import Path

    import roomserver.core

    root = Path(roomserver.core.__file__).parent
    allowed_third_party = {"nacl", "orjson"}
    seen: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                seen.add(name)
                if top == "roomserver":
                    assert name.startswith("roomserver.core"), f"{path.name} imports {name}"
                else:
                    assert top in sys.stdlib_module_names or top in allowed_third_party, (
                        f"{path.name} imports {name}"
                    )
    assert "roomserver.core.pdu" in seen  # the scan saw the core's own imports
