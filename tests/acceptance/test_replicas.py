"""Replicas on one database: sharing a job's chunks, and surviving `kill -9` of one."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import asyncpg
import grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from tests.acceptance.processes import serve
from tests.conftest import AppFactory
from tests.rpc import counts, entries_of, start_import, wait_for_job, wait_for_progress

ROWS = 4000


def contacts_file(rows: int) -> bytes:
    return ("email,score\n" + "".join(f"p{i}@x.com,{i % 100}\n" for i in range(rows))).encode()


async def chunk_owner_pids(db: asyncpg.Connection) -> set[int]:
    owners = await db.fetch("SELECT DISTINCT lease_owner FROM import_chunks WHERE status = 'DONE'")
    # lease_owner is "<host>:<pid>:<replica>/<worker>"
    return {int(r["lease_owner"].split(":")[1]) for r in owners}


async def test_two_server_processes_share_the_work_of_one_job(
    make_app: AppFactory, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    local = await make_app(chunk_size=20, workers=1)
    with serve(tmp_path, database_url, workers="2", poll_seconds="0.02") as (_, other):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{local.port}") as channel:
            stub = pb_grpc.ImportServiceStub(channel)
            job = await start_import(stub, contacts_file(ROWS), piece=64 * 1024)
            job = await wait_for_job(stub, job.id, within=120)
    assert job.status == pb.JOB_STATUS_SUCCEEDED
    assert counts(job) == {"created": ROWS}
    assert await db.fetchval("SELECT count(*) FROM contacts") == ROWS
    assert await chunk_owner_pids(db) == {os.getpid(), other.pid}


async def test_kill_9_of_a_replica_mid_import_ends_with_exact_counts(
    make_app: AppFactory, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    api_only = await make_app(chunk_size=10, workers=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api_only.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        with serve(tmp_path, database_url, workers="2", lease_seconds="1") as (_, doomed):
            job = await start_import(stub, contacts_file(ROWS), piece=64 * 1024)
            await wait_for_progress(stub, job.id, rows=1, within=60)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
        done_by_doomed = await db.fetchval(
            "SELECT count(*) FROM import_chunks WHERE status = 'DONE'"
        )
        assert 0 < done_by_doomed < ROWS // 10, "the replica was not killed mid-import"

        await make_app(workers=2)  # a surviving replica takes over, expired leases included
        job = await wait_for_job(stub, job.id, within=120)
        assert job.status == pb.JOB_STATUS_SUCCEEDED
        assert counts(job) == {"created": ROWS}
        assert job.processed_rows == ROWS
        statuses = {e.status for e in await entries_of(stub, job.id)}
    assert statuses == {pb.ENTRY_STATUS_CREATED}
    assert await db.fetchval("SELECT count(*) FROM contacts") == ROWS
    assert await db.fetchval("SELECT sum(score) FROM contacts") == sum(i % 100 for i in range(ROWS))


async def watch(port: int, job_id: str) -> list[pb.ProgressEvent]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        return [e async for e in stub.StreamProgress(pb.StreamProgressRequest(id=job_id))]


async def test_watchers_on_two_replicas_each_see_the_job_to_its_end(
    make_app: AppFactory, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    local = await make_app(chunk_size=20, workers=1)
    with serve(tmp_path, database_url, workers="2", poll_seconds="0.02") as (port, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{local.port}") as channel:
            stub = pb_grpc.ImportServiceStub(channel)
            job = await start_import(stub, contacts_file(ROWS), piece=64 * 1024)
            here, there = await asyncio.gather(watch(local.port, job.id), watch(port, job.id))
            final = await stub.GetJob(pb.GetJobRequest(id=job.id))
    assert final.status == pb.JOB_STATUS_SUCCEEDED
    for events in (here, there):
        processed = [e.job.processed_rows for e in events]
        assert processed == sorted(processed)
        assert [e.terminal for e in events].count(True) == 1
        assert events[-1].terminal
        assert events[-1].job.processed_rows == final.processed_rows == ROWS
        assert events[-1].job.status == final.status
        assert events[-1].job.created_count == final.created_count
    assert len(here) > 2 and len(there) > 2, "no progress between snapshot and end"


async def test_kill_9_of_a_replica_mid_revert_ends_with_exact_counts_and_exactly_the_rows_before(
    make_app: AppFactory, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    api_only = await make_app(chunk_size=10, workers=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api_only.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        with serve(tmp_path / "importer", database_url, workers="2") as _:
            seeded = await start_import(stub, contacts_file(ROWS // 2), piece=64 * 1024)
            await wait_for_job(stub, seeded.id, within=120)
            before = [dict(r) for r in await db.fetch("SELECT * FROM contacts ORDER BY email")]
            # Rows 1000..4999: the first 1000 change rows of the seed, the rest are new.
            changes = "email,first_name\n" + "".join(
                f"p{i}@x.com,Changed{i}\n" for i in range(ROWS // 4, ROWS + ROWS // 4)
            )
            job = await start_import(stub, changes.encode(), piece=64 * 1024)
            job = await wait_for_job(stub, job.id, within=120)
        assert counts(job) == {"created": ROWS * 3 // 4, "updated": ROWS // 4}

        with serve(tmp_path / "doomed", database_url, workers="2", lease_seconds="1") as (
            _,
            doomed,
        ):
            revert = await stub.RevertJob(pb.RevertJobRequest(id=job.id))
            await wait_for_progress(stub, revert.id, rows=1, within=60)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
        done_by_doomed = await db.fetchval(
            "SELECT count(*) FROM import_chunks WHERE job_id = $1 AND status = 'DONE'",
            revert.id,
        )
        assert 0 < done_by_doomed < ROWS // 10, "the replica was not killed mid-revert"

        await make_app(workers=2)  # a surviving replica takes over, expired leases included
        revert = await wait_for_job(stub, revert.id, within=120)
        assert revert.status == pb.JOB_STATUS_SUCCEEDED
        assert counts(revert) == {"deleted": ROWS * 3 // 4, "updated": ROWS // 4}
        assert revert.processed_rows == revert.total_rows == ROWS
        entries = await entries_of(stub, revert.id)
    assert [e.line_number for e in entries] == list(range(1, ROWS + 1))
    assert {e.status for e in entries} == {pb.ENTRY_STATUS_DELETED, pb.ENTRY_STATUS_UPDATED}
    assert [dict(r) for r in await db.fetch("SELECT * FROM contacts ORDER BY email")] == before
