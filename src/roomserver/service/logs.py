"""Logging set-up for the ``roomserver`` command: ``log_format: text`` (the default, for
people) or ``json`` (one JSON object per line, for log collectors)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from roomserver.config import Config

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``timestamp`` (ISO 8601, UTC, milliseconds),
    ``level``, ``logger``, ``message``, and ``exception`` (the formatted traceback) and
    ``stack`` when the record carries them. Newlines inside values are escaped by JSON, so a
    traceback never splits a record over several lines."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(config: Config) -> None:
    """Log to stderr at ``config.log_level`` in ``config.log_format``."""
    handler = logging.StreamHandler()
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        handlers=[handler],
    )
