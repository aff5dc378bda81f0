"""RevertJob: a job of its own that undoes a finished import, row by row, against a real
server and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import date
from typing import Any

import asyncpg
import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.v1 import import_service_pb2 as pb
from importd.v1 import import_service_pb2_grpc as pb_grpc
from tests.rpc import counts, entries_of, import_and_wait, insert_job, rich_error, wait_for_job

BEFORE = (
    b"email,first_name,last_name,score,birth_date\n"
    b"keep@x.com,Keep,Same,1,2000-01-01\n"
    b"old1@x.com,Old,One,10,1990-05-06\n"
    b"old2@x.com,Old,Two,,\n"
    b"old3@x.com,Old,Three,30,1970-01-01\n"
)
# Rows 1 and 4 are new, 2 and 3 change old rows (one also only some columns), 5 is as is,
# 6 fails.
UPSERT = (
    b"email,first_name,score\n"
    b"new1@x.com,New,100\n"
    b"old1@x.com,Changed,11\n"
    b"old2@x.com,Changed,\n"
    b"new2@x.com,Newer,\n"
    b"keep@x.com,Keep,1\n"
    b"bad@,Bad,1\n"
)


async def table(db: asyncpg.Connection) -> list[dict[str, Any]]:
    """The whole contacts table, in key order."""
    return [dict(r) for r in await db.fetch("SELECT * FROM contacts ORDER BY tenant, email")]


async def revert_and_wait(stub: pb_grpc.ImportServiceStub, job_id: str, **fields: Any) -> pb.Job:
    """Reverts the job and waits for the revert's end."""
    revert = await stub.RevertJob(pb.RevertJobRequest(id=job_id, **fields))
    return await wait_for_job(stub, revert.id)


async def refusal(stub: pb_grpc.ImportServiceStub, job_id: str) -> tuple[grpc.StatusCode, str]:
    """The code and reason RevertJob refuses the job with."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RevertJob(pb.RevertJobRequest(id=job_id))
    return caught.value.code(), rich_error(caught.value).reason


async def test_revert_of_an_upsert_restores_the_table_exactly(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    await import_and_wait(stub, BEFORE)
    before = await table(db)
    job = await import_and_wait(stub, UPSERT)
    assert counts(job) == {"created": 2, "updated": 2, "unchanged": 1, "failed": 1}
    assert await table(db) != before

    revert = await revert_and_wait(stub, job.id)

    assert await table(db) == before
    assert revert.status == pb.JOB_STATUS_SUCCEEDED
    assert revert.revert_of == job.id
    assert counts(revert) == {"deleted": 2, "updated": 2}
    assert revert.total_rows == 4
    # One entry per row the import changed, in its order, naming the import's row.
    entries = await entries_of(stub, revert.id)
    assert [(e.row_number, e.line_number, e.key, e.status) for e in entries] == [
        (1, 1, "new1@x.com", pb.ENTRY_STATUS_DELETED),
        (2, 2, "old1@x.com", pb.ENTRY_STATUS_UPDATED),
        (3, 3, "old2@x.com", pb.ENTRY_STATUS_UPDATED),
        (4, 4, "new2@x.com", pb.ENTRY_STATUS_DELETED),
    ]
    original = await stub.GetJob(pb.GetJobRequest(id=job.id))
    assert original.reverted_by == revert.id


async def test_updated_rows_recorded_as_an_object_per_row_revert_too(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    # Jobs recorded before the images of updated rows became one array per column keep
    # row number -> values.
    await import_and_wait(stub, BEFORE)
    before = await table(db)
    job = await import_and_wait(stub, UPSERT)
    recorded = await db.fetchval(
        "SELECT images FROM import_before_images WHERE job_id = $1", uuid.UUID(job.id)
    )
    assert json.loads(recorded).keys() == {"rows", "columns"}
    await db.execute(
        """UPDATE import_before_images SET images = (
               SELECT jsonb_strip_nulls(jsonb_object_agg(r.key, (
                   SELECT jsonb_object_agg(c.key, c.value -> (r.position - 1)::integer)
                   FROM jsonb_each(images -> 'columns') c)))
               FROM jsonb_array_elements_text(images -> 'rows') WITH ORDINALITY r(key, position))
           WHERE job_id = $1""",
        uuid.UUID(job.id),
    )

    revert = await revert_and_wait(stub, job.id)

    assert counts(revert) == {"deleted": 2, "updated": 2}
    assert await table(db) == before


COLUMNS = ("first_name", "score", "birth_date")
ROWS = st.fixed_dictionaries(
    {
        "first_name": st.sampled_from(["", "Ann", "Zoë", "O'Neil", "a, b", '"q"']),
        "score": st.one_of(st.just(""), st.integers(0, 100).map(str)),
        "birth_date": st.one_of(st.just(""), st.dates(date(1900, 1, 1), date(2100, 1, 1)).map(str)),
    }
)
FILES = st.dictionaries(st.integers(0, 12), ROWS, min_size=1, max_size=8)


def csv_file(rows: dict[int, dict[str, str]], columns: tuple[str, ...]) -> bytes:
    """A contacts CSV of these rows (keyed by a number that becomes the e-mail address)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["email", *columns])
    for n, row in rows.items():
        writer.writerow([f"k{n}@x.com", *(row[c] for c in columns)])
    return out.getvalue().encode()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=FILES,
    change=FILES,
    mode=st.sampled_from(
        [pb.IMPORT_MODE_UPSERT, pb.IMPORT_MODE_UPDATE, pb.IMPORT_MODE_DELETE, pb.IMPORT_MODE_INSERT]
    ),
    columns=st.lists(st.sampled_from(COLUMNS), unique=True).map(tuple),
)
async def test_any_import_reverted_leaves_the_table_exactly_as_before(
    stub: pb_grpc.ImportServiceStub,
    db: asyncpg.Connection,
    seed: dict[int, dict[str, str]],
    change: dict[int, dict[str, str]],
    mode: int,
    columns: tuple[str, ...],
) -> None:
    await db.execute("TRUNCATE contacts")
    await import_and_wait(stub, csv_file(seed, COLUMNS))
    before = await table(db)
    job = await import_and_wait(stub, csv_file(change, columns), mode=mode)
    assert job.failed_count == 0

    revert = await revert_and_wait(stub, job.id)

    assert await table(db) == before
    assert revert.skipped_count == 0
    assert revert.total_rows == job.created_count + job.updated_count + job.deleted_count


