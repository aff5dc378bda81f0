"""When PostgreSQL goes away and comes back: every RPC answers UNAVAILABLE with RetryInfo,
health follows the database, imports finish exactly, and the outage is logged once."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg
import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_client import AsyncClient
from importd_server.app import SERVICE_NAME, Application
from importd_server.config import Settings
from tests.conftest import truncate
from tests.outage import DatabaseProxy, database_proxy
from tests.rpc import (
    insert_job,
    rich_error,
    start_import,
    wait_for_job,
    wait_for_progress,
    wait_until,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ROWS = 2000


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[DatabaseProxy]:
    """A proxy to the test database that the test can cut and restore."""
    async with database_proxy(database_url) as started:
        yield started


@pytest.fixture
async def app(
    proxy: DatabaseProxy, settings: Settings, database_url: str
) -> AsyncIterator[Application]:
    """A server whose every database connection goes through the proxy; short leases (a chunk
    interrupted by the outage runs again soon after) and housekeeping every half second."""
    await truncate(database_url)
    application = Application(
        replace(settings, lease_seconds=2.0, housekeeping_seconds=0.5), proxy.url
    )
    await application.start()
    yield application
    await application.stop(grace=1.0)


async def next_status(watch: Any) -> int:
    """The next status a health Watch stream reports."""
    response: health_pb2.HealthCheckResponse = await asyncio.wait_for(watch.read(), 15)
    return response.status


def calls(stub: pb_grpc.ImportServiceStub, job_id: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Every RPC that reads or writes the database, by name; streams are read to their end."""

    async def read_stream(stream: Any) -> list[Any]:
        return [message async for message in stream]

    return {
        "StartImport": lambda: start_import(stub, b"email\na@x.com\n"),
        "GetJob": lambda: stub.GetJob(pb.GetJobRequest(id=job_id)),
        "ListJobs": lambda: stub.ListJobs(pb.ListJobsRequest()),
        "ListEntries": lambda: stub.ListEntries(pb.ListEntriesRequest(id=job_id)),
        "CancelJob": lambda: stub.CancelJob(pb.CancelJobRequest(id=job_id)),
        "RetryJob": lambda: stub.RetryJob(pb.RetryJobRequest(id=job_id)),
        "RevertJob": lambda: stub.RevertJob(pb.RevertJobRequest(id=job_id, request_id="r")),
        "StreamProgress": lambda: read_stream(
            stub.StreamProgress(pb.StreamProgressRequest(id=job_id))
        ),
        "ExportEntries": lambda: read_stream(
            stub.ExportEntries(pb.ExportEntriesRequest(id=job_id))
        ),
    }


async def test_while_the_database_is_away_every_rpc_is_unavailable_with_retry_info_and_health_says_not_serving(
    app: Application,
    proxy: DatabaseProxy,
    channel: grpc.aio.Channel,
    stub: pb_grpc.ImportServiceStub,
    db: asyncpg.Connection,
) -> None:
    job_id = str(await insert_job(db, status="SUCCEEDED"))
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert await next_status(watch) == SERVING

    await proxy.cut()
    assert await next_status(watch) == NOT_SERVING
    overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert overall.status == NOT_SERVING
    for name, call in calls(stub, job_id).items():
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call()
        error = rich_error(raised.value)
        assert (name, error.code, error.reason, error.retry_delay) == (
            name,
            grpc.StatusCode.UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
            1.0,
        )
    # What needs no database still answers.
    types = await stub.ListImportTypes(pb.ListImportTypesRequest())
    assert [t.name for t in types.import_types] == ["contacts", "transactions"]

    await proxy.restore()
    assert await next_status(watch) == SERVING
    for name, call in calls(stub, job_id).items():
        # The job has ended (and holds no rows): that is FAILED_PRECONDITION, not news.
        if name not in ("CancelJob", "RetryJob"):
            await call()


