"""`kill -9` of the replica receiving a file: its job, stuck RECEIVING, is failed by another
replica's housekeeper once the upload's heartbeat is stale, and no row is left behind."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from tests.acceptance.processes import serve
from tests.conftest import AppFactory
from tests.rpc import import_and_wait, wait_for_job

STALE_SECONDS = 2
# More than a block of the parser (1 MiB): rows are stored while the upload is held open.
FILE = ("email,score\n" + "".join(f"p{i}@x.com,{i % 100}\n" for i in range(100_000))).encode()


async def test_a_replica_killed_mid_upload_leaves_a_job_that_fails_interrupted_with_no_rows(
    make_app: AppFactory, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    held = asyncio.Event()

    async def requests() -> AsyncIterator[pb.StartImportRequest]:
        yield pb.StartImportRequest(
            spec=pb.ImportSpec(import_type="contacts", request_id="interrupted")
        )
        yield pb.StartImportRequest(chunk=FILE)
        await held.wait()  # the rest of the file never comes

    with serve(tmp_path, database_url, upload_stale_seconds=str(STALE_SECONDS)) as (port, doomed):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = pb_grpc.ImportServiceStub(channel).StartImport(requests())
            job_id = (await call.initial_metadata())["importd-job-id"]
            async with asyncio.timeout(60):
                while not await db.fetchval(  # noqa: ASYNC110 (the other process's progress)
                    "SELECT staged_rows > 0 FROM import_jobs WHERE id = $1::uuid", job_id
                ):
                    await asyncio.sleep(0.05)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
            call.cancel()
    stuck = await db.fetchrow("SELECT status, stage FROM import_jobs WHERE id = $1::uuid", job_id)
    assert (stuck["status"], stuck["stage"]) == ("QUEUED", "RECEIVING")

    survivor = await make_app(upload_stale_seconds=STALE_SECONDS)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{survivor.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        job = await wait_for_job(stub, job_id, within=60)
        assert job.status == pb.JOB_STATUS_FAILED
        assert "gave no sign of life" in job.error.message
        assert job.staged_rows > 0 and not job.HasField("total_rows")
        assert (
            await db.fetchval("SELECT count(*) FROM import_entries WHERE job_id = $1::uuid", job_id)
            == 0
        )
        # Its request_id is free again: the caller starts the import once more.
        again = await import_and_wait(
            stub, b"email\na@x.com\n", import_type="contacts", request_id="interrupted"
        )
    assert again.id != job_id and again.status == pb.JOB_STATUS_SUCCEEDED
    assert (
        await db.fetchval("SELECT error_reason FROM import_jobs WHERE id = $1::uuid", job_id)
        == "UPLOAD_INTERRUPTED"
    )
