"""Versioned SQL migrations, applied at start-up under an advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger(__name__)

# Any fixed number: replicas starting together queue on it instead of racing.
MIGRATION_LOCK_ID = 0x1D_0A7E_0001

_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One `.sql` file of `store/migrations`, named `NNNN_what_it_does.sql`."""

    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The packaged migrations in version order."""
    folder = resources.files("importd_server.store") / "migrations"
    found = []
    for item in folder.iterdir():
        match = _FILE_NAME.match(item.name)
        if match:
            found.append(Migration(int(match[1]), match[2], item.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


async def migrate(pool: asyncpg.Pool) -> list[int]:
    """Applies the migrations not applied yet, each in its own transaction.

    Returns the versions applied by this call.
    """
    applied_now = []
    async with pool.acquire() as connection:
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        try:
            await connection.execute(
                """CREATE TABLE IF NOT EXISTS importd_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            rows = await connection.fetch("SELECT version FROM importd_migrations")
            done = {row["version"] for row in rows}
            for migration in load_migrations():
                if migration.version in done:
                    continue
                async with connection.transaction():
                    await connection.execute(migration.sql)
                    await connection.execute(
                        "INSERT INTO importd_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                log.info("migration applied", version=migration.version, name=migration.name)
                applied_now.append(migration.version)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now
