"""The X-Matrix request authentication scheme (spec: server-server API, "Request Authentication").

A request is authenticated by signing the JSON object
``{"method", "uri", "origin", "destination"[, "content"]}`` with the origin's signing key and
sending the signature in an ``Authorization: X-Matrix ...`` header. The signature parameter is
``sig`` (the spec's example and every implementation use it, not ``signature``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from roomserver.core.base64 import decode_base64
from roomserver.core.canonical_json import canonical_json
from roomserver.core.signatures import sign_json

_PARAM = re.compile(
    r"""\s*([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|\Z)""", re.DOTALL
)


@dataclass(frozen=True, slots=True)
class XMatrixAuth:
    """The parameters of one ``Authorization: X-Matrix`` header."""

    origin: str
    key_id: str
    signature: str
    destination: str | None


def request_json(
    *, method: str, uri: str, origin: str, destination: str, content: Any = None
) -> dict[str, Any]:
    """The object whose signature authenticates a request; ``content`` only if there is a body."""
    obj: dict[str, Any] = {
        "method": method.upper(),
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        obj["content"] = content
    return obj


def authorization_header(
    *,
    method: str,
    uri: str,
    origin: str,
    destination: str,
    signing_key: SigningKey,
    key_id: str,
    content: Any = None,
) -> str:
    """The ``Authorization`` header value signing this request as ``origin``."""
    obj = request_json(
        method=method, uri=uri, origin=origin, destination=destination, content=content
    )
    signed = sign_json(obj, server_name=origin, signing_key=signing_key, key_id=key_id)
    sig = signed["signatures"][origin][key_id]
    return f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id}",sig="{sig}"'


def parse_authorization(header: str) -> XMatrixAuth:
    """Parse an ``X-Matrix`` header (RFC 9110 auth-params). Raises ``ValueError`` if malformed.

    Names are case-insensitive, values may be quoted (backslash escapes undone) or bare (bare
    values containing ``:`` are accepted for compatibility); unknown parameters are ignored.
    """
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "x-matrix":
        raise ValueError("not an X-Matrix authorization header")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"malformed X-Matrix parameters at {rest[pos:]!r}")
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(name, value)
        pos = match.end()
    try:
        return XMatrixAuth(
            origin=params["origin"],
            key_id=params["key"],
            signature=params["sig"],
            destination=params.get("destination"),
        )
    except KeyError as exc:
        raise ValueError(f"X-Matrix header lacks {exc.args[0]!r}") from None


def verify_request(
    auth: XMatrixAuth,
    *,
    method: str,
    uri: str,
    destination: str,
    verify_keys: Mapping[str, VerifyKey],
    content: Any = None,
) -> None:
    """Check ``auth`` signs this request for ``destination``. Raises ``ValueError`` if not."""
    if auth.destination is not None and auth.destination != destination:
        raise ValueError(f"request is for {auth.destination!r}, not {destination!r}")
    key = verify_keys.get(auth.key_id)
    if key is None:
        raise ValueError(f"unknown key {auth.key_id!r} for {auth.origin!r}")
    obj = request_json(
        method=method, uri=uri, origin=auth.origin, destination=destination, content=content
    )
    try:
        key.verify(canonical_json(obj), decode_base64(auth.signature))
    except (BadSignatureError, ValueError) as exc:
        raise ValueError(f"bad X-Matrix signature from {auth.origin!r}: {exc}") from None
