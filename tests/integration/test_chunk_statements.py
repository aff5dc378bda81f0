"""The set-based statements of a chunk and of staging, checked against PostgreSQL."""

from __future__ import annotations

import random
import uuid

import asyncpg
import pyarrow as pa
import pytest

from importd_server.engine.import_types import default_types_dir, load_import_types
from importd_server.engine.parsing import FileColumns
from importd_server.engine.repeats import RepeatedKeys
from importd_server.engine.validation import RowChecker
from importd_server.model import ImportMode
from importd_server.store.entries import EntryStore, NewEntries, array_literals, encode_entries
from importd_server.store.sql import SESSION_QUERIES
from importd_server.store.targets import SourceColumn, apply_plan

CONTACTS = load_import_types(default_types_dir())["contacts"]


@pytest.mark.parametrize("mode", list(ImportMode), ids=[m.value for m in ImportMode])
async def test_chunk_statements_find_rows_by_key_even_when_statistics_say_the_tables_are_empty(
    db: asyncpg.Connection, mode: ImportMode
) -> None:
    # Statistics of an empty target make a sequential scan look free; per row of a chunk,
    # over a target that fills up during the import, it would be quadratic.
    await db.execute("TRUNCATE contacts")
    await db.execute("ANALYZE contacts")
    columns = FileColumns.of(["email", "first_name", "score"], CONTACTS)
    checker = RowChecker(CONTACTS, columns.positions, mode)
    defaults = checker.defaults()
    sources = tuple(
        SourceColumn(c, tuple(columns.positions.get(c.name, ())), defaults.get(c.name))
        for c in checker.columns
    )
    plan = apply_plan(CONTACTS, mode, sources)
    batch = {"job_id": uuid.uuid4(), "first_row": 1, "last_row": 5000, "tenant": "default"}
    async with db.transaction():
        await SESSION_QUERIES["by_key_only"].execute(db)
        for statement in (plan.apply, plan.lock_targets, plan.insert_new):
            if statement is None:
                continue
            rows = await db.fetch(f"EXPLAIN {statement.sql}", *statement.args(batch))
            plan_text = "\n".join(r[0] for r in rows)
            assert "Seq Scan" not in plan_text, plan_text


async def test_de_duplication_from_candidate_rows_resolves_as_reading_every_entry(
    db: asyncpg.Connection,
) -> None:
    # Keys from a small pool: pairs, triples and more; some rows failed, some have no key.
    rng = random.Random(5)
    rows = 3000
    keys = [None if rng.random() < 0.05 else f"k{rng.randrange(2000)}@x.com" for _ in range(rows)]
    failed = [rng.random() < 0.1 for _ in range(rows)]
    job_id = uuid.uuid4()
    entries = NewEntries(
        row_numbers=pa.array(range(1, rows + 1), pa.int64()),
        line_numbers=pa.array(range(2, rows + 2), pa.int64()),
        statuses=pa.array(["FAILED" if f else "PENDING" for f in failed]),
        keys=pa.array(keys, pa.string()),
        raw=array_literals([pa.array([k or "" for k in keys])]),
        clean=pa.nulls(rows, pa.string()),
        errors=pa.array(['[{"code": "INVALID"}]' if f else None for f in failed], pa.string()),
    )
    repeats = RepeatedKeys()
    for first in range(0, rows, 700):  # blocks, each in reverse order
        block = pa.array(range(min(first + 700, rows), first, -1), pa.int64())
        repeats.add(block, pa.array([keys[n - 1] for n in block.to_pylist()], pa.string()))
    candidates = repeats.candidates()
    assert candidates is not None and len(candidates) < rows
    store = EntryStore(None)  # type: ignore[arg-type]  # only methods taking a connection

    async def resolved(rows_read: list[int] | None) -> tuple[object, list[asyncpg.Record]]:
        async with db.transaction():
            await store.copy_new(db, encode_entries(job_id, entries))
            counts = await store.skip_superseded(db, job_id, rows_read)
            stored = await db.fetch(
                "SELECT row_number, status, note, errors FROM import_entries"
                " WHERE job_id = $1 ORDER BY row_number",
                job_id,
            )
            raise _RollBack(counts, stored)

    results = []
    for rows_read in (None, candidates):
        with pytest.raises(_RollBack) as rolled_back:
            await resolved(rows_read)
        results.append(rolled_back.value.args)
    assert results[0] == results[1]
    superseded, stored = results[0]
    assert superseded.skipped > 0
    # The failed rows among the skipped ones, and their errors, which staging takes off its
    # count of errors.
    dropped = [r for r in stored if r["status"] == "SKIPPED" and failed[r["row_number"] - 1]]
    assert superseded.were_failed == len(dropped) > 0
    assert superseded.dropped_errors == {("INVALID", ""): len(dropped)}


class _RollBack(Exception):
    """Ends a transaction whose writes the test only looks at."""
