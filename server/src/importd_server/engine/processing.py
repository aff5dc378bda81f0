"""Processing a chunk: apply its pending rows (validated at staging) to the target with ONE
set-based statement, record its rows' outcomes and the job's counts, and finish the job after
its last chunk, all in ONE transaction. A crash anywhere rolls the whole chunk back, so it
runs again, exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from importd_server.engine.parsing import FileColumns
from importd_server.engine.validation import RowChecker
from importd_server.errors import FailedPrecondition
from importd_server.model import (
    Claim,
    EntryStatus,
    ErrorCount,
    ImportType,
    RowError,
    ranked_errors,
)
from importd_server.store.entries import EntryStore
from importd_server.store.jobs import JobStore
from importd_server.store.pool import Connection
from importd_server.store.targets import (
    NOT_APPLIED,
    OUTCOMES,
    ApplyPlan,
    SourceColumn,
    apply_plan,
    revert_plan,
)

log = structlog.get_logger(__name__)

# Refusals of one row's values; anything else (lost connection, deadlock) fails the chunk,
# which is then retried.
REFUSED_BY_DATABASE = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
# Rows per statement: bounds each statement's memory and hash tables, however big the chunk
# (an all-or-nothing job is one chunk).
BATCH_ROWS = 5000
# How many jobs ChunkProcessor remembers as looking their keys up (a hint: a job forgotten
# tries ApplyPlan.insert_new once more).
LOOKING_UP_JOBS = 1000


@dataclass(frozen=True)
class ChunkOutcome:
    """What a processed chunk did: rows by outcome (CREATED, FAILED, ...)."""

    import_type: str
    counts: dict[str, int]


def too_many_errors(failed: int, max_errors: int | None) -> FailedPrecondition | None:
    """The job's failure when more rows failed than max_errors allows, else None."""
    if max_errors is None or failed <= max_errors:
        return None
    return FailedPrecondition(
        f"{failed} rows failed, more than max_errors ({max_errors})",
        reason="MAX_ERRORS_EXCEEDED",
    )


@dataclass(frozen=True)
class _Work:
    """One chunk in progress: where it runs, its plan, and the statement's parameters."""

    connection: Connection
    claim: Claim
    plan: ApplyPlan
    tenant: str | None  # the job's tenant, for tenant-scoped targets
    dry_run: bool
    all_or_nothing: bool
    original: dict[str, Any]  # a revert's :original_id and :original_chunk_rows

    def rows(self, first: int, last: int) -> dict[str, Any]:
        """The parameters of the plan's `lock_targets` and `insert_new` for rows
        first..last."""
        tenant = {} if self.tenant is None else {"tenant": self.tenant}
        return {"job_id": self.claim.job_id, "first_row": first, "last_row": last, **tenant}

    def apply_rows(self, first: int, last: int) -> dict[str, Any]:
        """The parameters of the plan's apply statement for rows first..last (a revert's
        also name the original job)."""
        return {**self.rows(first, last), **self.original}


@dataclass
class _Applied:
    """What applying a chunk did: the outcome string, and the rows that failed or were
    skipped besides."""

    outcomes: str
    refused: dict[int, str]  # row number -> the database's reason
    skipped: int = 0


class _JobNotRunning(Exception):
    """The job was cancelled or failed while the chunk ran: roll the chunk back."""


