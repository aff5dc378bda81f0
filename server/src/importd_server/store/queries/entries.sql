-- Queries on import_entries, run by EntryStore only. An entry's status is PENDING until
-- its row's outcome is known:
-- FAILED and SKIPPED are written into the entry (with errors or a note); CREATED, UPDATED,
-- UNCHANGED and DELETED are read from its chunk's outcome string (see list_entries).

-- name: skip_superseded_rows
-- A key repeated in one file: the last row with it wins, the earlier ones are SKIPPED and
-- say which row superseded them, even if they are invalid (their errors are dropped).
-- Returns how many rows were skipped, and how many of those had failed.
-- Reads only the rows :candidates names (row numbers: a superset of the rows whose key
-- repeats, which staging finds from the keys' hashes), each looked up by its primary key
-- (OFFSET 0 keeps the lookup per row); NULL reads every entry of the job. Each upload
-- prepares this on a connection of its own, so the plan is made for the value given and
-- the branch not taken is folded away.
-- No join, so no plan the planner could misjudge (the freshly copied entries have no
-- statistics; an estimate of one row for the job once made a join quadratic): one
-- aggregate finds the repeated keys and their last rows, kept in one jsonb object that
-- each entry read looks its key up in; the superseded ones are then updated by their
-- ctid (a TID scan).
WITH candidate AS MATERIALIZED (
    SELECT found.*
    FROM unnest(:candidates::bigint[]) AS candidate (row_number),
         LATERAL (SELECT ctid AS at, row_number, key, status
                  FROM import_entries
                  WHERE job_id = :job_id AND row_number = candidate.row_number
                    AND key IS NOT NULL
                  OFFSET 0) found
), entry AS NOT MATERIALIZED (
    -- Read twice below: every entry is scanned twice (held, they would spill to disk),
    -- the candidates looked up once.
    SELECT ctid AS at, row_number, key, status
    FROM import_entries
    WHERE job_id = :job_id AND key IS NOT NULL AND :candidates::bigint[] IS NULL
    UNION ALL
    SELECT * FROM candidate
), repeated AS MATERIALIZED (
    SELECT jsonb_object_agg(key, last_row) AS last_rows,
           coalesce(sum(failed_before_last), 0)::bigint AS were_failed
    FROM (
        SELECT key COLLATE "C" AS key, max(row_number) AS last_row,
               count(*) FILTER (WHERE status = 'FAILED')
               - coalesce(max(row_number) FILTER (WHERE status = 'FAILED')
                          = max(row_number), false)::integer AS failed_before_last
        FROM entry
        GROUP BY key COLLATE "C"
        HAVING count(*) > 1
    ) keys
), skipped AS (
    UPDATE import_entries e
    SET status = 'SKIPPED', errors = NULL, clean = NULL, process_time = now(),
        note = 'key ' || e.key || ' is repeated later in the file, at row '
               || ((SELECT last_rows FROM repeated) ->> e.key)
    WHERE e.ctid = ANY(ARRAY(
        SELECT at FROM entry
        WHERE (SELECT last_rows FROM repeated) IS NOT NULL
          AND row_number < ((SELECT last_rows FROM repeated) ->> key)::bigint))
    RETURNING 1
)
SELECT (SELECT count(*) FROM skipped) AS skipped,
       (SELECT were_failed FROM repeated) AS were_failed;

-- name: skip_pending_rows
-- An all-or-nothing job with failed rows: every row still pending is not imported.
WITH skipped AS (
    UPDATE import_entries
    SET status = 'SKIPPED', process_time = now(),
        note = 'not imported: other rows failed and the job is all_or_nothing'
    WHERE job_id = :job_id AND status = 'PENDING'
    RETURNING 1
)
SELECT count(*) FROM skipped;

-- name: skip_rows
-- The rows a chunk's statement skipped: those whose character in the outcome string
-- :outcomes (of rows :first_row, :first_row + 1, ...) is 'S'. They become SKIPPED with
-- the note :note.
UPDATE import_entries
SET status = 'SKIPPED', note = :note, process_time = now()
WHERE job_id = :job_id AND row_number BETWEEN :first_row AND :first_row + length(:outcomes) - 1
  AND substr(:outcomes, (row_number - :first_row + 1)::integer, 1) = 'S';

-- name: fail_rows
-- Rows of :first_row..:last_row the database refused: FAILED with their errors (:errors,
-- a JSON object of row number -> list of errors).
UPDATE import_entries
SET status = 'FAILED', errors = :errors::jsonb -> row_number::text, process_time = now()
WHERE job_id = :job_id AND row_number BETWEEN :first_row AND :last_row AND :errors::jsonb ? row_number::text;

-- name: pending_rows
SELECT row_number, raw
FROM import_entries
WHERE job_id = :job_id AND row_number BETWEEN :first_row AND :last_row AND status = 'PENDING'
ORDER BY row_number;

-- name: set_clean
-- The clean fields of rows of :first_row..:last_row (:clean, a JSON object of row number
-- -> text[] literal).
UPDATE import_entries
SET clean = (:clean::jsonb ->> row_number::text)::text[]
WHERE job_id = :job_id AND row_number BETWEEN :first_row AND :last_row AND :clean::jsonb ? row_number::text;

-- name: list_entries
-- A page of a job's entries in row order after row :after_row, filtered by status
-- (:statuses empty = any) and by an error code (:error_code NULL = any), skipping :offset
-- matching rows (offset style), at most :limit. A pending
-- entry of a done chunk has the outcome
-- its character in the chunk's outcome string says (import_jobs.chunk_rows finds the chunk;
-- chunks done before migration 0005 have no outcome string: their entries hold every
-- outcome). Entries FAILED or SKIPPED (the only ones with errors) are found without looking
-- at chunks unless the filter asks for other statuses too.
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
                             / (SELECT chunk_rows FROM import_jobs WHERE id = :job_id) + 1)::integer
    WHERE e.job_id = :job_id AND e.row_number > :after_row
      AND (:error_code::text IS NULL
           OR e.errors @> jsonb_build_array(jsonb_build_object('code', :error_code::text)))
      AND (cardinality(:statuses::text[]) = 0 OR e.status = ANY(:statuses::text[])
           OR (e.status = 'PENDING'
               AND :statuses::text[] && '{PENDING,CREATED,UPDATED,UNCHANGED,DELETED}'::text[]))
) entry
WHERE cardinality(:statuses::text[]) = 0 OR status = ANY(:statuses::text[])
ORDER BY row_number
OFFSET :offset
LIMIT :limit;

-- name: count_failed_entries
-- How many entries of a job have an error of code :error_code (and a status among
-- :statuses, empty = any): only FAILED entries have errors, and their status is in the
-- entry itself.
SELECT count(*)
FROM import_entries
WHERE job_id = :job_id AND (cardinality(:statuses::text[]) = 0 OR status = ANY(:statuses::text[]))
  AND errors @> jsonb_build_array(jsonb_build_object('code', :error_code::text));
