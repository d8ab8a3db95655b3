"""The SQL seam: one query text, compiled per dialect (pure, no database)."""

from __future__ import annotations

import pytest

from roomserver.storage import dialect
from roomserver.storage.dialect import (
    Dialect,
    compile_query,
    insert_rows,
    padded_size,
    values_table,
)
from roomserver.storage.migrate import load_migrations, split_statements

CASES = [
    (
        "SELECT a FROM t WHERE b = ? AND c = ?",
        (1, "x"),
        ("SELECT a FROM t WHERE b = ? AND c = ?", [1, "x"]),
        ("SELECT a FROM t WHERE b = $1 AND c = $2", [1, "x"]),
    ),
    (
        "SELECT a FROM t WHERE b IN @LIST AND c = ?",
        ([1, 2, 3], "x"),
        ("SELECT a FROM t WHERE b IN (?,?,?) AND c = ?", [1, 2, 3, "x"]),
        ("SELECT a FROM t WHERE b = ANY($1) AND c = $2", [[1, 2, 3], "x"]),
    ),
    (
        "SELECT a FROM t WHERE b IN @LIST AND c IN @LIST",
        ([], ["p"]),
        ("SELECT a FROM t WHERE b IN () AND c IN (?)", ["p"]),
        ("SELECT a FROM t WHERE b = ANY($1) AND c = ANY($2)", [[], ["p"]]),
    ),
    (
        "SELECT v FROM rooms WHERE id = ? FOR_UPDATE",
        ("!r",),
        ("SELECT v FROM rooms WHERE id = ? ", ["!r"]),
        ("SELECT v FROM rooms WHERE id = $1  FOR UPDATE", ["!r"]),
    ),
]


@pytest.mark.parametrize(("sql", "args", "sqlite", "postgres"), CASES)
def test_compile_query(
    sql: str,
    args: tuple[object, ...],
    sqlite: tuple[str, list[object]],
    postgres: tuple[str, list[object]],
) -> None:
    assert compile_query(Dialect.SQLITE, sql, args) == sqlite
    assert compile_query(Dialect.POSTGRESQL, sql, args) == postgres


def test_argument_count_is_checked() -> None:
    with pytest.raises(ValueError, match="expects 2 arguments"):
        compile_query(Dialect.SQLITE, "SELECT ? + ?", (1,))


def test_values_table_and_padding() -> None:
    assert values_table("r", ("a", "b"), rows=2) == (
        "r(a, b) AS (VALUES (CAST(? AS BIGINT), CAST(? AS BIGINT)), "
        "(CAST(? AS BIGINT), CAST(? AS BIGINT)))"
    )
    assert [padded_size(n) for n in (0, 1, 2, 3, 5, 256)] == [1, 1, 2, 4, 8, 256]


def test_migrations_are_numbered_and_split() -> None:
    assert split_statements("-- c\nCREATE TABLE a (x INT);\n\nCREATE INDEX i ON a (x);\n") == (
        "CREATE TABLE a (x INT)",
        "CREATE INDEX i ON a (x)",
    )
    sqlite = load_migrations(Dialect.SQLITE)
    postgres = load_migrations(Dialect.POSTGRESQL)
    assert [m.version for m in sqlite] == [m.version for m in postgres]

    # Both dialects create the same tables.
    def tables(statements: tuple[str, ...]) -> set[str]:
        return {s.split()[2] for s in statements if s.startswith("CREATE TABLE")}

    assert tables(sqlite[0].statements) == tables(postgres[0].statements)


def test_insert_rows_is_one_unnest_on_postgresql_and_chunked_values_on_sqlite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    columns = [("a", "BIGINT"), ("b", "TEXT")]
    rows = [(1, "x"), (2, None), (3, "z")]
    suffix = "ON CONFLICT (a) DO NOTHING RETURNING a"
    [(pg_sql, pg_args)] = insert_rows(Dialect.POSTGRESQL, "t", columns, rows, suffix=suffix)
    assert compile_query(Dialect.POSTGRESQL, pg_sql, pg_args) == (
        "INSERT INTO t (a, b) SELECT * FROM unnest(CAST($1 AS BIGINT[]), CAST($2 AS TEXT[])) "
        + suffix,
        [[1, 2, 3], ["x", None, "z"]],
    )
    monkeypatch.setattr(dialect, "SQLITE_ROWS_PER_INSERT", 2)
    assert insert_rows(Dialect.SQLITE, "t", columns, rows, suffix=suffix) == [
        ("INSERT INTO t (a, b) VALUES (?, ?), (?, ?) " + suffix, [1, "x", 2, None]),
        ("INSERT INTO t (a, b) VALUES (?, ?) " + suffix, [3, "z"]),
    ]
    assert insert_rows(Dialect.SQLITE, "t", columns, []) == []
    assert insert_rows(Dialect.POSTGRESQL, "t", columns, []) == []
