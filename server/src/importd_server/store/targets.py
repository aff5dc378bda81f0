"""Target tables: created or checked at start-up, and the set-based SQL that applies a chunk.

Every identifier here comes from an import type's TOML (checked against IDENTIFIER when
loaded) and is quoted again; nothing from an imported file ever reaches this SQL as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
    # Checked at once and over every row: ON CONFLICT needs it so, and so does insert_new,
    # which relies on a key the target holds failing its INSERT there and then (a deferred
    # check would fail the chunk's commit; a partial index would let the key in twice).
    unique = await connection.fetchval(
        """SELECT count(*) FROM pg_index i
           WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indimmediate
             AND i.indpred IS NULL
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
            f" ({', '.join(import_type.table_key)}), checked at once (not deferrable) and"
            " over every row (not partial)"
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
    # Further characters `apply` may return for a skipped row, each with the row's note
    # (a revert says why it left a row as it is); they are SKIPPED ('S') on the chunk.
    skip_codes: Mapping[str, str] = field(default_factory=dict)
    # INSERT and UPSERT: `apply` for a batch none of whose keys the target holds, which
    # inserts every pending row without looking its key up first (a quarter of `apply`'s
    # work on a first import). It takes `lock_targets`' parameters and returns `apply`'s
    # outcomes ('C'); if a key is there after all, it fails with a unique violation, and
    # `apply` is the way.
    insert_new: Query | None = None


