"""Storage: SQLite (embedded default) and PostgreSQL behind one SQL seam.

``await open_storage(url)`` returns a ``SqlStorage`` implementing ``roomserver.ports.Storage``
(and the server key cache). URLs: ``sqlite:///absolute/path.db``, ``sqlite://relative.db``,
``sqlite://:memory:``, ``postgresql://user@host:port/dbname`` (``postgres://`` too; extra query
parameters are PostgreSQL settings, e.g. ``?search_path=myschema``). The schema is migrated on
open; a database from a newer schema raises ``SchemaTooNew``. See ``docs/storage.md``.
"""

from __future__ import annotations

from roomserver.storage.migrate import migrate
from roomserver.storage.postgres import PostgresEngine
from roomserver.storage.sqlite import SqliteEngine
from roomserver.storage.store import SqlStorage

__all__ = ["SqlStorage", "open_storage"]


async def open_storage(url: str, *, cache_size: int = 200_000) -> SqlStorage:
    """Open (and migrate) the database at ``url``."""
    engine: SqliteEngine | PostgresEngine
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if not path:
            raise ValueError(f"storage URL {url!r} names no file")
        engine = SqliteEngine(path)
    elif url.startswith(("postgresql://", "postgres://")):
        engine = PostgresEngine(url)
    else:
        raise ValueError(f"unsupported storage URL {url!r} (sqlite:// or postgresql://)")
    try:
        await engine.open()
        await migrate(engine)
    except BaseException:
        await engine.close()
        raise
    return SqlStorage(engine, cache_size=cache_size)
