"""The one place where SQLite and PostgreSQL differ at query time.

Queries are written once, in SQLite's spelling, with two extensions:

* ``?`` is a positional parameter (PostgreSQL: ``$1``, ``$2``, ...);
* ``IN @LIST`` takes one Python sequence as its argument (SQLite: ``IN (?, ?, ...)`` with the
  values spread out; PostgreSQL: ``= ANY($n)`` with the list as an array).

``FOR_UPDATE`` in a query becomes `` FOR UPDATE`` on PostgreSQL and nothing on SQLite (where a
write transaction already excludes every other writer). Everything else the queries use
(``INSERT ... ON CONFLICT``, ``RETURNING``, ``WITH ... VALUES``, ``CAST(? AS BIGINT)``) is
spelled the same in both. Schema differences (types, identity columns) live in the per-dialect
migration files instead.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

_TOKEN = re.compile(r"IN @LIST|\?|FOR_UPDATE")


class Dialect(enum.Enum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


@lru_cache(maxsize=1024)
def _split(sql: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The literal pieces of ``sql`` and the tokens between them."""
    pieces: list[str] = []
    tokens: list[str] = []
    last = 0
    for match in _TOKEN.finditer(sql):
        pieces.append(sql[last : match.start()])
        tokens.append(match.group(0))
        last = match.end()
    pieces.append(sql[last:])
    return tuple(pieces), tuple(tokens)


@lru_cache(maxsize=2048)
def _postgres_text(sql: str) -> str:
    pieces, tokens = _split(sql)
    out = [pieces[0]]
    n = 0
    for token, piece in zip(tokens, pieces[1:], strict=True):
        if token == "FOR_UPDATE":
            out.append(" FOR UPDATE")
        else:
            n += 1
            out.append(f"${n}" if token == "?" else f"= ANY(${n})")
        out.append(piece)
    return "".join(out)


@lru_cache(maxsize=4096)
def _sqlite_text(sql: str, list_lengths: tuple[int, ...]) -> str:
    pieces, tokens = _split(sql)
    out = [pieces[0]]
    lists = iter(list_lengths)
    for token, piece in zip(tokens, pieces[1:], strict=True):
        if token == "?":
            out.append("?")
        elif token == "IN @LIST":
            length = next(lists)
            # An empty IN list is valid SQLite and matches nothing.
            out.append("IN (" + ",".join("?" * length) + ")")
        out.append(piece)
    return "".join(out)


def compile_query(dialect: Dialect, sql: str, args: Sequence[Any]) -> tuple[str, list[Any]]:
    """The text and flat arguments to send to the driver for ``sql`` with ``args``."""
    if dialect is Dialect.POSTGRESQL:
        return _postgres_text(sql), list(args)
    _, tokens = _split(sql)
    params = [t for t in tokens if t != "FOR_UPDATE"]
    if len(params) != len(args):
        raise ValueError(f"query expects {len(params)} arguments, got {len(args)}: {sql}")
    if "IN @LIST" not in params:
        return _sqlite_text(sql, ()), list(args)
    flat: list[Any] = []
    lengths: list[int] = []
    for token, arg in zip(params, args, strict=True):
        if token == "IN @LIST":
            lengths.append(len(arg))
            flat.extend(arg)
        else:
            flat.append(arg)
    return _sqlite_text(sql, tuple(lengths)), flat


def values_table(name: str, columns: Sequence[str], *, rows: int) -> str:
    """``name(columns) AS (VALUES (CAST(? AS BIGINT), ...), ...)`` for a ``WITH`` clause.

    Integer columns only; the casts give both databases the column types. Callers pad ``rows``
    to a power of two so that PostgreSQL's statement cache sees few distinct texts.
    """
    row = "(" + ", ".join("CAST(? AS BIGINT)" for _ in columns) + ")"
    return f"{name}({', '.join(columns)}) AS (VALUES {', '.join([row] * rows)})"


def padded_size(n: int) -> int:
    """The smallest power of two >= ``n`` (at least 1)."""
    size = 1
    while size < n:
        size *= 2
    return size


#: Rows per multi-row ``INSERT`` on SQLite (its limit is 32,766 parameters per statement).
SQLITE_ROWS_PER_INSERT = 500


def insert_rows(
    dialect: Dialect,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    *,
    suffix: str = "",
) -> list[tuple[str, list[Any]]]:
    """Statements (query, arguments) inserting ``rows`` into ``table`` in their order.

    ``columns`` are ``(name, PostgreSQL type)``. PostgreSQL gets one statement whatever the
    number of rows, ``INSERT ... SELECT * FROM unnest(...)`` with one array per column (one
    text, so its statement cache keeps one plan); SQLite gets multi-row ``VALUES`` of at most
    ``SQLITE_ROWS_PER_INSERT`` rows. ``suffix`` (``ON CONFLICT ...``, ``RETURNING ...``) ends
    each statement. New rows get their identity values in the order of ``rows``.
    """
    if not rows:
        return []
    head = f"INSERT INTO {table} ({', '.join(name for name, _ in columns)}) "
    tail = f" {suffix}" if suffix else ""
    if dialect is Dialect.POSTGRESQL:
        arrays = ", ".join(f"CAST(? AS {kind}[])" for _, kind in columns)
        args: list[Any] = [[row[i] for row in rows] for i in range(len(columns))]
        return [(f"{head}SELECT * FROM unnest({arrays}){tail}", args)]
    one = "(" + ", ".join("?" * len(columns)) + ")"
    out: list[tuple[str, list[Any]]] = []
    for start in range(0, len(rows), SQLITE_ROWS_PER_INSERT):
        part = rows[start : start + SQLITE_ROWS_PER_INSERT]
        flat = [value for row in part for value in row]
        out.append((f"{head}VALUES {', '.join([one] * len(part))}{tail}", flat))
    return out
