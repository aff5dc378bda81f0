"""GetJob and ListJobs against a real server and database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from importd_server.errors import InvalidArgument
from tests.rpc import insert_job, rich_error


async def test_get_job_of_unknown_id_is_not_found_with_error_info(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job_id = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetJob(pb.GetJobRequest(id=job_id))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "NOT_FOUND"
    assert error.metadata == {"id": job_id}


@pytest.mark.parametrize(
    ("job_id", "description"),
    [("not-a-uuid", "'not-a-uuid' is not a UUID"), ("", "is required")],
)
async def test_get_job_with_malformed_id_is_invalid_argument_naming_the_field(
    stub: pb_grpc.ImportServiceStub, job_id: str, description: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetJob(pb.GetJobRequest(id=job_id))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations == {"id": description}


async def test_get_job_returns_every_stored_field(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    created = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    job_id = await insert_job(
        db,
        status="PARTIALLY_SUCCEEDED",
        mode="INSERT",
        file_size_bytes=1234,
        sha256="ab" * 32,
        total_rows=10,
        processed_rows=10,
        created_count=7,
        skipped_count=1,
        failed_count=2,
        labels={"team": "crm"},
        request_id="req-1",
        create_time=created,
        start_time=created + timedelta(seconds=1),
        end_time=created + timedelta(seconds=3),
    )
    job = await stub.GetJob(pb.GetJobRequest(id=str(job_id)))
    assert job.id == str(job_id)
    assert job.status == pb.JOB_STATUS_PARTIALLY_SUCCEEDED
    assert job.mode == pb.IMPORT_MODE_INSERT
    assert job.format == pb.FILE_FORMAT_CSV
    assert (job.file_size_bytes, job.sha256, job.total_rows) == (1234, "ab" * 32, 10)
    assert (job.created_count, job.skipped_count, job.failed_count) == (7, 1, 2)
    assert job.progress_percent == 100.0
    assert dict(job.labels) == {"team": "crm"}
    assert job.request_id == "req-1"
    assert job.create_time.ToDatetime(tzinfo=UTC) == created
    assert job.end_time.ToDatetime(tzinfo=UTC) == created + timedelta(seconds=3)
    assert not job.HasField("error")


async def test_get_job_reports_a_job_level_error_as_rpc_status(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    job_id = await insert_job(
        db,
        status="FAILED",
        error_kind=InvalidArgument.__name__,  # a job's error is stored as its errors.py kind
        error_reason="UNBALANCED_QUOTE",
        error_message="unbalanced quote at line 3",
    )
    job = await stub.GetJob(pb.GetJobRequest(id=str(job_id)))
    assert job.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert job.error.message == "unbalanced quote at line 3"
    assert not job.HasField("total_rows")


async def test_list_jobs_pages_newest_first_without_gaps_or_repeats(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # Two jobs share a create_time: the id breaks the tie, so paging stays exact.
    times = [start + timedelta(minutes=i) for i in range(6)] + [start + timedelta(minutes=5)]
    ids = [await insert_job(db, create_time=t) for t in times]
    expected = [str(i) for _, i in sorted(zip(times, ids, strict=True), reverse=True)]

    seen, token, pages = [], "", 0
    while True:
        response = await stub.ListJobs(pb.ListJobsRequest(page_size=3, page_token=token))
        seen += [j.id for j in response.jobs]
        pages += 1
        token = response.next_page_token
        if not token:
            break
    assert seen == expected
    assert pages == 3


async def test_list_jobs_filters_by_status_and_import_type(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    failed = await insert_job(db, status="FAILED", import_type="contacts")
    await insert_job(db, status="FAILED", import_type="transactions")
    await insert_job(db, status="SUCCEEDED", import_type="contacts")
    running = await insert_job(db, status="RUNNING", import_type="contacts")

    response = await stub.ListJobs(
        pb.ListJobsRequest(
            statuses=[pb.JOB_STATUS_FAILED, pb.JOB_STATUS_RUNNING], import_type="contacts"
        )
    )
    assert {j.id for j in response.jobs} == {str(failed), str(running)}
    assert response.next_page_token == ""


async def test_list_jobs_shows_only_the_callers_tenant(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    mine = await insert_job(db)
    await insert_job(db, tenant="someone-else")
    response = await stub.ListJobs(pb.ListJobsRequest())
    assert [j.id for j in response.jobs] == [str(mine)]


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_token": "garbage!"}, "page_token"),
        ({"page_size": -1}, "page_size"),
        ({"statuses": [42]}, "statuses"),
    ],
)
async def test_list_jobs_rejects_bad_arguments(
    stub: pb_grpc.ImportServiceStub, request_fields: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListJobs(pb.ListJobsRequest(**request_fields))  # type: ignore[arg-type]
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.field_violations) == [field]


async def test_page_token_is_refused_for_other_filters(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    for _ in range(3):
        await insert_job(db)
    first = await stub.ListJobs(pb.ListJobsRequest(page_size=1))
    assert first.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListJobs(
            pb.ListJobsRequest(page_size=1, page_token=first.next_page_token, import_type="x")
        )
    assert rich_error(caught.value).field_violations == {
        "page_token": "was issued for a request with other filters"
    }


async def test_page_size_is_capped_at_one_thousand(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    await db.executemany(
        "INSERT INTO import_jobs (id, tenant, import_type, mode, format, status)"
        " VALUES ($1, 'default', 'contacts', 'INSERT', 'CSV', 'QUEUED')",
        [(uuid.uuid4(),) for _ in range(1001)],
    )
    response = await stub.ListJobs(pb.ListJobsRequest(page_size=5000))
    assert len(response.jobs) == 1000
    assert response.next_page_token


async def test_list_jobs_filter_by_labels_creation_time_status_and_parent(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    nov = datetime(2026, 11, 1, tzinfo=UTC)
    parent = await insert_job(db, status="FAILED", create_time=nov - timedelta(days=1))
    early = await insert_job(db, labels={"batch": "x"}, create_time=nov)
    late = await insert_job(db, labels={"batch": "x", "by": "me"}, create_time=nov + timedelta(1))
    await insert_job(db, labels={"batch": "y"}, create_time=nov + timedelta(days=2))
    retried = await insert_job(
        db, status="SUCCEEDED", retry_of=parent, create_time=nov + timedelta(days=3)
    )

    async def listed(text: str) -> list[uuid.UUID]:
        response = await stub.ListJobs(pb.ListJobsRequest(filter=text))
        return [uuid.UUID(j.id) for j in response.jobs]

    assert await listed('labels.batch = "x"') == [late, early]
    assert await listed('labels.batch = "x" AND create_time > "2026-11-01T00:00:00Z"') == [late]
    assert await listed('labels.batch = "x" AND create_time >= "2026-11-01T00:00:00Z"') == [
        late,
        early,
    ]
    assert await listed('create_time < "2026-11-01T00:00:00+00:00"') == [parent]
    assert await listed('create_time = "2026-11-01T01:00:00+01:00"') == [early]
    assert await listed('labels.by = "me" AND labels.batch = "x"') == [late]
    assert await listed(f'retry_of = "{parent}"') == [retried]
    assert await listed("status = SUCCEEDED") == [retried]
    response = await stub.ListJobs(pb.ListJobsRequest(filter=f'retry_of = "{parent}"'))
    assert response.jobs[0].retry_of == str(parent)
    # The filter combines with the request's other fields.
    both = pb.ListJobsRequest(filter="status = FAILED", statuses=[pb.JOB_STATUS_SUCCEEDED])
    assert (await stub.ListJobs(both)).jobs == []


async def test_list_jobs_refuses_a_bad_filter_and_a_token_of_another_filter(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    for _ in range(3):
        await insert_job(db, labels={"batch": "x"})
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.ListJobs(pb.ListJobsRequest(filter='labels.batch == "x"'))
    assert rich_error(bad.value).field_violations == {
        "filter": "at character 15: expected a value, found '='"
    }
    first = await stub.ListJobs(pb.ListJobsRequest(page_size=1, filter='labels.batch = "x"'))
    same = await stub.ListJobs(
        pb.ListJobsRequest(
            page_size=1, filter='labels.batch = "x"', page_token=first.next_page_token
        )
    )
    assert len(same.jobs) == 1
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.ListJobs(
            pb.ListJobsRequest(
                page_size=1, filter='labels.batch = "y"', page_token=first.next_page_token
            )
        )
    assert list(rich_error(other.value).field_violations) == ["page_token"]
