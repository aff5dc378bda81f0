"""Domain types of importd: plain frozen dataclasses and enums, free of protobuf."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from importd_server.errors import ImportdError, kind_of


class JobStatus(StrEnum):
    """A job's place in its life."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    PARTIALLY_SUCCEEDED = "PARTIALLY_SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """Whether the job has ended and will never change again."""
        return self not in LIVE_STATUSES


# The statuses of a job that has not ended: the one place that says which (the queries
# take them as a parameter).
LIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class JobStage(StrEnum):
    """Where a running job is inside its run."""

    RECEIVING = "RECEIVING"
    STAGING = "STAGING"
    PROCESSING = "PROCESSING"
    FINALIZING = "FINALIZING"


class ImportMode(StrEnum):
    """How rows are applied to the target table."""

    INSERT = "INSERT"
    UPSERT = "UPSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


class FileFormat(StrEnum):
    """The format of an imported file."""

    CSV = "CSV"
    JSONL = "JSONL"
    XLSX = "XLSX"
    ODS = "ODS"


class EntryStatus(StrEnum):
    """What happened to one row."""

    PENDING = "PENDING"
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    UNCHANGED = "UNCHANGED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    DELETED = "DELETED"
    NOT_PROCESSED = "NOT_PROCESSED"


@dataclass(frozen=True)
class JobError:
    """A job-level failure, such as an unreadable file: an error of errors.py, recorded.

    `kind` is its class (e.g. errors.InvalidArgument; api/status.py maps it to a status
    code); `reason` a stable word for machines (e.g. UNBALANCED_QUOTE); `message` is for
    people.
    """

    kind: type[ImportdError]
    reason: str
    message: str

    @classmethod
    def of(cls, error: ImportdError) -> JobError:
        """The record of an error."""
        return cls(kind_of(error), error.reason, error.message)

    def as_error(self) -> ImportdError:
        """The error again, as api/status.py reports errors."""
        return self.kind(self.message, reason=self.reason)


@dataclass(frozen=True)
class Dialect:
    """How a file was read (engine/shapes.py): its format, and the encoding and delimiter of
    a text file or the sheet of a workbook. `detected` names what importd decided itself
    because the caller left it unset ("format", "encoding", "delimiter", "sheet")."""

    format: FileFormat
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    gzip: bool = False
    detected: tuple[str, ...] = ()


@dataclass(frozen=True)
class Counts:
    """How many rows ended in each outcome."""

    processed: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class ErrorCount:
    """How many errors of one code on one column (empty: a row-level error) a job's rows
    have."""

    code: str
    field: str
    count: int


