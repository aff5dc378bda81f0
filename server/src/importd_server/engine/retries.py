"""Retries: a new job over the rows of an ended job that did not go in (RetryJob), or an
upload linked to an ended job (ImportSpec.retry_of).

A retry goes through the very same staging as any upload: RetryJob writes the rows
importd holds as a CSV file (the parent's columns, and `importd_row` first: the parent's
row number) and streams it into the Stager, as a `source_uri` is streamed. So a retry is
validated, de-duplicated, counted and reported exactly like any import. The link column is
an `int` column of the retry's import type (1 to the parent's total_rows), so a bad link is
that row's error; it is no column of the target, which the workers plan from the import
type as declared.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from importd_server.engine.export import ROW_LINK
from importd_server.engine.parsing import ParseOptions
from importd_server.engine.reverts import not_ended_or_a_revert
from importd_server.engine.staging import NewJob
from importd_server.errors import FailedPrecondition, InvalidArgument
from importd_server.model import ColumnSpec, EntryStatus, ImportMode, ImportType, Job
from importd_server.store.entries import ALL_OR_NOTHING_NOTE, EntryStore
from importd_server.store.targets import KEY_EXISTS, KEY_MISSING

# The statuses RetryJob may be asked to retry, and retries when it names none.
RETRYABLE = (EntryStatus.FAILED, EntryStatus.NOT_PROCESSED, EntryStatus.SKIPPED)


def linked_import_type(import_type: ImportType, parent: Job) -> ImportType:
    """The import type of a retry of `parent`: the type, and its rows' link to the parent's
    rows, an optional int column `importd_row` of 1 to the parent's total_rows."""
    link = ColumnSpec(ROW_LINK, "int", min=Decimal(1), max=Decimal(parent.total_rows or 0))
    return replace(import_type, columns=(*import_type.columns, link))


def new_retry_job(
    parent: Job,
    options: dict[str, Any],
    import_type: ImportType,
    mode: ImportMode,
    statuses: Sequence[EntryStatus],
    request_id: str | None,
    limits: tuple[int, int],
    live: bool,
) -> NewJob:
    """RetryJob's new job: the parent's labels and options (column map, webhook, dry run,
    max_errors, all_or_nothing) in `mode`, reading the CSV `retry_file` writes. `limits`
    are the server's (max_rows, max_chars); `live` is the caller's token's."""
    column_map = options.get("column_map", {})
    request = {"retry_of": str(parent.id), "statuses": statuses, "mode": mode}
    max_rows, max_chars = limits
    return NewJob(
        tenant=parent.tenant,
        live=live,
        import_type=linked_import_type(import_type.with_header_map(column_map), parent),
        mode=mode,
        parse=ParseOptions(max_rows=max_rows, max_chars=max_chars),
        file_name=parent.file_name,
        dry_run=parent.dry_run,
        all_or_nothing=parent.all_or_nothing,
        max_errors=parent.max_errors,
        labels=dict(parent.labels),
        request_id=request_id,
        spec_digest=hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest(),
        options={k: options[k] for k in ("column_map", "webhook") if k in options},
        retry_of=parent.id,
    )


def check_parent(parent: Job, import_type: str, field: str) -> None:
    """Refuses an upload's parent (named by the request's `field`) that has not ended, or
    is of another import type."""
    check_ended(parent)
    if parent.import_type != import_type:
        raise InvalidArgument.for_field(
            field,
            f"job {parent.id} imported {parent.import_type}, not {import_type}: a retry"
            " imports the same type",
        )


def check_ended(parent: Job) -> None:
    """Refuses a parent that has not ended, or that is a revert (reverts.not_ended_or_a_revert)."""
    refusal = not_ended_or_a_revert(parent, "retried", "revert the original again")
    if refusal is not None:
        raise refusal


def retried_statuses(statuses: Sequence[EntryStatus]) -> tuple[EntryStatus, ...]:
    """The statuses a RetryJob request asks for (DEFAULT when none); INVALID_ARGUMENT for
    one a retry cannot take."""
    for status in statuses:
        if status not in RETRYABLE:
            allowed = ", ".join(s.value for s in RETRYABLE)
            raise InvalidArgument.for_field(
                "statuses", f"{status.value} rows cannot be retried (allowed: {allowed})"
            )
    return tuple(sorted(set(statuses))) or RETRYABLE


def skip_notes(explicit: bool, mode: ImportMode) -> tuple[str, ...]:
    """The notes of the SKIPPED rows to retry. Never a row superseded by a later row with its
    key (the later row won). By default only skips a retry can change: rows an
    all-or-nothing job did not import, keys that did not exist (they may now), and keys that
    existed unless the retry inserts again. Asked for explicitly, every other skip."""
    notes = [ALL_OR_NOTHING_NOTE, KEY_MISSING]
    if explicit or mode is not ImportMode.INSERT:
        notes.append(KEY_EXISTS)
    return tuple(notes)


async def retry_file(
    entries: EntryStore,
    parent: Job,
    columns: Sequence[str],
    statuses: Sequence[EntryStatus],
    mode: ImportMode,
    explicit: bool,
) -> AsyncIterator[bytes]:
    """The parent's rows to retry as a UTF-8 CSV file: `importd_row` (the parent's row
    number), then the parent's columns (but a link column of its own: a retry of a retry
    links to its own parent). FAILED_PRECONDITION (NOTHING_TO_RETRY) before the first byte
    when no row qualifies, so no job is made. The next batch is read while the caller
    stages this one."""
    own_link = [i for i, name in enumerate(columns) if name.strip().lower() == ROW_LINK]
    header = io.StringIO()
    csv.writer(header, lineterminator="\r\n").writerow(
        [ROW_LINK, *(c for i, c in enumerate(columns) if i not in own_link)]
    )
    batches = entries.rows_to_retry(
        parent,
        failed=EntryStatus.FAILED in statuses,
        not_processed=EntryStatus.NOT_PROCESSED in statuses,
        skip_notes=skip_notes(explicit, mode) if EntryStatus.SKIPPED in statuses else (),
        dropped=own_link,
    )
    reading = asyncio.ensure_future(anext(batches, None))
    try:
        first = await reading
        if first is None:
            wanted = ", ".join(s.value for s in statuses)
            raise FailedPrecondition(
                f"job {parent.id} has no rows to retry ({wanted})",
                reason="NOTHING_TO_RETRY",
                metadata={"id": str(parent.id)},
            )
        lines: str | None = header.getvalue() + first
        while lines is not None:
            reading = asyncio.ensure_future(anext(batches, None))
            yield lines.encode()
            lines = await reading
    finally:
        # Staging ended (early too: an error, a file too large): the read ahead ends first,
        # then the batches.
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await batches.aclose()
