-- Queries on import_jobs. Columns are listed once per query on purpose: a reader
-- sees exactly what leaves the database.

-- name: get_job
SELECT * FROM import_jobs WHERE id = $1 AND tenant = $2;

-- name: list_jobs
-- A keyset page of one tenant's jobs, newest first. $3/$4 are the cursor
-- (create_time, id) of the previous page's last job, both NULL on the first page; $7 false
-- hides live jobs (from a test token); $8, unless NULL, is text the file name or a label
-- value contains, ignoring case (strpos: the text's % and _ are not wildcards).
SELECT *
FROM import_jobs
WHERE tenant = $1
  AND (cardinality($2::text[]) = 0 OR status = ANY($2::text[]))
  AND ($5::text IS NULL OR import_type = $5)
  AND ($3::timestamptz IS NULL OR (create_time, id) < ($3, $4::uuid))
  AND ($7::boolean OR NOT live)
  AND ($8::text IS NULL
       OR strpos(lower(file_name), lower($8)) > 0
       OR EXISTS (SELECT FROM jsonb_each_text(labels) AS l
                  WHERE strpos(lower(l.value), lower($8)) > 0))
ORDER BY create_time DESC, id DESC
LIMIT $6;

-- name: find_job_by_request_id
SELECT * FROM import_jobs WHERE tenant = $1 AND request_id = $2;

-- name: insert_job
-- A job whose file is about to be received, committed before the upload so that it is
-- visible (and counts as active) from the file's first byte.
INSERT INTO import_jobs (
    id, tenant, import_type, mode, format, options, status, stage, file_name, dry_run,
    all_or_nothing, max_errors, labels, request_id, spec_digest, live, update_time
) VALUES ($1, $2, $3, $4, $5, $6, 'QUEUED', 'RECEIVING', $7, $8, $9, $10, $11, $12, $13, $14,
          clock_timestamp());

-- name: record_upload_progress
-- How far the upload got, from a short transaction of its own (never the staging one, which
-- must not hold the job row while the file streams in): bytes received, rows stored, and
-- once the file is read whole its row count (stage STAGING). Also the upload's heartbeat.
-- No row: the job is no longer receiving (cancelled, or failed by the housekeeper).
WITH recorded AS (
    UPDATE import_jobs
    SET received_bytes = $2, staged_rows = $3, total_rows = $4,
        stage = CASE WHEN $4::bigint IS NULL THEN 'RECEIVING' ELSE 'STAGING' END,
        update_time = clock_timestamp()
    WHERE id = $1 AND status = 'QUEUED' AND stage IN ('RECEIVING', 'STAGING')
    RETURNING id
)
SELECT pg_notify($5, id::text) FROM recorded;

-- name: finish_staging
-- The file is received: record what it was. $6 and $7 = rows that already have an outcome
-- (failed, or superseded by a later row with the same key); $8 = rows per chunk. No row:
-- the job stopped receiving meanwhile (cancelled, or failed by the housekeeper).
UPDATE import_jobs
SET file_size_bytes = $2, received_bytes = $2, sha256 = $3, total_rows = $4,
    staged_rows = coalesce($4, staged_rows), columns = $5, failed_count = $6,
    skipped_count = $7, processed_rows = $6::bigint + $7::bigint, chunk_rows = $8,
    stage = NULL, update_time = clock_timestamp()
WHERE id = $1 AND status = 'QUEUED' AND stage IN ('RECEIVING', 'STAGING')
RETURNING id;

-- name: abort_upload
-- An upload that ended before its file did (the caller went away, a database error): the
-- job fails saying so, with no rows (the staging transaction rolled back), and gives up its
-- request_id so that the caller's retry can start again.
UPDATE import_jobs
SET status = 'FAILED', stage = NULL, total_rows = NULL, request_id = NULL,
    error_code = 'ABORTED', error_reason = $2, error_message = $3,
    end_time = now(), update_time = clock_timestamp()
WHERE id = $1 AND status = 'QUEUED' AND stage IN ('RECEIVING', 'STAGING')
RETURNING id;

-- name: fail_interrupted_uploads
-- Uploads whose heartbeat stopped more than $1 seconds ago (their replica died): failed as
-- abort_upload fails them, by whichever replica's housekeeper sees them first.
WITH interrupted AS (
    SELECT id FROM import_jobs
    WHERE stage IN ('RECEIVING', 'STAGING') AND status = 'QUEUED'
      AND update_time < clock_timestamp() - make_interval(secs => $1)
    FOR UPDATE SKIP LOCKED
), failed AS (
    UPDATE import_jobs j
    SET status = 'FAILED', stage = NULL, total_rows = NULL, request_id = NULL,
        error_code = 'ABORTED', error_reason = 'UPLOAD_INTERRUPTED',
        error_message = 'the upload stopped: the server receiving the file gave no sign of'
            || ' life for ' || $1 || ' s; start the import again',
        end_time = now(), update_time = clock_timestamp()
    FROM interrupted i
    WHERE j.id = i.id
    RETURNING j.id
)
SELECT id, pg_notify($2, id::text) FROM failed;

-- name: record_dialect
-- How the file was read (engine/shapes.py): the format its bytes showed, and the dialect,
-- kept in options (model.Dialect; read back by store/jobs.py).
UPDATE import_jobs
SET format = $2, options = options || jsonb_build_object('dialect', $3::jsonb)
WHERE id = $1;

-- name: fail_job
-- A job-level failure: the job ends FAILED with the error; its remaining chunks never run.
UPDATE import_jobs
SET status = 'FAILED', stage = NULL, error_code = $2, error_reason = $3, error_message = $4,
    end_time = now(), update_time = clock_timestamp()
WHERE id = $1 AND status IN ('QUEUED', 'RUNNING')
RETURNING *;

-- name: finish_job_if_done
-- Gives the job its terminal status once no chunk is left; a no-op otherwise.
UPDATE import_jobs
SET status = CASE
        WHEN all_or_nothing AND failed_count > 0 THEN 'FAILED'
        WHEN failed_count > 0 OR skipped_count > 0 THEN 'PARTIALLY_SUCCEEDED'
        ELSE 'SUCCEEDED' END,
    error_code = CASE WHEN all_or_nothing AND failed_count > 0 THEN 'FAILED_PRECONDITION' END,
    error_reason = CASE WHEN all_or_nothing AND failed_count > 0 THEN 'ALL_OR_NOTHING' END,
    error_message = CASE WHEN all_or_nothing AND failed_count > 0 THEN
        failed_count || ' row(s) failed, so nothing was imported (all_or_nothing)' END,
    stage = NULL, start_time = coalesce(start_time, now()), end_time = now(), update_time = clock_timestamp()
WHERE id = $1 AND status IN ('QUEUED', 'RUNNING')
  AND NOT EXISTS (SELECT 1 FROM import_chunks WHERE job_id = $1 AND status = 'PENDING')
RETURNING *;

-- name: add_counts
-- One chunk's outcome added to its running job. Returns nothing when the job is no longer
-- running (cancelled or failed meanwhile): the chunk's transaction is then rolled back.
UPDATE import_jobs
SET processed_rows = processed_rows + $2,
    created_count = created_count + $3,
    updated_count = updated_count + $4,
    unchanged_count = unchanged_count + $5,
    skipped_count = skipped_count + $6,
    failed_count = failed_count + $7,
    deleted_count = deleted_count + $8,
    rows_per_second = (processed_rows + $2)
        / greatest(extract(epoch FROM now() - start_time), 0.001),
    -- The wall clock, not the transaction's start: watchers measure delay from it.
    update_time = clock_timestamp()
WHERE id = $1 AND status = 'RUNNING'
RETURNING *;

-- name: cancel_job
UPDATE import_jobs
SET status = 'CANCELLED', stage = NULL, end_time = now(), update_time = clock_timestamp()
WHERE id = $1 AND tenant = $2 AND status IN ('QUEUED', 'RUNNING')
RETURNING *;

-- name: get_jobs
SELECT * FROM import_jobs WHERE id = ANY($1::uuid[]);

-- name: count_active_jobs
SELECT count(*) FROM import_jobs WHERE tenant = $1 AND status IN ('QUEUED', 'RUNNING');

-- name: lock_tenant_admission
-- Held until the caller's transaction ends: one tenant's new jobs are admitted one at a
-- time. The two-key form keeps these locks apart from the migrations' one-key lock; two
-- tenants whose names hash alike merely take turns.
SELECT pg_advisory_xact_lock(1, hashtext($1));

-- name: count_jobs_by_status
SELECT status, count(*) AS n FROM import_jobs GROUP BY status;

-- name: remove_expired_entries
-- Up to $2 jobs that ended more than $1 seconds ago lose their entries and chunks; the job
-- rows stay, marked. SKIP LOCKED: replicas doing this together share the work.
WITH expired AS (
    SELECT id FROM import_jobs
    WHERE end_time < now() - make_interval(secs => $1) AND entries_removed_time IS NULL
    ORDER BY end_time
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), entries AS (
    DELETE FROM import_entries e USING expired x WHERE e.job_id = x.id
), chunks AS (
    DELETE FROM import_chunks c USING expired x WHERE c.job_id = x.id
)
UPDATE import_jobs j SET entries_removed_time = now()
FROM expired x
WHERE j.id = x.id
RETURNING j.id;

-- name: record_trace_parent
UPDATE import_jobs SET trace_parent = $2 WHERE id = $1;

-- name: read_trace_parent
SELECT trace_parent FROM import_jobs WHERE id = $1;

-- name: list_watched_jobs
-- A page of a WatchJobs snapshot: the tenant's jobs that are queued or running, or were
-- updated at or after $5 (NULL: only the former), among those matching the filters ($2
-- statuses, $3 import type, $4 labels the job must all carry, $6 false hides live jobs);
-- oldest change first, after the keyset position ($7, $8) of the previous page, at most $9.
SELECT *
FROM import_jobs
WHERE tenant = $1
  AND (status IN ('QUEUED', 'RUNNING') OR update_time >= $5::timestamptz)
  AND (cardinality($2::text[]) = 0 OR status = ANY($2::text[]))
  AND ($3::text IS NULL OR import_type = $3)
  AND labels @> $4::jsonb
  AND ($6::boolean OR NOT live)
  AND ($7::timestamptz IS NULL OR (update_time, id) > ($7, $8::uuid))
ORDER BY update_time, id
LIMIT $9;
