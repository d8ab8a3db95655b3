"""Federation layer: the X-Matrix signed HTTP client, server keys, and fetching missing data.

See ``docs/federation.md``. The input pipeline reaches it only through ``roomserver.ports``.
"""

from roomserver.federation.client import FederationClient
from roomserver.federation.errors import (
    BackingOff,
    BadResponse,
    FederationError,
    KeyFetchError,
    KeysUnobtainable,
    MissingDataTimeout,
    NoServerSucceeded,
    RemoteRejected,
    RemoteTimeout,
    RemoteUnavailable,
    ResponseTooLarge,
)
from roomserver.federation.fetcher import Deadline, FederationFetcher, MissingEvents, RemoteState
from roomserver.federation.keyring import InMemoryKeyCache, KeyCache, KeyRing, Notary, ServerKey

__all__ = [
    "BackingOff",
    "BadResponse",
    "Deadline",
    "FederationClient",
    "FederationError",
    "FederationFetcher",
    "InMemoryKeyCache",
    "KeyCache",
    "KeyFetchError",
    "KeyRing",
    "KeysUnobtainable",
    "MissingDataTimeout",
    "MissingEvents",
    "NoServerSucceeded",
    "Notary",
    "RemoteRejected",
    "RemoteState",
    "RemoteTimeout",
    "RemoteUnavailable",
    "ResponseTooLarge",
    "ServerKey",
]
