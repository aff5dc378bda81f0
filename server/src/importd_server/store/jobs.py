"""JobStore: the one place that reads and writes import_jobs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import datetime
from typing import Any

import asyncpg

from importd_server.model import (
    Counts,
    Dialect,
    FileFormat,
    ImportMode,
    Job,
    JobCursor,
    JobError,
    JobFilter,
    JobPage,
    JobStage,
    JobStatus,
    WatchFilter,
)
from importd_server.store.pool import Connection
from importd_server.store.sql import JOB_QUERIES

PROGRESS_CHANNEL = "importd_progress"


async def notify_progress(connection: Connection, job_id: uuid.UUID) -> None:
    """Tells every replica's progress hub the job changed (delivered when the transaction
    commits)."""
    await connection.execute("SELECT pg_notify($1, $2)", PROGRESS_CHANNEL, str(job_id))


async def record_trace_parent(
    connection: Connection, job_id: uuid.UUID, trace_parent: str | None
) -> None:
    """Keeps the W3C traceparent of the span that created the job, so that its chunks, on
    any replica, join the job's trace (tracing.py)."""
    if trace_parent is not None:
        await connection.execute(JOB_QUERIES["record_trace_parent"], job_id, trace_parent)


async def read_trace_parent(connection: Connection, job_id: uuid.UUID) -> str | None:
    """The job's W3C traceparent, if tracing was on when it was created."""
    trace_parent: str | None = await connection.fetchval(JOB_QUERIES["read_trace_parent"], job_id)
    return trace_parent


class JobStore:
    """Reads and writes jobs through a pool it is given."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get_job(self, job_id: uuid.UUID, tenant: str) -> Job | None:
        """The tenant's job with this id, or None."""
        row = await self._pool.fetchrow(JOB_QUERIES["get_job"], job_id, tenant)
        return job_from_row(row) if row else None

    async def count_active_jobs(self, tenant: str) -> int:
        """How many of the tenant's jobs are queued or running."""
        count: int = await self._pool.fetchval(JOB_QUERIES["count_active_jobs"], tenant)
        return count

    async def count_active_jobs_admitting(self, connection: Connection, tenant: str) -> int:
        """How many of the tenant's jobs are queued or running, counted in the caller's
        transaction under the tenant's admission lock (held until that transaction ends):
        each admission sees every job the ones before it committed."""
        await connection.execute(JOB_QUERIES["lock_tenant_admission"], tenant)
        # A statement of its own: its snapshot is taken after the lock was granted.
        count: int = await connection.fetchval(JOB_QUERIES["count_active_jobs"], tenant)
        return count

    async def get_jobs(self, job_ids: list[uuid.UUID]) -> list[Job]:
        """The jobs with these ids, whoever's they are (for the progress hub)."""
        return [job_from_row(r) for r in await self._pool.fetch(JOB_QUERIES["get_jobs"], job_ids)]

    async def find_by_request_id(self, tenant: str, request_id: str) -> tuple[Job, str] | None:
        """The tenant's job started with this request_id, and the digest of its spec."""
        row = await self._pool.fetchrow(JOB_QUERIES["find_job_by_request_id"], tenant, request_id)
        return (job_from_row(row), row["spec_digest"]) if row else None

    async def cancel_job(self, job_id: uuid.UUID, tenant: str) -> Job | None:
        """Cancels a queued or running job; None if it is not (or no longer) cancellable."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(JOB_QUERIES["cancel_job"], job_id, tenant)
            if row is not None:
                await notify_progress(connection, job_id)
        return job_from_row(row) if row else None

    async def record_upload_progress(
        self, job_id: uuid.UUID, received_bytes: int, staged_rows: int, total_rows: int | None
    ) -> bool:
        """Records how far the job's upload got (its heartbeat too), in a transaction of its
        own; False if the job is no longer receiving (cancelled, or failed meanwhile)."""
        recorded = await self._pool.fetch(
            JOB_QUERIES["record_upload_progress"],
            job_id,
            received_bytes,
            staged_rows,
            total_rows,
            PROGRESS_CHANNEL,
        )
        return bool(recorded)

    async def abort_upload(self, job_id: uuid.UUID, reason: str, message: str) -> bool:
        """Fails a job whose upload ended before its file did, releasing its request_id;
        False if it was no longer receiving."""
        async with self._pool.acquire() as connection, connection.transaction():
            aborted = await connection.fetchval(
                JOB_QUERIES["abort_upload"], job_id, reason, message
            )
            if aborted is not None:
                await notify_progress(connection, job_id)
        return aborted is not None

    async def fail_interrupted_uploads(self, stale_seconds: float) -> list[uuid.UUID]:
        """Fails the jobs whose upload heartbeat is older than `stale_seconds` (their replica
        died mid-upload); returns their ids."""
        rows = await self._pool.fetch(
            JOB_QUERIES["fail_interrupted_uploads"], stale_seconds, PROGRESS_CHANNEL
        )
        return [r["id"] for r in rows]

    async def file_columns(self, job_id: uuid.UUID) -> list[str]:
        """The column names of the job's file, in the file's order."""
        columns: list[str] = await self._pool.fetchval(
            "SELECT columns FROM import_jobs WHERE id = $1", job_id
        )
        return columns

    async def list_jobs(
        self, job_filter: JobFilter, page_size: int, after: JobCursor | None = None
    ) -> JobPage:
        """One page of the filter's jobs, newest first, starting after `after`."""
        rows = await self._pool.fetch(
            JOB_QUERIES["list_jobs"],
            job_filter.tenant,
            [s.value for s in job_filter.statuses],
            after.create_time if after else None,
            after.job_id if after else None,
            job_filter.import_type,
            page_size + 1,  # one more tells whether a next page exists
            job_filter.include_live,
            job_filter.search,
        )
        jobs = tuple(job_from_row(r) for r in rows[:page_size])
        has_more = len(rows) > page_size
        next_cursor = JobCursor(jobs[-1].create_time, jobs[-1].id) if has_more else None
        return JobPage(jobs, next_cursor)

    async def watched_jobs(
        self, watch_filter: WatchFilter, since: datetime | None, page_size: int = 500
    ) -> AsyncIterator[Job]:
        """The filter's jobs that are queued or running, or changed at or after `since`,
        oldest change first, read a page at a time."""
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            rows = await self._pool.fetch(
                JOB_QUERIES["list_watched_jobs"],
                watch_filter.tenant,
                [s.value for s in watch_filter.statuses],
                watch_filter.import_type,
                dict(watch_filter.labels),
                since,
                watch_filter.include_live,
                after[0] if after else None,
                after[1] if after else None,
                page_size,
            )
            for row in rows:
                yield job_from_row(row)
            if len(rows) < page_size:
                return
            after = (rows[-1]["update_time"], rows[-1]["id"])


