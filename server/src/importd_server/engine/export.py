"""Exporting entries as CSV: the file's own columns plus importd_row, importd_status and
importd_errors, so a user can fix the rows and import the file again."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence

from importd_server.model import Entry

EXTRA_COLUMNS = ("importd_row", "importd_status", "importd_errors")
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
