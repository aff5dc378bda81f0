"""RevertJob: a job of its own that undoes a finished job's writes, row by row, through the
same chunks and workers as an import (store/targets.revert_plan says what a row's revert
does)."""

from __future__ import annotations

import uuid

import asyncpg

from importd_server.engine.admission import Admission
from importd_server.errors import AlreadyExists, FailedPrecondition, NotFound
from importd_server.model import Job
from importd_server.store.entries import EntryStore
from importd_server.store.jobs import JobStore
from importd_server.store.pool import Connection


class Reverter:
    """Creates revert jobs, refusing what cannot be reverted."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        jobs: JobStore,
        entries: EntryStore,
        admission: Admission,
        chunk_rows: int,
    ) -> None:
        self._pool = pool
        self._jobs = jobs
        self._entries = entries
        self._admission = admission
        self._chunk_rows = chunk_rows

    async def revert(self, job: Job, request_id: str | None) -> Job:
        """A QUEUED revert of the caller's ended `job`, its rows staged and chunked in one
        transaction (or the revert a retry with the same request_id made before)."""
        digest = f"revert {job.id}"
        if request_id is not None:
            found = await self._jobs.find_by_request_id(job.tenant, request_id)
            if found is not None:
                return _same_request(found, request_id, digest)
        revert_id = uuid.uuid4()
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                original = await self._jobs.lock_job(connection, job.id, job.tenant)
                if original is None:
                    raise NotFound(f"job {job.id} not found", metadata={"id": str(job.id)})
                refusal = await self._refusal(connection, original)
                if refusal is not None:
                    raise refusal
                await self._jobs.insert_revert(
                    connection, original, revert_id, request_id, digest, self._chunk_rows
                )
                rows = await self._entries.copy_rows_to_revert(connection, original, revert_id)
                await self._jobs.record_revert_rows(connection, revert_id, rows, self._chunk_rows)
                await self._admission.admit(connection, job.tenant)
                await self._jobs.notify(connection, revert_id)
                await self._jobs.notify(connection, job.id)
        except asyncpg.UniqueViolationError:
            # The same request_id raced us and committed first.
            found = await self._jobs.find_by_request_id(job.tenant, request_id or "")
            if found is None:
                raise
            return _same_request(found, request_id or "", digest)
        revert = await self._jobs.get_job(revert_id, job.tenant)
        assert revert is not None
        return revert

    async def _refusal(self, connection: Connection, job: Job) -> FailedPrecondition | None:
        """Why `job` cannot be reverted now, or None."""
        metadata = {"id": str(job.id)}
        if job.revert_of is not None:
            return FailedPrecondition(
                f"job {job.id} is itself a revert (of job {job.revert_of}); import the"
                " original file again instead",
                reason="JOB_IS_A_REVERT",
                metadata={**metadata, "revert_of": str(job.revert_of)},
            )
        if not job.status.is_terminal:
            return FailedPrecondition(
                f"job {job.id} is {job.status.value}; only a job that has ended can be"
                " reverted (cancel it first)",
                reason="JOB_NOT_ENDED",
                metadata={**metadata, "status": job.status.value},
            )
        if job.dry_run:
            return FailedPrecondition(
                f"job {job.id} is a dry run: it wrote nothing to revert",
                reason="DRY_RUN_NOT_REVERTIBLE",
                metadata=metadata,
            )
        if not job.revertible:
            return FailedPrecondition(
                f"job {job.id} did not record the values its writes replaced (started with"
                " revertible false, or before reverts existed), so it cannot be reverted",
                reason="NOT_REVERTIBLE",
                metadata=metadata,
            )
        if job.entries_removed_time is not None:
            return FailedPrecondition(
                f"job {job.id}'s rows were removed by retention, so it can no longer be reverted",
                reason="ENTRIES_EXPIRED",
                metadata=metadata,
            )
        current = await self._jobs.current_revert(connection, job.id)
        if current is not None:
            return FailedPrecondition(
                f"job {job.id} is already reverted by job {current.id} ({current.status.value})",
                reason="ALREADY_REVERTED",
                metadata={**metadata, "revert_job_id": str(current.id)},
            )
        return None


def _same_request(found: tuple[Job, str], request_id: str, digest: str) -> Job:
    """The job an earlier call with this request_id made, if it was the same revert."""
    job, found_digest = found
    if found_digest != digest:
        raise AlreadyExists(
            f"request_id {request_id!r} was used for another request (job {job.id})",
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": request_id, "job_id": str(job.id)},
        )
    return job
