"""Chunk workers: leases, crashes mid-chunk, cancellation mid-run. Made deterministic by
holding row locks and killing backends the way a crash would."""

from __future__ import annotations

import asyncpg
import grpc

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.model import Claim
from importd_server.store.jobs import JobStore
from importd_server.store.pool import create_pool, open_connection
from tests.conftest import AppFactory
from tests.rpc import counts, entries_of, start_import, wait_for_job


def contacts_file(rows: int) -> bytes:
    return ("email,first_name\n" + "".join(f"p{i}@x.com,P{i}\n" for i in range(rows))).encode()


async def staged_job(make_app: AppFactory, database_url: str, rows: int) -> str:
    """A queued job, staged by a replica with no workers (chunks of 4 rows)."""
    api_only = await make_app(workers=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api_only.port}") as channel:
        job = await start_import(pb_grpc.ImportServiceStub(channel), contacts_file(rows))
    assert job.status == pb.JOB_STATUS_QUEUED
    return job.id


async def doomed_worker(database_url: str) -> tuple[JobStore, Claim, asyncpg.Connection]:
    """A worker that claims the next chunk with a 1-second lease and locks it in an open
    transaction on its own connection (set up as the server's), for a test to kill."""
    pool = await create_pool(database_url, 1)
    store = JobStore(pool)
    claim = await store.claim_chunk("doomed-worker", 1.0)
    await pool.close()
    assert claim is not None
    doomed = await open_connection(database_url)
    await doomed.transaction().start()
    assert await store.lock_claimed_chunk(doomed, claim, "doomed-worker")
    return store, claim, doomed


async def test_a_worker_killed_mid_chunk_loses_its_lease_and_another_finishes_exactly(
    make_app: AppFactory, database_url: str, db: asyncpg.Connection
) -> None:
    job_id = await staged_job(make_app, database_url, rows=12)

    # A worker claims chunk 1 with a 1-second lease, writes part of it, and dies.
    _, claim, doomed = await doomed_worker(database_url)
    assert claim.chunk_number == 1
    await doomed.execute(
        "INSERT INTO contacts (tenant, email, first_name) VALUES ('default', 'p0@x.com', 'half')"
    )
    await db.execute("SELECT pg_terminate_backend($1)", doomed.get_server_pid())

    worker = await make_app(workers=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        job = await wait_for_job(stub, job_id, within=20)
        assert job.status == pb.JOB_STATUS_SUCCEEDED
        assert counts(job) == {"created": 12}
        assert job.processed_rows == 12
        statuses = {e.status for e in await entries_of(stub, job_id)}
    assert statuses == {pb.ENTRY_STATUS_CREATED}
    assert await db.fetchval("SELECT count(*) FROM contacts") == 12
    assert await db.fetchval("SELECT first_name FROM contacts WHERE email = 'p0@x.com'") == "P0"
    chunk = await db.fetchrow(
        "SELECT attempts, lease_owner, status FROM import_chunks WHERE chunk_number = 1"
    )
    assert chunk["status"] == "DONE"
    assert chunk["attempts"] == 2
    assert worker.workers is not None
    assert chunk["lease_owner"].startswith(worker.workers.replica_id)
    await doomed.close()
