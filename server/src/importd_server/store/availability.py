"""When PostgreSQL is out of reach: telling a lost connection from a wrong query, logging an
outage once per component, and the monitor behind the gRPC health status."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from importd_server.store.pool import connect

log = structlog.get_logger(__name__)

MONITOR_NAME = "importd-health-monitor"

_LOST = (
    ConnectionError,  # refused, reset, broken pipe; and pool.DatabaseUnreachable
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, e.g. closed in the middle of a query
    asyncpg.AdminShutdownError,  # the server is shutting down, or the backend was terminated
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,  # the server is starting up
)


def is_connection_error(error: BaseException) -> bool:
    """Whether `error` says the database is out of reach (not that a query was wrong): the
    cue to answer UNAVAILABLE and try again later, not to log a traceback."""
    if isinstance(error, BaseExceptionGroup):
        return all(is_connection_error(e) for e in error.exceptions)
    if isinstance(error, asyncpg.InterfaceError):
        # asyncpg has no type of its own for "connection is closed", "pool is closing", ...
        # while its other InterfaceErrors are misuse, i.e. bugs.
        return str(error).endswith(("is closed", "is closing"))
    return isinstance(error, _LOST)


class OutageLog:
    """One component's view of the database: logs once when it is lost and once when it is
    back (with the outage's length), however many attempts fail in between."""

    def __init__(self, component: str) -> None:
        self._component = component
        self._lost_at: float | None = None

    @property
    def lost(self) -> bool:
        """Whether the last use of the database failed."""
        return self._lost_at is not None

    def failed(self, error: BaseException) -> None:
        """Records a use of the database that failed for want of a connection."""
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log.warning(
                "database lost",
                component=self._component,
                error=str(error) or type(error).__name__,
            )

    def succeeded(self) -> None:
        """Records a use of the database that worked."""
        if self._lost_at is not None:
            log.info(
                "database back",
                component=self._component,
                after_seconds=round(time.monotonic() - self._lost_at, 1),
            )
            self._lost_at = None


class DatabaseMonitor:
    """Probes the database every `interval` seconds on a connection of its own (so a busy
    pool is never mistaken for an outage) and reports each change to `on_change`."""

    def __init__(
        self,
        database_url: str,
        on_change: Callable[[bool], Awaitable[None]],
        *,
        interval: float = 1.0,
        probe_timeout: float = 1.0,
    ) -> None:
        self._database_url = database_url
        self._on_change = on_change
        self._interval = interval
        self._probe_timeout = probe_timeout
        self._outage = OutageLog("health")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts probing; the database is taken to be reachable until a probe fails."""
        self._task = asyncio.create_task(self._run(), name="importd-health-monitor")

    async def stop(self) -> None:
        """Stops probing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        connection: asyncpg.Connection[Any] | None = None
        reachable = True
        try:
            while True:
                await asyncio.sleep(self._interval)
                try:
                    if connection is None or connection.is_closed():
                        connection = await connect(
                            self._database_url,
                            timeout=self._probe_timeout,
                            server_settings={"application_name": MONITOR_NAME},
                        )
                    await connection.fetchval("SELECT 1", timeout=self._probe_timeout)
                except Exception as error:
                    # Whatever the cause (refused, dropped, no answer, a password no longer
                    # accepted), this replica cannot serve: that is what health reports.
                    self._outage.failed(error)
                    if connection is not None:
                        connection.terminate()
                        connection = None
                    now_reachable = False
                else:
                    self._outage.succeeded()
                    now_reachable = True
                if now_reachable != reachable:
                    reachable = now_reachable
                    await self._on_change(reachable)
        finally:
            if connection is not None:
                connection.terminate()
