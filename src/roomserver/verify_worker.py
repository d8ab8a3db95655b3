"""A signature-checking worker process: ``python -m roomserver.verify_worker``.

Started by ``roomserver.input.verify_workers.VerifyProcesses``, it reads frames of checks on
stdin and answers each on stdout, until stdin ends (its parent closed it, or died). A frame is
a 4-byte big-endian length and a pickle: the worker is our own child, on pipes no one else
holds. A request is ``(request ID, checks)``; a check is ``(room version, PDU, signed bytes or
None, keys)``, the PDU as a mapping or as its JSON (cheaper to send), keys being server name
-> key ID -> the 32 bytes of an ed25519 verify key. The
answer is ``(request ID, one byte per check)``: 1 when ``signatures.verify_event`` passed on
it, 0 when it raised.

This module imports only the event core, so that a worker starts quickly.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import struct
import sys
from collections.abc import Mapping, Sequence
from typing import Any

FRAME = struct.Struct(">I")
Check = tuple[str, Mapping[str, Any] | bytes, bytes | None, Mapping[str, Mapping[str, bytes]]]
#: Keys a worker keeps decoded (dropped all at once beyond this).
KEY_CACHE = 4096


def answer(checks: Sequence[Check], keys: dict[bytes, Any]) -> bytes:
    """One byte per check: 1 if its signatures verify, 0 if not. ``keys``: decoded keys,
    kept between calls."""
    from nacl.signing import VerifyKey

    from roomserver.core import signatures

    if len(keys) > KEY_CACHE:
        keys.clear()
    out = bytearray()
    for room_version, pdu, signed, raw in checks:
        verify_keys = {
            server: {
                key_id: keys.get(key) or keys.setdefault(key, VerifyKey(key))
                for key_id, key in by_id.items()
            }
            for server, by_id in raw.items()
        }
        try:
            event = json.loads(pdu) if isinstance(pdu, bytes) else pdu
            signatures.verify_event(
                event, room_version=room_version, verify_keys=verify_keys, signed_bytes=signed
            )
        except Exception:
            out.append(0)
        else:
            out.append(1)
    return bytes(out)


def serve() -> None:
    """Answer frames of checks from stdin on stdout until stdin ends."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    keys: dict[bytes, Any] = {}
    while True:
        head = stdin.read(FRAME.size)
        if len(head) < FRAME.size:
            return
        (size,) = FRAME.unpack(head)
        body = stdin.read(size)
        if len(body) < size:
            return
        request_id, checks = pickle.loads(body)
        reply = pickle.dumps((request_id, answer(checks, keys)), protocol=pickle.HIGHEST_PROTOCOL)
        stdout.write(FRAME.pack(len(reply)) + reply)
        stdout.flush()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        serve()
