"""Exporting entries as CSV: the file's own columns plus importd_row, importd_status and
importd_errors, so a user can fix the rows and import the file again."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence

from importd_server.errors import FailedPrecondition
from importd_server.model import Entry, EntryStatus, Job
from importd_server.store.entries import EntryStore
from importd_server.store.jobs import JobStore

# The column linking an exported (or retried) row to its row in the job: its row number.
ROW_LINK = "importd_row"
EXTRA_COLUMNS = (ROW_LINK, "importd_status", "importd_errors")
# ExportEntries' default: the rows to fix and import again.
NOT_IMPORTED = (EntryStatus.FAILED, EntryStatus.SKIPPED, EntryStatus.NOT_PROCESSED)
ALL_ROWS: tuple[EntryStatus, ...] = ()  # every row of the file, in file order
FLUSH_BYTES = 64 * 1024


def describe_errors(entry: Entry) -> str:
    """A row's errors (or its note) in one readable cell."""
    # A row-level error (no field) shows the row as read: the export's columns cannot hold
    # a line that was not a JSON object, or a row with more fields than the header.
    described = [
        f"{e.field}: {e.message} [{e.code}]" if e.field else f"{e.message} [{e.code}]: {e.value}"
        for e in entry.errors
    ]
    if not described and entry.note:
        described.append(entry.note)
    return "; ".join(described)


async def export_csv(columns: Sequence[str], entries: AsyncIterator[Entry]) -> AsyncIterator[bytes]:
    """The entries as UTF-8 CSV, in pieces of about FLUSH_BYTES."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([*columns, *EXTRA_COLUMNS])
    async for entry in entries:
        writer.writerow(
            [
                *(entry.raw.get(c, "") for c in columns),
                entry.row_number,
                entry.status.value,
                describe_errors(entry),
            ]
        )
        if buffer.tell() >= FLUSH_BYTES:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def with_entries(job: Job) -> Job:
    """The job, if its entries are still kept (see the retention setting)."""
    if job.entries_removed_time is not None:
        raise FailedPrecondition(
            f"the entries of job {job.id} were removed at {job.entries_removed_time:%Y-%m-%d}"
            " by the retention setting",
            reason="ENTRIES_EXPIRED",
            metadata={"id": str(job.id)},
        )
    return job


async def export_job(
    job: Job, jobs: JobStore, entries: EntryStore, statuses: Sequence[EntryStatus] = NOT_IMPORTED
) -> AsyncIterator[bytes]:
    """The job's entries in `statuses` (every one with ALL_ROWS) as CSV, streamed in row
    order (ExportEntries, and the download links)."""
    with_entries(job)
    columns = await jobs.file_columns(job.id)
    async for piece in export_csv(columns, entries.iter_entries(job, columns, statuses)):
        yield piece
