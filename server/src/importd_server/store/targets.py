"""Target tables: created or checked at start-up, and the set-based SQL that applies a chunk.

Every identifier here comes from an import type's TOML (checked against IDENTIFIER when
loaded) and is quoted again; nothing from an imported file ever reaches this SQL as text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

from importd_server.engine.import_types import ColumnSpec, ImportType
from importd_server.model import ImportMode
from importd_server.store.pool import Connection

SQL_TYPES = {
    "string": "text",
    "email": "text",
    "phone": "text",
    "enum": "text",
    "int": "bigint",
    "decimal": "numeric",
    "bool": "boolean",
    "date": "date",
    "timestamp": "timestamp with time zone",
    "uuid": "uuid",
}


class TargetTableError(RuntimeError):
    """An existing target table does not fit its import type."""


def quote(identifier: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + identifier.replace('"', '""') + '"'


async def ensure_target_table(connection: Connection, import_type: ImportType) -> None:
    """Creates the import type's table, or checks that the existing one fits it."""
    declared = [
        f"{quote(c.name)} {SQL_TYPES[c.type]}{' NOT NULL' if c.name in import_type.key else ''}"
        for c in import_type.columns
    ]
    if import_type.tenant_column:
        declared.insert(0, f"{quote(import_type.tenant_column)} text NOT NULL")
    columns = ",\n    ".join(declared)
    key = ", ".join(quote(k) for k in import_type.table_key)
    await connection.execute(
        f"CREATE TABLE IF NOT EXISTS {quote(import_type.table)} (\n    {columns},\n"
        f"    PRIMARY KEY ({key}))"
    )
    rows = await connection.fetch(
        """SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
           FROM pg_attribute a
           WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped""",
        quote(import_type.table),
    )
    existing = {r["name"]: r["type"] for r in rows}
    needed = {c.name: SQL_TYPES[c.type] for c in import_type.columns}
    if import_type.tenant_column:
        needed[import_type.tenant_column] = "text"
    for name, sql_type in needed.items():
        found = existing.get(name)
        if found is None:
            raise TargetTableError(
                f"table {import_type.table} has no column {name} ({sql_type})"
                f" that import type {import_type.name} needs"
            )
        if found != sql_type:
            raise TargetTableError(
                f"column {import_type.table}.{name} is {found},"
                f" import type {import_type.name} needs {sql_type}"
            )
    unique = await connection.fetchval(
        """SELECT count(*) FROM pg_index i
           WHERE i.indrelid = to_regclass($1) AND i.indisunique
             AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                  FROM pg_attribute a
                  WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey))
                 = (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) k)""",
        quote(import_type.table),
        list(import_type.table_key),
    )
    if not unique:
        raise TargetTableError(
            f"table {import_type.table} needs a unique index on"
            f" ({', '.join(import_type.table_key)})"
        )


@dataclass(frozen=True)
class ApplyPlan:
    """The SQL that applies one chunk's valid rows to a target table in one mode.

    `stage_table` is a temporary table (row_number, the tenant when the type is tenant-scoped
    (`tenant_scoped`), then the staged columns). `verdicts` applies
    the staged rows and returns one (row_number, status, note) row for each; `apply_and_record`
    does the same and writes each verdict into the row's entry of job $1, returning
    (status, n) counts.
    """

    stage_table: str
    create_stage: str
    columns: tuple[str, ...]
    tenant_scoped: bool
    # Locks the target rows the stage matches, in key order, before an UPDATE or DELETE
    # (which would lock them in plan order): two jobs touching the same keys then wait for
    # each other instead of deadlocking. INSERTs already go in key order.
    lock_targets: str | None
    verdicts: str
    apply_and_record: str


