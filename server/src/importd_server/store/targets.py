"""Target tables: created or checked at start-up, and the set-based SQL that applies a chunk.

Every identifier here comes from an import type's TOML (checked against IDENTIFIER when
loaded) and is quoted again; nothing from an imported file ever reaches this SQL as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from importd_server.model import ColumnSpec, EntryStatus, ImportMode, ImportType
from importd_server.store.pool import Connection
from importd_server.store.sql import Query, numbered

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


# A chunk's outcome string holds one character per row: what its statement did to the row.
OUTCOMES = {
    "C": EntryStatus.CREATED,
    "U": EntryStatus.UPDATED,
    "N": EntryStatus.UNCHANGED,
    "D": EntryStatus.DELETED,
    "S": EntryStatus.SKIPPED,
}
NOT_APPLIED = "-"  # the row was not pending (it failed or was skipped at staging)
# Why a row the mode does not apply to was skipped (the entry's note): INSERT of a key the
# target has; UPDATE or DELETE of a key it lacks.
KEY_EXISTS = "key already exists"
KEY_MISSING = "key does not exist"


@dataclass(frozen=True)
class SourceColumn:
    """A column of the target row and where an entry holds its text: the first non-empty
    field among `positions` of the entry's clean (else raw) fields, else `default` (in
    canonical text), else NULL."""

    column: ColumnSpec
    positions: tuple[int, ...]
    default: str | None


@dataclass(frozen=True)
class ApplyPlan:
    """The SQL that applies a chunk's pending entries to a target table in one mode.

    Both statements take :job_id, :first_row and :last_row (a batch of the job's rows), and
    :tenant, the job's tenant, when the target is tenant-scoped. `apply` writes the target
    and returns `outcomes`: one character per row of the batch (OUTCOMES, or NOT_APPLIED).
    Rows it skips ('S') get `skip_note`.
    """

    # Locks the target rows the entries match, in key order, before an UPDATE or DELETE
    # (which would lock them in plan order): two jobs touching the same keys then wait for
    # each other instead of deadlocking. INSERTs already go in key order.
    lock_targets: Query | None
    apply: Query
    skip_note: str | None


@cache
def apply_plan(
    import_type: ImportType, mode: ImportMode, sources: tuple[SourceColumn, ...]
) -> ApplyPlan:
    """The plan for target rows made of `sources`; only columns present in the file (with
    positions) are updated."""
    table = quote(import_type.table)
    tenant = [import_type.tenant_column] if import_type.tenant_column else []
    names = [*tenant, *(s.column.name for s in sources)]
    column_list = ", ".join(quote(n) for n in names)
    keys = [quote(k) for k in import_type.table_key]
    key_list = ", ".join(keys)

    def in_key_order(alias: str) -> str:
        # Every writer takes rows in this order, so two jobs on the same keys queue instead
        # of deadlocking; byte order ("C") sorts text several times faster than a locale.
        text_keys = {import_type.tenant_column} | {
            c.name for c in import_type.columns if SQL_TYPES[c.type] == "text"
        }
        return ", ".join(
            f'{alias}{quote(k)} COLLATE "C"' if k in text_keys else f"{alias}{quote(k)}"
            for k in import_type.table_key
        )

    updated = [
        quote(s.column.name)
        for s in sources
        if s.positions and s.column.name not in import_type.key
    ]
    values = [*(f":tenant::text AS {quote(n)}" for n in tenant), *(_source(s) for s in sources)]
    # A batch of the job's entries; the values of pending rows, typed.
    source = f"""
        SELECT e.row_number, e.status = 'PENDING' AS pending, {", ".join(values)}
        FROM import_entries e
        WHERE e.job_id = :job_id AND e.row_number BETWEEN :first_row AND :last_row"""

    def match(left: str, right: str) -> str:
        return " AND ".join(f"{left}.{k} = {right}.{k}" for k in keys)

    def differs(left: str, right: str) -> str:
        return (
            f"ROW({', '.join(f'{left}.{u}' for u in updated)}) IS DISTINCT FROM"
            f" ROW({', '.join(f'{right}.{u}' for u in updated)})"
        )

    def among(which: str) -> str:
        # An uncorrelated IN is a hashed subplan: no join for the planner to misjudge.
        return f"({', '.join(f's.{k}' for k in keys)}) IN (SELECT {key_list} FROM {which})"

    # What the target holds for the row's key, looked up by a subquery per row (never a
    # join the planner could make scan the whole target): NULL (nothing), 'same' (the
    # row's values already) or 'differs'. A new row is then inserted plainly, which costs
    # much less than ON CONFLICT's speculative insertion, and a row already there as is is
    # not touched (ON CONFLICT would lock it). A row another job inserts meanwhile makes the
    # plain INSERT fail: the batch is then applied row by row, each row looking again.
    state = f"CASE WHEN {differs('t', 's')} THEN 'differs' ELSE 'same' END" if updated else "'same'"
    found = f"""
        SELECT s.*, CASE WHEN s.pending THEN (
                   SELECT {state} FROM {table} t WHERE {match("t", "s")}) END AS found
        FROM ({source}) s"""
    insert_new = f"""
            INSERT INTO {table} ({column_list})
            SELECT {column_list} FROM source WHERE pending AND found IS NULL
            ORDER BY {in_key_order("")}"""
    skip_note = None
    if mode is ImportMode.UPSERT:
        writes = [f"created AS ({insert_new})"]
        outcome = "CASE WHEN s.found IS NULL THEN 'C' ELSE 'N' END"
        if updated:
            # ON CONFLICT takes the rows to change in key order, and inserts one that
            # another job deleted meanwhile.
            writes.append(
                f"""applied AS (
            INSERT INTO {table} AS t ({column_list})
            SELECT {column_list} FROM source WHERE pending AND found = 'differs'
            ORDER BY {in_key_order("")}
            ON CONFLICT ({key_list}) DO UPDATE
            SET {", ".join(f"{u} = EXCLUDED.{u}" for u in updated)}
            WHERE {differs("t", "EXCLUDED")}
            RETURNING {key_list}, (xmax = 0) AS inserted)"""
            )
            outcome = f"""CASE WHEN s.found IS NULL OR {among("applied WHERE inserted")} THEN 'C'
                   WHEN {among("applied")} THEN 'U' ELSE 'N' END"""
    elif mode is ImportMode.INSERT:
        writes = [f"created AS ({insert_new})"]
        outcome = "CASE WHEN s.found IS NULL THEN 'C' ELSE 'S' END"
        skip_note = KEY_EXISTS
    elif mode is ImportMode.UPDATE:
        found = source
        applied = (
            f"""
            UPDATE {table} t SET {", ".join(f"{u} = s.{u}" for u in updated)}
            FROM source s WHERE s.pending AND {match("t", "s")} AND {differs("t", "s")}
            RETURNING s.row_number"""
            if updated
            else "SELECT NULL::bigint AS row_number WHERE false"
        )
        writes = [f"applied AS ({applied})"]
        outcome = f"""CASE WHEN s.row_number IN (SELECT row_number FROM applied) THEN 'U'
                   WHEN EXISTS (SELECT 1 FROM {table} t WHERE {match("t", "s")}) THEN 'N'
                   ELSE 'S' END"""
        skip_note = KEY_MISSING
    else:
        found = source
        writes = [
            f"""applied AS (
            DELETE FROM {table} t USING source s WHERE s.pending AND {match("t", "s")}
            RETURNING s.row_number)"""
        ]
        outcome = "CASE WHEN s.row_number IN (SELECT row_number FROM applied) THEN 'D' ELSE 'S' END"
        skip_note = KEY_MISSING
    lock_targets = f"""
        SELECT count(*) FROM (
            SELECT 1 FROM {table} t JOIN ({source}) s ON s.pending AND {match("t", "s")}
            ORDER BY {in_key_order("t.")} FOR UPDATE OF t) locked"""
    # Data-modifying CTEs must sit at the top level, hence one flat WITH; they run whether
    # or not they are read.
    apply = f"""
        WITH source AS MATERIALIZED ({found}),
        {", ".join(writes)}
        SELECT string_agg(
            CASE WHEN NOT s.pending THEN '{NOT_APPLIED}' ELSE {outcome} END,
            '' ORDER BY s.row_number) AS outcomes
        FROM source s"""
    return ApplyPlan(
        lock_targets=(
            numbered("lock_targets", lock_targets)
            if mode in (ImportMode.UPDATE, ImportMode.DELETE)
            else None
        ),
        apply=numbered("apply", apply),
        skip_note=skip_note,
    )


def _source(source: SourceColumn) -> str:
    """The typed value of a source column, for pending rows (others may hold any text)."""
    texts = [f"nullif((coalesce(e.clean, e.raw))[{p + 1}], '')" for p in source.positions]
    if source.default is not None:
        texts.append(_literal(source.default))
    text = f"coalesce({', '.join(texts)})" if len(texts) > 1 else (texts[0] if texts else "NULL")
    sql_type = SQL_TYPES[source.column.type]
    name = quote(source.column.name)
    if sql_type == "text":
        return f"{text}::text AS {name}"
    return f"CASE WHEN e.status = 'PENDING' THEN ({text})::{sql_type} END AS {name}"


def _literal(text: str) -> str:
    """A SQL string literal (the text comes from an import type's TOML, never a file)."""
    return "'" + text.replace("'", "''") + "'"