@cache
def apply_plan(
    import_type: ImportType,
    mode: ImportMode,
    sources: tuple[SourceColumn, ...],
    record_replaced: bool = True,
) -> ApplyPlan:
    """The plan for target rows made of `sources`; only columns present in the file (with
    positions) are updated. `record_replaced`: the values its writes replace are kept in
    import_before_images (for RevertJob)."""
    table = quote(import_type.table)
    tenant = [import_type.tenant_column] if import_type.tenant_column else []
    names = [*tenant, *(s.column.name for s in sources)]
    column_list = ", ".join(quote(n) for n in names)
    keys = [quote(k) for k in import_type.table_key]
    key_list = ", ".join(keys)

    def in_key_order(alias: str) -> str:
        return _key_order(import_type, alias)

    updated = [quote(name) for name in updated_columns(import_type, sources)]
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

    # What the target holds for the row's key, looked up once per row by a lateral subquery
    # (OFFSET 0 keeps the planner from flattening it into a join that could scan the whole
    # target): `found` is NULL (nothing), 'same' (the row's values already) or 'differs';
    # when recording, the updated columns' values as they were (`_was`), for RevertJob, read
    # in the same lookup. A new row is then inserted plainly, which costs
    # much less than ON CONFLICT's speculative insertion, and a row already there as is is
    # not touched (ON CONFLICT would lock it). A row another job inserts meanwhile makes the
    # plain INSERT fail: the batch is then applied row by row, each row looking again.
    record = record_replaced and bool(updated) and mode in (ImportMode.UPSERT, ImportMode.UPDATE)
    state = differs("t", "s") if updated else "false"
    was = "".join(f", f.{quote(c)} AS {_was(c)}" for c in updated_columns(import_type, sources))
    found = f"""
        SELECT s.*, CASE f.differs WHEN true THEN 'differs' WHEN false THEN 'same' END AS found
               {was if record else ""}
        FROM ({source}) s LEFT JOIN LATERAL (
            SELECT {state} AS differs{"".join(f", t.{u}" for u in updated if record)}
            FROM {table} t WHERE s.pending AND {match("t", "s")} OFFSET 0) f ON true"""

    def insert(rows: str) -> str:
        return f"""
            INSERT INTO {table} ({column_list})
            SELECT {column_list} FROM source WHERE {rows}
            ORDER BY {in_key_order("")}"""

    insert_missing = insert("pending AND found IS NULL")
    skip_note = None
    # The previous values of the rows the writes replace, for RevertJob, as one JSON object
    # per batch (`import_before_images.images`).
    replaced = _updated_images(updated_columns(import_type, sources)) if record else None
    if mode is ImportMode.UPSERT:
        writes = [f"created AS ({insert_missing})"]
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
        writes = [f"created AS ({insert_missing})"]
        outcome = "CASE WHEN s.found IS NULL THEN 'C' ELSE 'S' END"
        skip_note = KEY_EXISTS
    elif mode is ImportMode.UPDATE:
        # Recording, the lookup tells the rows to change and their previous values (they
        # were locked in key order first, so the statement's snapshot holds them exactly);
        # else the UPDATE's own join finds them.
        if record:
            picked, present = "s.found = 'differs'", "s.found IS NOT NULL"
        else:
            found = source
            picked = f"s.pending AND {differs('t', 's')}"
            present = f"EXISTS (SELECT 1 FROM {table} t WHERE {match('t', 's')})"
        applied = (
            f"""
            UPDATE {table} t SET {", ".join(f"{u} = s.{u}" for u in updated)}
            FROM source s WHERE {picked} AND {match("t", "s")}
            RETURNING s.row_number"""
            if updated
            else "SELECT NULL::bigint AS row_number WHERE false"
        )
        writes = [f"applied AS ({applied})"]
        outcome = f"""CASE WHEN s.row_number IN (SELECT row_number FROM applied) THEN 'U'
                   WHEN {present} THEN 'N' ELSE 'S' END"""
        skip_note = KEY_MISSING
    else:
        found = source
        # A deleted row's previous values are the whole row (also columns outside the import
        # type), as DELETE returns it.
        writes = [
            f"""applied AS (
            DELETE FROM {table} t USING source s WHERE s.pending AND {match("t", "s")}
            RETURNING s.row_number{", to_jsonb(t) AS image" if record_replaced else ""})"""
        ]
        outcome = "CASE WHEN s.row_number IN (SELECT row_number FROM applied) THEN 'D' ELSE 'S' END"
        skip_note = KEY_MISSING
        # Row number -> the deleted row; null values stripped (jsonb_populate_record reads a
        # missing key as NULL).
        replaced = (
            """SELECT jsonb_strip_nulls(jsonb_object_agg(row_number, image)) AS images
                FROM applied HAVING count(*) > 0"""
            if record_replaced
            else None
        )
    if replaced is not None:
        # In the same statement as the writes. An UPSERT's row changed by another job
        # between the statement's snapshot and its ON CONFLICT update keeps the older image.
        writes.append(
            f"""before_images AS (
            INSERT INTO import_before_images (job_id, first_row, last_row, images)
            SELECT :job_id, :first_row, :last_row, images FROM ({replaced}) r)"""
        )
    lock_targets = _lock_targets(import_type, source)
    # Data-modifying CTEs must sit at the top level, hence one flat WITH; they run whether
    # or not they are read.
    apply = f"""
        WITH source AS MATERIALIZED ({found}),
        {", ".join(writes)}
        SELECT string_agg(
            CASE WHEN NOT s.pending THEN '{NOT_APPLIED}' ELSE {outcome} END,
            '' ORDER BY s.row_number) AS outcomes
        FROM source s"""
    # A created row records nothing for RevertJob, so neither does this.
    insert_all = f"""
        WITH source AS MATERIALIZED ({source}),
        created AS ({insert("pending")})
        SELECT string_agg(CASE WHEN pending THEN 'C' ELSE '{NOT_APPLIED}' END,
                          '' ORDER BY row_number) AS outcomes
        FROM source"""
    return ApplyPlan(
        lock_targets=(
            numbered("lock_targets", lock_targets)
            if mode in (ImportMode.UPDATE, ImportMode.DELETE)
            else None
        ),
        apply=numbered("apply", apply),
        skip_note=skip_note,
        insert_new=(
            numbered("insert_new", insert_all)
            if mode in (ImportMode.UPSERT, ImportMode.INSERT)
            else None
        ),
    )


def updated_columns(import_type: ImportType, sources: tuple[SourceColumn, ...]) -> list[str]:
    """The columns a job writes to a target row that exists: those its file has, but the
    key."""
    return [s.column.name for s in sources if s.positions and s.column.name not in import_type.key]


def _was(column: str) -> str:
    """The name under which the chunk statement's `source` holds a column's value as the
    target row had it (not an identifier an import type may use)."""
    return quote(f"{column}:was")


def _updated_images(columns: list[str]) -> str:
    """The images of a batch's updated rows (`found` 'differs'): {"rows": [row numbers],
    "columns": {column: [its previous values, in the same order: one scan feeds every
    array_agg]}}. One array per column
    costs a fraction of an object per row (one key set per batch, not per row, and no
    5,000-key object to sort); the names keep it readable after an ALTER TABLE. 50 columns
    a call (the limit of a function's arguments is 100)."""
    parts = [
        "jsonb_build_object("
        + ", ".join(f"{_literal(c)}, array_agg({_was(c)})" for c in group)
        + ")"
        for group in (columns[i : i + 50] for i in range(0, len(columns), 50))
    ]
    return f"""SELECT jsonb_build_object('rows', array_agg(row_number),
                   'columns', {" || ".join(parts)}) AS images
                FROM source WHERE found = 'differs' HAVING count(*) > 0"""


