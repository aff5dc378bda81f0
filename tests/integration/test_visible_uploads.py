"""Long uploads are visible: the job exists from the file's first byte (RECEIVING, then
STAGING) with bytes received and rows staged, in GetJob, ListJobs and StreamProgress; an
aborted or cancelled upload ends as a job that says so with no rows; receiving jobs count
toward the active-jobs limit; idle uploads never starve the server's other work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.engine.housekeeping import Housekeeper
from importd_server.errors import Aborted
from importd_server.metrics import Metrics
from importd_server.store.jobs import JobStore
from importd_server.store.pool import create_pool
from tests.conftest import AppFactory, truncate
from tests.integration.test_webhooks import (  # noqa: F401 (receiver: the fixture)
    WEBHOOK_SETTINGS,
    receiver,
    secret_of,
    settled,
)
from tests.rpc import (
    import_and_wait,
    insert_job,
    rich_error,
    start_import,
    wait_for_job,
)
from tests.webhook_receiver import Receiver

HEADER = b"email,score\n"
# More than a block of the parser (1 MiB): some rows are stored while the upload is held.
BIG = 100_000


def rows(first: int, count: int) -> bytes:
    return "".join(f"p{i}@x.com,{i % 100}\n" for i in range(first, first + count)).encode()


class HeldUpload:
    """A StartImport whose file is sent piece by piece when the test says so: its upload
    stays open, and its job receiving, for as long as the test needs."""

    def __init__(self, stub: pb_grpc.ImportServiceStub, **spec: Any) -> None:
        self._requests: asyncio.Queue[pb.StartImportRequest | None] = asyncio.Queue()
        spec.setdefault("import_type", "contacts")
        spec.setdefault("mode", pb.IMPORT_MODE_UPSERT)

        async def requests() -> AsyncIterator[pb.StartImportRequest]:
            yield pb.StartImportRequest(spec=pb.ImportSpec(**spec))
            while (request := await self._requests.get()) is not None:
                yield request

        self.call = stub.StartImport(requests())

    def send(self, piece: bytes) -> None:
        self._requests.put_nowait(pb.StartImportRequest(chunk=piece))

    def send_request(self, request: pb.StartImportRequest) -> None:
        self._requests.put_nowait(request)

    def end(self) -> None:
        self._requests.put_nowait(None)

    async def job_id(self) -> str:
        """The job's id, from the initial metadata the server sends once the job exists."""
        metadata = await self.call.initial_metadata()
        job_id: str = metadata["importd-job-id"]
        return job_id


async def job_when(
    stub: pb_grpc.ImportServiceStub,
    job_id: str,
    condition: Callable[[pb.Job], bool],
    within: float = 30,
) -> pb.Job:
    """The job once `condition` holds for it (at most `within` seconds from now)."""
    async with asyncio.timeout(within):
        while True:
            job: pb.Job = await stub.GetJob(pb.GetJobRequest(id=job_id))
            if condition(job):
                return job
            await asyncio.sleep(0.02)


def job_error(job: pb.Job) -> tuple[int, str]:
    """The job-level error's code and ErrorInfo reason."""
    info = error_details_pb2.ErrorInfo()
    assert job.error.details[0].Unpack(info)
    return job.error.code, info.reason


async def stored_entries(db: asyncpg.Connection, job_id: str) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM import_entries WHERE job_id = $1::uuid", job_id
    )
    return count


async def next_event_where(
    stream: Any, condition: Callable[[pb.Job], bool], within: float = 30
) -> pb.ProgressEvent:
    """The stream's next event whose job meets `condition`."""
    async with asyncio.timeout(within):
        while True:
            event: pb.ProgressEvent = await stream.read()
            assert event is not grpc.aio.EOF
            if condition(event.job):
                return event