async def test_an_import_interrupted_by_an_outage_ends_with_exact_counts_and_each_component_logs_it_once(
    app: Application,
    proxy: DatabaseProxy,
    stub: pb_grpc.ImportServiceStub,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = ("email\n" + "".join(f"o{i}@x.com\n" for i in range(ROWS))).encode()
    job = await start_import(stub, data, piece=64 * 1024)
    # A watcher keeps the progress fan-out busy through the outage; its stream stays open.
    watcher = stub.StreamProgress(pb.StreamProgressRequest(id=job.id))
    events = asyncio.create_task(_read_all(watcher))
    await wait_for_progress(stub, job.id, rows=40)

    with structlog.testing.capture_logs() as logs, caplog.at_level(logging.WARNING):
        await proxy.cut()
        cut_at = await db.fetchrow(
            "SELECT processed_rows, status FROM import_jobs WHERE id = $1::uuid", job.id
        )
        await asyncio.sleep(3)  # workers, listener, fan-out, housekeeper, health, webhooks fail
        await proxy.restore()
        final = await wait_for_job(stub, job.id, within=60)
        await asyncio.sleep(1.5)  # the health monitor's next probe sees the database back

    assert cut_at["status"] == "RUNNING" and cut_at["processed_rows"] < ROWS
    assert (final.status, final.created_count, final.processed_rows) == (
        pb.JOB_STATUS_SUCCEEDED,
        ROWS,
        ROWS,
    )
    assert await db.fetchval("SELECT count(*) FROM contacts WHERE email LIKE 'o%'") == ROWS
    streamed = await asyncio.wait_for(events, 30)
    assert streamed[-1].terminal and streamed[-1].job.created_count == ROWS

    changes = Counter(
        (entry["event"], entry["component"])
        for entry in logs
        if entry["event"] in ("database lost", "database back")
    )
    lost = {component for event, component in changes if event == "database lost"}
    back = {component for event, component in changes if event == "database back"}
    components = {"workers", "progress listener", "progress fan-out", "housekeeper", "health"}
    assert {*components, "webhook deliverer"} == lost
    assert back == lost
    assert max(changes.values()) == 1, changes
    assert [e for e in logs if e.get("exc_info") or e["log_level"] in ("error", "critical")] == []
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def _read_all(stream: Any) -> list[pb.ProgressEvent]:
    return [event async for event in stream]


async def test_a_server_started_while_the_database_is_down_waits_and_serves_once_it_is_up(
    proxy: DatabaseProxy, settings: Settings, database_url: str
) -> None:
    await truncate(database_url)
    await proxy.cut()
    application = Application(settings, proxy.url)
    with structlog.testing.capture_logs() as logs:
        starting = asyncio.create_task(application.start())
        await wait_until(
            lambda: any(e["event"] == "database not reachable; retrying" for e in logs)
        )
        assert not starting.done()
        await proxy.restore()
        port = await asyncio.wait_for(starting, 30)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            assert response.status == SERVING
            job = await start_import(pb_grpc.ImportServiceStub(channel), b"email\nw@x.com\n")
            assert job.status == pb.JOB_STATUS_QUEUED
    finally:
        await application.stop(grace=1.0)
    retry = next(e for e in logs if e["event"] == "database not reachable; retrying")
    assert retry["host"] == f"127.0.0.1:{proxy.port}" and retry["attempt"] == 1


async def test_a_client_read_during_an_outage_is_retried_until_the_database_is_back(
    app: Application, proxy: DatabaseProxy, db: asyncpg.Connection
) -> None:
    job_id = str(await insert_job(db, status="SUCCEEDED"))
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        await proxy.cut()
        with structlog.testing.capture_logs() as logs:
            reading = asyncio.create_task(client.get_job(job_id))
            await wait_until(lambda: any(e["event"] == "stamina.retry_scheduled" for e in logs))
            await proxy.restore()
            job = await asyncio.wait_for(reading, 30)
    assert job.id == job_id
    retried = next(e for e in logs if e["event"] == "stamina.retry_scheduled")
    assert "the database is unreachable; retry shortly" in retried["caused_by"]


async def test_a_server_stops_cleanly_while_the_database_is_away(
    proxy: DatabaseProxy, settings: Settings, database_url: str
) -> None:
    await truncate(database_url)
    application = Application(settings, proxy.url)
    await application.start()
    await proxy.cut()
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(application.stop(grace=1.0), 30)
    assert logs[-1]["event"] == "importd stopped"
    assert [e for e in logs if e.get("exc_info")] == []
