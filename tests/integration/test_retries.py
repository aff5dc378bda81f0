"""RetryJob, StartImport with retry_of, and the retries' links to their parents' rows."""

from __future__ import annotations

import csv
import io
import uuid

import asyncpg
import grpc
import pytest

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from tests.conftest import AppFactory
from tests.rpc import counts, entries_of, import_and_wait, rich_error, start_import, wait_for_job

# Row 1 is superseded by row 5 (same key), row 2 is invalid, rows 3 and 4 are refused by
# the CHECK the test adds, row 5 goes in.
MIXED = b"email,score\na@x.com,1\nbad@,2\nb@x.com,60\nc@x.com,70\na@x.com,5\n"


async def retry(stub: pb_grpc.ImportServiceStub, job_id: str, **fields: object) -> pb.Job:
    job: pb.Job = await stub.RetryJob(pb.RetryJobRequest(id=job_id, **fields))  # type: ignore[arg-type]
    return job


async def refusal(call: object) -> tuple[grpc.StatusCode, str, list[str]]:
    """The code, ErrorInfo reason and field violations of a refused call."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = rich_error(caught.value)
    return error.code, error.reason or "", list(error.field_violations)


async def export(stub: pb_grpc.ImportServiceStub, job_id: str) -> list[list[str]]:
    data = b"".join([r.chunk async for r in stub.ExportEntries(pb.ExportEntriesRequest(id=job_id))])
    return list(csv.reader(io.StringIO(data.decode())))


async def test_retry_imports_the_rows_the_database_refused_once_the_cause_is_gone(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    await db.execute("ALTER TABLE contacts ADD CONSTRAINT low_scores CHECK (score < 50)")
    try:
        parent = await import_and_wait(stub, MIXED, labels={"batch": "nov"})
    finally:
        await db.execute("ALTER TABLE contacts DROP CONSTRAINT low_scores")
    assert counts(parent) == {"created": 1, "failed": 3, "skipped": 1}

    queued = await retry(stub, parent.id)
    assert queued.retry_of == parent.id
    assert queued.labels == {"batch": "nov"}
    job = await wait_for_job(stub, queued.id)
    # The superseded row 1 is not retried (row 5 won); the invalid row 2 fails again.
    assert job.total_rows == 3
    assert counts(job) == {"created": 2, "failed": 1}
    assert job.status == pb.JOB_STATUS_PARTIALLY_SUCCEEDED
    assert job.mode == parent.mode
    rows = await entries_of(stub, job.id)
    assert [(e.raw["importd_row"], e.raw["email"], e.status) for e in rows] == [
        ("2", "bad@", pb.ENTRY_STATUS_FAILED),
        ("3", "b@x.com", pb.ENTRY_STATUS_CREATED),
        ("4", "c@x.com", pb.ENTRY_STATUS_CREATED),
    ]
    scores = dict(await db.fetch("SELECT email, score FROM contacts"))  # type: ignore[arg-type]
    assert scores == {"a@x.com": 5, "b@x.com": 60, "c@x.com": 70}

    # The parent lists its retries; a retry of the retry links to the retry's rows.
    retries = await stub.ListJobs(pb.ListJobsRequest(filter=f'retry_of = "{parent.id}"'))
    assert [j.id for j in retries.jobs] == [job.id]
    again = await wait_for_job(stub, (await retry(stub, job.id)).id)
    assert again.retry_of == job.id
    [only] = await entries_of(stub, again.id)
    assert (only.raw["importd_row"], only.raw["email"]) == ("1", "bad@")
    assert sorted(only.raw) == ["email", "importd_row", "score"]  # one link column


async def test_retry_of_a_cancelled_job_imports_the_rows_it_never_processed(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    api_only = await make_app(workers=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api_only.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        job = await start_import(stub, b"email\na@x.com\nb@x.com\nc@\n")
        code, reason, _ = await refusal(stub.RetryJob(pb.RetryJobRequest(id=job.id)))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_ENDED")
        await stub.CancelJob(pb.CancelJobRequest(id=job.id))
        view = await stub.ListEntries(pb.ListEntriesRequest(id=job.id, across_retries=True))
        assert [(e.status, e.note) for e in view.entries[:2]] == [
            (pb.ENTRY_STATUS_NOT_PROCESSED, "not processed: the job was cancelled")
        ] * 2
        assert view.entries[2].status == pb.ENTRY_STATUS_FAILED

        only_failed = await retry(stub, job.id, statuses=[pb.ENTRY_STATUS_FAILED])
        assert only_failed.total_rows == 1
        queued = await retry(stub, job.id, statuses=[pb.ENTRY_STATUS_NOT_PROCESSED])
        assert queued.total_rows == 2
    await make_app()  # a replica with workers
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api_only.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        done = await wait_for_job(stub, queued.id)
    assert counts(done) == {"created": 2}
    assert {r["email"] for r in await db.fetch("SELECT email FROM contacts")} == {
        "a@x.com",
        "b@x.com",
    }


async def test_insert_skips_of_existing_keys_are_retried_only_in_another_mode(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    await import_and_wait(stub, b"email,score\na@x.com,1\n")
    parent = await import_and_wait(
        stub, b"email,score\na@x.com,9\nb@x.com,2\n", mode=pb.IMPORT_MODE_INSERT
    )
    assert counts(parent) == {"created": 1, "skipped": 1}
    code, reason, _ = await refusal(stub.RetryJob(pb.RetryJobRequest(id=parent.id)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_TO_RETRY")

    upsert = await wait_for_job(stub, (await retry(stub, parent.id, mode=pb.IMPORT_MODE_UPSERT)).id)
    assert upsert.mode == pb.IMPORT_MODE_UPSERT
    assert counts(upsert) == {"updated": 1}
    # Asked for explicitly, the skipped rows are retried in the parent's mode too.
    insert = await wait_for_job(
        stub, (await retry(stub, parent.id, statuses=[pb.ENTRY_STATUS_SKIPPED])).id
    )
    assert counts(insert) == {"skipped": 1}


async def test_retry_is_idempotent_by_request_id(stub: pb_grpc.ImportServiceStub) -> None:
    parent = await import_and_wait(stub, b"email\na@x.com\nbad@\n")
    first = await retry(stub, parent.id, request_id="r-1")
    again = await retry(stub, parent.id, request_id="r-1")
    assert again.id == first.id
    code, reason, _ = await refusal(
        stub.RetryJob(
            pb.RetryJobRequest(id=parent.id, request_id="r-1", statuses=[pb.ENTRY_STATUS_SKIPPED])
        )
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    listed = await stub.ListJobs(pb.ListJobsRequest(filter='request_id = "r-1"'))
    assert [j.id for j in listed.jobs] == [first.id]


async def test_retry_refusals_are_precise(stub: pb_grpc.ImportServiceStub) -> None:
    parent = await import_and_wait(stub, b"email\na@x.com\nbad@\n")
    cases = [
        (
            pb.RetryJobRequest(id=str(uuid.uuid4())),
            (grpc.StatusCode.NOT_FOUND, "NOT_FOUND", []),
        ),
        (
            pb.RetryJobRequest(id="nope"),
            (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["id"]),
        ),
        (
            pb.RetryJobRequest(id=parent.id, statuses=[pb.ENTRY_STATUS_CREATED]),
            (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["statuses"]),
        ),
        (
            pb.RetryJobRequest(id=parent.id, mode=99),  # type: ignore[arg-type]
            (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["mode"]),
        ),
        (
            pb.RetryJobRequest(id=parent.id, statuses=[pb.ENTRY_STATUS_NOT_PROCESSED]),
            (grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_TO_RETRY", []),
        ),
    ]
    for request, expected in cases:
        assert await refusal(stub.RetryJob(request)) == expected, request
    # No refusal left a job behind.
    assert len((await stub.ListJobs(pb.ListJobsRequest())).jobs) == 1


async def test_an_exported_file_corrected_and_uploaded_is_a_retry_linked_row_by_row(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    parent = await import_and_wait(stub, b"email,score\na@x.com,1\nbad@,2\nc@x.com,300\n")
    rows = await export(stub, parent.id)
    assert [(r[0], r[2]) for r in rows[1:]] == [("bad@", "2"), ("c@x.com", "3")]
    fixed = [rows[0], ["b@x.com", "2", *rows[1][2:]], ["c@x.com", "30", *rows[2][2:]]]
    fixed += [["d@x.com", "4", "0", "", ""], ["e@x.com", "5", "99", "", ""], ["f@x.com", "6"]]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(fixed)
    job = await import_and_wait(stub, buffer.getvalue().encode(), retry_of=parent.id)
    assert job.retry_of == parent.id
    entries = await entries_of(stub, job.id)
    assert [(e.raw.get("importd_row"), e.status) for e in entries] == [
        ("2", pb.ENTRY_STATUS_CREATED),
        ("3", pb.ENTRY_STATUS_CREATED),
        ("0", pb.ENTRY_STATUS_FAILED),  # no row of the parent
        ("99", pb.ENTRY_STATUS_FAILED),
        (None, pb.ENTRY_STATUS_FAILED),  # too few fields
    ]
    assert {e.errors[0].field for e in entries[2:4]} == {"importd_row"}


async def test_start_import_refuses_a_retry_of_an_unknown_other_or_live_job(
    make_app: AppFactory,
) -> None:
    api_only = await make_app(workers=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api_only.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        live = await start_import(stub, b"email\na@x.com\n")
        cases = [
            ({"retry_of": str(uuid.uuid4())}, (grpc.StatusCode.NOT_FOUND, "NOT_FOUND", [])),
            (
                {"retry_of": "x"},
                (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["spec.retry_of"]),
            ),
            (
                {"retry_of": live.id},
                (grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_ENDED", []),
            ),
        ]
        for spec, expected in cases:
            assert await refusal(start_import(stub, b"email\nb@x.com\n", **spec)) == expected
        await stub.CancelJob(pb.CancelJobRequest(id=live.id))
        mismatch = start_import(stub, b"id\n1\n", import_type="transactions", retry_of=live.id)
        assert await refusal(mismatch) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            ["spec.retry_of"],
        )


async def test_the_parent_lists_each_rows_latest_outcome_across_its_retries(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    await db.execute("ALTER TABLE contacts ADD CONSTRAINT low_scores CHECK (score < 50)")
    try:
        parent = await import_and_wait(stub, MIXED)
        # Rows 3 and 4 are refused again; row 2 still fails.
        first = await wait_for_job(stub, (await retry(stub, parent.id)).id)
    finally:
        await db.execute("ALTER TABLE contacts DROP CONSTRAINT low_scores")
    # A retry of the retry imports rows 3 and 4 (the retry's rows 2 and 3) ...
    second = await wait_for_job(stub, (await retry(stub, first.id)).id)
    assert counts(second) == {"created": 2, "failed": 1}
    # ... and a corrected upload of the parent's export fixes row 2.
    fixed = b"email,score,importd_row\nb2@x.com,2,2\n"
    upload = await import_and_wait(stub, fixed, retry_of=parent.id)
    assert counts(upload) == {"created": 1}

    async def latest(*statuses: int) -> tuple[list[tuple[int, str, int]], int]:
        page = await stub.ListEntries(
            pb.ListEntriesRequest(id=parent.id, statuses=statuses, across_retries=True)
        )
        shown = [(e.row_number, e.job_id, e.status) for e in page.entries]
        return shown, page.total_count

    assert await latest() == (
        [
            (1, parent.id, pb.ENTRY_STATUS_SKIPPED),
            (2, upload.id, pb.ENTRY_STATUS_CREATED),
            (3, second.id, pb.ENTRY_STATUS_CREATED),
            (4, second.id, pb.ENTRY_STATUS_CREATED),
            (5, parent.id, pb.ENTRY_STATUS_CREATED),
        ],
        5,
    )
    assert await latest(pb.ENTRY_STATUS_FAILED) == ([], 0)
    created, total = await latest(pb.ENTRY_STATUS_CREATED)
    assert ([row for row, _, _ in created], total) == ([2, 3, 4, 5], 4)
    # The deciding entry is shown in its own job's columns.
    page = await stub.ListEntries(
        pb.ListEntriesRequest(id=parent.id, across_retries=True, page_size=2, offset=1)
    )
    assert [dict(e.raw) for e in page.entries] == [
        {"email": "b2@x.com", "score": "2", "importd_row": "2"},
        {"importd_row": "2", "email": "b@x.com", "score": "60"},  # the first retry's row 2
    ]
    rest = await stub.ListEntries(
        pb.ListEntriesRequest(
            id=parent.id, across_retries=True, page_size=2, page_token=page.next_page_token
        )
    )
    assert [e.row_number for e in rest.entries] == [4, 5]
    code, _, fields = await refusal(
        stub.ListEntries(pb.ListEntriesRequest(id=parent.id, across_retries=True, error_code="X"))
    )
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["error_code"])


async def test_skips_a_retry_can_change_are_retried_by_default(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    # UPDATE of a key that does not exist yet: once another job creates it, the retry
    # updates it.
    update = await import_and_wait(stub, b"email,score\nnew@x.com,9\n", mode=pb.IMPORT_MODE_UPDATE)
    assert counts(update) == {"skipped": 1}
    await import_and_wait(stub, b"email,score\nnew@x.com,1\n")
    assert counts(await wait_for_job(stub, (await retry(stub, update.id)).id)) == {"updated": 1}

    # An all-or-nothing job with a bad row imported nothing: its good rows are retried with
    # the bad one, which still fails, so the retry (all-or-nothing too) imports nothing.
    strict = await import_and_wait(stub, b"email\nok@x.com\nbad@\n", all_or_nothing=True)
    assert counts(strict) == {"failed": 1, "skipped": 1}
    again = await wait_for_job(stub, (await retry(stub, strict.id)).id)
    assert (again.all_or_nothing, again.total_rows, counts(again)) == (
        True,
        2,
        {"failed": 1, "skipped": 1},
    )
    good = await wait_for_job(
        stub, (await retry(stub, strict.id, statuses=[pb.ENTRY_STATUS_SKIPPED])).id
    )
    assert counts(good) == {"created": 1}


async def test_a_retry_keeps_each_field_exactly_as_the_file_had_it(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    data = (
        b'email,first_name,score\r\n"q@x.com","Smith, ""J""\r\nsecond line",500\r\n'
        b"p@x.com,,600\r\n,  spaced  ,1\r\n"
    )
    parent = await import_and_wait(stub, data)
    assert counts(parent) == {"failed": 3}
    job = await wait_for_job(stub, (await retry(stub, parent.id)).id)
    before = [dict(e.raw) for e in await entries_of(stub, parent.id)]
    after = [dict(e.raw) for e in await entries_of(stub, job.id)]
    assert [{k: v for k, v in row.items() if k != "importd_row"} for row in after] == before
    assert before[0]["first_name"] == 'Smith, "J"\r\nsecond line'
    assert counts(job) == {"failed": 3}
