"""Prometheus metrics over HTTP, and the retention of entries."""

from __future__ import annotations

import asyncio
import urllib.request

import asyncpg
import grpc
import pytest

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from tests.conftest import AppFactory
from tests.rpc import import_and_wait, rich_error


async def test_metrics_count_rows_jobs_and_rpcs(make_app: AppFactory) -> None:
    app = await make_app(metrics_port=0)
    assert app.metrics is not None and app.metrics.port and app.housekeeper is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        await import_and_wait(stub, b"email\na@x.com\nb@x.com\nbad\n")
    await app.housekeeper.run_once()
    url = f"http://127.0.0.1:{app.metrics.port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'importd_rows_processed_total{import_type="contacts",outcome="CREATED"} 2.0' in text
    assert 'importd_rows_processed_total{import_type="contacts",outcome="FAILED"} 1.0' in text
    assert 'importd_jobs{status="PARTIALLY_SUCCEEDED"} 1.0' in text
    assert 'importd_rpc_duration_seconds_count{code="OK",method="StartImport"} 1.0' in text
    assert 'importd_rpc_duration_seconds_count{code="OK",method="GetJob"}' in text


async def test_entries_of_jobs_past_retention_are_removed_and_the_job_stays(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    app = await make_app(retention_days=1e-9, housekeeping_seconds=3600)
    assert app.housekeeper is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        await import_and_wait(stub, b"email\na@x.com\n")
        assert await app.housekeeper.run_once() == 1
        # An update records the row's previous values; retention removes them too.
        job = await import_and_wait(stub, b"email,first_name\na@x.com,A\n")
        assert await db.fetchval("SELECT count(*) FROM import_before_images") == 1
        assert await app.housekeeper.run_once() == 1
        assert await app.housekeeper.run_once() == 0
        assert await db.fetchval("SELECT count(*) FROM import_before_images") == 0
        still = await stub.GetJob(pb.GetJobRequest(id=job.id))
        assert still.updated_count == 1
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await stub.ListEntries(pb.ListEntriesRequest(id=job.id))
    error = rich_error(gone.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "ENTRIES_EXPIRED"
