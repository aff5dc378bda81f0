"""The asyncpg connection pool, with jsonb decoded to Python objects."""

from __future__ import annotations

import json

import asyncpg


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def create_pool(database_url: str, max_size: int = 10) -> asyncpg.Pool:
    """A pool on `database_url` whose connections speak jsonb as Python objects."""
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=max_size, init=_init_connection
    )
    assert pool is not None
    return pool
