"""The input pipeline: one event in one room at a time (see docs/input.md).

``InputProcessor`` is the entry point; ``handle_message`` and the ``Disposition`` table map
its results and failures to what the bus does with the message.
"""

from roomserver.input.acl import ServerAclChecker, StoredAclChecker
from roomserver.input.config import InputConfig
from roomserver.input.disposition import (
    Decision,
    DeliveryInfo,
    Disposition,
    disposition_for_exception,
    disposition_for_outcome,
    handle_message,
    handle_messages,
    is_transient,
    retry_delay_s,
)
from roomserver.input.errors import InputError, InputInvalid, MissingData
from roomserver.input.processor import InputProcessor
from roomserver.input.store import InputStore

__all__ = [
    "Decision",
    "DeliveryInfo",
    "Disposition",
    "InputConfig",
    "InputError",
    "InputInvalid",
    "InputProcessor",
    "InputStore",
    "MissingData",
    "ServerAclChecker",
    "StoredAclChecker",
    "disposition_for_exception",
    "disposition_for_outcome",
    "handle_message",
    "handle_messages",
    "is_transient",
    "retry_delay_s",
]