@pytest.mark.parametrize(
    ("mode", "file", "done", "undone"),
    [
        # A DELETE's revert brings the rows back whole; a missing key was skipped.
        (
            pb.IMPORT_MODE_DELETE,
            b"email\nold1@x.com\nmissing@x.com\nold3@x.com\n",
            {"deleted": 2, "skipped": 1},
            {"created": 2},
        ),
        # An UPDATE's revert restores only the columns it changed.
        (
            pb.IMPORT_MODE_UPDATE,
            b"email,last_name\nold1@x.com,Other\nold2@x.com,\n",
            {"updated": 2},
            {"updated": 2},
        ),
    ],
    ids=["delete", "update"],
)
async def test_revert_of_a_delete_or_an_update_restores_the_table(
    stub: pb_grpc.ImportServiceStub,
    db: asyncpg.Connection,
    mode: int,
    file: bytes,
    done: dict[str, int],
    undone: dict[str, int],
) -> None:
    await import_and_wait(stub, BEFORE)
    before = await table(db)
    job = await import_and_wait(stub, file, mode=mode)
    assert counts(job) == done

    revert = await revert_and_wait(stub, job.id)

    assert counts(revert) == undone
    assert await table(db) == before


async def test_rows_changed_since_the_import_are_skipped_with_the_conflict_and_left_as_is(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    await import_and_wait(stub, BEFORE)
    job = await import_and_wait(stub, UPSERT)
    # A later job changes one created and one updated row, deletes another created row.
    later = await import_and_wait(stub, b"email,score\nnew1@x.com,5\nold1@x.com,12\n")
    assert counts(later) == {"updated": 2}
    await import_and_wait(stub, b"email\nnew2@x.com\n", mode=pb.IMPORT_MODE_DELETE)
    after_later = await table(db)

    revert = await revert_and_wait(stub, job.id)

    assert revert.status == pb.JOB_STATUS_PARTIALLY_SUCCEEDED
    assert counts(revert) == {"updated": 1, "skipped": 3}
    skipped = await entries_of(stub, revert.id, pb.ENTRY_STATUS_SKIPPED)
    assert [(e.key, e.note) for e in skipped] == [
        ("new1@x.com", "not reverted: the row was changed since the import"),
        ("old1@x.com", "not reverted: the row was changed since the import"),
        ("new2@x.com", "not reverted: the row was deleted since the import"),
    ]
    # Only old2 went back; the later job's rows are as it left them.
    expected = [
        {**r, "first_name": "Old", "last_name": "Two"} if r["email"] == "old2@x.com" else r
        for r in after_later
    ]
    assert await table(db) == expected


async def test_a_deleted_row_whose_key_exists_again_is_skipped(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    await import_and_wait(stub, BEFORE)
    job = await import_and_wait(stub, b"email\nold1@x.com\n", mode=pb.IMPORT_MODE_DELETE)
    await import_and_wait(stub, b"email,first_name\nold1@x.com,Reborn\n")

    revert = await revert_and_wait(stub, job.id)

    assert counts(revert) == {"skipped": 1}
    [entry] = await entries_of(stub, revert.id)
    assert entry.note == "not reverted: a row with this key was created again since the import"
    assert await db.fetchval("SELECT first_name FROM contacts WHERE email = 'old1@x.com'") == (
        "Reborn"
    )


async def test_reverting_twice_names_the_revert_and_a_repeated_request_id_returns_it(
    stub: pb_grpc.ImportServiceStub,
) -> None:
    job = await import_and_wait(stub, BEFORE)
    first = await stub.RevertJob(pb.RevertJobRequest(id=job.id, request_id="undo-1"))
    again = await stub.RevertJob(pb.RevertJobRequest(id=job.id, request_id="undo-1"))
    assert again.id == first.id

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RevertJob(pb.RevertJobRequest(id=job.id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    error = rich_error(caught.value)
    assert error.reason == "ALREADY_REVERTED"
    assert error.metadata["revert_job_id"] == first.id
    assert first.id in (caught.value.details() or "")

    # The revert itself is not reverted (importing the file again does that).
    await wait_for_job(stub, first.id)
    assert await refusal(stub, first.id) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "JOB_IS_A_REVERT",
    )
    # The same request_id for another job's revert is another request.
    other = await import_and_wait(stub, b"email\nz@x.com\n")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RevertJob(pb.RevertJobRequest(id=other.id, request_id="undo-1"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_a_cancelled_revert_can_be_followed_by_another(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    job = await import_and_wait(stub, BEFORE)
    await insert_job(db, status="CANCELLED", revert_of=uuid.UUID(job.id))
    revert = await revert_and_wait(stub, job.id)
    assert await table(db) == []
    original = await stub.GetJob(pb.GetJobRequest(id=job.id))
    assert original.reverted_by == revert.id


async def test_refusals(stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection) -> None:
    dry = await import_and_wait(stub, BEFORE, dry_run=True)
    assert await refusal(stub, dry.id) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "DRY_RUN_NOT_REVERTIBLE",
    )
    assert await refusal(stub, "8d4f7f0e-5d2c-4b8e-9a55-0f6f43a5b7c1") == (
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    done = await import_and_wait(stub, b"email\na@x.com\n")
    await db.execute("UPDATE import_jobs SET entries_removed_time = now() WHERE id = $1", done.id)
    assert await refusal(stub, done.id) == (grpc.StatusCode.FAILED_PRECONDITION, "ENTRIES_EXPIRED")


async def test_a_queued_or_running_job_is_refused(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    for status in ("QUEUED", "RUNNING"):
        job_id = await insert_job(db, status=status)
        code, reason = await refusal(stub, str(job_id))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_ENDED")


async def test_a_job_started_not_revertible_records_nothing_and_cannot_be_reverted(
    stub: pb_grpc.ImportServiceStub, db: asyncpg.Connection
) -> None:
    await import_and_wait(stub, BEFORE)
    job = await import_and_wait(stub, UPSERT, revertible=False)
    assert counts(job)["updated"] == 2
    assert not job.revertible
    assert await db.fetchval("SELECT count(*) FROM import_before_images") == 0
    assert await refusal(stub, job.id) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_REVERTIBLE")
    recorded = await import_and_wait(stub, BEFORE)
    assert recorded.revertible
    assert await db.fetchval("SELECT count(*) FROM import_before_images") == 1


async def test_a_revert_cannot_be_retried(stub: pb_grpc.ImportServiceStub) -> None:
    # Its rows are the original's: importing them again would undo the revert.
    original = await import_and_wait(stub, BEFORE)
    revert = await revert_and_wait(stub, original.id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RetryJob(pb.RetryJobRequest(id=revert.id))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_IS_A_REVERT")
