"""CPU cost of shapes of RevertJob's previous values (import_before_images.images).

Per 5,000-row batch of a 200,000-row contacts-like table, each shape's aggregate of the
batch's rows, looked up by key as the chunk statement does; CPU seconds of the PostgreSQL
backend (from /proc, so PostgreSQL must run on this machine), best of three passes.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test uv run python bench/image_shapes.py

Creates (once) and uses the database `bench_image_shapes` next to DATABASE_URL's.
"""

from __future__ import annotations

import asyncio
import os

import asyncpg

ROWS = 200_000
BATCH = 5_000
COLUMNS = ["first_name", "last_name", "phone", "birth_date", "status", "score"]
LOOKUP = """
    FROM b JOIN LATERAL (
        SELECT * FROM c t WHERE t.tenant = 'x' AND t.email = b.email OFFSET 0) t ON true"""
PAIRS = ", ".join(f"'{c}', t.{c}" for c in COLUMNS)
VALUES = ", ".join(f"t.{c}" for c in COLUMNS)
SHAPES = {
    "lookup only (no image)": "count(t.first_name)",
    "object per row, jsonb_object_agg + strip nulls (before)": (
        f"jsonb_strip_nulls(jsonb_object_agg(b.n, jsonb_build_object({PAIRS})))"
    ),
    "array per row, jsonb_object_agg": f"jsonb_object_agg(b.n, jsonb_build_array({VALUES}))",
    "object per row, jsonb_agg": f"jsonb_agg(jsonb_build_object('n', b.n, {PAIRS}))",
    "array per row, jsonb_agg": f"jsonb_agg(jsonb_build_array(b.n, {VALUES}))",
    "array per column, array_agg (now)": (
        "jsonb_build_object('rows', array_agg(b.n), 'columns', jsonb_build_object("
        + ", ".join(f"'{c}', array_agg(t.{c})" for c in COLUMNS)
        + "))"
    ),
    "array per column, jsonb_agg": (
        "jsonb_build_object('rows', jsonb_agg(b.n), 'columns', jsonb_build_object("
        + ", ".join(f"'{c}', jsonb_agg(t.{c})" for c in COLUMNS)
        + "))"
    ),
    "record text per row, string_agg (breaks after ALTER TABLE)": (
        f"string_agg(b.n || ':' || ROW({VALUES})::text, E'\\n')"
    ),
}


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user and system."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> None:
    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    admin = await asyncpg.connect(url)
    if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = 'bench_image_shapes'"):
        await admin.execute("CREATE DATABASE bench_image_shapes")
    await admin.close()
    db = await asyncpg.connect(url.rsplit("/", 1)[0] + "/bench_image_shapes")
    if not await db.fetchval("SELECT to_regclass('c') IS NOT NULL"):
        await db.execute(
            """CREATE TABLE c (tenant text NOT NULL, email text NOT NULL, first_name text,
                   last_name text, phone text, birth_date date, status text, score bigint,
                   PRIMARY KEY (tenant, email))"""
        )
        await db.execute(
            f"""INSERT INTO c SELECT 'x', 'user' || i || '@example.com', 'First' || i,
                   'Last' || i, CASE WHEN i % 3 > 0 THEN '+4930' || i END,
                   date '1950-01-01' + i % 20000, 'active', i % 101
               FROM generate_series(1, {ROWS}) i"""
        )
        await db.execute("VACUUM ANALYZE c")
    pid = await db.fetchval("SELECT pg_backend_pid()")
    for name, aggregate in SHAPES.items():
        passes = []
        for _ in range(3):
            before = cpu_seconds(pid)
            for first in range(1, ROWS + 1, BATCH):
                await db.fetchval(
                    f"""WITH b AS MATERIALIZED (
                            SELECT i AS n, 'user' || i || '@example.com' AS email
                            FROM generate_series({first}, {first + BATCH - 1}) i)
                        SELECT {aggregate} {LOOKUP}"""
                )
            passes.append(cpu_seconds(pid) - before)
        print(f"{min(passes):6.2f} s  {name}", flush=True)
    await db.close()


if __name__ == "__main__":
    asyncio.run(main())
