-- Queries on import_entries.

-- name: skip_superseded_rows
-- A key repeated in one file: the last row with it wins, the earlier ones are SKIPPED and
-- say which row superseded them. Returns how many were skipped.
WITH last_rows AS (
    SELECT key, max(row_number) AS last_row
    FROM import_entries
    WHERE job_id = $1 AND key IS NOT NULL AND status = 'PENDING'
    GROUP BY key
    HAVING count(*) > 1
), skipped AS (
    UPDATE import_entries e
    SET status = 'SKIPPED', process_time = now(),
        note = 'key ' || e.key || ' is repeated later in the file, at row ' || l.last_row
    FROM last_rows l
    WHERE e.job_id = $1 AND e.key = l.key AND e.row_number < l.last_row
      AND e.status = 'PENDING'
    RETURNING 1
)
SELECT count(*) FROM skipped;

-- name: pending_entries
SELECT row_number, raw
FROM import_entries
WHERE job_id = $1 AND row_number BETWEEN $2 AND $3 AND status = 'PENDING'
ORDER BY row_number;

-- name: record_outcomes
-- The outcome of each row: arrays of row numbers, statuses, notes and errors (JSON text).
UPDATE import_entries e
SET status = o.status, note = o.note, errors = o.errors::jsonb, process_time = now()
FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[]) AS o(row_number, status, note, errors)
WHERE e.job_id = $1 AND e.row_number = o.row_number;

-- name: skip_pending_rows
-- An all-or-nothing job with failed rows: every row still pending is not imported.
WITH skipped AS (
    UPDATE import_entries
    SET status = 'SKIPPED', process_time = now(),
        note = 'not imported: other rows failed and the job is all_or_nothing'
    WHERE job_id = $1 AND row_number BETWEEN $2 AND $3 AND status = 'PENDING'
    RETURNING 1
)
SELECT count(*) FROM skipped;

-- name: list_entries
-- A page of entries in row order after row $3, filtered by status ($2 empty = all) and by
-- an error code ($6 NULL = any), skipping $4 matching rows (offset style).
SELECT row_number, line_number, status, key, raw, errors, note, process_time
FROM import_entries
WHERE job_id = $1
  AND (cardinality($2::text[]) = 0 OR status = ANY($2::text[]))
  AND ($6::text IS NULL OR errors @> jsonb_build_array(jsonb_build_object('code', $6::text)))
  AND row_number > $3
ORDER BY row_number
OFFSET $4
LIMIT $5;

-- name: count_entries
SELECT count(*)
FROM import_entries
WHERE job_id = $1 AND (cardinality($2::text[]) = 0 OR status = ANY($2::text[]))
  AND ($3::text IS NULL OR errors @> jsonb_build_array(jsonb_build_object('code', $3::text)));
