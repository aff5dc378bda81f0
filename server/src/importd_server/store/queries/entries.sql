-- Queries on import_entries. An entry's status is PENDING until its row's outcome is known:
-- FAILED and SKIPPED are written into the entry (with errors or a note); CREATED, UPDATED,
-- UNCHANGED and DELETED are read from its chunk's outcome string (see list_entries).

-- name: skip_superseded_rows
-- A key repeated in one file: the last row with it wins, the earlier ones are SKIPPED and
-- say which row superseded them, even if they are invalid (their errors are dropped). The
-- window form sorts once and looks each skipped row up by its primary key: no statistics of
-- the freshly copied entries are needed. Returns how many rows were skipped, and how many of
-- those had failed.
WITH keyed AS (
    SELECT row_number, key, status,
           max(row_number) OVER (PARTITION BY key COLLATE "C") AS last_row
    FROM import_entries
    WHERE job_id = $1 AND key IS NOT NULL
), skipped AS (
    UPDATE import_entries e
    SET status = 'SKIPPED', errors = NULL, clean = NULL, process_time = now(),
        note = 'key ' || k.key || ' is repeated later in the file, at row ' || k.last_row
    FROM keyed k
    WHERE k.row_number < k.last_row AND e.job_id = $1 AND e.row_number = k.row_number
    RETURNING k.status AS was
)
SELECT count(*) AS skipped, count(*) FILTER (WHERE was = 'FAILED') AS were_failed
FROM skipped;

-- name: skip_pending_rows
-- An all-or-nothing job with failed rows: every row still pending is not imported.
WITH skipped AS (
    UPDATE import_entries
    SET status = 'SKIPPED', process_time = now(),
        note = 'not imported: other rows failed and the job is all_or_nothing'
    WHERE job_id = $1 AND status = 'PENDING'
    RETURNING 1
)
SELECT count(*) FROM skipped;

-- name: skip_rows
-- The rows a chunk's statement skipped: those whose character in the outcome string $3 (of
-- rows $2, $2 + 1, ...) is 'S'. They become SKIPPED with the note $4.
UPDATE import_entries e
SET status = 'SKIPPED', note = $4, process_time = now()
FROM unnest(string_to_array($3::text, NULL)) WITH ORDINALITY AS o(outcome, n)
WHERE o.outcome = 'S' AND e.job_id = $1 AND e.row_number = $2::bigint + o.n - 1;

-- name: fail_rows
-- Rows the database refused (row numbers $2, errors as JSON text $3): FAILED.
UPDATE import_entries e
SET status = 'FAILED', errors = o.errors::jsonb, process_time = now()
FROM unnest($2::bigint[], $3::text[]) AS o(row_number, errors)
WHERE e.job_id = $1 AND e.row_number = o.row_number;

-- name: pending_rows
SELECT row_number, raw
FROM import_entries
WHERE job_id = $1 AND row_number BETWEEN $2 AND $3 AND status = 'PENDING'
ORDER BY row_number;

-- name: set_clean
-- The clean fields (text[] literals $3) of rows $2.
UPDATE import_entries e
SET clean = o.clean::text[]
FROM unnest($2::bigint[], $3::text[]) AS o(row_number, clean)
WHERE e.job_id = $1 AND e.row_number = o.row_number;

-- name: list_entries
-- A page of a job's entries in row order after row $3, filtered by status ($2 empty = all),
-- skipping $4 matching rows (offset style). A pending entry of a done chunk has the outcome
-- its character in the chunk's outcome string says (import_jobs.chunk_rows finds the chunk;
-- it is NULL for jobs staged before migration 0004, whose entries hold every outcome).
-- Entries FAILED or SKIPPED are found without looking at chunks unless the filter asks for
-- other statuses too.
SELECT row_number, line_number, status, key, raw, errors, note, process_time
FROM (
    SELECT e.row_number, e.line_number, e.key, e.raw, e.errors, e.note,
           CASE WHEN e.status <> 'PENDING' THEN e.status
                ELSE CASE substr(c.outcomes, (e.row_number - c.first_row + 1)::integer, 1)
                         WHEN 'C' THEN 'CREATED'
                         WHEN 'U' THEN 'UPDATED'
                         WHEN 'N' THEN 'UNCHANGED'
                         WHEN 'D' THEN 'DELETED'
                         ELSE 'PENDING' END
           END AS status,
           CASE WHEN e.status <> 'PENDING' THEN e.process_time ELSE c.done_time END
               AS process_time
    FROM import_entries e
    LEFT JOIN import_chunks c
        ON c.job_id = e.job_id
       AND c.chunk_number = ((e.row_number - 1)
                             / (SELECT chunk_rows FROM import_jobs WHERE id = $1) + 1)::integer
    WHERE e.job_id = $1 AND e.row_number > $3
      AND (cardinality($2::text[]) = 0 OR e.status = ANY($2::text[])
           OR (e.status = 'PENDING'
               AND $2::text[] && '{PENDING,CREATED,UPDATED,UNCHANGED,DELETED}'::text[]))
) entry
WHERE cardinality($2::text[]) = 0 OR status = ANY($2::text[])
ORDER BY row_number
OFFSET $4
LIMIT $5;
