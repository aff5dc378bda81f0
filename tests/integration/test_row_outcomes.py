"""Every row ends with a status (NOT_PROCESSED once its job ended first), the whole file as one
report (ExportEntries all_rows), and the job's exact summary of row errors (issue 11)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter

import asyncpg
import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.model import EntryStatus, ErrorCount
from tests.conftest import AppFactory
from tests.integration.test_workers import doomed_worker, staged_job
from tests.rpc import (
    counts,
    entries_of,
    import_and_wait,
    read_to_end,
    rich_error,
    start_import,
    wait_for_job,
    wait_for_progress,
)

OUTCOME_COUNTS = (
    "created",
    "updated",
    "unchanged",
    "skipped",
    "failed",
    "deleted",
    "not_processed",
)
# A dirty file: a row with two errors, a row-level error (too many fields), a failed row
# superseded by a later one with its key (its errors are dropped), good rows.
DIRTY = (
    b"email,first_name,score\n"
    b"a@x.com,A,1\n"
    b"bad@,B,1000\n"  # INVALID_EMAIL on email and TOO_LARGE on score
    b"c@x.com,C,x\n"  # INVALID_INTEGER on score
    b"d@x.com,D,1,extra\n"  # WRONG_FIELD_COUNT, no field
    b"e@x.com,E,500\n"  # TOO_LARGE, superseded by row 7: skipped, its error dropped
    b"nope,F,2\n"  # INVALID_EMAIL
    b"e@x.com,E,5\n"
)


def assert_counts_add_up(job: pb.Job) -> None:
    """Once a job has ended, its outcome counts add up to its rows."""
    assert job.status in (
        pb.JOB_STATUS_SUCCEEDED,
        pb.JOB_STATUS_PARTIALLY_SUCCEEDED,
        pb.JOB_STATUS_FAILED,
        pb.JOB_STATUS_CANCELLED,
    )
    assert sum(getattr(job, f"{n}_count") for n in OUTCOME_COUNTS) == job.total_rows


async def assert_entries_agree_with_job(stub: pb_grpc.ImportServiceStub, job: pb.Job) -> None:
    """Each status filter lists exactly its count of entries, and the error summary is the
    count of the entries' own errors by code and field."""
    entries = await entries_of(stub, job.id)
    by_status = Counter(e.status for e in entries)
    for status in pb.EntryStatus.values():
        if status == pb.ENTRY_STATUS_UNSPECIFIED:
            continue
        page = await stub.ListEntries(
            pb.ListEntriesRequest(id=job.id, statuses=[status], page_size=1000)
        )
        assert page.total_count == len(page.entries) == by_status[status]
        assert {e.status for e in page.entries} <= {status}
    assert by_status[pb.ENTRY_STATUS_NOT_PROCESSED] == job.not_processed_count
    assert by_status[pb.ENTRY_STATUS_PENDING] == 0
    summary = Counter((e.code, e.field) for entry in entries for e in entry.errors)
    assert {(c.code, c.field): c.count for c in job.error_summary} == summary
    assert [c.count for c in job.error_summary] == sorted(
        (c.count for c in job.error_summary), reverse=True
    )


async def export(stub: pb_grpc.ImportServiceStub, **request: object) -> list[list[str]]:
    data = b"".join(
        [r.chunk async for r in stub.ExportEntries(pb.ExportEntriesRequest(**request))]  # type: ignore[arg-type]
    )
    return list(csv.reader(io.StringIO(data.decode())))


