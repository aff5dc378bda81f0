"""The asyncpg connection pool, with jsonb decoded to Python objects, and connecting while
PostgreSQL may be out of reach."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeAlias
from urllib.parse import parse_qs

import asyncpg
import asyncpg.pool
import structlog

log = structlog.get_logger(__name__)

# Connection of its own or one borrowed from the pool: queries take either.
Connection: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)
# What runs a query: a connection, or the pool (which lends one for the query).
Executor: TypeAlias = "Connection | asyncpg.Pool[asyncpg.Record]"

# asyncpg's own default is 60 s: a black-holed server would stall every reconnect that long.
CONNECT_TIMEOUT_SECONDS = 10.0
# Pauses between attempts to reach the database at start-up: 0.5 s, doubling up to 5 s.
FIRST_PAUSE_SECONDS = 0.5
MAX_PAUSE_SECONDS = 5.0
# Settings of every connection, unless its URL names them. No JIT: importd's statements
# each touch one batch by key, yet `by_key_only` (SET enable_seqscan = off) inflates their
# estimated costs past jit_above_cost, and compiling then cost more than running (staging's
# de-duplication of a dirty 1M-row file: 476 ms with JIT, 175 ms without).
SERVER_SETTINGS = {"jit": "off"}


# jsonb's binary form is a version byte (1) and the JSON text.
JSONB_VERSION = b"\x01"


class DatabaseUnreachable(ConnectionError):
    """PostgreSQL could not be reached: refused, unreachable, no answer, or still starting."""


def _location_and_parameters(url: str) -> tuple[str, dict[str, list[str]]]:
    """A database URL's `host/database` part and its query parameters."""
    # By hand rather than urlsplit, which refuses some passwords (a "[") and would let one
    # with an unencoded "/" or "?" leak into the host: everything up to the last "@" goes.
    location = url.partition("://")[2].rpartition("@")[2]
    location, _, query = location.partition("?")
    return location, parse_qs(query)


def database_address(url: str) -> dict[str, str]:
    """Where `url` points, for logs and errors: host (and port) and database, never a password."""
    location, parameters = _location_and_parameters(url)
    host, _, database = location.partition("/")
    return {
        "host": host or parameters.get("host", ["localhost"])[0],  # or a Unix socket folder
        "database": database or parameters.get("dbname", ["(the user's)"])[0],
    }


async def connect(dsn: str | None = None, **options: Any) -> asyncpg.Connection[Any]:
    """`asyncpg.connect`, raising DatabaseUnreachable when the server cannot be reached."""
    options.setdefault("timeout", CONNECT_TIMEOUT_SECONDS)
    # A setting the URL names (`?jit=on`) is the operator's: it stays.
    named = _location_and_parameters(dsn)[1] if dsn else {}
    defaults = {k: v for k, v in SERVER_SETTINGS.items() if k not in named}
    options["server_settings"] = {**defaults, **(options.get("server_settings") or {})}
    try:
        connection: asyncpg.Connection[Any] = await asyncpg.connect(dsn, **options)
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as error:
        reason = str(error) or f"no answer within {options['timeout']} s"
        raise DatabaseUnreachable(reason) from error
    return connection


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


async def open_connection(database_url: str) -> asyncpg.Connection[Any]:
    """A connection of its own (not the pool's), speaking jsonb as the pool's do."""
    connection = await connect(database_url)
    try:
        await _init_connection(connection)
    except BaseException:
        connection.terminate()
        raise
    return connection


async def close_connection(connection: asyncpg.Connection[Any]) -> None:
    """Closes a connection of its own; one that cannot close cleanly (broken, or busy with a
    cancelled statement) is cut off, and PostgreSQL rolls back what it held."""
    try:
        await connection.close(timeout=CONNECT_TIMEOUT_SECONDS)
    except Exception:
        connection.terminate()  # its transaction has ended, or ends with the connection
    except BaseException:
        connection.terminate()
        raise


async def create_pool(
    database_url: str, max_size: int = 10, *, wait_seconds: float = 0.0
) -> asyncpg.Pool:
    """A pool on `database_url` whose connections speak jsonb as Python objects.

    While the server cannot be reached, tries again with growing pauses (one log line per
    attempt) for up to `wait_seconds`, then raises DatabaseUnreachable.
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + wait_seconds
    attempt = 0
    while True:
        attempt += 1
        # min_size 0: asyncpg's keeper of a minimum logs a traceback at each of its retries
        # while the database is away. Connections are made on demand instead.
        pool = await asyncpg.create_pool(
            database_url, min_size=0, max_size=max_size, init=_init_connection, connect=connect
        )
        assert pool is not None
        try:
            await pool.execute("SELECT 1")  # a database out of reach shows at start-up
        except DatabaseUnreachable as error:
            await pool.close()
            remaining = give_up_at - loop.time()
            if remaining <= 0:
                raise
            pause = min(remaining, MAX_PAUSE_SECONDS, FIRST_PAUSE_SECONDS * 2 ** (attempt - 1))
            log.warning(
                "database not reachable; retrying",
                **database_address(database_url),
                attempt=attempt,
                retry_in_seconds=round(pause, 1),
                error=str(error),
            )
            await asyncio.sleep(pause)
        else:
            return pool
