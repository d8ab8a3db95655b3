"""Unpadded base64 (spec appendix), standard and URL-safe alphabets."""

from __future__ import annotations

import base64
import binascii


def encode_base64(data: bytes, *, url_safe: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(data) if url_safe else base64.b64encode(data)
    return encoded.rstrip(b"=").decode("ascii")


def decode_base64(text: str) -> bytes:
    """Decode padded or unpadded base64 in either alphabet; raise ``ValueError`` if malformed."""
    if not isinstance(text, str):
        raise ValueError("base64 value is not a string")
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1:
        raise ValueError("base64 value has an impossible length")
    padded = stripped + "=" * (-len(stripped) % 4)
    alt = b"-_" if ("-" in padded or "_" in padded) else None
    try:
        return base64.b64decode(padded.encode("ascii"), altchars=alt, validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"malformed base64: {exc}") from None
