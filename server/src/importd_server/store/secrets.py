"""Shared secrets: random values made once in the database, so replicas agree on them with
no configuration."""

from __future__ import annotations

import secrets

import asyncpg

from importd_server.store.sql import SECRET_QUERIES

PAGE_TOKEN_KEY = "page_token_key"
WEBHOOK_KEY = "webhook_key"


async def shared_secret(pool: asyncpg.Pool, name: str) -> bytes:
    """The secret `name`, made of 32 random bytes by the first replica that asks."""
    async with pool.acquire() as connection:
        await SECRET_QUERIES["offer_secret"].execute(
            connection, name=name, value=secrets.token_bytes(32)
        )
        value: bytes = await SECRET_QUERIES["get_secret"].fetchval(connection, name=name)
    return value