def _object(columns: list[str], alias: str) -> str:
    """A JSON object of these columns of `alias`, 50 a call (the limit of a function's
    arguments is 100)."""
    return " || ".join(
        "jsonb_build_object(" + ", ".join(f"{_literal(c)}, {alias}.{quote(c)}" for c in group) + ")"
        for group in (columns[i : i + 50] for i in range(0, len(columns), 50))
    )


def _lock_targets(import_type: ImportType, source: str) -> str:
    """Locks the target rows the pending entries of `source` (a batch, with its key
    columns) match, in key order."""
    keys = [quote(k) for k in import_type.table_key]
    match = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    return f"""
        SELECT count(*) FROM (
            SELECT 1 FROM {quote(import_type.table)} t JOIN ({source}) s
                ON s.pending AND {match}
            ORDER BY {_key_order(import_type, "t.")} FOR UPDATE OF t) locked"""


def _key_order(import_type: ImportType, alias: str) -> str:
    """The ORDER BY list of the target's key: every writer takes rows in this order, so two
    jobs on the same keys queue instead of deadlocking; byte order ("C") sorts text several
    times faster than a locale."""
    text_keys = {import_type.tenant_column} | {
        c.name for c in import_type.columns if SQL_TYPES[c.type] == "text"
    }
    return ", ".join(
        f'{alias}{quote(k)} COLLATE "C"' if k in text_keys else f"{alias}{quote(k)}"
        for k in import_type.table_key
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


# Why a revert leaves a row of the original job as it is (ApplyPlan.skip_codes).
REVERT_SKIPS = {
    "g": "not reverted: the row was deleted since the import",
    "c": "not reverted: the row was changed since the import",
    "e": "not reverted: a row with this key was created again since the import",
}


@cache
def revert_plan(import_type: ImportType, sources: tuple[SourceColumn, ...]) -> ApplyPlan:
    """The plan of a revert job whose original applied target rows made of `sources`.

    A revert's entries are the original's rows that changed the target, in its row order;
    an entry's line_number is the original's row number. Its statements take :job_id,
    :first_row, :last_row (and :tenant) as an ApplyPlan's, plus :original_id and
    :original_chunk_rows. Per row, by what the original did (its chunk's outcome):
    CREATED: the row is deleted if it still holds what the import wrote ('D'); UPDATED:
    its previous values come back if the updated columns still hold what the import wrote
    ('U'); DELETED: the deleted row is inserted again unless its key exists ('C'). Else the
    row is left as it is, with a REVERT_SKIPS code.
    """
    table = quote(import_type.table)
    tenant = [import_type.tenant_column] if import_type.tenant_column else []
    written = [*tenant, *(s.column.name for s in sources)]
    updated = updated_columns(import_type, sources)
    keys = [quote(k) for k in import_type.table_key]
    match = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    values = [*(f":tenant::text AS {quote(n)}" for n in tenant), *(_source(s) for s in sources)]
    # A batch of the revert's entries with the original's values, typed.
    source = f"""
        SELECT e.row_number, e.line_number AS original_row, e.status = 'PENDING' AS pending,
               {", ".join(values)}
        FROM import_entries e
        WHERE e.job_id = :job_id AND e.row_number BETWEEN :first_row AND :last_row"""

    def same(columns: list[str]) -> str:
        if not columns:
            return "false"
        quoted = [quote(c) for c in columns]
        return (
            f"ROW({', '.join(f't.{c}' for c in quoted)}) IS NOT DISTINCT FROM"
            f" ROW({', '.join(f's.{c}' for c in quoted)})"
        )

    # The original's rows the batch reverts, and the original's outcomes of those rows: its
    # chunks' outcome strings from the first row's chunk to the last's, as bytes (a row's
    # outcome is then one get_byte, not a walk through a UTF-8 string).
    bounds = """
        SELECT (SELECT line_number FROM import_entries
                WHERE job_id = :job_id AND row_number = :first_row) AS first_row,
               (SELECT line_number FROM import_entries
                WHERE job_id = :job_id AND row_number = :last_row) AS last_row"""
    original = """
        SELECT min(c.first_row) AS first_row, convert_to(string_agg(
                   coalesce(c.outcomes, repeat('-', (c.last_row - c.first_row + 1)::integer)),
                   '' ORDER BY c.chunk_number), 'UTF8') AS outcomes
        FROM import_chunks c
        WHERE c.job_id = :original_id
          AND c.chunk_number BETWEEN
              ((SELECT first_row FROM bounds) - 1) / :original_chunk_rows + 1
              AND ((SELECT last_row FROM bounds) - 1) / :original_chunk_rows + 1"""
    # The previous values of the batch's rows, from the images of the original's batches
    # that overlap it, in one object of row number -> values (looked up per row, no join).
    # An image is row number -> values (deleted rows), or columns of values by position in
    # its rows (updated rows, `_updated_images`); the parts of those are taken out of the
    # stored (TOASTed) image once per batch: a function of the image per value would
    # decompress all of it each time.
    overlapping = """
        SELECT images, images -> 'rows' AS rows, images -> 'columns' AS columns
        FROM import_before_images
        WHERE job_id = :original_id
          AND first_row <= (SELECT last_row FROM bounds)
          AND last_row >= (SELECT first_row FROM bounds)"""
    # Columns of updated rows are zipped back into rows by one ROWS FROM per batch (a
    # GROUP BY of every value by row cost half as much again).
    zipped = "".join(f", jsonb_array_elements(b.columns -> {_literal(c)})" for c in updated)
    named = "".join(f", {quote(c)}" for c in updated)
    columnar = (
        f"""
            UNION ALL
            SELECT v."row number", {_object(updated, "v")}
            FROM overlapping b,
                 ROWS FROM (jsonb_array_elements_text(b.rows){zipped}) v("row number"{named})
            WHERE b.rows IS NOT NULL"""
        if updated
        else ""
    )
    images = f"""
        SELECT coalesce(jsonb_object_agg(i.key, i.value), '{{}}') AS by_row
        FROM (
            SELECT i.key, i.value FROM overlapping b, jsonb_each(b.images) i
            WHERE b.rows IS NULL{columnar}) i"""
    marked = f"""
        SELECT s.*, chr(get_byte((SELECT outcomes FROM original),
                                 (s.original_row - (SELECT first_row FROM original))::integer))
                   AS done
        FROM ({source}) s"""
    # The target row of each row's key: NULL (none), 'same' (as the import wrote it) or
    # 'changed'; and its previous values, if the import replaced it.
    found = f"""
        SELECT s.*, (
            SELECT CASE WHEN CASE s.done WHEN 'C' THEN {same(written)}
                                         WHEN 'U' THEN {same(updated)} ELSE false END
                        THEN 'same' ELSE 'changed' END
            FROM {table} t WHERE {match}
        ) AS found,
        CASE WHEN s.done IN ('U', 'D') THEN (SELECT by_row FROM images) -> s.original_row::text
        END AS image
        FROM marked s"""
    restore = (
        f"""restored AS (
            UPDATE {table} t SET ({", ".join(quote(c) for c in updated)}) = (
                SELECT {", ".join(f"r.{quote(c)}" for c in updated)}
                FROM jsonb_populate_record(NULL::{table}, s.image) r)
            FROM source s
            WHERE s.pending AND s.done = 'U' AND s.found = 'same' AND s.image IS NOT NULL
              AND {match}
            RETURNING s.row_number)"""
        if updated
        else "restored AS (SELECT NULL::bigint AS row_number WHERE false)"
    )
    apply = f"""
        WITH bounds AS MATERIALIZED ({bounds}),
        original AS MATERIALIZED ({original}),
        overlapping AS MATERIALIZED ({overlapping}),
        images AS MATERIALIZED ({images}),
        marked AS MATERIALIZED ({marked}),
        source AS MATERIALIZED ({found}),
        deleted AS (
            DELETE FROM {table} t USING source s
            WHERE s.pending AND s.done = 'C' AND s.found = 'same' AND {match}
            RETURNING s.row_number),
        {restore},
        reinserted AS (
            INSERT INTO {table}
            SELECT (jsonb_populate_record(NULL::{table}, s.image)).* FROM source s
            WHERE s.pending AND s.done = 'D' AND s.found IS NULL AND s.image IS NOT NULL
            ORDER BY {_key_order(import_type, "s.")})
        SELECT string_agg(
            CASE WHEN NOT s.pending THEN '{NOT_APPLIED}'
                 WHEN s.row_number IN (SELECT row_number FROM deleted) THEN 'D'
                 WHEN s.row_number IN (SELECT row_number FROM restored) THEN 'U'
                 WHEN s.done = 'D' AND s.found IS NULL AND s.image IS NOT NULL THEN 'C'
                 WHEN s.found IS NULL THEN 'g'
                 WHEN s.done = 'D' THEN 'e'
                 ELSE 'c' END,
            '' ORDER BY s.row_number) AS outcomes
        FROM source s"""
    return ApplyPlan(
        lock_targets=numbered("lock_targets", _lock_targets(import_type, source)),
        apply=numbered("revert", apply),
        skip_note=None,
        skip_codes=REVERT_SKIPS,
    )
