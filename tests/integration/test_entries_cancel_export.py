"""ListEntries paging, CancelJob, and ExportEntries."""

from __future__ import annotations

import asyncio
import csv
import io

import asyncpg
import grpc
import pytest

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from tests.conftest import AppFactory
from tests.rpc import counts, entries_of, import_and_wait, rich_error, start_import

MIXED = (
    b"email,first_name,score\n"
    + b"".join(f"ok{i}@x.com,Ok{i},{i}\n".encode() for i in range(1, 8))
    + b"bad@,Bad,1\n"
    + b"ok9@x.com,Nine,999\n"
    + b"ok1@x.com,Again,1\n"
)


async def test_list_entries_filters_pages_and_counts(stub: pb_grpc.ImportServiceStub) -> None:
    job = await import_and_wait(stub, MIXED)
    assert counts(job) == {"created": 7, "failed": 2, "skipped": 1}

    page = await stub.ListEntries(pb.ListEntriesRequest(id=job.id, page_size=4))
    assert [e.row_number for e in page.entries] == [1, 2, 3, 4]
    assert page.total_count == 10
    page = await stub.ListEntries(
        pb.ListEntriesRequest(id=job.id, page_size=4, page_token=page.next_page_token)
    )
    assert [e.row_number for e in page.entries] == [5, 6, 7, 8]
    page = await stub.ListEntries(
        pb.ListEntriesRequest(id=job.id, page_size=4, page_token=page.next_page_token)
    )
    assert [e.row_number for e in page.entries] == [9, 10]
    assert page.next_page_token == ""

    failed = await stub.ListEntries(
        pb.ListEntriesRequest(id=job.id, statuses=[pb.ENTRY_STATUS_FAILED, pb.ENTRY_STATUS_SKIPPED])
    )
    assert [(e.row_number, e.status) for e in failed.entries] == [
        (1, pb.ENTRY_STATUS_SKIPPED),
        (8, pb.ENTRY_STATUS_FAILED),
        (9, pb.ENTRY_STATUS_FAILED),
    ]
    assert failed.total_count == 3
    assert failed.entries[0].key == "ok1@x.com"
    assert failed.entries[1].line_number == 9

    by_offset = await stub.ListEntries(pb.ListEntriesRequest(id=job.id, offset=8, page_size=5))
    assert [e.row_number for e in by_offset.entries] == [9, 10]
    assert by_offset.total_count == 10


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"offset": -1}, "offset"),
        ({"offset": 2, "page_token": "x"}, "offset"),
        ({"page_token": "nonsense"}, "page_token"),
        ({"statuses": [99]}, "statuses"),
    ],
)
async def test_list_entries_rejects_bad_arguments(
    stub: pb_grpc.ImportServiceStub, request_fields: dict[str, object], field: str
) -> None:
    job = await import_and_wait(stub, b"email\na@x.com\n")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListEntries(pb.ListEntriesRequest(id=job.id, **request_fields))  # type: ignore[arg-type]
    assert list(rich_error(caught.value).field_violations) == [field]


