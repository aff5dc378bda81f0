-- Queries on import_entries, run by EntryStore only. An entry's status is PENDING until
-- its row's outcome is known:
-- FAILED and SKIPPED are written into the entry (with errors or a note); CREATED, UPDATED,
-- UNCHANGED and DELETED are read from its chunk's outcome string; NOT_PROCESSED is never
-- written: a row still pending when its job ended (see list_entries).

-- name: skip_superseded_rows
-- A key repeated in one file: the last row with it wins, the earlier ones are SKIPPED and
-- say which row superseded them, even if they are invalid (their errors are dropped).
-- Returns how many rows were skipped, how many of those had failed, and the errors they
-- dropped by code and column (three arrays in step; staging takes them off the errors it
-- counted).
-- Reads only the rows :candidates names (row numbers: a superset of the rows whose key
-- repeats, which staging finds from the keys' hashes), each looked up by its primary key
-- (OFFSET 0 keeps the lookup per row); NULL reads every entry of the job. Each upload
-- prepares this on a connection of its own, so the plan is made for the value given and
-- the branch not taken is folded away.
-- No join, so no plan the planner could misjudge (the freshly copied entries have no
-- statistics; an estimate of one row for the job once made a join quadratic): one
-- aggregate finds the repeated keys and their last rows, kept in one jsonb object that
-- each entry read looks its key up in; the superseded ones are then updated by their
-- ctid (a TID scan). Every part sees the entries as they were before the update.
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
    SELECT jsonb_object_agg(key, last_row) AS last_rows
    FROM (
        SELECT key COLLATE "C" AS key, max(row_number) AS last_row
        FROM entry
        GROUP BY key COLLATE "C"
        HAVING count(*) > 1
    ) keys
), superseded AS MATERIALIZED (
    SELECT at, status FROM entry
    WHERE (SELECT last_rows FROM repeated) IS NOT NULL
      AND row_number < ((SELECT last_rows FROM repeated) ->> key)::bigint
), skipped AS (
    UPDATE import_entries e
    SET status = 'SKIPPED', errors = NULL, clean = NULL, process_time = now(),
        note = 'key ' || e.key || ' is repeated later in the file, at row '
               || ((SELECT last_rows FROM repeated) ->> e.key)
    WHERE e.ctid = ANY(ARRAY(SELECT at FROM superseded))
    RETURNING 1
), dropped AS (
    SELECT error ->> 'code' AS code, coalesce(error ->> 'field', '') AS field,
           count(*) AS count
    FROM import_entries e, jsonb_array_elements(e.errors) AS error
    WHERE e.ctid = ANY(ARRAY(SELECT at FROM superseded WHERE status = 'FAILED'))
    GROUP BY 1, 2
)
SELECT (SELECT count(*) FROM skipped) AS skipped,
       (SELECT count(*) FROM superseded WHERE status = 'FAILED') AS were_failed,
       ARRAY(SELECT code FROM dropped ORDER BY code, field) AS dropped_codes,
       ARRAY(SELECT field FROM dropped ORDER BY code, field) AS dropped_fields,
       ARRAY(SELECT count FROM dropped ORDER BY code, field) AS dropped_counts;

