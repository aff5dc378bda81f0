"""EntryStore: the one place that reads and writes import_entries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict

import asyncpg

from importd_server.model import Entry, EntryPage, EntryStatus, RowError
from importd_server.store.pool import Connection
from importd_server.store.sql import ENTRY_QUERIES

ENTRY_COLUMNS = ("job_id", "row_number", "line_number", "status", "key", "raw", "errors")

# One entry as COPY takes it, in ENTRY_COLUMNS order.
EntryRecord = tuple[uuid.UUID, int, int, str, str | None, list[str], list[dict[str, str]] | None]


def errors_to_json(errors: Sequence[RowError]) -> list[dict[str, str]]:
    """Row errors as stored in the entries' jsonb column."""
    return [asdict(e) for e in errors]


async def copy_entries(connection: Connection, records: Sequence[EntryRecord]) -> None:
    """Stores new entries with COPY."""
    await connection.copy_records_to_table("import_entries", records=records, columns=ENTRY_COLUMNS)


class EntryStore:
    """Reads entries through a pool it is given."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list_entries(
        self,
        job_id: uuid.UUID,
        columns: Sequence[str],
        statuses: Sequence[EntryStatus],
        page_size: int,
        after_row: int = 0,
        offset: int = 0,
        error_code: str | None = None,
    ) -> EntryPage:
        """One page of a job's entries in row order, with the count of all that match
        (with an error of `error_code`, when given)."""
        wanted = [s.value for s in statuses]
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(
                ENTRY_QUERIES["list_entries"],
                job_id,
                wanted,
                after_row,
                offset,
                page_size + 1,
                error_code,
            )
            total = await connection.fetchval(
                ENTRY_QUERIES["count_entries"], job_id, wanted, error_code
            )
        entries = tuple(entry_from_row(r, columns) for r in rows[:page_size])
        next_after = entries[-1].row_number if len(rows) > page_size else None
        return EntryPage(entries, next_after, total)

    async def iter_entries(
        self,
        job_id: uuid.UUID,
        columns: Sequence[str],
        statuses: Sequence[EntryStatus],
        batch_size: int = 1000,
    ) -> AsyncIterator[Entry]:
        """Every matching entry in row order, read in keyset batches."""
        wanted = [s.value for s in statuses]
        after = 0
        while True:
            rows = await self._pool.fetch(
                ENTRY_QUERIES["list_entries"], job_id, wanted, after, 0, batch_size, None
            )
            for row in rows:
                yield entry_from_row(row, columns)
            if len(rows) < batch_size:
                return
            after = rows[-1]["row_number"]


def entry_from_row(row: asyncpg.Record, columns: Sequence[str]) -> Entry:
    """An Entry from an import_entries row of a file with these columns."""
    values: list[str] = row["raw"]
    raw = dict(zip(columns, values, strict=False))
    # Fields beyond the header (a row with too many) are named by their position.
    raw.update({f"#{i + 1}": v for i, v in enumerate(values) if i >= len(columns)})
    return Entry(
        row_number=row["row_number"],
        line_number=row["line_number"],
        status=EntryStatus(row["status"]),
        key=row["key"],
        raw=raw,
        errors=tuple(RowError(**e) for e in row["errors"] or ()),
        note=row["note"],
        process_time=row["process_time"],
    )