def job_from_row(row: asyncpg.Record) -> Job:
    """A Job from an import_jobs row."""
    return Job(
        id=row["id"],
        tenant=row["tenant"],
        import_type=row["import_type"],
        mode=ImportMode(row["mode"]),
        format=FileFormat(row["format"]),
        status=JobStatus(row["status"]),
        stage=JobStage(row["stage"]) if row["stage"] else None,
        file_name=row["file_name"],
        file_size_bytes=row["file_size_bytes"],
        sha256=row["sha256"],
        total_rows=row["total_rows"],
        counts=Counts(
            processed=row["processed_rows"],
            created=row["created_count"],
            updated=row["updated_count"],
            unchanged=row["unchanged_count"],
            skipped=row["skipped_count"],
            failed=row["failed_count"],
            deleted=row["deleted_count"],
        ),
        rows_per_second=row["rows_per_second"],
        error=(
            JobError(row["error_code"], row["error_reason"], row["error_message"])
            if row["error_code"]
            else None
        ),
        dry_run=row["dry_run"],
        all_or_nothing=row["all_or_nothing"],
        max_errors=row["max_errors"],
        labels=dict(row["labels"]),
        request_id=row["request_id"],
        create_time=row["create_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        update_time=row["update_time"],
        live=row["live"],
        entries_removed_time=row["entries_removed_time"],
        dialect=dialect_from_json(row["options"].get("dialect")),
        received_bytes=row["received_bytes"],
        staged_rows=row["staged_rows"],
    )


def dialect_to_json(dialect: Dialect) -> dict[str, Any]:
    """A Dialect as kept in import_jobs.options."""
    return asdict(dialect)


def dialect_from_json(stored: dict[str, Any] | None) -> Dialect | None:
    """The Dialect kept in import_jobs.options, if the file's first bytes were read."""
    if stored is None:
        return None
    return Dialect(
        **{
            **stored,
            "format": FileFormat(stored["format"]),
            "detected": tuple(stored["detected"]),
        }
    )