def ranked_errors(counts: Mapping[tuple[str, str], int]) -> list[ErrorCount]:
    """ErrorCounts of (code, field) counts, most frequent first, then by code and field;
    counts under 1 left out."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [ErrorCount(code, field, n) for (code, field), n in ranked if n > 0]


@dataclass(frozen=True)
class Job:
    """An import job as stored."""

    id: uuid.UUID
    tenant: str
    import_type: str
    mode: ImportMode
    format: FileFormat
    status: JobStatus
    stage: JobStage | None
    file_name: str
    file_size_bytes: int
    sha256: str
    total_rows: int | None
    counts: Counts
    rows_per_second: float
    error: JobError | None
    dry_run: bool
    all_or_nothing: bool
    max_errors: int | None
    labels: Mapping[str, str]
    request_id: str | None
    create_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    update_time: datetime
    live: bool = True
    entries_removed_time: datetime | None = None
    dialect: Dialect | None = None
    received_bytes: int = 0
    staged_rows: int = 0
    # Row errors by code and column, most frequent first (each error of a row counts once).
    error_summary: tuple[ErrorCount, ...] = ()
    retry_of: uuid.UUID | None = None  # the job this one retries
    revert_of: uuid.UUID | None = None  # the job this one reverts
    reverted_by: uuid.UUID | None = None  # the latest job that reverts this one
    revertible: bool = True  # whether its writes recorded what they replaced

    @property
    def progress(self) -> tuple[object, ...]:
        """What a watcher is told about: a new event is due when this changes."""
        return (
            self.status,
            self.stage,
            self.counts,
            self.error_summary,
            self.total_rows,
            self.error,
            self.received_bytes,
            self.staged_rows,
        )

    @property
    def receiving(self) -> bool:
        """Whether the job's file is still being received and staged (no entries yet)."""
        return self.stage in (JobStage.RECEIVING, JobStage.STAGING)

    @property
    def estimated_seconds_left(self) -> float | None:
        """Rows left at the recent rate, or None when unknown (or the job has ended)."""
        if self.status.is_terminal or not self.total_rows or self.rows_per_second <= 0:
            return None
        return max(0.0, (self.total_rows - self.counts.processed) / self.rows_per_second)

    @property
    def not_processed_count(self) -> int:
        """Rows that will never be processed since the job ended first; 0 while it is live.
        Derived, not stored: a cancel writes nothing per row."""
        if not self.status.is_terminal or self.receiving:
            return 0
        c = self.counts
        decided = c.created + c.updated + c.unchanged + c.skipped + c.failed + c.deleted
        return max(0, (self.total_rows or 0) - decided)

    @property
    def not_processed_note(self) -> str:
        """Why the job's NOT_PROCESSED rows were not: how the job ended."""
        if self.status is JobStatus.CANCELLED:
            return "not processed: the job was cancelled"
        if self.error is not None:
            return f"not processed: the job failed: {self.error.reason}: {self.error.message}"
        return f"not processed: the job ended {self.status.value}"

    def count_entries(self, statuses: Collection[EntryStatus]) -> int:
        """How many of the job's entries have one of these statuses (any, when empty): the
        counts change in the same transactions as the entries' outcomes, so they agree."""
        if self.receiving:
            return 0  # staged rows become entries only when staging commits
        counts = self.counts
        ended = self.status.is_terminal
        by_status = {
            EntryStatus.PENDING: 0 if ended else (self.total_rows or 0) - counts.processed,
            EntryStatus.NOT_PROCESSED: self.not_processed_count,
            EntryStatus.CREATED: counts.created,
            EntryStatus.UPDATED: counts.updated,
            EntryStatus.UNCHANGED: counts.unchanged,
            EntryStatus.SKIPPED: counts.skipped,
            EntryStatus.FAILED: counts.failed,
            EntryStatus.DELETED: counts.deleted,
        }
        return sum(by_status[s] for s in set(statuses)) if statuses else self.total_rows or 0

    @property
    def progress_percent(self) -> float:
        """Processed rows as a share of all rows, 0 to 100; 100 once the job has ended."""
        if self.status.is_terminal:
            return 100.0
        if not self.total_rows:
            return 0.0
        return min(100.0, 100.0 * self.counts.processed / self.total_rows)


@dataclass(frozen=True)
class Claim:
    """A chunk of a job a worker has leased: rows first_row..last_row, its attempts so far."""

    job_id: uuid.UUID
    chunk_number: int
    first_row: int
    last_row: int
    attempts: int


@dataclass(frozen=True)
class TimeBound:
    """One end of a time range, and whether the range includes it."""

    time: datetime
    inclusive: bool


@dataclass(frozen=True)
class JobConditions:
    """The conditions of ListJobs' filter (api/filters.py): every one set must hold."""

    labels: Mapping[str, str] = field(default_factory=dict)
    retry_of: uuid.UUID | None = None
    status: JobStatus | None = None
    import_type: str | None = None
    request_id: str | None = None
    created_after: TimeBound | None = None
    created_before: TimeBound | None = None


@dataclass(frozen=True)
class JobFilter:
    """Which jobs ListJobs returns."""

    tenant: str
    statuses: tuple[JobStatus, ...] = ()
    import_type: str | None = None
    include_live: bool = True
    search: str | None = None
    conditions: JobConditions = field(default_factory=JobConditions)


@dataclass(frozen=True)
class WatchFilter:
    """Which of a tenant's jobs WatchJobs reports: each filter set must match the job as it
    is now (labels: every one given, with the same value)."""

    tenant: str
    statuses: tuple[JobStatus, ...] = ()
    import_type: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    include_live: bool = True

    def matches(self, job: Job) -> bool:
        """Whether the job, as it is, is one the watcher asked for."""
        return (
            job.tenant == self.tenant
            and (not self.statuses or job.status in self.statuses)
            and (self.import_type is None or job.import_type == self.import_type)
            and all(job.labels.get(k) == v for k, v in self.labels.items())
            and (self.include_live or not job.live)
        )


