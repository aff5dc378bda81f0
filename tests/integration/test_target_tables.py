"""A target table that exists already must fit its import type; its key's unique index
must be checked at once and over every row (ON CONFLICT and insert_new rely on it)."""

from __future__ import annotations

import asyncpg
import pytest

from importd_server.engine.import_types import parse_import_type
from importd_server.store.targets import TargetTableError, ensure_target_table

PARTS = parse_import_type(
    {
        "name": "parts",
        "table": "probe_parts",
        "key": ["sku"],
        "modes": ["INSERT", "UPSERT"],
        "columns": [
            {"name": "sku", "type": "string", "required": True},
            {"name": "label", "type": "string"},
        ],
    }
)


@pytest.mark.parametrize(
    ("key", "fits"),
    [
        ("PRIMARY KEY (sku)", True),
        ("UNIQUE (sku)", True),
        ("PRIMARY KEY (sku) DEFERRABLE INITIALLY DEFERRED", False),
        ("UNIQUE (sku) DEFERRABLE", False),
        (None, False),  # only a partial unique index
    ],
    ids=["primary-key", "unique", "deferred", "deferrable", "partial"],
)
async def test_the_keys_unique_index_must_be_immediate_and_whole(
    db: asyncpg.Connection, key: str | None, fits: bool
) -> None:
    columns = "sku text NOT NULL, label text" + (f", {key}" if key else "")
    await db.execute(f"CREATE TABLE probe_parts ({columns})")
    try:
        if key is None:
            await db.execute(
                "CREATE UNIQUE INDEX probe_parts_partial ON probe_parts (sku) WHERE label <> ''"
            )
        if fits:
            await ensure_target_table(db, PARTS)
        else:
            with pytest.raises(TargetTableError, match=r"not deferrable.*not partial"):
                await ensure_target_table(db, PARTS)
    finally:
        await db.execute("DROP TABLE probe_parts")