-- name: skip_pending_rows
-- An all-or-nothing job with failed rows: every row still pending is not imported (:note
-- says so: entries.ALL_OR_NOTHING_NOTE).
WITH skipped AS (
    UPDATE import_entries
    SET status = 'SKIPPED', process_time = now(), note = :note
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
-- matching rows (offset style), at most :limit. A pending entry of a done chunk has the
-- outcome its character in the chunk's outcome string says (import_jobs.chunk_rows finds
-- the chunk; chunks done before migration 0005 have no outcome string: their entries hold
-- every outcome); one still pending once its job has ended (:ended) is NOT_PROCESSED.
-- Entries FAILED or SKIPPED (the only ones with errors) are found without looking at
-- chunks' outcomes unless the filter asks for CREATED, UPDATED, UNCHANGED or DELETED; with
-- :undone_only (a filter of
-- PENDING or NOT_PROCESSED only) the scan starts at the first chunk not done (chunks are
-- claimed in order, so few done ones follow it), or at row 1 when the job has none.
SELECT row_number, line_number, status, key, raw, errors, note, process_time
FROM (
    SELECT e.row_number, e.line_number, e.key, e.raw, e.errors, e.note,
           importd_entry_status(e.status, c.outcomes, (e.row_number - c.first_row)::integer,
                                :ended::boolean) AS status,
           CASE WHEN e.status <> 'PENDING' THEN e.process_time ELSE c.done_time END
               AS process_time
    FROM import_entries e
    LEFT JOIN import_chunks c
        ON c.job_id = e.job_id
       AND c.chunk_number = ((e.row_number - 1)
                             / (SELECT chunk_rows FROM import_jobs WHERE id = :job_id) + 1)::integer
    WHERE e.job_id = :job_id AND e.row_number > :after_row
      AND (NOT :undone_only::boolean
           OR e.row_number >= (SELECT coalesce(min(first_row), 1) FROM import_chunks
                               WHERE job_id = :job_id AND status = 'PENDING'))
      AND (:error_code::text IS NULL
           OR e.errors @> jsonb_build_array(jsonb_build_object('code', :error_code::text)))
      AND (cardinality(:statuses::text[]) = 0 OR e.status = ANY(:statuses::text[])
           OR (e.status = 'PENDING'
               AND :statuses::text[] && '{CREATED,UPDATED,UNCHANGED,DELETED}'::text[])
           -- Rows of chunks not done: what the default export adds to FAILED and SKIPPED,
           -- without reading the outcomes of every done row.
           OR (e.status = 'PENDING' AND c.status IS DISTINCT FROM 'DONE'
               AND :statuses::text[] && '{PENDING,NOT_PROCESSED}'::text[]))
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

-- name: rows_to_retry
-- RetryJob: the rows of an ended job (:job_id) to run again among rows :first_row to
-- :last_row (a range, not a LIMIT: each batch reads its own rows by primary key, never
-- the rows before it again), as CSV lines in row order: the row number, then the row's
-- fields but those at the positions :dropped (1-based), quoted where CSV needs it, each
-- line ended by CRLF; NULL when none. The rows: FAILED ones (when :failed), SKIPPED ones
-- whose note is one of :skip_notes (never a row superseded by a later one with its key:
-- that note names a row), and NOT_PROCESSED ones (when :not_processed): entries still
-- PENDING whose job has ended (not live: :live) and whose chunk's outcome string gives
-- them no outcome (importd_entry_status, migration 0014, as list_entries reads it).
SELECT string_agg(
           CASE WHEN cardinality(:dropped::bigint[]) = 0 AND cardinality(e.raw) > 0
                     AND array_to_string(e.raw, '') !~ '[",\r\n]'
                -- Most rows: no field to quote or drop, one test for the whole row.
                THEN e.row_number || ',' || array_to_string(e.raw, ',')
                ELSE array_to_string(
                    ARRAY[e.row_number::text] || ARRAY(
                        SELECT CASE WHEN f ~ '[",\r\n]'
                                    THEN '"' || replace(f, '"', '""') || '"' ELSE f END
                        FROM unnest(e.raw) WITH ORDINALITY AS u(f, i)
                        WHERE i <> ALL(:dropped::bigint[])
                        ORDER BY i),
                    ',') END
           || E'\r\n',
           '' ORDER BY e.row_number)
FROM import_entries e
LEFT JOIN import_chunks c
    ON e.status = 'PENDING' AND c.job_id = e.job_id
   AND c.chunk_number = ((e.row_number - 1)
                         / (SELECT chunk_rows FROM import_jobs WHERE id = :job_id) + 1)::integer
WHERE e.job_id = :job_id AND e.row_number BETWEEN :first_row AND :last_row
  AND ((:failed AND e.status = 'FAILED')
       OR (e.status = 'SKIPPED' AND e.note = ANY(:skip_notes::text[]))
       OR (:not_processed AND e.status = 'PENDING'
           AND importd_entry_status(
                   e.status, c.outcomes, (e.row_number - c.first_row)::integer,
                   (SELECT status FROM import_jobs WHERE id = :job_id) <> ALL(:live::text[]))
               = 'NOT_PROCESSED'));

-- name: list_latest_entries
-- ListEntries with across_retries: each row of job :job_id with its latest outcome across
-- the job's retries, and theirs (import_jobs.retry_of, the same tenant). A retry's row
-- links to its parent's row through its importd_row column (the first column named so,
-- any case; a value that is not a plain number links nowhere); the entry of the newest
-- job (create_time) that holds the row decides, else the row's own. Statuses are read as
-- list_entries reads them (a pending entry of a done chunk has its chunk's outcome). Rows
-- in row order after :after_row (a pending entry of an ended job, not :live, is
-- NOT_PROCESSED), filtered by status (:statuses empty = any), skipping
-- :offset, at most :limit; `matching` counts every row the filter matches.
-- The recursion runs over the retries' linked rows only (never the job's own), each
-- retry's link column found once.
WITH RECURSIVE chain AS (
    SELECT id, retry_of, create_time, columns FROM import_jobs
    WHERE retry_of = :job_id AND tenant = (SELECT tenant FROM import_jobs WHERE id = :job_id)
  UNION ALL
    SELECT j.id, j.retry_of, j.create_time, j.columns
    FROM chain c JOIN import_jobs j ON j.retry_of = c.id AND j.tenant = (
        SELECT tenant FROM import_jobs WHERE id = :job_id)
), retries AS MATERIALIZED (
    SELECT id, retry_of, create_time,
           (SELECT min(i) FROM unnest(columns) WITH ORDINALITY AS c(name, i)
            WHERE lower(btrim(name)) = 'importd_row') AS link
    FROM chain
), linked AS MATERIALIZED (
    SELECT e.job_id, e.row_number, r.retry_of AS parent_id, r.create_time,
           CASE WHEN e.raw[r.link] ~ '^\s*[0-9]{1,18}\s*$' THEN btrim(e.raw[r.link])::bigint END
               AS parent_row
    FROM retries r JOIN import_entries e ON e.job_id = r.id
    WHERE r.link IS NOT NULL
), links (job_id, row_number, root_row, create_time) AS (
    SELECT job_id, row_number, parent_row, create_time FROM linked WHERE parent_id = :job_id
  UNION ALL
    SELECT k.job_id, k.row_number, l.root_row, k.create_time
    FROM links l JOIN linked k ON k.parent_id = l.job_id AND k.parent_row = l.row_number
), latest AS (
    SELECT DISTINCT ON (root_row) root_row, job_id, row_number
    FROM links
    ORDER BY root_row, create_time DESC
), decided AS (
    SELECT own.row_number AS root_row, e.job_id, e.line_number, e.key, e.raw, e.errors, e.note,
           importd_entry_status(e.status, c.outcomes, (e.row_number - c.first_row)::integer,
                                j.status <> ALL(:live::text[])) AS status,
           CASE WHEN e.status <> 'PENDING' THEN e.process_time ELSE c.done_time END
               AS process_time
    FROM import_entries own
    LEFT JOIN latest l ON l.root_row = own.row_number
    JOIN import_entries e
        ON e.job_id = coalesce(l.job_id, own.job_id)
       AND e.row_number = coalesce(l.row_number, own.row_number)
    JOIN import_jobs j ON j.id = e.job_id
    LEFT JOIN import_chunks c
        ON c.job_id = e.job_id
       AND c.chunk_number = ((e.row_number - 1) / j.chunk_rows + 1)::integer
    WHERE own.job_id = :job_id
), matching AS (
    SELECT *, count(*) OVER () AS matching
    FROM decided
    WHERE cardinality(:statuses::text[]) = 0 OR status = ANY(:statuses::text[])
)
SELECT root_row AS row_number, job_id, line_number, status, key, raw, errors, note,
       process_time, matching
