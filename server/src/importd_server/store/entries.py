"""EntryStore: the one place that reads and writes import_entries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import asyncpg
import pyarrow as pa
import pyarrow.compute as pc

from importd_server.model import (
    LIVE_STATUSES,
    Entry,
    EntryPage,
    EntryStatus,
    Job,
    RowError,
)
from importd_server.store.pool import Connection
from importd_server.store.sql import ENTRY_QUERIES, SESSION_QUERIES

# The statuses of rows whose chunk is not done.
UNDONE = frozenset({EntryStatus.PENDING, EntryStatus.NOT_PROCESSED})

# Why a pending row of an all-or-nothing job with failed rows was not imported.
ALL_OR_NOTHING_NOTE = "not imported: other rows failed and the job is all_or_nothing"
ENTRY_COLUMNS = ("job_id", "row_number", "line_number", "status", "key", "raw", "clean", "errors")


@dataclass(frozen=True)
class NewEntries:
    """A file's rows as new entries, column by column (Arrow arrays of one length)."""

    row_numbers: pa.Array  # int64
    line_numbers: pa.Array  # int64
    statuses: pa.Array  # PENDING or FAILED
    keys: pa.Array  # the key in its validated form; null when missing or invalid
    raw: pa.Array  # the fields as the file has them, as text[] literals (array_literal)
    clean: pa.Array  # the fields PostgreSQL casts the target row from; null: raw is clean
    errors: pa.Array  # JSON list of the row's errors (errors_to_json); null: none

    def concat(self, other: NewEntries) -> NewEntries:
        """These entries and then the other's."""
        return NewEntries(
            **{
                f.name: pa.concat_arrays(
                    [_array(getattr(self, f.name)), _array(getattr(other, f.name))]
                )
                for f in fields(self)
            }
        )

    @property
    def failed(self) -> int:
        """How many of the rows failed."""
        return int(pc.sum(pc.equal(self.statuses, EntryStatus.FAILED.value)).as_py() or 0)


class Superseded(NamedTuple):
    """What resolving a file's repeated keys did: rows skipped, how many of them had
    failed, and the errors those dropped, by (code, field)."""

    skipped: int
    were_failed: int
    dropped_errors: dict[tuple[str, str], int]


def errors_to_json(errors: Sequence[RowError]) -> list[dict[str, str]]:
    """Row errors as stored in the entries' jsonb column."""
    return [
        {"code": e.code, "field": e.field, "value": e.value, "message": e.message} for e in errors
    ]


def array_literal(fields: Sequence[str]) -> str:
    """A row's fields as a PostgreSQL text[] literal, e.g. {"a","b"}."""
    return "{" + ",".join(f'"{_array_escaped(f)}"' for f in fields) + "}"


def array_literals(fields: Sequence[pa.Array]) -> pa.Array:
    """`array_literal` of each row, from one array per field (at least one)."""
    parts: list[Any] = ['{"']
    for position, values in enumerate(fields):
        if position:
            parts.append('","')
        parts.append(_replace(values, (("\\", "\\\\"), ('"', '\\"'))))
    parts.append('"}')
    return pc.binary_join_element_wise(*parts, "")


def encode_entries(job_id: uuid.UUID, entries: NewEntries) -> pa.Buffer:
    """The entries as COPY input (text format) for ENTRY_COLUMNS."""
    fields = [
        pc.cast(entries.row_numbers, pa.string()),
        pc.cast(entries.line_numbers, pa.string()),
        entries.statuses,
        _copy_text(entries.keys),
        _copy_text(entries.raw),
        _copy_text(entries.clean),
        pc.binary_join_element_wise(_copy_text(entries.errors), "\n", ""),
    ]
    lines = _array(pc.binary_join_element_wise(str(job_id), *fields, "\t"))
    # The lines end with a newline each, so the array's character data is the COPY input.
    offsets = memoryview(lines.buffers()[1]).cast("i")
    start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
    buffer: pa.Buffer = lines.buffers()[2][start:end]
    return buffer


