"""A Matrix roomserver: ingests room events and keeps each room's DAG and state true."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
