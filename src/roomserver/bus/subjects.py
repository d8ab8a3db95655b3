"""Subjects and consumer names derived from room IDs.

A room's input messages live on ``<prefix>InputRoomEvent.<token>``, and its durable consumer is
``<prefix>RoomInput<token>``. The token must be

* injective: two rooms never share a subject or a consumer (a shared consumer would
  serialise, and worse, interleave two rooms; Dendrite's tokeniser maps ``!a:b.c`` and
  ``!a.b:c`` to the same token);
* safe as a single NATS subject token and as a consumer name (which is also a file name in
  the server's store): no ``.``, ``*``, ``>``, whitespace, path separators.

Encoding (``room_token``):

* ASCII letters and digits stand for themselves;
* every other byte of the UTF-8 encoding becomes ``_`` followed by two upper-case hex digits
  (``!`` -> ``_21``, ``:`` -> ``_3A``, ``.`` -> ``_2E``, ``_`` -> ``_5F``);
  e.g. ``!abc:example.org`` -> ``_21abc_3Aexample_2Eorg``. This is a prefix-free code, hence
  injective and reversible (:func:`room_id_from_token`).
* if that escaped form would be longer than :data:`MAX_ESCAPED_LENGTH` characters, the token
  is ``_Z`` followed by the unpadded base32 SHA-256 digest of the room ID instead. ``_Z`` never
  occurs in an escaped token (an escape is always ``_`` + two hex digits), so the two forms are
  disjoint; hashed tokens are collision-resistant rather than reversible.
"""

from __future__ import annotations

import base64
import hashlib
import re

MAX_ESCAPED_LENGTH = 160
_HASHED_MARK = "_Z"
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_ESCAPES = tuple(chr(b) if b in _SAFE else f"_{b:02X}" for b in range(256))
_TOKEN_RE = re.compile(r"(?:[A-Za-z0-9]|_[0-9A-F]{2})*")
_SAFE_NAME_RE = re.compile(r"[A-Za-z0-9_\-]*")

INPUT_STREAM = "InputRoomEvent"
OUTPUT_STREAM = "OutputRoomEvent"
ROOM_CONSUMER = "RoomInput"


def room_token(room_id: str) -> str:
    """The injective, subject-safe token for ``room_id`` (see the module docstring)."""
    escaped = "".join([_ESCAPES[b] for b in room_id.encode("utf-8")])
    if len(escaped) <= MAX_ESCAPED_LENGTH:
        return escaped
    digest = hashlib.sha256(room_id.encode("utf-8")).digest()
    return _HASHED_MARK + base64.b32encode(digest).decode("ascii").rstrip("=")


def room_id_from_token(token: str) -> str | None:
    """The room ID an escaped token stands for; ``None`` for a hashed or malformed token."""
    if token.startswith(_HASHED_MARK) or _TOKEN_RE.fullmatch(token) is None:
        return None
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "_":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(token[i]))
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


def check_prefix(prefix: str) -> str:
    """Stream prefixes become part of stream and consumer names: letters, digits, ``_-``."""
    if _SAFE_NAME_RE.fullmatch(prefix) is None:
        raise ValueError(f"stream prefix {prefix!r} may only hold letters, digits, '_' and '-'")
    return prefix


def input_stream_name(prefix: str) -> str:
    return prefix + INPUT_STREAM


def output_stream_name(prefix: str) -> str:
    return prefix + OUTPUT_STREAM


def input_subject(prefix: str, room_id: str) -> str:
    """The subject of one room's input messages."""
    return f"{prefix}{INPUT_STREAM}.{room_token(room_id)}"


def room_consumer_name(prefix: str, room_id: str) -> str:
    """The name of one room's durable input consumer."""
    return f"{prefix}{ROOM_CONSUMER}{room_token(room_id)}"


def token_of_subject(prefix: str, subject: str) -> str | None:
    """The room token of an input subject, or ``None`` if ``subject`` is not one."""
    head = f"{prefix}{INPUT_STREAM}."
    if not subject.startswith(head):
        return None
    token = subject[len(head) :]
    return token if token and "." not in token else None
