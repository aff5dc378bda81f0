"""RevertJob: a job of its own that undoes a finished job's writes, row by row, through the
same chunks and workers as an import (store/targets.revert_plan says what a row's revert
does)."""

from __future__ import annotations

import uuid

import asyncpg

from importd_server.engine.admission import Admission
from importd_server.engine.staging import same_request
from importd_server.errors import FailedPrecondition, NotFound
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
                return same_request(*found, request_id, digest)
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
            return same_request(*found, request_id or "", digest)
        revert = await self._jobs.get_job(revert_id, job.tenant)
        assert revert is not None
        return revert

    async def _refusal(self, connection: Connection, job: Job) -> FailedPrecondition | None:
        """Why `job` cannot be reverted now, or None."""
        metadata = {"id": str(job.id)}
        unended = not_ended_or_a_revert(job, "reverted", "import the original file again")
        if unended is not None:
            return unended
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


def not_ended_or_a_revert(job: Job, verb: str, instead: str) -> FailedPrecondition | None:
    """Why `job` cannot be `verb` ("retried", "reverted"), if it is a revert (its rows are
    the original's: running them again would undo the revert; do `instead`) or has not
    ended (its rows' outcomes are not known yet); else None."""
    if job.revert_of is not None:
        return FailedPrecondition(
            f"job {job.id} is a revert (of job {job.revert_of}) and cannot be {verb};"
            f" {instead} instead",
            reason="JOB_IS_A_REVERT",
            metadata={"id": str(job.id), "revert_of": str(job.revert_of)},
        )
    if not job.status.is_terminal:
        return FailedPrecondition(
            f"job {job.id} has not ended ({job.status.value}); only an ended job can be {verb}",
            reason="JOB_NOT_ENDED",
            metadata={"id": str(job.id), "status": job.status.value},
        )
    return None
