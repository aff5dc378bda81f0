"""JobStore: the one owner of jobs' and chunks' state. Every query on import_jobs and
import_chunks is run here, and every change of a job's status or of a chunk's lease; the
engine asks for them (as procrastinate's workers ask its JobManager)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from importd_server.errors import Aborted, FailedPrecondition, ImportdError, kind_named
from importd_server.model import (
    LIVE_STATUSES,
    Claim,
    Counts,
    Dialect,
    EntryStatus,
    ErrorCount,
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
from importd_server.store.sql import CHUNK_QUERIES, JOB_QUERIES, SESSION_QUERIES

PROGRESS_CHANNEL = "importd_progress"
LIVE = [s.value for s in LIVE_STATUSES]
# How an all-or-nothing job with a failed row fails (its message counts the rows, in SQL).
ALL_OR_NOTHING = FailedPrecondition("", reason="ALL_OR_NOTHING")


@dataclass(frozen=True)
class NewJobRow:
    """What a new job's row holds before its file is read."""

    job_id: uuid.UUID
    tenant: str
    import_type: str
    mode: ImportMode
    format: FileFormat
    file_name: str
    dry_run: bool
    all_or_nothing: bool
    max_errors: int | None
    labels: Mapping[str, str]
    request_id: str | None
    spec_digest: str
    live: bool
    options: Mapping[str, Any]  # the job's column map, webhook, redacted source URI, ...
    retry_of: uuid.UUID | None = None  # the job this one retries
    revertible: bool = True  # whether its writes record what they replace (RevertJob)


@dataclass(frozen=True)
class RevertOf:
    """The job a revert undoes: its id and rows per chunk (where its outcomes are)."""

    original_id: uuid.UUID
    chunk_rows: int


@dataclass(frozen=True)
class JobToProcess:
    """A live job a chunk of which is about to be processed."""

    job: Job
    columns: list[str]  # the file's column names, in the file's order
    column_map: Mapping[str, str]  # the job's ImportSpec.column_map
    # False for jobs staged before migration 0005, whose rows were not validated then.
    validated_at_staging: bool
    revert: RevertOf | None = None  # for a revert job, the job it undoes