async def test_export_gives_the_rows_not_imported_in_their_original_columns(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await import_and_wait(stub, MIXED)
    data = b"".join([r.chunk async for r in stub.ExportEntries(pb.ExportEntriesRequest(id=job.id))])
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows == [
        ["email", "first_name", "score", "importd_row", "importd_status", "importd_errors"],
        [
            "ok1@x.com",
            "Ok1",
            "1",
            "1",
            "SKIPPED",
            "key ok1@x.com is repeated later in the file, at row 10",
        ],
        ["bad@", "Bad", "1", "8", "FAILED", "email: not a valid e-mail address [INVALID_EMAIL]"],
        ["ok9@x.com", "Nine", "999", "9", "FAILED", "score: must be at most 100 [TOO_LARGE]"],
    ]


async def test_export_of_chosen_statuses_can_be_imported_again(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    job = await import_and_wait(stub, MIXED)
    created = b"".join(
        [
            r.chunk
            async for r in stub.ExportEntries(
                pb.ExportEntriesRequest(id=job.id, statuses=[pb.ENTRY_STATUS_CREATED])
            )
        ]
    )
    assert created.count(b"\r\n") == 1 + 7
    await db.execute("TRUNCATE contacts")
    again = await import_and_wait(stub, created)
    assert counts(again) == {"created": 7}


async def test_cancelling_a_queued_job_leaves_every_entry_not_processed(
    make_app: AppFactory, database_url: str
) -> None:
    api_only = await make_app(workers=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api_only.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        job = await start_import(stub, b"email\na@x.com\nb@x.com\n")
        cancelled = await stub.CancelJob(pb.CancelJobRequest(id=job.id))
        assert cancelled.status == pb.JOB_STATUS_CANCELLED
        assert cancelled.HasField("end_time")
        assert cancelled.not_processed_count == 2
        assert await entries_of(stub, job.id, pb.ENTRY_STATUS_PENDING) == []
        not_processed = await entries_of(stub, job.id, pb.ENTRY_STATUS_NOT_PROCESSED)
        assert [e.row_number for e in not_processed] == [1, 2]
        assert {e.note for e in not_processed} == {"not processed: the job was cancelled"}
        assert all(e.process_time == cancelled.end_time for e in not_processed)

        # A retried cancel is no error: the job is cancelled, as asked.
        again = await stub.CancelJob(pb.CancelJobRequest(id=job.id))
        assert again.status == pb.JOB_STATUS_CANCELLED


async def test_cancelling_a_finished_job_is_failed_precondition(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await import_and_wait(stub, b"email\na@x.com\n")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelJob(pb.CancelJobRequest(id=job.id))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.metadata == {"id": job.id, "status": "SUCCEEDED"}


async def test_cancelling_an_unknown_job_is_not_found(stub: pb_grpc.ImportServiceStub) -> None:
    import uuid

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelJob(pb.CancelJobRequest(id=str(uuid.uuid4())))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_rpcs_on_an_unknown_job_are_not_found(stub: pb_grpc.ImportServiceStub) -> None:
    import uuid

    unknown = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as listed:
        await stub.ListEntries(pb.ListEntriesRequest(id=unknown))
    assert listed.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as exported:
        async for _ in stub.ExportEntries(pb.ExportEntriesRequest(id=unknown)):
            pass
    assert exported.value.code() == grpc.StatusCode.NOT_FOUND


async def test_export_shows_rows_the_columns_cannot_hold(stub: pb_grpc.ImportServiceStub) -> None:
    jsonl = await import_and_wait(stub, b'{"email": "a@x.com"}\n[1, 2]\n', file_name="x.jsonl")
    csv_job = await import_and_wait(stub, b"email\nb@x.com,extra\n")
    for job, expected in (
        (jsonl, "a line must be a JSON object [NOT_AN_OBJECT]: [1, 2]"),
        (csv_job, "the row has 2 fields, the header has 1 [WRONG_FIELD_COUNT]: b@x.com,extra"),
    ):
        data = b"".join(
            [r.chunk async for r in stub.ExportEntries(pb.ExportEntriesRequest(id=job.id))]
        )
        rows = list(csv.reader(io.StringIO(data.decode())))
        assert rows[1][-1] == expected


async def test_overlapping_update_jobs_finish_without_deadlocks(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    keys = [f"k{i}@x.com" for i in range(40)]
    await import_and_wait(stub, ("email\n" + "\n".join(keys) + "\n").encode())
    forward = ("email,score\n" + "".join(f"{k},1\n" for k in keys)).encode()
    backward = ("email,score\n" + "".join(f"{k},2\n" for k in reversed(keys))).encode()
    jobs = await asyncio.gather(
        *(import_and_wait(stub, data, mode=pb.IMPORT_MODE_UPDATE) for data in (forward, backward))
    )
    for job in jobs:
        assert job.status == pb.JOB_STATUS_SUCCEEDED
        assert job.updated_count + job.unchanged_count == 40


async def test_each_status_filter_lists_exactly_total_count_entries_of_that_status(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    # Statuses come from the entries (FAILED, SKIPPED) and from the chunks' outcomes
    # (CREATED, UPDATED, UNCHANGED); total_count from the job's counts. They must agree.
    await import_and_wait(stub, b"email,score\nu@x.com,1\nn@x.com,2\n")
    job = await import_and_wait(
        stub, b"email,score\nu@x.com,5\nn@x.com,2\nc@x.com,3\nbad,1\nc@x.com,4\nd@x.com,x\n"
    )
    assert counts(job) == {"created": 1, "updated": 1, "unchanged": 1, "skipped": 1, "failed": 2}
    by_status: dict[int, list[int]] = {}
    for status in pb.EntryStatus.values():
        if status == pb.ENTRY_STATUS_UNSPECIFIED:
            continue
        page = await stub.ListEntries(pb.ListEntriesRequest(id=job.id, statuses=[status]))
        assert {e.status for e in page.entries} <= {status}
        assert page.total_count == len(page.entries)
        by_status[status] = [e.row_number for e in page.entries]
    assert by_status == {
        pb.ENTRY_STATUS_PENDING: [],
        pb.ENTRY_STATUS_CREATED: [5],
        pb.ENTRY_STATUS_UPDATED: [1],
        pb.ENTRY_STATUS_UNCHANGED: [2],
        pb.ENTRY_STATUS_SKIPPED: [3],
        pb.ENTRY_STATUS_FAILED: [4, 6],
        pb.ENTRY_STATUS_DELETED: [],
        pb.ENTRY_STATUS_NOT_PROCESSED: [],
    }
    everything = await stub.ListEntries(pb.ListEntriesRequest(id=job.id))
    assert everything.total_count == len(everything.entries) == 6


async def test_overlapping_upsert_jobs_create_each_new_key_exactly_once(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    # New keys are inserted plainly; a key the other job inserted meanwhile makes that
    # insert fail, and the rows are applied one by one, updating instead of failing.
    keys = [f"k{i}@x.com" for i in range(60)]
    forward = ("email,score\n" + "".join(f"{k},1\n" for k in keys)).encode()
    backward = ("email,score\n" + "".join(f"{k},2\n" for k in reversed(keys))).encode()
    jobs = await asyncio.gather(*(import_and_wait(stub, data) for data in (forward, backward)))
    for job in jobs:
        assert job.status == pb.JOB_STATUS_SUCCEEDED
        assert job.failed_count == 0
    assert sum(job.created_count for job in jobs) == len(keys)
    assert await db.fetchval("SELECT count(*) FROM contacts") == len(keys)