def _array_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _copy_text(values: pa.Array) -> pa.Array:
    """Text escaped for COPY's text format; null as \\N."""
    escaped = _replace(values, (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")))
    return pc.fill_null(escaped, "\\N")


def _replace(values: pa.Array, pairs: Sequence[tuple[str, str]]) -> pa.Array:
    values = _array(values)
    if values.null_count == len(values):
        return values
    # Most values hold none of these characters: one scan of the array's characters tells.
    text = values.buffers()[2].to_pybytes()
    for old, new in pairs:
        if old.encode() in text:
            values = pc.replace_substring(values, old, new)
    return values


class EntryStore:
    """Reads and writes entries: through the pool it is given, or in the caller's
    transaction (methods taking a connection)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # Reading

    async def list_entries(
        self,
        job: Job,
        columns: Sequence[str],
        statuses: Sequence[EntryStatus],
        page_size: int,
        after_row: int = 0,
        offset: int = 0,
        error_code: str | None = None,
    ) -> EntryPage:
        """One page of a job's entries in row order, with the count of all that match
        (with an error of `error_code`, when given)."""
        if error_code is None:
            total = job.count_entries(statuses)
            if total == 0:
                return EntryPage((), None, 0)  # e.g. NOT_PROCESSED of a job that succeeded
        async with self._pool.acquire() as connection:
            rows = await ENTRY_QUERIES["list_entries"].fetch(
                connection,
                **_filter(job, statuses),
                after_row=after_row,
                offset=offset,
                limit=page_size + 1,
                error_code=error_code,
            )
            if error_code is not None:
                total = await ENTRY_QUERIES["count_failed_entries"].fetchval(
                    connection,
                    job_id=job.id,
                    statuses=[s.value for s in statuses],
                    error_code=error_code,
                )
        entries = tuple(entry_from_row(r, columns, job) for r in rows[:page_size])
        next_after = entries[-1].row_number if len(rows) > page_size else None
        return EntryPage(entries, next_after, total)

    async def list_latest_entries(
        self,
        job: Job,
        jobs_of: Callable[[list[uuid.UUID]], Awaitable[list[Job]]],
        columns_of: Callable[[uuid.UUID], Awaitable[Sequence[str]]],
        statuses: Sequence[EntryStatus],
        page_size: int,
        after_row: int = 0,
        offset: int = 0,
    ) -> EntryPage:
        """One page of the job's rows, each with its latest outcome across the job's retries
        (the deciding entry, in its own job's columns: `columns_of`; `jobs_of` reads the
        deciding jobs), and how many match."""
        async with self._pool.acquire() as connection, connection.transaction():
            # The retries' entries by key: never a scan of every job's entries.
            await SESSION_QUERIES["by_key_only"].execute(connection)
            rows = await ENTRY_QUERIES["list_latest_entries"].fetch(
                connection,
                job_id=job.id,
                statuses=[s.value for s in statuses],
                after_row=after_row,
                offset=offset,
                limit=page_size + 1,
                live=[s.value for s in LIVE_STATUSES],
            )
        deciding = {j.id: j for j in await jobs_of(list({r["job_id"] for r in rows} - {job.id}))}
        deciding[job.id] = job
        columns = {j: await columns_of(j) for j in deciding}
        entries = tuple(
            replace(
                entry_from_row(r, columns[r["job_id"]], deciding[r["job_id"]]), job_id=r["job_id"]
            )
            for r in rows[:page_size]
        )
        next_after = entries[-1].row_number if len(rows) > page_size else None
        return EntryPage(entries, next_after, rows[0]["matching"] if rows else 0)

    async def iter_entries(
        self,
        job: Job,
        columns: Sequence[str],
        statuses: Sequence[EntryStatus],
        batch_size: int = 1000,
    ) -> AsyncIterator[Entry]:
        """Every matching entry in row order (every entry when `statuses` is empty), read
        in keyset batches: never the whole job in memory."""
        after = 0
        while True:
            rows = await ENTRY_QUERIES["list_entries"].fetch(
                self._pool,
                **_filter(job, statuses),
                after_row=after,
                offset=0,
                limit=batch_size,
                error_code=None,
            )
            for row in rows:
                yield entry_from_row(row, columns, job)
            if len(rows) < batch_size:
                return
            after = rows[-1]["row_number"]

    async def rows_to_retry(
        self,
        job: Job,
        *,
        failed: bool,
        not_processed: bool,
        skip_notes: Sequence[str],
        dropped: Sequence[int] = (),
        batch_rows: int = 5000,
    ) -> AsyncGenerator[str]:
        """An ended job's rows to retry as CSV lines (the row number, then the row's fields
        but those at the 0-based positions `dropped`), in row order, a range of
        `batch_rows` rows at a time (ranges with none are skipped): FAILED ones (if
        `failed`), NOT_PROCESSED ones (if `not_processed`), and SKIPPED ones whose note is
        one of `skip_notes`. PostgreSQL writes the lines: no row is decoded in Python."""
        for first_row in range(1, (job.total_rows or 0) + 1, batch_rows):
            lines: str | None = await ENTRY_QUERIES["rows_to_retry"].fetchval(
                self._pool,
                job_id=job.id,
                first_row=first_row,
                last_row=first_row + batch_rows - 1,
                failed=failed,
                not_processed=not_processed,
                skip_notes=list(skip_notes),
                dropped=[p + 1 for p in dropped],
                live=[s.value for s in LIVE_STATUSES],
            )
            if lines:
                yield lines

    async def pending_rows(
        self, connection: Connection, job_id: uuid.UUID, first_row: int, last_row: int
    ) -> list[tuple[int, list[str]]]:
        """The (row number, raw fields) of the job's pending rows first_row..last_row."""
        rows = await ENTRY_QUERIES["pending_rows"].fetch(
            connection, job_id=job_id, first_row=first_row, last_row=last_row
        )
        return [(r["row_number"], r["raw"]) for r in rows]

    # Staging a file

    async def copy_new(self, connection: Connection, payload: pa.Buffer) -> None:
        """Stores new entries, encoded by `encode_entries`, with COPY."""
        await connection.copy_to_table(
            "import_entries", source=payload, columns=ENTRY_COLUMNS, format="text"
        )

    async def skip_superseded(
        self, connection: Connection, job_id: uuid.UUID, candidates: Sequence[int] | None
    ) -> Superseded:
        """Resolves the job's repeated keys (the last row wins; the earlier ones are
        SKIPPED, saying which row superseded them). Only the `candidates` (row numbers) are
        read, which must include every row whose key repeats; None: every row is read."""
        await SESSION_QUERIES["by_key_only"].execute(connection)
        row = await ENTRY_QUERIES["skip_superseded_rows"].fetchrow(
            connection, job_id=job_id, candidates=candidates
        )
        dropped = zip(
            row["dropped_codes"], row["dropped_fields"], row["dropped_counts"], strict=True
        )
        dropped_errors = {(code, field): count for code, field, count in dropped}
        return Superseded(row["skipped"], row["were_failed"], dropped_errors)

    async def skip_pending(self, connection: Connection, job_id: uuid.UUID) -> int:
        """Every pending row of an all-or-nothing job that will import nothing becomes
        SKIPPED; how many."""
        skipped: int = await ENTRY_QUERIES["skip_pending_rows"].fetchval(
            connection, job_id=job_id, note=ALL_OR_NOTHING_NOTE
        )
        return skipped

    async def copy_rows_to_revert(
        self, connection: Connection, original: Job, revert_id: uuid.UUID
    ) -> int:
        """The entries of a revert: the original's rows that changed the target, in its
        row order, each with the original's row number as its line_number; how many."""
        await SESSION_QUERIES["by_key_only"].execute(connection)
        copied: int = await ENTRY_QUERIES["copy_rows_to_revert"].fetchval(
            connection, job_id=original.id, revert_id=revert_id
        )
        return copied

    # Processing a chunk

    async def skip_rows(
        self,
        connection: Connection,
        job_id: uuid.UUID,
        first_row: int,
        outcomes: str,
        note: str,
    ) -> None:
        """The rows whose outcome (a character of `outcomes`, from `first_row` on) is
        'S' become SKIPPED with the note."""
        await ENTRY_QUERIES["skip_rows"].execute(
            connection, job_id=job_id, first_row=first_row, outcomes=outcomes, note=note
        )

    async def fail_rows(
        self,
        connection: Connection,
        job_id: uuid.UUID,
        first_row: int,
        last_row: int,
        errors: Mapping[int, Sequence[RowError]],
    ) -> None:
        """Rows of first_row..last_row become FAILED with their errors."""
        await ENTRY_QUERIES["fail_rows"].execute(
            connection,
            job_id=job_id,
            first_row=first_row,
            last_row=last_row,
            errors={row: errors_to_json(e) for row, e in errors.items()},
        )

    async def set_clean(
        self,
        connection: Connection,
        job_id: uuid.UUID,
        first_row: int,
        last_row: int,
        clean: Mapping[int, Sequence[str]],
    ) -> None:
        """Rows of first_row..last_row get their clean fields."""
        await ENTRY_QUERIES["set_clean"].execute(
            connection,
            job_id=job_id,
            first_row=first_row,
            last_row=last_row,
            clean={row: array_literal(fields) for row, fields in clean.items()},
        )


def _filter(job: Job, statuses: Sequence[EntryStatus]) -> dict[str, Any]:
    """The list_entries parameters that say which of the job's entries are wanted."""
    return {
        "job_id": job.id,
        "statuses": [s.value for s in statuses],
        "ended": job.status.is_terminal,
        # Only rows of chunks not done can be pending or not processed.
        "undone_only": bool(statuses) and set(statuses) <= UNDONE,
    }


def entry_from_row(row: asyncpg.Record, columns: Sequence[str], job: Job) -> Entry:
    """An Entry from a list_entries row of the job, whose file has these columns."""
    values: list[str] = row["raw"]
    raw = dict(zip(columns, values, strict=False))
    # Fields beyond the header (a row with too many) are named by their position.
    raw.update({f"#{i + 1}": v for i, v in enumerate(values) if i >= len(columns)})
    status = EntryStatus(row["status"])
    # A row not processed was decided when its job ended, for the reason it ended.
    not_processed = status is EntryStatus.NOT_PROCESSED
    return Entry(
        row_number=row["row_number"],
        line_number=row["line_number"],
        status=status,
        key=row["key"],
        raw=raw,
        errors=tuple(RowError(**e) for e in row["errors"] or ()),
        note=job.not_processed_note if not_processed else row["note"],
        process_time=job.end_time if not_processed else row["process_time"],
    )