@pytest.fixture
async def idle_stub(make_app: AppFactory) -> AsyncIterator[pb_grpc.ImportServiceStub]:
    """A stub on a server without workers: a received job stays QUEUED."""
    app = await make_app(workers=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield pb_grpc.ImportServiceStub(channel)


async def test_a_slow_upload_is_visible_receiving_with_growing_bytes_and_rows(
    idle_stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    stub = idle_stub
    first = HEADER + rows(0, BIG)
    second = rows(BIG, 3000)
    size = len(first) + len(second)
    upload = HeldUpload(stub, request_id="slow-1", file_name="slow.csv")
    upload.send(first)
    job_id = await upload.job_id()
    stream = stub.StreamProgress(pb.StreamProgressRequest(id=job_id))

    event = await next_event_where(
        stream, lambda j: j.received_bytes == len(first) and j.staged_rows > 0
    )
    assert (event.job.status, event.job.stage) == (pb.JOB_STATUS_QUEUED, pb.JOB_STAGE_RECEIVING)
    staged = event.job.staged_rows
    assert staged < BIG
    receiving = await stub.GetJob(pb.GetJobRequest(id=job_id))
    assert (receiving.stage, receiving.received_bytes, receiving.staged_rows) == (
        pb.JOB_STAGE_RECEIVING,
        len(first),
        staged,
    )
    assert not receiving.HasField("total_rows")
    assert (receiving.file_name, receiving.request_id) == ("slow.csv", "slow-1")
    listed = await stub.ListJobs(pb.ListJobsRequest())
    assert [(j.id, j.stage, j.received_bytes) for j in listed.jobs] == [
        (job_id, pb.JOB_STAGE_RECEIVING, len(first))
    ]
    # Stored rows are not entries until staging commits.
    assert await stored_entries(db, job_id) == 0
    entries = await stub.ListEntries(pb.ListEntriesRequest(id=job_id))
    assert (list(entries.entries), entries.total_count) == ([], 0)

    upload.send(second)
    await next_event_where(stream, lambda j: j.received_bytes == size)
    upload.end()
    queued = await upload.call
    assert queued.id == job_id
    assert (queued.total_rows, queued.staged_rows) == (BIG + 3000, BIG + 3000)
    assert (queued.received_bytes, queued.file_size_bytes) == (size, size)
    assert (queued.status, queued.stage) == (pb.JOB_STATUS_QUEUED, pb.JOB_STAGE_UNSPECIFIED)
    event = await next_event_where(stream, lambda j: j.stage == pb.JOB_STAGE_UNSPECIFIED)
    assert event.job == queued
    stream.cancel()
    assert await stored_entries(db, job_id) == BIG + 3000


async def test_watch_jobs_shows_a_job_receiving_its_file_with_its_bytes_growing(
    idle_stub: pb_grpc.ImportServiceStub,
) -> None:
    stub = idle_stub
    first, second = HEADER + rows(0, 10), rows(10, 10)
    upload = HeldUpload(stub)
    upload.send(first)
    job_id = await upload.job_id()
    await job_when(stub, job_id, lambda j: j.received_bytes == len(first))
    watch = stub.WatchJobs(pb.WatchJobsRequest())
    snapshot = await watch.read()
    assert snapshot.snapshot_complete
    assert [(j.id, j.stage, j.received_bytes) for j in snapshot.jobs] == [
        (job_id, pb.JOB_STAGE_RECEIVING, len(first))
    ]

    async def next_state(condition: Callable[[pb.Job], bool]) -> pb.Job:
        async with asyncio.timeout(30):
            while True:
                response: pb.WatchJobsResponse = await watch.read()
                for job in response.jobs:
                    if condition(job):
                        return job

    upload.send(second)
    grown = await next_state(lambda j: j.received_bytes == len(first) + len(second))
    assert (grown.id, grown.stage) == (job_id, pb.JOB_STAGE_RECEIVING)
    upload.end()
    queued = await next_state(lambda j: j.stage == pb.JOB_STAGE_UNSPECIFIED)
    assert (queued.status, queued.total_rows) == (pb.JOB_STATUS_QUEUED, 20)
    assert (await upload.call).id == job_id
    watch.cancel()


@pytest.fixture
async def stage_log(db: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """Every committed state of every job row, in order: a trigger of the test's own."""
    await db.execute(
        """CREATE TABLE test_stage_log (
               n bigserial, job_id uuid, status text, stage text, received_bytes bigint,
               staged_rows bigint, total_rows bigint);
           CREATE FUNCTION test_log_stage() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               INSERT INTO test_stage_log (job_id, status, stage, received_bytes, staged_rows,
                                           total_rows)
               VALUES (NEW.id, NEW.status, NEW.stage, NEW.received_bytes, NEW.staged_rows,
                       NEW.total_rows);
               RETURN NEW;
           END $$;
           CREATE TRIGGER test_log_stage AFTER INSERT OR UPDATE ON import_jobs
               FOR EACH ROW EXECUTE FUNCTION test_log_stage();"""
    )
    try:
        yield db
    finally:
        await db.execute(
            """DROP TRIGGER test_log_stage ON import_jobs;
               DROP FUNCTION test_log_stage(); DROP TABLE test_stage_log;"""
        )


async def test_the_job_goes_from_receiving_to_staging_with_its_total_rows_then_queued(
    stub: pb_grpc.ImportServiceStub, stage_log: asyncpg.Connection
) -> None:
    file = HEADER + rows(0, 10)
    job = await import_and_wait(stub, file)
    states = await stage_log.fetch(
        "SELECT status, stage, received_bytes, staged_rows, total_rows FROM test_stage_log"
        " WHERE job_id = $1::uuid ORDER BY n",
        job.id,
    )
    steps = [(r["status"], r["stage"]) for r in states]
    steps = [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s]
    assert steps[:3] == [("QUEUED", "RECEIVING"), ("QUEUED", "STAGING"), ("QUEUED", None)]
    assert steps[-1] == ("SUCCEEDED", None)
    staging = next(r for r in states if r["stage"] == "STAGING")
    assert (staging["received_bytes"], staging["staged_rows"], staging["total_rows"]) == (
        len(file),
        10,
        10,
    )
    received = [r["received_bytes"] for r in states]
    assert received == sorted(received)


async def test_an_upload_the_caller_abandons_ends_failed_with_no_rows_and_frees_its_request_id(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    file = HEADER + rows(0, BIG)
    upload = HeldUpload(stub, request_id="abandoned")
    upload.send(file)
    job_id = await upload.job_id()
    await job_when(stub, job_id, lambda j: j.staged_rows > 0)
    upload.call.cancel()

    failed = await wait_for_job(stub, job_id)
    assert failed.status == pb.JOB_STATUS_FAILED
    assert job_error(failed) == (code_pb2.ABORTED, "UPLOAD_ABORTED")
    assert "the caller went away" in failed.error.message
    assert (failed.received_bytes, failed.request_id) == (len(file), "")
    assert not failed.HasField("total_rows")
    assert await stored_entries(db, job_id) == 0
    assert await db.fetchval("SELECT count(*) FROM import_chunks") == 0

    again = await import_and_wait(stub, HEADER + rows(0, 2), request_id="abandoned")
    assert again.id != job_id
    assert (again.status, again.created_count) == (pb.JOB_STATUS_SUCCEEDED, 2)


async def test_a_request_refused_mid_upload_ends_its_job_failed_with_no_rows(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    upload = HeldUpload(stub)
    upload.send(HEADER + rows(0, BIG))
    job_id = await upload.job_id()
    await job_when(stub, job_id, lambda j: j.staged_rows > 0)
    upload.send_request(pb.StartImportRequest(spec=pb.ImportSpec(import_type="contacts")))
    upload.end()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await upload.call
    assert rich_error(refused.value).field_violations == {
        "spec": "only the first message may carry a spec"
    }
    failed = await wait_for_job(stub, job_id)
    assert job_error(failed) == (code_pb2.ABORTED, "UPLOAD_ABORTED")
    assert "the request was refused (INVALID_ARGUMENT)" in failed.error.message
    assert await stored_entries(db, job_id) == 0


async def test_an_aborted_upload_posts_its_failure_and_no_queued_event(
    make_app: AppFactory,
    receiver: Receiver,  # noqa: F811 (the fixture)
) -> None:
    app = await make_app(**WEBHOOK_SETTINGS)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        receiver.secret = await secret_of(stub)
        upload = HeldUpload(stub, webhook_url=receiver.url(), webhook_events=pb.WEBHOOK_EVENTS_ALL)
        upload.send(HEADER + rows(0, 10))
        job_id = await upload.job_id()
        await job_when(stub, job_id, lambda j: j.received_bytes > 0)
        upload.call.cancel()
        [delivery] = await settled(stub, job_id, 1)
    assert delivery.job_status == pb.JOB_STATUS_FAILED
    [received] = receiver.received
    assert received.verified and job_error(received.job) == (code_pb2.ABORTED, "UPLOAD_ABORTED")


async def test_a_request_id_repeated_while_its_upload_runs_returns_that_job(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    upload = HeldUpload(stub, request_id="twice")
    upload.send(HEADER)
    job_id = await upload.job_id()
    repeated = await start_import(stub, HEADER + rows(0, 1), request_id="twice")
    assert (repeated.id, repeated.stage) == (job_id, pb.JOB_STAGE_RECEIVING)
    upload.send(rows(0, 1))
    upload.end()
    assert (await upload.call).id == job_id
    assert await db.fetchval("SELECT count(*) FROM import_jobs") == 1


async def test_a_job_cancelled_during_its_upload_ends_cancelled_with_no_rows(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    upload = HeldUpload(stub)
    upload.send(HEADER + rows(0, BIG))
    job_id = await upload.job_id()
    await job_when(stub, job_id, lambda j: j.staged_rows > 0)
    cancelled = await stub.CancelJob(pb.CancelJobRequest(id=job_id))
    assert cancelled.status == pb.JOB_STATUS_CANCELLED
    upload.send(rows(BIG, 10))
    upload.end()
    answer = await upload.call
    assert (answer.id, answer.status) == (job_id, pb.JOB_STATUS_CANCELLED)
    assert await stored_entries(db, job_id) == 0


async def test_the_active_jobs_limit_counts_jobs_still_receiving(
    make_app: AppFactory, db: asyncpg.Connection, source_dir: Path
) -> None:
    app = await make_app(max_active_jobs_per_tenant=2, workers=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        uploads = [HeldUpload(stub) for _ in range(2)]
        for upload in uploads:
            upload.send(HEADER)
            await upload.job_id()
        (source_dir / "more.csv").write_bytes(HEADER + rows(0, 1))
        for extra in (
            start_import(stub, HEADER + rows(0, 1)),
            start_import(stub, source_uri=(source_dir / "more.csv").as_uri()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await extra
            assert rich_error(refused.value).reason == "TOO_MANY_ACTIVE_JOBS"
        for upload in uploads:
            upload.end()
            await upload.call
    assert await db.fetchval("SELECT count(*) FROM import_jobs") == 2


async def test_uploads_beyond_the_replicas_limit_are_unavailable_and_leave_no_job(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    app = await make_app(max_uploads=2, workers=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        uploads = [HeldUpload(stub) for _ in range(2)]
        for upload in uploads:
            upload.send(HEADER)
            await upload.job_id()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await start_import(stub, HEADER + rows(0, 1))
        error = rich_error(refused.value)
        assert (error.code, error.reason, error.metadata) == (
            grpc.StatusCode.UNAVAILABLE,
            "TOO_MANY_UPLOADS",
            {"limit": "2"},
        )
        assert await db.fetchval("SELECT count(*) FROM import_jobs") == 2
        for upload in uploads:
            upload.end()
            await upload.call
        assert (await start_import(stub, HEADER + rows(0, 1))).total_rows == 1


async def test_idle_uploads_beyond_the_default_executor_never_starve_the_server(
    make_app: AppFactory, source_dir: Path
) -> None:
    # The server runs on this test's loop: give its default executor (every
    # asyncio.to_thread, e.g. opening a source_uri file) fewer threads than idle uploads.
    threads = 4
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads))
    app = await make_app(max_uploads=threads + 3)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        idle = [HeldUpload(stub) for _ in range(threads + 2)]
        for upload in idle:
            upload.send(HEADER + rows(0, 3))  # then nothing: its parser waits for bytes
        ids = [await upload.job_id() for upload in idle]
        listed = await stub.ListJobs(pb.ListJobsRequest())
        assert {j.id for j in listed.jobs if j.stage == pb.JOB_STAGE_RECEIVING} == set(ids)

        async with asyncio.timeout(30):
            (source_dir / "other.csv").write_bytes(HEADER + rows(0, 5))
            job = await start_import(stub, source_uri=(source_dir / "other.csv").as_uri())
            done = await wait_for_job(stub, job.id)
            assert await asyncio.to_thread(lambda: "a thread is free") == "a thread is free"
        assert (done.status, done.created_count) == (pb.JOB_STATUS_SUCCEEDED, 5)
        for upload in idle:
            upload.end()
            await upload.call


async def test_a_live_idle_upload_keeps_its_heartbeat_and_is_not_failed(
    make_app: AppFactory,
) -> None:
    stale = 0.4  # heartbeats every 0.1 s; the housekeeper looks every 0.1 s
    app = await make_app(upload_stale_seconds=stale)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        upload = HeldUpload(stub)
        upload.send(HEADER + rows(0, 1))
        job_id = await upload.job_id()
        first = await job_when(stub, job_id, lambda j: j.received_bytes > 0)
        start = first.update_time.ToDatetime()
        # Idle, but alive: its heartbeat moves on, well past the staleness limit.
        later = await job_when(
            stub,
            job_id,
            lambda j: (
                (j.update_time.ToDatetime() - start).total_seconds() > 3 * stale
                or j.status != pb.JOB_STATUS_QUEUED
            ),
        )
        assert (later.status, later.stage) == (pb.JOB_STATUS_QUEUED, pb.JOB_STAGE_RECEIVING)
        upload.send(rows(1, 1))
        upload.end()
        assert (await upload.call).total_rows == 2


async def test_the_housekeeper_fails_a_receiving_job_whose_heartbeat_stopped(
    database_url: str, db: asyncpg.Connection
) -> None:
    await truncate(database_url)
    stuck = await insert_job(
        db,
        stage="RECEIVING",
        request_id="stuck",
        received_bytes=123,
        update_time=await db.fetchval("SELECT now() - interval '61 seconds'"),
    )
    alive = await insert_job(db, stage="RECEIVING", request_id="alive")
    pool = await create_pool(database_url, 2)
    try:
        housekeeper = Housekeeper(
            JobStore(pool),
            Metrics(),
            retention_days=30,
            interval=300,
            upload_stale_seconds=60,
        )
        assert await housekeeper.fail_interrupted_uploads() == [stuck]
    finally:
        await pool.close()
    row = await db.fetchrow("SELECT * FROM import_jobs WHERE id = $1", stuck)
    assert (row["status"], row["stage"], row["request_id"], row["received_bytes"]) == (
        "FAILED",
        None,
        None,
        123,
    )
    # A job's error is stored as its errors.py kind (api/status.py makes it ABORTED).
    assert (row["error_kind"], row["error_reason"]) == (Aborted.__name__, "UPLOAD_INTERRUPTED")
    assert "for 60 s" in row["error_message"]
    assert await db.fetchval("SELECT status FROM import_jobs WHERE id = $1", alive) == "QUEUED"
