"""Processing a chunk: validate its rows, apply the valid ones to the target set-wise, record
every row's outcome and the job's counts, and finish the job after its last chunk, all in ONE
transaction. A crash anywhere rolls the whole chunk back, so it runs again, exactly once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from importd_server.engine.import_types import ImportType
from importd_server.engine.parsing import FileColumns
from importd_server.engine.validation import RowChecker
from importd_server.model import EntryStatus, ImportMode, RowError
from importd_server.store.entries import errors_to_json
from importd_server.store.jobs import notify_progress
from importd_server.store.pool import Connection
from importd_server.store.sql import CHUNK_QUERIES, ENTRY_QUERIES, JOB_QUERIES
from importd_server.store.targets import ApplyPlan, apply_plan, quote

log = structlog.get_logger(__name__)

# Refusals of one row's values; anything else (lost connection, deadlock) fails the chunk,
# which is then retried.
REFUSED_BY_DATABASE = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


@dataclass(frozen=True)
class Claim:
    """A chunk a worker has leased."""

    job_id: uuid.UUID
    chunk_number: int
    first_row: int
    last_row: int
    attempts: int


@dataclass(frozen=True)
class ChunkOutcome:
    """What a processed chunk did: rows by outcome (CREATED, FAILED, ...)."""

    import_type: str
    counts: dict[str, int]


@dataclass
class _Outcomes:
    """Row outcomes gathered for one batch, written with one statement."""

    row_numbers: list[int]
    statuses: list[str]
    notes: list[str | None]
    errors: list[str | None]

    @classmethod
    def empty(cls) -> _Outcomes:
        return cls([], [], [], [])

    def add(
        self, row_number: int, status: str, note: str | None, errors: str | None = None
    ) -> None:
        self.row_numbers.append(row_number)
        self.statuses.append(status)
        self.notes.append(note)
        self.errors.append(errors)

    def fail(self, row_number: int, errors: Sequence[RowError]) -> None:
        """Records a FAILED row with its errors."""
        self.add(row_number, EntryStatus.FAILED, None, json.dumps(errors_to_json(errors)))


async def fail_if_too_many_errors(
    connection: Connection, job_id: uuid.UUID, failed: int, max_errors: int | None
) -> bool:
    """Fails the job when more rows failed than max_errors allows; returns whether it did."""
    if max_errors is None or failed <= max_errors:
        return False
    await connection.execute(
        JOB_QUERIES["fail_job"],
        job_id,
        "FAILED_PRECONDITION",
        "MAX_ERRORS_EXCEEDED",
        f"{failed} rows failed, more than max_errors ({max_errors})",
    )
    return True


@dataclass
class _Work:
    """One chunk in progress: where it runs, how its rows are checked and applied, and the
    counts of its outcomes so far."""

    connection: Connection
    claim: Claim
    checker: RowChecker
    plan: ApplyPlan
    tenant: tuple[str, ...]  # (the job's tenant,) for tenant-scoped targets, else ()
    dry_run: bool
    counts: Counter[str] = field(default_factory=Counter)


class _JobNotRunning(Exception):
    """The job was cancelled or failed while the chunk ran: roll the chunk back."""


class ChunkProcessor:
    """Processes claimed chunks against the import types it knows."""

    def __init__(
        self,
        import_types: dict[str, ImportType],
        lease_seconds: float,
        batch_rows: int = 5000,
    ) -> None:
        self._import_types = import_types
        self._lease_seconds = lease_seconds
        self._batch_rows = batch_rows

    async def process(
        self, connection: Connection, claim: Claim, owner: str
    ) -> ChunkOutcome | None:
        """Processes the chunk if `owner` still holds it; returns its outcome once committed,
        or None if there was nothing (left) to do."""
        try:
            async with connection.transaction():
                return await self._process(connection, claim, owner)
        except _JobNotRunning:
            return None

    async def _process(
        self, connection: Connection, claim: Claim, owner: str
    ) -> ChunkOutcome | None:
        locked = await connection.fetchrow(
            CHUNK_QUERIES["lock_claimed_chunk"], claim.job_id, claim.chunk_number, owner
        )
        if locked is None:
            return None  # done meanwhile, or taken over after our lease expired
        job = await connection.fetchrow("SELECT * FROM import_jobs WHERE id = $1", claim.job_id)
        if job is None or job["status"] not in ("QUEUED", "RUNNING"):
            return None
        import_type = self._import_types[job["import_type"]]
        mode = ImportMode(job["mode"])
        columns = FileColumns.of(job["columns"], import_type)
        checker = RowChecker(import_type, columns.positions, mode)
        work = _Work(
            connection=connection,
            claim=claim,
            checker=checker,
            plan=apply_plan(import_type, checker.columns, mode, frozenset(columns.positions)),
            tenant=(job["tenant"],) if import_type.tenant_column else (),
            dry_run=job["dry_run"],
        )
        await connection.execute(work.plan.create_stage)
        if job["all_or_nothing"]:
            await self._all_or_nothing(work, already_failed=job["failed_count"] > 0)
        else:
            await self._batch(work, claim.first_row, claim.last_row, apply=True)

        counts = work.counts
        await connection.execute(CHUNK_QUERIES["complete_chunk"], claim.job_id, claim.chunk_number)
        updated = await connection.fetchrow(
            JOB_QUERIES["add_counts"],
            claim.job_id,
            sum(counts.values()),
            counts[EntryStatus.CREATED],
            counts[EntryStatus.UPDATED],
            counts[EntryStatus.UNCHANGED],
            counts[EntryStatus.SKIPPED],
            counts[EntryStatus.FAILED],
            counts[EntryStatus.DELETED],
        )
        if updated is None:
            raise _JobNotRunning
        if not await fail_if_too_many_errors(
            connection, claim.job_id, updated["failed_count"], updated["max_errors"]
        ):
            await connection.execute(JOB_QUERIES["finish_job_if_done"], claim.job_id)
        await notify_progress(connection, claim.job_id)
        return ChunkOutcome(import_type.name, dict(counts))

    async def _all_or_nothing(self, work: _Work, *, already_failed: bool) -> None:
        # Pass 1 validates every row and records the failures; pass 2 applies only if there
        # were none. Memory stays at one batch; the whole job is one chunk, one transaction.
        claim = work.claim
        for first, last in self._batches(claim):
            await self._batch(work, first, last, apply=False)
        if work.counts[EntryStatus.FAILED] or already_failed:
            skipped = await work.connection.fetchval(
                ENTRY_QUERIES["skip_pending_rows"], claim.job_id, claim.first_row, claim.last_row
            )
            work.counts[EntryStatus.SKIPPED] += skipped
            return
        for first, last in self._batches(claim):
            await self._batch(work, first, last, apply=True)

    async def _apply(self, work: _Work, valid: list[tuple[Any, ...]], outcomes: _Outcomes) -> None:
        """Applies the valid rows set-wise. If the database refuses a value that passed
        validation (a constraint importd does not know, such as a CHECK added to the target
        table), each row is applied alone instead, and the refused ones are FAILED with the
        database's reason: one bad row never fails the chunk, let alone the job."""
        try:
            await _apply_rows(work, valid, outcomes)
            return
        except REFUSED_BY_DATABASE:
            pass
        for row in valid:
            try:
                await _apply_rows(work, [row], outcomes)
            except REFUSED_BY_DATABASE as refusal:
                problem = RowError("REJECTED_BY_DATABASE", "", "", str(refusal).split("\n")[0])
                outcomes.fail(row[0], [problem])

    def _batches(self, claim: Claim) -> list[tuple[int, int]]:
        return [
            (first, min(first + self._batch_rows - 1, claim.last_row))
            for first in range(claim.first_row, claim.last_row + 1, self._batch_rows)
        ]

    async def _batch(self, work: _Work, first: int, last: int, *, apply: bool) -> None:
        """Validates rows first..last; records failures; applies the valid rows if `apply`."""
        connection, claim = work.connection, work.claim
        await connection.execute(
            CHUNK_QUERIES["extend_lease"], claim.job_id, claim.chunk_number, self._lease_seconds
        )
        rows = await connection.fetch(ENTRY_QUERIES["pending_entries"], claim.job_id, first, last)
        if not rows:
            return
        checked = await asyncio.to_thread(_check_rows, work.checker, rows)
        outcomes = _Outcomes.empty()
        valid: list[tuple[Any, ...]] = []
        for row_number, result in checked:
            if result.values is None:
                outcomes.fail(row_number, result.errors)
            else:
                valid.append((row_number, *work.tenant, *result.values))
        if apply and valid:
            await self._apply(work, valid, outcomes)
        if outcomes.row_numbers:
            await connection.execute(
                ENTRY_QUERIES["record_outcomes"],
                claim.job_id,
                outcomes.row_numbers,
                outcomes.statuses,
                outcomes.notes,
                outcomes.errors,
            )
            work.counts.update(outcomes.statuses)


