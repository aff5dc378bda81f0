"""The set-based statements a chunk runs, checked against PostgreSQL's planner."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from importd_server.engine.import_types import default_types_dir, load_import_types
from importd_server.engine.parsing import FileColumns
from importd_server.engine.validation import RowChecker
from importd_server.model import ImportMode
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
        for statement in (plan.apply, plan.lock_targets):
            if statement is None:
                continue
            rows = await db.fetch(f"EXPLAIN {statement.sql}", *statement.args(batch))
            plan_text = "\n".join(r[0] for r in rows)
            assert "Seq Scan" not in plan_text, plan_text