@cache
def apply_plan(
    import_type: ImportType,
    staged: tuple[ColumnSpec, ...],
    mode: ImportMode,
    file_columns: frozenset[str],
) -> ApplyPlan:
    """The plan for rows of `staged` columns; only columns present in the file are updated."""
    table = quote(import_type.table)
    tenant = [import_type.tenant_column] if import_type.tenant_column else []
    names = [*tenant, *(c.name for c in staged)]
    # One temporary table per column set, reused by every chunk on the connection.
    shape = hashlib.sha256(repr((import_type.table, names)).encode()).hexdigest()[:16]
    stage = quote(f"importd_stage_{shape}")
    column_list = ", ".join(quote(n) for n in names)
    keys = [quote(k) for k in import_type.table_key]
    key_list = ", ".join(keys)
    updated = [quote(n) for n in names if n not in import_type.table_key and n in file_columns]

    def match(left: str, right: str) -> str:
        return " AND ".join(f"{left}.{k} = {right}.{k}" for k in keys)

    def differs(left: str, right: str) -> str:
        return (
            f"({', '.join(f'{left}.{u}' for u in updated)}) IS DISTINCT FROM"
            f" ({', '.join(f'{right}.{u}' for u in updated)})"
        )

    stage_columns = ", ".join(
        [f"{quote(n)} text" for n in tenant]
        + [f"{quote(c.name)} {SQL_TYPES[c.type]}" for c in staged]
    )
    create_stage = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage}"
        f" (row_number bigint PRIMARY KEY, {stage_columns}) ON COMMIT DELETE ROWS"
    )
    if mode is ImportMode.UPSERT:
        on_conflict = (
            f"DO UPDATE SET {', '.join(f'{u} = EXCLUDED.{u}' for u in updated)}"
            f" WHERE ROW({', '.join(f't.{u}' for u in updated)}) IS DISTINCT FROM"
            f" ROW({', '.join(f'EXCLUDED.{u}' for u in updated)})"
            if updated
            else "DO NOTHING"
        )
        applied = f"""
                INSERT INTO {table} AS t ({column_list})
                SELECT {column_list} FROM {stage} ORDER BY {key_list}
                ON CONFLICT ({key_list}) {on_conflict}
                RETURNING {key_list}, (xmax = 0) AS inserted"""
        outcome = f"""
            SELECT s.row_number,
                   CASE WHEN a.inserted THEN 'CREATED'
                        WHEN a.inserted IS NOT NULL THEN 'UPDATED'
                        ELSE 'UNCHANGED' END AS status,
                   NULL AS note
            FROM {stage} s LEFT JOIN applied a ON {match("a", "s")}"""
    elif mode is ImportMode.INSERT:
        applied = f"""
                INSERT INTO {table} ({column_list})
                SELECT {column_list} FROM {stage} ORDER BY {key_list}
                ON CONFLICT ({key_list}) DO NOTHING
                RETURNING {key_list}"""
        outcome = f"""
            SELECT s.row_number,
                   CASE WHEN a.{keys[0]} IS NOT NULL THEN 'CREATED' ELSE 'SKIPPED' END AS status,
                   CASE WHEN a.{keys[0]} IS NULL THEN 'key already exists' END AS note
            FROM {stage} s LEFT JOIN applied a ON {match("a", "s")}"""
    elif mode is ImportMode.UPDATE:
        applied = (
            f"""UPDATE {table} t SET {", ".join(f"{u} = s.{u}" for u in updated)}
                FROM {stage} s WHERE {match("t", "s")} AND {differs("t", "s")}
                RETURNING s.row_number"""
            if updated
            else "SELECT NULL::bigint AS row_number WHERE false"
        )
        outcome = f"""
            SELECT s.row_number,
                   CASE WHEN a.row_number IS NOT NULL THEN 'UPDATED'
                        WHEN EXISTS (SELECT 1 FROM {table} t WHERE {match("t", "s")})
                            THEN 'UNCHANGED'
                        ELSE 'SKIPPED' END AS status,
                   CASE WHEN a.row_number IS NULL AND NOT EXISTS (
                            SELECT 1 FROM {table} t WHERE {match("t", "s")})
                        THEN 'key does not exist' END AS note
            FROM {stage} s LEFT JOIN applied a USING (row_number)"""
    else:
        applied = f"""
                DELETE FROM {table} t USING {stage} s WHERE {match("t", "s")}
                RETURNING s.row_number"""
        outcome = f"""
            SELECT s.row_number,
                   CASE WHEN a.row_number IS NOT NULL THEN 'DELETED' ELSE 'SKIPPED' END AS status,
                   CASE WHEN a.row_number IS NULL THEN 'key does not exist' END AS note
            FROM {stage} s LEFT JOIN applied a USING (row_number)"""
    # Data-modifying CTEs must sit at the top level, hence one flat WITH per statement.
    return ApplyPlan(
        stage_table=stage.strip('"'),
        create_stage=create_stage,
        columns=("row_number", *names),
        tenant_scoped=bool(tenant),
        lock_targets=(
            f"SELECT 1 FROM {table} t JOIN {stage} s ON {match('t', 's')}"
            f" ORDER BY {', '.join(f't.{k}' for k in keys)} FOR UPDATE OF t"
            if mode in (ImportMode.UPDATE, ImportMode.DELETE)
            else None
        ),
        verdicts=f"WITH applied AS ({applied}) {outcome}",
        apply_and_record=f"""
            WITH applied AS ({applied}),
            outcome AS ({outcome}),
            recorded AS (
                UPDATE import_entries e
                SET status = o.status, note = o.note, process_time = now()
                FROM outcome o
                WHERE e.job_id = $1 AND e.row_number = o.row_number
                RETURNING o.status)
            SELECT status, count(*) AS n FROM recorded GROUP BY status""",
    )
