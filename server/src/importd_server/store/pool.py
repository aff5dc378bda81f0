"""The asyncpg connection pool, with jsonb decoded to Python objects."""

from __future__ import annotations

import json
from typing import TypeAlias

import asyncpg
import asyncpg.pool

# A connection of its own or one borrowed from the pool: queries take either.
Connection: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)


# jsonb's binary form is a version byte (1) and the JSON text.
JSONB_VERSION = b"\x01"


def _encode_jsonb(value: object) -> bytes:
    return JSONB_VERSION + json.dumps(value, separators=(",", ":")).encode()


def _decode_jsonb(data: bytes) -> object:
    return json.loads(data[1:])


async def _init_connection(connection: Connection) -> None:
    await connection.set_type_codec(
        "jsonb",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        schema="pg_catalog",
        format="binary",
    )


async def create_pool(database_url: str, max_size: int = 10) -> asyncpg.Pool:
    """A pool on `database_url` whose connections speak jsonb as Python objects."""
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=max_size, init=_init_connection
    )
    assert pool is not None
    return pool
