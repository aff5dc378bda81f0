"""A job's counts by entry status: once the job has ended, every row has exactly one status
and the counts add up to its rows (NOT_PROCESSED takes what the job never reached)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from importd_server.errors import FailedPrecondition
from importd_server.model import (
    LIVE_STATUSES,
    Counts,
    EntryStatus,
    FileFormat,
    ImportMode,
    Job,
    JobError,
    JobStatus,
)

NOW = datetime(2026, 11, 27, tzinfo=UTC)
OUTCOMES = ("created", "updated", "unchanged", "skipped", "failed", "deleted")


def job(status: JobStatus, total: int, counts: Counts, error: JobError | None = None) -> Job:
    return Job(
        id=uuid.UUID(int=1),
        tenant="default",
        import_type="contacts",
        mode=ImportMode.UPSERT,
        format=FileFormat.CSV,
        status=status,
        stage=None,
        file_name="x.csv",
        file_size_bytes=0,
        sha256="",
        total_rows=total,
        counts=counts,
        rows_per_second=0.0,
        error=error,
        dry_run=False,
        all_or_nothing=False,
        max_errors=None,
        labels={},
        request_id=None,
        create_time=NOW,
        start_time=None,
        end_time=None,
        update_time=NOW,
    )


@st.composite
def counted_rows(draw: st.DrawFn) -> tuple[int, Counts]:
    """A number of rows and counts of outcomes for at most that many of them."""
    outcomes = {name: draw(st.integers(0, 10**6)) for name in OUTCOMES}
    decided = sum(outcomes.values())
    total = decided + draw(st.integers(0, 10**6))
    return total, Counts(processed=decided, **outcomes)


@given(counted_rows(), st.sampled_from([s for s in JobStatus if s.is_terminal]))
def test_an_ended_jobs_statuses_add_up_to_its_rows(
    rows: tuple[int, Counts], status: JobStatus
) -> None:
    total, counts = rows
    ended = job(status, total, counts)
    by_status = {s: ended.count_entries([s]) for s in EntryStatus}
    assert sum(by_status.values()) == total == ended.count_entries([])
    assert by_status[EntryStatus.PENDING] == 0
    assert by_status[EntryStatus.NOT_PROCESSED] == ended.not_processed_count
    assert ended.not_processed_count == total - counts.processed


@given(counted_rows(), st.sampled_from(LIVE_STATUSES))
def test_a_live_jobs_rows_not_yet_decided_are_pending(
    rows: tuple[int, Counts], status: JobStatus
) -> None:
    total, counts = rows
    live = job(status, total, counts)
    assert live.not_processed_count == live.count_entries([EntryStatus.NOT_PROCESSED]) == 0
    assert live.count_entries([EntryStatus.PENDING]) == total - counts.processed
    assert sum(live.count_entries([s]) for s in EntryStatus) == total


def test_the_note_of_a_row_not_processed_says_how_its_job_ended() -> None:
    counts = Counts()
    assert job(JobStatus.CANCELLED, 3, counts).not_processed_note == (
        "not processed: the job was cancelled"
    )
    error = JobError.of(FailedPrecondition("4 rows failed", reason="MAX_ERRORS_EXCEEDED"))
    assert job(JobStatus.FAILED, 3, counts, error).not_processed_note == (
        "not processed: the job failed: MAX_ERRORS_EXCEEDED: 4 rows failed"
    )