async def _stage(work: _Work, valid: list[tuple[Any, ...]]) -> None:
    """Puts the rows, typed, into the (emptied) stage table."""
    plan = work.plan
    await work.connection.execute(f"TRUNCATE {quote(plan.stage_table)}")
    await work.connection.copy_records_to_table(
        plan.stage_table, records=valid, columns=plan.columns
    )


async def _apply_rows(work: _Work, valid: list[tuple[Any, ...]], outcomes: _Outcomes) -> None:
    """Applies the rows in a savepoint: set-wise, recording each verdict in its entry; or,
    for a dry run, keeping the verdicts and rolling the writes back."""
    connection, plan = work.connection, work.plan
    savepoint = connection.transaction()
    await savepoint.start()
    try:
        await _stage(work, valid)
        if plan.lock_targets is not None:
            await connection.execute(plan.lock_targets)
        if work.dry_run:
            verdicts = await connection.fetch(plan.verdicts)
            await savepoint.rollback()
            for row in verdicts:
                outcomes.add(row["row_number"], row["status"], row["note"])
            return
        recorded = await connection.fetch(plan.apply_and_record, work.claim.job_id)
    except BaseException:
        await savepoint.rollback()
        raise
    await savepoint.commit()
    work.counts.update({row["status"]: row["n"] for row in recorded})


def _check_rows(checker: RowChecker, rows: Sequence[asyncpg.Record]) -> list[tuple[int, Any]]:
    return [(row["row_number"], checker.check(row["raw"])) for row in rows]