class JobStore:
    """Reads and changes jobs and chunks: through the pool it is given, or in the caller's
    transaction (methods taking a connection)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # Reading

    async def get_job(self, job_id: uuid.UUID, tenant: str) -> Job | None:
        """The tenant's job with this id, or None."""
        row = await JOB_QUERIES["get_job"].fetchrow(self._pool, job_id=job_id, tenant=tenant)
        return job_from_row(row) if row else None

    async def job_in(self, connection: Connection, job_id: uuid.UUID, tenant: str) -> Job | None:
        """The tenant's job as the caller's transaction sees it."""
        row = await JOB_QUERIES["get_job"].fetchrow(connection, job_id=job_id, tenant=tenant)
        return job_from_row(row) if row else None

    async def get_jobs(self, job_ids: list[uuid.UUID]) -> list[Job]:
        """The jobs with these ids, whoever's they are (for the progress hub)."""
        rows = await JOB_QUERIES["get_jobs"].fetch(self._pool, job_ids=job_ids)
        return [job_from_row(r) for r in rows]

    async def find_by_request_id(self, tenant: str, request_id: str) -> tuple[Job, str] | None:
        """The tenant's job started with this request_id, and the digest of its spec."""
        row = await JOB_QUERIES["find_job_by_request_id"].fetchrow(
            self._pool, tenant=tenant, request_id=request_id
        )
        return (job_from_row(row), row["spec_digest"]) if row else None

    async def list_jobs(
        self, job_filter: JobFilter, page_size: int, after: JobCursor | None = None
    ) -> JobPage:
        """One page of the filter's jobs, newest first, starting after `after`."""
        conditions = job_filter.conditions
        after_bound, before_bound = conditions.created_after, conditions.created_before
        rows = await JOB_QUERIES["list_jobs"].fetch(
            self._pool,
            tenant=job_filter.tenant,
            statuses=[s.value for s in job_filter.statuses],
            after_time=after.create_time if after else None,
            after_id=after.job_id if after else None,
            import_type=job_filter.import_type,
            page_size=page_size + 1,  # one more tells whether a next page exists
            include_live=job_filter.include_live,
            search=job_filter.search,
            labels=dict(conditions.labels),
            retry_of=conditions.retry_of,
            status=conditions.status.value if conditions.status else None,
            filter_import_type=conditions.import_type,
            request_id=conditions.request_id,
            created_after=after_bound.time if after_bound else None,
            after_inclusive=bool(after_bound and after_bound.inclusive),
            created_before=before_bound.time if before_bound else None,
            before_inclusive=bool(before_bound and before_bound.inclusive),
        )
        jobs = tuple(job_from_row(r) for r in rows[:page_size])
        has_more = len(rows) > page_size
        next_cursor = JobCursor(jobs[-1].create_time, jobs[-1].id) if has_more else None
        return JobPage(jobs, next_cursor)

    async def watched_jobs(
        self, watch_filter: WatchFilter, since: datetime | None, page_size: int = 500
    ) -> AsyncIterator[Job]:
        """The filter's jobs that are live, or changed at or after `since`, oldest change
        first, read a page at a time."""
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            rows = await JOB_QUERIES["list_watched_jobs"].fetch(
                self._pool,
                tenant=watch_filter.tenant,
                statuses=[s.value for s in watch_filter.statuses],
                import_type=watch_filter.import_type,
                labels=dict(watch_filter.labels),
                since=since,
                include_live=watch_filter.include_live,
                after_time=after[0] if after else None,
                after_id=after[1] if after else None,
                page_size=page_size,
                live=LIVE,
            )
            for row in rows:
                yield job_from_row(row)
            if len(rows) < page_size:
                return
            after = (rows[-1]["update_time"], rows[-1]["id"])

    async def file_columns(self, job_id: uuid.UUID) -> list[str]:
        """The column names of the job's file, in the file's order."""
        columns: list[str] = await JOB_QUERIES["file_columns"].fetchval(self._pool, job_id=job_id)
        return columns

    async def retry_source(self, job_id: uuid.UUID) -> tuple[list[str], dict[str, Any]]:
        """What a retry takes from its parent: the file's columns, in the file's order, and
        the job's options (column map, webhook, ...)."""
        row = await JOB_QUERIES["retry_source"].fetchrow(self._pool, job_id=job_id)
        return row["columns"], dict(row["options"])

    async def count_active_jobs(self, tenant: str) -> int:
        """How many of the tenant's jobs are live (queued or running)."""
        count: int = await JOB_QUERIES["count_active_jobs"].fetchval(
            self._pool, tenant=tenant, live=LIVE
        )
        return count

    async def count_active_jobs_admitting(self, connection: Connection, tenant: str) -> int:
        """How many of the tenant's jobs are live, counted in the caller's transaction under
        the tenant's admission lock (held until that transaction ends): each admission sees
        every job the ones before it committed."""
        await JOB_QUERIES["lock_tenant_admission"].execute(connection, tenant=tenant)
        # A statement of its own: its snapshot is taken after the lock was granted.
        count: int = await JOB_QUERIES["count_active_jobs"].fetchval(
            connection, tenant=tenant, live=LIVE
        )
        return count

    async def count_jobs_by_status(self) -> dict[str, int]:
        """How many jobs there are of each status (all tenants; for the metrics)."""
        rows = await JOB_QUERIES["count_jobs_by_status"].fetch(self._pool)
        return {r["status"]: r["n"] for r in rows}

    # A job's life: staged, queued, running, ended

    async def insert_job(self, connection: Connection, new: NewJobRow) -> None:
        """A new QUEUED job, in the caller's (staging) transaction."""
        await JOB_QUERIES["insert_job"].execute(
            connection,
            job_id=new.job_id,
            tenant=new.tenant,
            import_type=new.import_type,
            mode=new.mode.value,
            format=new.format.value,
            file_name=new.file_name,
            dry_run=new.dry_run,
            all_or_nothing=new.all_or_nothing,
            max_errors=new.max_errors,
            labels=dict(new.labels),
            request_id=new.request_id,
            spec_digest=new.spec_digest,
            live=new.live,
            options=dict(new.options),
            retry_of=new.retry_of,
            revertible=new.revertible,
        )

    async def record_file(
        self,
        connection: Connection,
        job_id: uuid.UUID,
        *,
        size: int,
        sha256: str,
        total_rows: int | None,
        columns: Sequence[str],
        failed: int,
        skipped: int,
        chunk_rows: int | None,
        error_summary: Sequence[ErrorCount] = (),
    ) -> bool:
        """What the file was: its size, digest, rows and columns, the rows decided already
        (failed, or superseded) and the failed rows' errors, and how many rows each chunk
        takes; False if the job is no longer receiving (cancelled, or failed by the
        housekeeper)."""
        recorded = await JOB_QUERIES["record_file"].fetchval(
            connection,
            job_id=job_id,
            size=size,
            sha256=sha256,
            total_rows=total_rows,
            columns=list(columns),
            failed=failed,
            skipped=skipped,
            chunk_rows=chunk_rows,
            error_summary=error_summary_to_json(error_summary),
        )
        return recorded is not None

    async def record_dialect(
        self, connection: Connection, job_id: uuid.UUID, dialect: Dialect
    ) -> None:
        """How the file was read (engine/shapes.py): its format and dialect."""
        await JOB_QUERIES["record_dialect"].execute(
            connection, job_id=job_id, format=dialect.format.value, dialect=asdict(dialect)
        )

    async def record_trace_parent(
        self, connection: Connection, job_id: uuid.UUID, trace_parent: str | None
    ) -> None:
        """Keeps the W3C traceparent of the span that created the job, so that its chunks,
        on any replica, join the job's trace (tracing.py)."""
        if trace_parent is not None:
            await JOB_QUERIES["record_trace_parent"].execute(
                connection, job_id=job_id, trace_parent=trace_parent
            )

    async def read_trace_parent(self, connection: Connection, job_id: uuid.UUID) -> str | None:
        """The job's W3C traceparent, if tracing was on when it was created."""
        trace_parent: str | None = await JOB_QUERIES["read_trace_parent"].fetchval(
            connection, job_id=job_id
        )
        return trace_parent

    async def record_upload_progress(
        self, job_id: uuid.UUID, received_bytes: int, staged_rows: int, total_rows: int | None
    ) -> bool:
        """Records how far the job's upload got (its heartbeat too), in a transaction of its
        own; False if the job is no longer receiving (cancelled, or failed meanwhile)."""
        recorded = await JOB_QUERIES["record_upload_progress"].fetch(
            self._pool,
            job_id=job_id,
            received_bytes=received_bytes,
            staged_rows=staged_rows,
            total_rows=total_rows,
            channel=PROGRESS_CHANNEL,
        )
        return bool(recorded)

    async def abort_upload(self, job_id: uuid.UUID, error: Aborted) -> bool:
        """Fails a job whose upload ended before its file did, releasing its request_id;
        False if it was no longer receiving."""
        async with self._pool.acquire() as connection, connection.transaction():
            aborted = await JOB_QUERIES["abort_upload"].fetchval(
                connection,
                job_id=job_id,
                kind=Aborted.__name__,
                reason=error.reason,
                message=error.message,
            )
            if aborted is not None:
                await self.notify(connection, job_id)
        return aborted is not None

    async def fail_interrupted_uploads(self, stale_seconds: float) -> list[uuid.UUID]:
        """Fails the jobs whose upload heartbeat is older than `stale_seconds` (their replica
        died mid-upload); returns their ids."""
        rows = await JOB_QUERIES["fail_interrupted_uploads"].fetch(
            self._pool,
            seconds=stale_seconds,
            kind=Aborted.__name__,
            reason="UPLOAD_INTERRUPTED",
            channel=PROGRESS_CHANNEL,
        )
        return [r["id"] for r in rows]

    async def create_chunks(
        self, connection: Connection, job_id: uuid.UUID, total_rows: int, chunk_rows: int
    ) -> None:
        """Splits the job's rows into chunks of `chunk_rows`, to be claimed."""
        await CHUNK_QUERIES["create_chunks"].execute(
            connection, job_id=job_id, total_rows=total_rows, chunk_rows=chunk_rows
        )

    async def fail_job(
        self, connection: Connection, job_id: uuid.UUID, error: ImportdError
    ) -> bool:
        """Ends the live job FAILED with the error; returns whether it did (False: the job
        had ended already)."""
        recorded = JobError.of(error)
        row = await JOB_QUERIES["fail_job"].fetchrow(
            connection,
            job_id=job_id,
            kind=recorded.kind.__name__,
            reason=recorded.reason,
            message=recorded.message,
            live=LIVE,
        )
        return row is not None

    async def finish_if_done(self, connection: Connection, job_id: uuid.UUID) -> None:
        """Gives the live job its terminal status if no chunk of it is left."""
        await JOB_QUERIES["finish_job_if_done"].execute(
            connection,
            job_id=job_id,
            kind=JobError.of(ALL_OR_NOTHING).kind.__name__,
            reason=ALL_OR_NOTHING.reason,
            live=LIVE,
        )

    async def cancel_job(self, job_id: uuid.UUID, tenant: str) -> Job | None:
        """Cancels a live job; None if it is not (or no longer) live."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await JOB_QUERIES["cancel_job"].fetchrow(
                connection, job_id=job_id, tenant=tenant, live=LIVE
            )
            if row is not None:
                await self.notify(connection, job_id)
        return job_from_row(row) if row else None

    # Reverts

    async def lock_job(self, connection: Connection, job_id: uuid.UUID, tenant: str) -> Job | None:
        """The tenant's job, locked until the caller's transaction ends."""
        row = await JOB_QUERIES["lock_job"].fetchrow(connection, job_id=job_id, tenant=tenant)
        return job_from_row(row) if row else None

    async def current_revert(self, connection: Connection, job_id: uuid.UUID) -> Job | None:
        """The job's revert that is live or ended without failing or being cancelled."""
        row = await JOB_QUERIES["current_revert"].fetchrow(connection, job_id=job_id)
        return job_from_row(row) if row else None

    async def insert_revert(
        self,
        connection: Connection,
        original: Job,
        revert_id: uuid.UUID,
        request_id: str | None,
        spec_digest: str,
        chunk_rows: int,
    ) -> None:
        """A QUEUED revert of `original`, which names it as its latest revert."""
        await JOB_QUERIES["insert_revert"].execute(
            connection,
            job_id=original.id,
            revert_id=revert_id,
            request_id=request_id,
            spec_digest=spec_digest,
            chunk_rows=chunk_rows,
        )

    async def record_revert_rows(
        self, connection: Connection, revert_id: uuid.UUID, total_rows: int, chunk_rows: int
    ) -> None:
        """The revert's rows are its entries: records how many, and makes its chunks (or
        ends it at once when it has none)."""
        await JOB_QUERIES["record_revert_rows"].execute(
            connection, job_id=revert_id, total_rows=total_rows
        )
        if total_rows:
            await self.create_chunks(connection, revert_id, total_rows, chunk_rows)
        else:
            await self.finish_if_done(connection, revert_id)

    async def notify(self, connection: Connection, job_id: uuid.UUID) -> None:
        """Tells every replica's progress hub the job changed (delivered when the
        transaction commits)."""
        await JOB_QUERIES["notify_progress"].execute(
            connection, channel=PROGRESS_CHANNEL, job_id=str(job_id)
        )

    # Chunks: claimed with a lease, processed in a transaction of their own

    async def claim_chunk(self, owner: str, lease_seconds: float) -> Claim | None:
        """Leases the oldest live job's next free chunk to `owner` (and starts its job if
        it was queued), committed at once; None when no chunk is free."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await CHUNK_QUERIES["claim_chunk"].fetchrow(
                connection, owner=owner, lease_seconds=lease_seconds, live=LIVE
            )
            if row is None:
                return None
            claim = Claim(**dict(row))
            await JOB_QUERIES["start_job"].execute(connection, job_id=claim.job_id)
        return claim

    async def lock_claimed_chunk(self, connection: Connection, claim: Claim, owner: str) -> bool:
        """Locks the chunk until the caller's transaction ends, if `owner` still holds it
        (else it was done meanwhile, or taken over after its lease expired). The rest of
        the transaction then finds rows by key only."""
        locked = await CHUNK_QUERIES["lock_claimed_chunk"].fetchrow(
            connection, job_id=claim.job_id, chunk_number=claim.chunk_number, owner=owner
        )
        if locked is None:
            return False
        await SESSION_QUERIES["by_key_only"].execute(connection)
        return True

    async def job_to_process(
        self, connection: Connection, job_id: uuid.UUID
    ) -> JobToProcess | None:
        """The job a locked chunk belongs to, if it is still live."""
        row = await JOB_QUERIES["job_to_process"].fetchrow(connection, job_id=job_id, live=LIVE)
        if row is None:
            return None
        return JobToProcess(
            job_from_row(row),
            row["columns"],
            row["options"].get("column_map", {}),
            row["validated_at_staging"],
            RevertOf(row["revert_of"], row["original_chunk_rows"]) if row["revert_of"] else None,
        )

    async def extend_lease(self, connection: Connection, claim: Claim, seconds: float) -> None:
        """Keeps the chunk's lease for `seconds` more (for a chunk that takes long)."""
        await CHUNK_QUERIES["extend_lease"].execute(
            connection,
            job_id=claim.job_id,
            chunk_number=claim.chunk_number,
            lease_seconds=seconds,
        )

    async def complete_chunk(
        self,
        connection: Connection,
        claim: Claim,
        outcomes: str,
        counts: Mapping[EntryStatus, int],
        errors: Sequence[ErrorCount] = (),
    ) -> Job | None:
        """Marks the chunk done with its outcome string and adds its counts (and the errors
        of the rows it failed) to the job; the job as it then is, or None if it is no longer
        running (cancelled or failed meanwhile: the caller rolls the chunk back)."""
        await CHUNK_QUERIES["complete_chunk"].execute(
            connection, job_id=claim.job_id, chunk_number=claim.chunk_number, outcomes=outcomes
        )
        row = await JOB_QUERIES["add_counts"].fetchrow(
            connection,
            job_id=claim.job_id,
            processed=sum(counts.values()),
            created=counts.get(EntryStatus.CREATED, 0),
            updated=counts.get(EntryStatus.UPDATED, 0),
            unchanged=counts.get(EntryStatus.UNCHANGED, 0),
            skipped=counts.get(EntryStatus.SKIPPED, 0),
            failed=counts.get(EntryStatus.FAILED, 0),
            deleted=counts.get(EntryStatus.DELETED, 0),
            errors=error_summary_to_json(errors),
        )
        return job_from_row(row) if row else None

    async def release_leases(self, owners: str) -> str:
        """Hands back the chunks of workers whose names start with `owners` (a replica
        shutting down; they rolled back, so the attempt does not count)."""
        return await CHUNK_QUERIES["release_leases"].execute(self._pool, owners=owners)

    # Retention

    async def remove_expired_entries(self, seconds: float, limit: int) -> list[uuid.UUID]:
        """Removes the entries and chunks of up to `limit` jobs that ended more than
        `seconds` ago (the jobs stay, marked); their ids."""
        rows = await JOB_QUERIES["remove_expired_entries"].fetch(
            self._pool, seconds=seconds, limit=limit
        )
        return [r["id"] for r in rows]


def job_from_row(row: Any) -> Job:
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
            JobError(kind_named(row["error_kind"]), row["error_reason"], row["error_message"])
            if row["error_kind"]
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
        # A webhook's copy of a job from before migration 0011 has no summary.
        error_summary=error_summary_from_json(row["error_summary"] or []),
        retry_of=row["retry_of"],
        revert_of=row["revert_of"],
        reverted_by=row["reverted_by"],
        revertible=row["revertible"],
    )


def error_summary_from_json(stored: list[dict[str, Any]]) -> tuple[ErrorCount, ...]:
    """A job's error summary as stored (a jsonb list of {code, field, count})."""
    return tuple(ErrorCount(e["code"], e["field"], e["count"]) for e in stored)


def error_summary_to_json(summary: Iterable[ErrorCount]) -> list[dict[str, Any]]:
    """Error counts as the job's jsonb stores them (add_counts and record_file merge)."""
    return [{"code": e.code, "field": e.field, "count": e.count} for e in summary]


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