FROM matching
WHERE root_row > :after_row
ORDER BY root_row
OFFSET :offset
LIMIT :limit;
-- name: copy_rows_to_revert
-- The entries of a revert (:revert_id) of job :job_id: the original's rows that changed the
-- target (CREATED, UPDATED or DELETED in their chunk's outcome string), numbered 1.. in the
-- original's row order, each with the original's row number as its line_number and the
-- original's fields. Returns how many. The outcome strings are split once, character by
-- character (a substr per row walks its UTF-8 string: quadratic in the chunk's size).
WITH changed AS (
    SELECT c.first_row + o.n - 1 AS row_number
    FROM import_chunks c,
         string_to_table(c.outcomes, NULL) WITH ORDINALITY AS o(outcome, n)
    WHERE c.job_id = :job_id AND o.outcome IN ('C', 'U', 'D')
), copied AS (
    INSERT INTO import_entries (job_id, row_number, line_number, key, raw, clean)
    SELECT :revert_id, row_number() OVER (ORDER BY e.row_number), e.row_number, e.key,
           e.raw, e.clean
    FROM changed x
    JOIN import_entries e ON e.job_id = :job_id AND e.row_number = x.row_number
    WHERE e.status = 'PENDING'
    RETURNING 1
)
SELECT count(*) FROM copied;
