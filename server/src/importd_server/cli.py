"""The `importd` command: `importd serve` runs the service until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Sequence

import structlog

from importd_server.app import Application
from importd_server.config import Settings, add_flags
from importd_server.logs import configure_logging
from importd_server.memory import configure_allocators
from importd_server.store.embedded import start_embedded
from importd_server.store.pool import DatabaseUnreachable, database_address

log = structlog.get_logger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `importd` command."""
    parser = argparse.ArgumentParser(prog="importd", description="importd bulk-import service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the gRPC service")
    add_flags(serve_parser)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env().with_flags(args)
    except ValueError as error:
        parser.error(str(error))
    configure_logging(settings.log_format, settings.log_level)
    configure_allocators()
    sys.exit(asyncio.run(serve(settings)))


async def serve(settings: Settings) -> int:
    """Runs one server until a stop signal; returns the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with _database(settings) as database_url:
        app = Application(settings, database_url)
        try:
            await app.start()
            await stop.wait()
            log.info("stop signal received; shutting down", grace_seconds=settings.grace_seconds)
        except DatabaseUnreachable as error:
            log.error(
                "giving up: the database cannot be reached",
                **database_address(database_url),
                waited_seconds=settings.database_wait_seconds,
                error=str(error),
            )
            return 1
        finally:
            await app.stop()
    return 0


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[str]:
    if settings.database_url:
        yield settings.database_url
        return
    embedded = await asyncio.to_thread(start_embedded, settings.data_dir)
    try:
        yield embedded.url
    finally:
        await asyncio.to_thread(embedded.stop)