@dataclass(frozen=True)
class JobCursor:
    """A position in the newest-first job list: after this job."""

    create_time: datetime
    job_id: uuid.UUID


@dataclass(frozen=True)
class JobPage:
    """One page of jobs, and where the next page starts (None on the last)."""

    jobs: tuple[Job, ...]
    next_cursor: JobCursor | None = field(default=None)


@dataclass(frozen=True)
class RowError:
    """One error of one row: a stable code, the column, the offending value and a message."""

    code: str
    field: str
    value: str
    message: str


@dataclass(frozen=True)
class Entry:
    """The outcome of one row of a job."""

    row_number: int
    line_number: int
    status: EntryStatus
    key: str | None
    raw: Mapping[str, str]
    errors: tuple[RowError, ...]
    note: str | None
    process_time: datetime | None
    job_id: uuid.UUID | None = None  # across retries: the job whose entry this is


@dataclass(frozen=True)
class EntryPage:
    """One page of entries, the row the next page starts after (None on the last), the total."""

    entries: tuple[Entry, ...]
    next_after_row: int | None
    total_count: int


class WebhookEvents(StrEnum):
    """Which of a job's status changes its webhook is told about."""

    TERMINAL = "TERMINAL"
    ALL = "ALL"


class WebhookDeliveryState(StrEnum):
    """Where a webhook delivery is."""

    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class WebhookAttempt:
    """One POST of a webhook delivery: its HTTP status (None when no response came) and
    what went wrong (None on success)."""

    number: int
    start_time: datetime
    latency_seconds: float
    http_status: int | None
    error: str | None


@dataclass(frozen=True)
class WebhookDelivery:
    """One event of a job for its webhook, and the attempts to deliver it."""

    id: uuid.UUID
    job_id: uuid.UUID
    url: str
    job_status: JobStatus
    state: WebhookDeliveryState
    create_time: datetime
    next_attempt_time: datetime
    end_time: datetime | None
    attempts: tuple[WebhookAttempt, ...]


# A hook that checks a whole valid row (column name -> typed value) and returns its errors.
RowValidator = Callable[[Mapping[str, Any]], Iterable[RowError]]


@dataclass(frozen=True)
class ColumnSpec:
    """One column of an import type and its rules."""

    name: str
    type: str
    required: bool = False
    default: str | None = None
    aliases: tuple[str, ...] = ()
    max_length: int | None = None
    pattern: re.Pattern[str] | None = None
    min: Decimal | None = None
    max: Decimal | None = None
    exclusive_bounds: bool = False
    values: tuple[str, ...] = ()

    @property
    def header_names(self) -> tuple[str, ...]:
        """The header names that mean this column, lower-cased."""
        return (self.name, *(a.lower() for a in self.aliases))


@dataclass(frozen=True)
class ImportType:
    """A declared import type."""

    name: str
    description: str
    table: str
    key: tuple[str, ...]
    modes: tuple[ImportMode, ...]
    columns: tuple[ColumnSpec, ...]
    row_validator: RowValidator | None = None
    # A text column of the target table holding the job's tenant, first in the table's key:
    # tenants then never see or overwrite each other's rows. None: one table for all.
    tenant_column: str | None = None
    # A job's column map (ImportSpec.column_map): header names, stripped and lower-cased,
    # and the columns they mean, before the columns' own names and aliases.
    header_map: tuple[tuple[str, str], ...] = ()

    @property
    def table_key(self) -> tuple[str, ...]:
        """The target table's key: the tenant column (if any), then the key columns."""
        return (self.tenant_column, *self.key) if self.tenant_column else self.key

    def column(self, name: str) -> ColumnSpec:
        """The column with this name."""
        return next(c for c in self.columns if c.name == name)

    def resolve_header(self, header_name: str) -> ColumnSpec | None:
        """The column a file's header name means (by the column map, else by name or alias;
        any case, surrounding spaces ignored), or None."""
        wanted = header_name.strip().lower()
        mapped = dict(self.header_map).get(wanted)
        if mapped is not None:
            return self.column(mapped)
        return next((c for c in self.columns if wanted in c.header_names), None)

    def with_header_map(self, column_map: Mapping[str, str]) -> ImportType:
        """This type reading headers through a job's column map (header -> column name)."""
        pairs = tuple(sorted((h.strip().lower(), c) for h, c in column_map.items()))
        return self if pairs == self.header_map else replace(self, header_map=pairs)
