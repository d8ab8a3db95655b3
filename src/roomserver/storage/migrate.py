"""Schema versions and forward migrations.

Migrations live in ``migrations/<dialect>/NNN_name.sql``; ``NNN`` is the schema version the file
brings the database to. On start every missing migration is applied in order, each in its own
transaction together with the new version number. A database whose version is newer than the
newest file is refused with ``SchemaTooNew``: an older program must not write to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from roomserver.ports import SchemaTooNew
from roomserver.storage.dialect import Dialect
from roomserver.storage.engine import Engine, Tx

_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Any constant: serialises concurrent starts of several processes on one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x726F6F6D


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(script: str) -> tuple[str, ...]:
    """Split a migration script at ``;`` ending a line (our scripts have no procedural code)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return tuple(p.strip() for p in parts if p.strip())


def load_migrations(dialect: Dialect) -> list[Migration]:
    folder = resources.files("roomserver.storage").joinpath("migrations", dialect.value)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match is None:
            continue
        found.append(
            Migration(int(match.group(1)), entry.name, split_statements(entry.read_text("utf-8")))
        )
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError(f"migration {migration.name}: expected version {expected:03d}")
    return found


def latest_version(dialect: Dialect) -> int:
    return len(load_migrations(dialect))


async def _current_version(tx: Tx) -> int:
    await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = await tx.fetchrow("SELECT MAX(version) FROM schema_version")
    return int(row[0]) if row is not None and row[0] is not None else 0


async def schema_version(engine: Engine) -> int:
    """The database's schema version (0: empty)."""
    return await engine.run(_current_version, write=True)


async def migrate(engine: Engine) -> int:
    """Bring the database to the newest schema; return its version."""
    migrations = load_migrations(engine.dialect)
    newest = len(migrations)

    async def apply(tx: Tx) -> int:
        if tx.dialect is Dialect.POSTGRESQL:
            await tx.fetchrow("SELECT pg_advisory_xact_lock(?)", _PG_MIGRATION_LOCK)
        current = await _current_version(tx)
        if current > newest:
            raise SchemaTooNew(
                f"the database has schema version {current}, but this roomserver only knows "
                f"versions up to {newest}: run a newer roomserver (downgrades are not supported)"
            )
        for migration in migrations[current:]:
            for statement in migration.statements:
                await tx.execute(statement)
            await tx.execute("DELETE FROM schema_version")
            await tx.execute("INSERT INTO schema_version (version) VALUES (?)", migration.version)
        return newest

    return await engine.run(apply, write=True)
