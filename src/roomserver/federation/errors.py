"""Typed errors of the federation layer.

Every failure of a remote server surfaces as a ``FederationError`` subclass, so callers can map
each category to a retry decision without looking at HTTP codes or aiohttp exceptions:

* ``RemoteTimeout``: the remote did not answer within the per-request timeout.
* ``RemoteUnavailable``: connection failure, DNS failure, 5xx, or the destination is in backoff.
* ``ResponseTooLarge``: the body exceeded the size bound (detected while streaming).
* ``BadResponse``: the body is not the JSON shape the endpoint promises.
* ``RemoteRejected``: the remote answered with a 4xx (not found, forbidden, ...).
* ``NoServerSucceeded``: every candidate server failed; carries each server's error.
* ``MissingDataTimeout``: the overall budget for fetching missing data ran out.
* ``KeyFetchError``: server signing keys could not be obtained or did not verify.

``KeysUnobtainable`` is not a ``FederationError`` but the core's ``InvalidSignature``: an event
whose signing key no key source would give within the key ring's bound is dropped (``INVALID``)
rather than retried, so that one unreachable server cannot block a room.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from roomserver.core.errors import InvalidSignature

#: How the reason of an event dropped by ``KeysUnobtainable`` begins (what ``roomserver input``
#: recognises in an ``EventResult`` to explain how to give keys out of band).
KEYS_UNOBTAINABLE = "signing key unobtainable"


class FederationError(Exception):
    """Base of every error of the federation layer. ``destination`` is the server involved.
    ``transient``: trying again later may succeed (the input pipeline retries the message)."""

    transient: bool = False

    def __init__(self, reason: str, *, destination: str | None = None) -> None:
        prefix = f"{destination}: " if destination else ""
        super().__init__(prefix + reason)
        self.reason = reason
        self.destination = destination


class RemoteTimeout(FederationError):
    """The remote did not answer within the per-request timeout."""

    transient = True


class RemoteUnavailable(FederationError):
    """The remote could not be reached (connection, DNS, TLS, 5xx) or is backed off."""

    transient = True


class BackingOff(RemoteUnavailable):
    """The destination failed recently; no request is sent until ``retry_at`` (monotonic s)."""

    def __init__(self, destination: str, retry_at: float) -> None:
        super().__init__(f"backing off until t={retry_at:.1f}", destination=destination)
        self.retry_at = retry_at


class ResponseTooLarge(FederationError):
    """The response body exceeded ``limit`` bytes."""

    def __init__(self, destination: str, limit: int) -> None:
        super().__init__(f"response larger than {limit} bytes", destination=destination)
        self.limit = limit


class BadResponse(FederationError):
    """The response is not valid JSON of the expected shape, or its events are unusable."""


class RemoteRejected(FederationError):
    """The remote answered with a client error (4xx): ``status`` and Matrix ``errcode``."""

    def __init__(
        self, reason: str, *, destination: str, status: int, errcode: str | None = None
    ) -> None:
        super().__init__(f"HTTP {status} {errcode or ''} {reason}".strip(), destination=destination)
        self.status = status
        self.errcode = errcode


class NoServerSucceeded(FederationError):
    """Every server asked failed. ``errors`` maps each server tried to its error, in order."""

    def __init__(self, what: str, errors: Mapping[str, Exception]) -> None:
        tried = ", ".join(f"{s} ({type(e).__name__}: {e})" for s, e in errors.items())
        super().__init__(f"no server provided {what}; tried: {tried or 'none'}")
        self.errors = dict(errors)
        # Transient when one server's failure is: another try may reach it.
        self.transient = any(
            isinstance(e, TimeoutError | OSError) or getattr(e, "transient", False) is True
            for e in self.errors.values()
        )


class MissingDataTimeout(FederationError):
    """The overall deadline for fetching missing data (MaximumMissingProcessingTime) passed."""

    transient = True


class KeyFetchError(FederationError):
    """Server keys could not be fetched, or the key response failed validation."""

    transient = True


class KeysUnobtainable(InvalidSignature):
    """No key source gave the signing keys ``key_ids`` of ``server_name`` within the bound.

    Not transient (``transient`` is False): the event is dropped as ``INVALID``. Keys given out
    of band (``KeyRing.add_verify_key``) let the event in when it is submitted again.
    """

    transient = False

    def __init__(self, server_name: str, key_ids: Sequence[str], detail: str) -> None:
        keys = ", ".join(key_ids) or "(none named)"
        super().__init__(
            f"{KEYS_UNOBTAINABLE}: server {server_name} key {keys}: {detail}",
            field=f"signatures.{server_name}",
        )
        self.server_name = server_name
        self.key_ids = tuple(key_ids)


_UNOBTAINABLE = re.compile(re.escape(KEYS_UNOBTAINABLE) + r": server (\S+) key (.+?): ")


def unobtainable_keys(reason: str | None) -> tuple[str, tuple[str, ...]] | None:
    """The server and key IDs named by the reason of a ``KeysUnobtainable`` drop, if it is one
    (an ``EventResult`` carries only the reason across the bus)."""
    match = _UNOBTAINABLE.search(reason or "")
    if match is None:
        return None
    return match.group(1), tuple(match.group(2).split(", "))
