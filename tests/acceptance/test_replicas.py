"""Replicas on one database: sharing a job's chunks, and surviving `kill -9` of one."""

from __future__ import annotations

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
