"""A Matrix roomserver: ingests room events and keeps each room's DAG and state true.

``roomserver.Roomserver`` is the facade (see ``roomserver.app``); it is imported lazily so that
users of the pure core (``roomserver.core``) do not load the service's dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from roomserver import _native

# Before any other module of the package: compiled modules load only if built from these
# sources (roomserver/_native.py).
_native.install()

__version__ = "0.1.0"

__all__ = ["Roomserver", "__version__"]

if TYPE_CHECKING:
    from roomserver.app import Roomserver


def __getattr__(name: str) -> Any:
    if name == "Roomserver":
        from roomserver.app import Roomserver

        return Roomserver
    raise AttributeError(f"module 'roomserver' has no attribute {name!r}")