async def test_a_job_cancelled_mid_run_keeps_its_chunks_and_ends_the_rest_not_processed(
    make_app: AppFactory, database_url: str, db: asyncpg.Connection
) -> None:
    job_id = await staged_job(make_app, database_url, rows=20)  # chunks of 4
    holder = await asyncpg.connect(database_url)
    hold = holder.transaction()
    await hold.start()
    # Workers (SKIP LOCKED) can take chunks 1 and 2 only.
    await holder.execute("SELECT 1 FROM import_chunks WHERE chunk_number >= 3 FOR UPDATE")
    worker = await make_app(workers=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        await wait_for_progress(stub, job_id, rows=8, within=10)
        running = await stub.GetJob(pb.GetJobRequest(id=job_id))
        assert running.not_processed_count == 0  # a live job's rows are still pending
        cancelled = await stub.CancelJob(pb.CancelJobRequest(id=job_id))
        await hold.rollback()
        await asyncio.sleep(0.5)  # ten poll intervals: time enough to wrongly take chunk 3

        later = await stub.GetJob(pb.GetJobRequest(id=job_id))
        assert (later.status, counts(later)) == (pb.JOB_STATUS_CANCELLED, {"created": 8})
        assert cancelled.status == pb.JOB_STATUS_CANCELLED
        assert (cancelled.created_count, cancelled.not_processed_count) == (8, 12)
        assert_counts_add_up(cancelled)
        await assert_entries_agree_with_job(stub, cancelled)

        page = await stub.ListEntries(
            pb.ListEntriesRequest(id=job_id, statuses=[pb.ENTRY_STATUS_NOT_PROCESSED], page_size=5)
        )
        assert [e.row_number for e in page.entries] == [9, 10, 11, 12, 13]
        assert page.total_count == 12
        assert page.entries[0].note == "not processed: the job was cancelled"
        rest = await stub.ListEntries(
            pb.ListEntriesRequest(
                id=job_id,
                statuses=[pb.ENTRY_STATUS_NOT_PROCESSED],
                page_size=50,
                page_token=page.next_page_token,
            )
        )
        assert [e.row_number for e in rest.entries] == list(range(14, 21))

        # The default export is the rows to import again: here, the ones never processed.
        rows = await export(stub, id=job_id)
        assert [r[2:4] for r in rows[1:]] == [[str(n), "NOT_PROCESSED"] for n in range(9, 21)]
        assert {r[4] for r in rows[1:]} == {"not processed: the job was cancelled"}
    assert await db.fetchval("SELECT count(*) FROM contacts") == 8
    untouched = await db.fetch(
        "SELECT lease_owner FROM import_chunks WHERE status = 'PENDING' ORDER BY chunk_number"
    )
    assert [r["lease_owner"] for r in untouched] == [None, None, None]
    await holder.close()


async def test_max_errors_reached_mid_run_leaves_the_later_rows_not_processed(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    # Rows 2 and 3 pass validation but the database refuses them: chunk 1 (rows 1-4) pushes
    # failed_count past max_errors, so chunks 2 and 3 never run.
    data = b"email,score\n" + b"".join(
        f"p{i}@x.com,{60 if i in (2, 3) else i}\n".encode() for i in range(1, 13)
    )
    await db.execute("ALTER TABLE contacts ADD CONSTRAINT low_scores CHECK (score < 50)")
    try:
        worker = await make_app(workers=1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
            stub = pb_grpc.ImportServiceStub(channel)
            job = await import_and_wait(stub, data, max_errors=1)
            assert job.status == pb.JOB_STATUS_FAILED
            assert job.error.message == "2 rows failed, more than max_errors (1)"
            assert (counts(job), job.not_processed_count) == (
                {"created": 2, "failed": 2},
                8,
            )
            assert_counts_add_up(job)
            assert [(c.code, c.field, c.count) for c in job.error_summary] == [
                ("REJECTED_BY_DATABASE", "", 2)
            ]
            await assert_entries_agree_with_job(stub, job)
            not_processed = await entries_of(stub, job.id, pb.ENTRY_STATUS_NOT_PROCESSED)
            assert [e.row_number for e in not_processed] == list(range(5, 13))
            assert not_processed[0].note == (
                "not processed: the job failed: MAX_ERRORS_EXCEEDED:"
                " 2 rows failed, more than max_errors (1)"
            )
    finally:
        await db.execute("ALTER TABLE contacts DROP CONSTRAINT low_scores")


async def test_max_errors_reached_at_staging_leaves_every_valid_row_not_processed(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await import_and_wait(stub, DIRTY, max_errors=2)
    assert job.status == pb.JOB_STATUS_FAILED
    assert (counts(job), job.not_processed_count) == ({"failed": 4, "skipped": 1}, 2)
    assert_counts_add_up(job)
    await assert_entries_agree_with_job(stub, job)
    not_processed = await entries_of(stub, job.id, pb.ENTRY_STATUS_NOT_PROCESSED)
    assert [e.row_number for e in not_processed] == [1, 7]


async def test_a_chunk_that_keeps_failing_fails_its_job_with_its_rows_not_processed(
    make_app: AppFactory, database_url: str, db: asyncpg.Connection
) -> None:
    job_id = await staged_job(make_app, database_url, rows=6)
    # Something outside importd breaks the target: every attempt at the chunk errors.
    await db.execute(
        "CREATE FUNCTION broken() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'the target is broken'; END $$"
    )
    await db.execute("CREATE TRIGGER broken BEFORE INSERT ON contacts EXECUTE FUNCTION broken()")
    try:
        worker = await make_app(workers=1, max_attempts=2, lease_seconds=0.2)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
            stub = pb_grpc.ImportServiceStub(channel)
            job = await wait_for_job(stub, job_id, within=20)
            assert job.status == pb.JOB_STATUS_FAILED
            assert job.error.message == "chunk 1 (rows 1-4) failed 2 times; see the server log"
            assert await db.fetchval("SELECT count(*) FROM contacts") == 0
            assert job.not_processed_count == 6
            assert_counts_add_up(job)
            await assert_entries_agree_with_job(stub, job)
            entry = (await entries_of(stub, job_id))[0]
            assert entry.note.startswith("not processed: the job failed: CHUNK_FAILED_REPEATEDLY")
    finally:
        await db.execute("DROP TRIGGER broken ON contacts")
        await db.execute("DROP FUNCTION broken()")


async def test_all_or_nothing_and_file_failures_leave_no_row_unaccounted(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    # all_or_nothing with a failed row: the other rows are SKIPPED at staging.
    all_or_nothing = await import_and_wait(stub, DIRTY, all_or_nothing=True)
    assert all_or_nothing.status == pb.JOB_STATUS_FAILED
    assert all_or_nothing.not_processed_count == 0
    assert_counts_add_up(all_or_nothing)
    await assert_entries_agree_with_job(stub, all_or_nothing)
    # A file refused whole has no rows at all.
    refused = await import_and_wait(stub, b'email,first_name\n"a@x.com,A\n')
    assert refused.status == pb.JOB_STATUS_FAILED
    assert (refused.total_rows, refused.not_processed_count, len(refused.error_summary)) == (
        0,
        0,
        0,
    )


async def test_the_error_summary_counts_each_error_of_each_failed_row_exactly(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await start_import(stub, DIRTY)
    progress = stub.StreamProgress(pb.StreamProgressRequest(id=job.id))
    events = await read_to_end(progress)
    job = events[-1].job
    assert job.status == pb.JOB_STATUS_PARTIALLY_SUCCEEDED
    assert [(c.code, c.field, c.count) for c in job.error_summary] == [
        ("INVALID_EMAIL", "email", 2),
        ("INVALID_INT", "score", 1),
        ("TOO_LARGE", "score", 1),
        ("WRONG_FIELD_COUNT", "", 1),
    ]
    assert job.failed_count == 4  # two errors of one row count in two buckets
    await assert_entries_agree_with_job(stub, job)
    fetched = await stub.GetJob(pb.GetJobRequest(id=job.id))
    assert fetched.error_summary == job.error_summary
    listed = await stub.ListJobs(pb.ListJobsRequest())
    assert listed.jobs[0].error_summary == job.error_summary


# A row of email,first_name,score as one of several kinds, for any key (keys repeat).
ROW_KINDS = {
    "good": "k{key}@x.com,A,1",
    "bad email": "bad{key},A,1",
    "score too large": "k{key}@x.com,A,1000",
    "score not a number": "k{key}@x.com,A,x",
    "both": "bad{key}@,A,-5000",
    "a field too many": "k{key}@x.com,A,1,more",
    "no name, bad score": "k{key}@x.com,,1.5",
}


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(sorted(ROW_KINDS))), min_size=1, max_size=12
    )
)
async def test_the_error_summary_is_the_entries_errors_for_any_dirty_file(
    stub: pb_grpc.ImportServiceStub, rows: list[tuple[int, str]]
) -> None:
    data = "email,first_name,score\n" + "".join(
        ROW_KINDS[kind].format(key=key) + "\n" for key, kind in rows
    )
    job = await import_and_wait(stub, data.encode())
    assert_counts_add_up(job)
    await assert_entries_agree_with_job(stub, job)


async def test_the_error_summary_stays_exact_when_a_worker_dies_before_its_chunk_commits(
    make_app: AppFactory, database_url: str, db: asyncpg.Connection
) -> None:
    job_id = await staged_job(make_app, database_url, rows=8)
    # A worker records chunk 1's counts and errors in its transaction, and dies before the
    # commit: nothing of it may remain, and the chunk's errors must be counted once.
    store, claim, doomed = await doomed_worker(database_url)
    recorded = await store.complete_chunk(
        doomed,
        claim,
        "CCCC",
        {EntryStatus.FAILED: 4},
        [ErrorCount("REJECTED_BY_DATABASE", "", 4)],
    )
    assert recorded is not None and recorded.error_summary == (
        ErrorCount("REJECTED_BY_DATABASE", "", 4),
    )
    await db.execute("SELECT pg_terminate_backend($1)", doomed.get_server_pid())

    await db.execute("ALTER TABLE contacts ADD CONSTRAINT not_p1 CHECK (email <> 'p1@x.com')")
    try:
        worker = await make_app(workers=2)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
            stub = pb_grpc.ImportServiceStub(channel)
            job = await wait_for_job(stub, job_id, within=20)
            assert counts(job) == {"created": 7, "failed": 1}
            assert [(c.code, c.field, c.count) for c in job.error_summary] == [
                ("REJECTED_BY_DATABASE", "", 1)
            ]
            await assert_entries_agree_with_job(stub, job)
    finally:
        await db.execute("ALTER TABLE contacts DROP CONSTRAINT not_p1")
    await doomed.close()


async def test_all_rows_exports_the_whole_file_in_order_and_imports_again(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    job = await import_and_wait(stub, DIRTY)
    rows = await export(stub, id=job.id, all_rows=True)
    assert rows[0] == [
        "email",
        "first_name",
        "score",
        "importd_row",
        "importd_status",
        "importd_errors",
    ]
    assert [r[3:5] for r in rows[1:]] == [
        ["1", "CREATED"],
        ["2", "FAILED"],
        ["3", "FAILED"],
        ["4", "FAILED"],
        ["5", "SKIPPED"],
        ["6", "FAILED"],
        ["7", "CREATED"],
    ]
    assert rows[2][5] == (
        "email: not a valid e-mail address [INVALID_EMAIL]; score: must be at most 100 [TOO_LARGE]"
    )
    assert rows[1][5] == ""

    # The report is a file like the original: fixed or not, it imports again (the
    # importd_* columns are not the import type's, so they are ignored). Only the row with
    # a field too many comes back in the file's columns, without it.
    await db.execute("TRUNCATE contacts")
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    again = await import_and_wait(stub, buffer.getvalue().encode())
    assert again.total_rows == 7
    assert [(c.code, c.field, c.count) for c in again.error_summary] == [
        (c.code, c.field, c.count) for c in job.error_summary if c.code != "WRONG_FIELD_COUNT"
    ]
    assert counts(again) == {"created": 3, "failed": 3, "skipped": 1}


async def test_all_rows_cannot_be_combined_with_statuses(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await import_and_wait(stub, b"email\na@x.com\n")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await export(stub, id=job.id, all_rows=True, statuses=[pb.ENTRY_STATUS_FAILED])
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.field_violations) == ["all_rows"]


async def test_all_rows_streams_a_file_bigger_than_a_page_in_order(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    # More rows than one keyset batch of the export (1,000) and many chunks.
    rows = 1100
    data = b"email\n" + b"".join(f"p{i}@x.com\n".encode() for i in range(rows))
    job = await import_and_wait(stub, data)
    exported = await export(stub, id=job.id, all_rows=True)
    assert [int(r[1]) for r in exported[1:]] == list(range(1, rows + 1))
    assert {r[2] for r in exported[1:]} == {"CREATED"}


async def test_a_not_processed_filter_of_a_job_that_succeeded_is_empty(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await import_and_wait(stub, b"email\na@x.com\n")
    page = await stub.ListEntries(
        pb.ListEntriesRequest(id=job.id, statuses=[pb.ENTRY_STATUS_NOT_PROCESSED])
    )
    assert (list(page.entries), page.total_count) == ([], 0)
    assert job.not_processed_count == 0
    assert_counts_add_up(job)
