"""Migrations: applied once, in order, safely when replicas start together."""

from __future__ import annotations

import asyncio

import asyncpg

from importd_server.store.migrate import load_migrations, migrate
from importd_server.store.pool import create_pool
from tests.conftest import with_database


async def test_replicas_starting_together_apply_each_migration_exactly_once(
    server_url: str,
) -> None:
    name = "importd_migrate_race"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    pools = [await create_pool(with_database(server_url, name), 2) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(pool) for pool in pools))
        versions = [m.version for m in load_migrations()]
        # Exactly one replica applied everything; the others found nothing left to do.
        assert sorted(applied, key=len) == [[], [], versions]
        rows = await pools[0].fetch("SELECT version FROM importd_migrations ORDER BY version")
        assert [r["version"] for r in rows] == versions
        assert await migrate(pools[0]) == []
    finally:
        for pool in pools:
            await pool.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))