class ChunkProcessor:
    """Processes claimed chunks against the import types it knows."""

    def __init__(
        self,
        import_types: dict[str, ImportType],
        jobs: JobStore,
        entries: EntryStore,
        lease_seconds: float,
    ) -> None:
        self._import_types = import_types
        self._jobs = jobs
        self._entries = entries
        self._lease_seconds = lease_seconds
        # The jobs whose batches look their keys up (`apply`), oldest first: their
        # insert_new failed on this replica (a key the target held, another unique index,
        # or a deadlock with another job), and would likely fail again.
        self._looking_up: dict[uuid.UUID, None] = {}

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
        if not await self._jobs.lock_claimed_chunk(connection, claim, owner):
            return None  # done meanwhile, or taken over after our lease expired
        to_process = await self._jobs.job_to_process(connection, claim.job_id)
        if to_process is None:
            return None  # the job ended meanwhile
        job = to_process.job
        import_type = self._import_types[job.import_type].with_header_map(to_process.column_map)
        columns = FileColumns.of(to_process.columns, import_type)
        checker = RowChecker(import_type, columns.positions, job.mode)
        defaults = checker.defaults()
        sources = tuple(
            SourceColumn(c, tuple(columns.positions.get(c.name, ())), defaults.get(c.name))
            for c in checker.columns
        )
        revert = to_process.revert
        work = _Work(
            connection=connection,
            claim=claim,
            plan=(
                revert_plan(import_type, sources)
                if revert
                else apply_plan(import_type, job.mode, sources, job.revertible)
            ),
            tenant=job.tenant if import_type.tenant_column else None,
            dry_run=job.dry_run,
            all_or_nothing=job.all_or_nothing,
            original=(
                {"original_id": revert.original_id, "original_chunk_rows": revert.chunk_rows}
                if revert
                else {}
            ),
        )
        failed_unchecked: dict[int, list[RowError]] = {}
        if not to_process.validated_at_staging:
            failed_unchecked = await self._check_rows_staged_unchecked(work, checker)
        applied = await self._apply(work)

        if work.plan.skip_note is not None and "S" in applied.outcomes:
            await self._entries.skip_rows(
                connection, claim.job_id, claim.first_row, applied.outcomes, work.plan.skip_note
            )
        for code, note in work.plan.skip_codes.items():
            if code in applied.outcomes:
                only = "".join("S" if c == code else NOT_APPLIED for c in applied.outcomes)
                await self._entries.skip_rows(connection, claim.job_id, claim.first_row, only, note)
                applied.outcomes = applied.outcomes.replace(code, "S")
        refused = {
            row: [RowError("REJECTED_BY_DATABASE", "", "", reason)]
            for row, reason in applied.refused.items()
        }
        if refused:
            await self._entries.fail_rows(
                connection, claim.job_id, claim.first_row, claim.last_row, refused
            )
        counts = Counter({status: applied.outcomes.count(c) for c, status in OUTCOMES.items()})
        counts[EntryStatus.FAILED] += len(refused) + len(failed_unchecked)
        counts[EntryStatus.SKIPPED] += applied.skipped
        updated = await self._jobs.complete_chunk(
            connection,
            claim,
            applied.outcomes,
            counts,
            summarize_errors([*refused.values(), *failed_unchecked.values()]),
        )
        if updated is None:
            raise _JobNotRunning
        too_many = too_many_errors(updated.counts.failed, updated.max_errors)
        if too_many is not None:
            await self._jobs.fail_job(connection, claim.job_id, too_many)
        else:
            await self._jobs.finish_if_done(connection, claim.job_id)
        await self._jobs.notify(connection, claim.job_id)
        return ChunkOutcome(import_type.name, {s.value: n for s, n in counts.items() if n})

    async def _apply(self, work: _Work) -> _Applied:
        """Applies the chunk's pending rows set-wise, one statement per batch of at most
        BATCH_ROWS rows, each in a savepoint (rolled back for a dry run, which keeps the
        outcomes). If the database refuses a value that passed validation (a constraint
        importd does not know, such as a CHECK added to the target table), the batch's rows
        are applied one by one instead, and the refused ones are FAILED with the database's
        reason: one bad row never fails the chunk, let alone the job. An all-or-nothing job
        (one chunk) then keeps nothing: its other rows are SKIPPED."""
        connection, claim = work.connection, work.claim
        outcomes: list[str] = []
        refused: dict[int, str] = {}
        everything = connection.transaction()
        await everything.start()
        try:
            for first in range(claim.first_row, claim.last_row + 1, BATCH_ROWS):
                last = min(first + BATCH_ROWS - 1, claim.last_row)
                await self._jobs.extend_lease(connection, claim, self._lease_seconds)
                # After a refusal an all-or-nothing job only looks for further ones.
                keep = not work.dry_run and not (work.all_or_nothing and refused)
                outcomes.append(await self._apply_batch(work, first, last, keep, refused))
        except BaseException:
            await everything.rollback()
            raise
        if work.all_or_nothing and refused:
            await everything.rollback()
            skipped = await self._entries.skip_pending(connection, claim.job_id)
            rows = claim.last_row - claim.first_row + 1
            return _Applied(NOT_APPLIED * rows, refused, skipped - len(refused))
        await everything.commit()
        return _Applied("".join(outcomes), refused)

    async def _apply_batch(
        self, work: _Work, first: int, last: int, keep: bool, refused: dict[int, str]
    ) -> str:
        """The outcomes of rows first..last, applied set-wise, or one by one if the database
        refuses a row (added to `refused`) or the statement deadlocks with another job's;
        `keep`: release the writes, else roll them back."""
        connection, plan = work.connection, work.plan
        job_id = work.claim.job_id
        if plan.insert_new is not None and job_id not in self._looking_up:
            try:
                async with _savepoint(connection, keep=keep):
                    inserted: str = await plan.insert_new.fetchval(
                        connection, **work.rows(first, last)
                    )
                return inserted
            except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
                # A key of the job's is in the target: look each row's up from now on. (Or
                # another job is writing one: inserting every key in key order, this
                # statement can hold a new key another job's `apply` will insert while it
                # waits on a key that `apply` updates, and PostgreSQL cancels one of them.)
                self._looking_up[job_id] = None
                if len(self._looking_up) > LOOKING_UP_JOBS:
                    del self._looking_up[next(iter(self._looking_up))]
            except REFUSED_BY_DATABASE:
                pass  # `apply` meets the refusal too, and finds the row
        if plan.lock_targets is not None:
            await plan.lock_targets.fetchval(connection, **work.rows(first, last))
        try:
            async with _savepoint(connection, keep=keep):
                outcomes: str = await plan.apply.fetchval(
                    connection, **work.apply_rows(first, last)
                )
            return outcomes
        except (*REFUSED_BY_DATABASE, asyncpg.DeadlockDetectedError):
            # Or a deadlock: this statement and another job's each waited on a key the
            # other held, and PostgreSQL cancelled this one, so the other goes on. The rows
            # then go one at a time here too (a deadlock there fails the chunk, which runs
            # again).
            pass
        pending = await self._entries.pending_rows(connection, work.claim.job_id, first, last)
        outcome: dict[int, str] = {}
        for number, _ in pending:
            for attempt in range(2):
                try:
                    async with _savepoint(connection, keep=keep):
                        outcome[number] = await plan.apply.fetchval(
                            connection, **work.apply_rows(number, number)
                        )
                    break
                except asyncpg.UniqueViolationError as refusal:
                    # Another job may have inserted the key since the row looked: look again.
                    if attempt:
                        refused[number] = str(refusal).split("\n")[0]
                except REFUSED_BY_DATABASE as refusal:
                    refused[number] = str(refusal).split("\n")[0]
                    break
        return "".join(outcome.get(n, NOT_APPLIED) for n in range(first, last + 1))

    async def _check_rows_staged_unchecked(
        self, work: _Work, checker: RowChecker
    ) -> dict[int, list[RowError]]:
        """Validates the pending rows of a job staged before validation moved to staging
        (migration 0005), as staging now does: the invalid ones FAILED, the others given
        their clean values (their keys were resolved at staging already). Returns the
        failed rows' errors."""
        connection, claim = work.connection, work.claim
        rows = await self._entries.pending_rows(
            connection, claim.job_id, claim.first_row, claim.last_row
        )
        results = await asyncio.to_thread(lambda: [(n, r, checker.check(r)) for n, r in rows])
        failed = {n: list(c.errors) for n, _, c in results if c.values is None}
        if failed:
            await self._entries.fail_rows(
                connection, claim.job_id, claim.first_row, claim.last_row, failed
            )
        clean = {
            n: cleaned
            for n, raw, c in results
            if c.values is not None and (cleaned := checker.clean_row(raw, c.values))
        }
        if clean:
            await self._entries.set_clean(
                connection, claim.job_id, claim.first_row, claim.last_row, clean
            )
        return failed


def summarize_errors(rows: Iterable[Sequence[RowError]]) -> list[ErrorCount]:
    """The rows' errors by code and column, most frequent first (each error counts once)."""
    return ranked_errors(Counter((e.code, e.field) for errors in rows for e in errors))


@asynccontextmanager
async def _savepoint(connection: Connection, *, keep: bool) -> AsyncIterator[None]:
    """A savepoint, released at the end if `keep` (else rolled back), rolled back on error."""
    savepoint = connection.transaction()
    await savepoint.start()
    try:
        yield
    except BaseException:
        await savepoint.rollback()
        raise
    if keep:
        await savepoint.commit()
    else:
        await savepoint.rollback()
