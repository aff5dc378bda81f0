-- Queries on import_jobs, run by JobStore only. A job is live while its status is one of
-- :live (model.LIVE_STATUSES, the one place that says which).

-- name: get_job
SELECT * FROM import_jobs WHERE id = :job_id AND tenant = :tenant;

-- name: get_jobs
SELECT * FROM import_jobs WHERE id = ANY(:job_ids::uuid[]);

-- name: find_job_by_request_id
SELECT * FROM import_jobs WHERE tenant = :tenant AND request_id = :request_id;

-- name: list_jobs
-- A keyset page of one tenant's jobs, newest first: after the job (:after_time, :after_id),
-- both NULL on the first page; :statuses empty = any status; :include_live false hides live
-- jobs (from a test token); :search, unless NULL, is text the file name or a label value
-- contains, ignoring case (strpos: the text's % and _ are not wildcards). The filter's
-- conditions (api/filters.py), each NULL when not set: the :labels the job carries all of,
-- :retry_of, :status, :filter_import_type, :request_id, and create_time after :created_after
-- (included when :after_inclusive) and before :created_before (:before_inclusive).
SELECT *
FROM import_jobs
WHERE tenant = :tenant
  AND (cardinality(:statuses::text[]) = 0 OR status = ANY(:statuses::text[]))
  AND (:import_type::text IS NULL OR import_type = :import_type)
  AND labels @> :labels::jsonb
  AND (:retry_of::uuid IS NULL OR retry_of = :retry_of)
  AND (:status::text IS NULL OR status = :status)
  AND (:filter_import_type::text IS NULL OR import_type = :filter_import_type)
  AND (:request_id::text IS NULL OR request_id = :request_id)
  AND (:created_after::timestamptz IS NULL OR create_time > :created_after
       OR (:after_inclusive AND create_time = :created_after))
  AND (:created_before::timestamptz IS NULL OR create_time < :created_before
       OR (:before_inclusive AND create_time = :created_before))
  AND (:after_time::timestamptz IS NULL OR (create_time, id) < (:after_time, :after_id::uuid))
  AND (:include_live::boolean OR NOT live)
  AND (:search::text IS NULL
       OR strpos(lower(file_name), lower(:search)) > 0
       OR EXISTS (SELECT FROM jsonb_each_text(labels) AS l
                  WHERE strpos(lower(l.value), lower(:search)) > 0))
ORDER BY create_time DESC, id DESC
LIMIT :page_size;

-- name: file_columns
SELECT columns FROM import_jobs WHERE id = :job_id;

-- name: retry_source
-- What a retry takes from its parent job: the file's columns and the job's options.
SELECT columns, options FROM import_jobs WHERE id = :job_id;

-- name: count_active_jobs
SELECT count(*) FROM import_jobs WHERE tenant = :tenant AND status = ANY(:live::text[]);

-- name: lock_tenant_admission
-- Held until the caller's transaction ends: one tenant's new jobs are admitted one at a
-- time. The two-key form keeps these locks apart from the migrations' one-key lock; two
-- tenants whose names hash alike merely take turns.
SELECT pg_advisory_xact_lock(1, hashtext(:tenant));

-- name: count_jobs_by_status
SELECT status, count(*) AS n FROM import_jobs GROUP BY status;

-- name: insert_job
-- A job whose file is about to be received, committed before the upload so that it is
-- visible (and counts as active) from the file's first byte.
INSERT INTO import_jobs (
    id, tenant, import_type, mode, format, options, status, stage, file_name, dry_run,
    all_or_nothing, max_errors, labels, request_id, spec_digest, live, retry_of, revertible,
    update_time
) VALUES (
    :job_id, :tenant, :import_type, :mode, :format, :options, 'QUEUED', 'RECEIVING',
    :file_name, :dry_run, :all_or_nothing, :max_errors, :labels, :request_id, :spec_digest,
    :live, :retry_of, :revertible, clock_timestamp()
);

-- name: record_trace_parent
UPDATE import_jobs SET trace_parent = :trace_parent WHERE id = :job_id;

-- name: read_trace_parent
SELECT trace_parent FROM import_jobs WHERE id = :job_id;

-- name: record_upload_progress
-- How far the upload got, from a short transaction of its own (never the staging one, which
-- must not hold the job row while the file streams in): bytes received, rows stored, and
-- once the file is read whole its row count (stage STAGING). Also the upload's heartbeat.
-- No row: the job is no longer receiving (cancelled, or failed by the housekeeper).
WITH recorded AS (
    UPDATE import_jobs
    SET received_bytes = :received_bytes, staged_rows = :staged_rows,
        total_rows = :total_rows,
        stage = CASE WHEN :total_rows::bigint IS NULL THEN 'RECEIVING' ELSE 'STAGING' END,
        update_time = clock_timestamp()
    WHERE id = :job_id AND status = 'QUEUED' AND stage IN ('RECEIVING', 'STAGING')
    RETURNING id
)
SELECT pg_notify(:channel, id::text) FROM recorded;

-- name: record_file
-- The file is received: what it was, the rows that already have an outcome (failed, or
-- superseded by a later row with the same key) and the failed rows' errors by code and
-- column (:error_summary), and how many rows each chunk takes. No row: the job stopped
-- receiving meanwhile (cancelled, or failed by the housekeeper).
UPDATE import_jobs
SET file_size_bytes = :size, received_bytes = :size, sha256 = :sha256,
    total_rows = :total_rows, staged_rows = coalesce(:total_rows, staged_rows),
    columns = :columns, failed_count = :failed, skipped_count = :skipped,
    error_summary = :error_summary::jsonb,
    processed_rows = :failed::bigint + :skipped::bigint, chunk_rows = :chunk_rows,
    stage = NULL, update_time = clock_timestamp()
WHERE id = :job_id AND status = 'QUEUED' AND stage IN ('RECEIVING', 'STAGING')
RETURNING id;

-- name: record_dialect
-- How the file was read (engine/shapes.py): the format its bytes showed, and the dialect,
-- kept in options (model.Dialect; read back by job_from_row).
UPDATE import_jobs
SET format = :format, options = options || jsonb_build_object('dialect', :dialect::jsonb)
WHERE id = :job_id;

-- name: abort_upload
-- An upload that ended before its file did (the caller went away, a database error): the
-- job fails with the error given, with no rows (the staging transaction rolled back), and
-- gives up its request_id so that the caller's retry can start again.
UPDATE import_jobs
SET status = 'FAILED', stage = NULL, total_rows = NULL, request_id = NULL,
    error_kind = :kind, error_reason = :reason, error_message = :message,
    end_time = now(), update_time = clock_timestamp()
WHERE id = :job_id AND status = 'QUEUED' AND stage IN ('RECEIVING', 'STAGING')
RETURNING id;

-- name: fail_interrupted_uploads
-- Uploads whose heartbeat stopped more than :seconds ago (their replica died): failed as
-- abort_upload fails them (the error :kind, :reason), by whichever replica's housekeeper
-- sees them first.
WITH interrupted AS (
    SELECT id FROM import_jobs
    WHERE stage IN ('RECEIVING', 'STAGING') AND status = 'QUEUED'
      AND update_time < clock_timestamp() - make_interval(secs => :seconds)
    FOR UPDATE SKIP LOCKED
), failed AS (
    UPDATE import_jobs j
    SET status = 'FAILED', stage = NULL, total_rows = NULL, request_id = NULL,
        error_kind = :kind, error_reason = :reason,
        error_message = 'the upload stopped: the server receiving the file gave no sign of'
            || ' life for ' || :seconds || ' s; start the import again',
        end_time = now(), update_time = clock_timestamp()
    FROM interrupted i
    WHERE j.id = i.id
    RETURNING j.id
)
SELECT id, pg_notify(:channel, id::text) FROM failed;

-- name: job_to_process
-- The job of a chunk about to be processed, if it is still live; for a revert, the rows per
-- chunk of the job it undoes.
SELECT j.*, o.chunk_rows AS original_chunk_rows
FROM import_jobs j
LEFT JOIN import_jobs o ON o.id = j.revert_of
WHERE j.id = :job_id AND j.status = ANY(:live::text[]);

-- name: start_job
UPDATE import_jobs
SET status = 'RUNNING', stage = 'PROCESSING', start_time = now(), update_time = clock_timestamp()
WHERE id = :job_id AND status = 'QUEUED';

-- name: fail_job
-- A job-level failure (errors.py: the error's class, reason and message): the live job ends
-- FAILED; its remaining chunks never run. Nothing when the job has ended already.
UPDATE import_jobs
SET status = 'FAILED', stage = NULL,
    error_kind = :kind, error_reason = :reason, error_message = :message,
    end_time = now(), update_time = clock_timestamp()
WHERE id = :job_id AND status = ANY(:live::text[])
RETURNING *;

-- name: finish_job_if_done
-- Gives the live job its terminal status once no chunk is left; a no-op otherwise. An
-- all-or-nothing job with a failed row fails with the error (:kind, :reason) given.
UPDATE import_jobs
SET status = CASE
        WHEN all_or_nothing AND failed_count > 0 THEN 'FAILED'
        WHEN failed_count > 0 OR skipped_count > 0 THEN 'PARTIALLY_SUCCEEDED'
        ELSE 'SUCCEEDED' END,
    error_kind = CASE WHEN all_or_nothing AND failed_count > 0 THEN :kind END,
    error_reason = CASE WHEN all_or_nothing AND failed_count > 0 THEN :reason END,
    error_message = CASE WHEN all_or_nothing AND failed_count > 0 THEN
        failed_count || ' row(s) failed, so nothing was imported (all_or_nothing)' END,
    stage = NULL, start_time = coalesce(start_time, now()), end_time = now(),
    update_time = clock_timestamp()
WHERE id = :job_id AND status = ANY(:live::text[])
  AND NOT EXISTS (SELECT 1 FROM import_chunks WHERE job_id = :job_id AND status = 'PENDING')
RETURNING *;

-- name: add_counts
-- One chunk's outcomes added to its running job, and its rows' errors (:errors, a list of
-- {code, field, count}) merged into the job's error summary (most frequent first, then by
-- code and field in byte order, as model.ranked_errors sorts them at staging). Nothing
-- when the job is no longer running (cancelled or failed meanwhile): the chunk's
-- transaction is then rolled back.
UPDATE import_jobs
SET error_summary = CASE WHEN jsonb_array_length(:errors::jsonb) = 0 THEN error_summary ELSE (
        SELECT jsonb_agg(jsonb_build_object('code', code, 'field', field, 'count', n)
                         ORDER BY n DESC, code COLLATE "C", field COLLATE "C")
        FROM (SELECT code, field, sum(count)::bigint AS n
              FROM jsonb_to_recordset(error_summary || :errors::jsonb)
                   AS e(code text, field text, count bigint)
              GROUP BY code, field) merged
    ) END,
    processed_rows = processed_rows + :processed,
    created_count = created_count + :created,
    updated_count = updated_count + :updated,
    unchanged_count = unchanged_count + :unchanged,
    skipped_count = skipped_count + :skipped,
    failed_count = failed_count + :failed,
    deleted_count = deleted_count + :deleted,
    rows_per_second = (processed_rows + :processed)
        / greatest(extract(epoch FROM now() - start_time), 0.001),
    -- The wall clock, not the transaction's start: watchers measure delay from it.
    update_time = clock_timestamp()
WHERE id = :job_id AND status = 'RUNNING'
RETURNING *;

-- name: list_watched_jobs
-- A page of a WatchJobs snapshot: the tenant's jobs that are live, or were updated at or
-- after :since (NULL: only the former), among those matching the filters (:statuses,
-- :import_type, :labels the job must all carry, :include_live false hides live jobs);
-- oldest change first, after the keyset position (:after_time, :after_id) of the previous
-- page, at most :page_size.
SELECT *
FROM import_jobs
WHERE tenant = :tenant
  AND (status = ANY(:live::text[]) OR update_time >= :since::timestamptz)
  AND (cardinality(:statuses::text[]) = 0 OR status = ANY(:statuses::text[]))
  AND (:import_type::text IS NULL OR import_type = :import_type)
  AND labels @> :labels::jsonb
  AND (:include_live::boolean OR NOT live)
  AND (:after_time::timestamptz IS NULL OR (update_time, id) > (:after_time, :after_id::uuid))
ORDER BY update_time, id
LIMIT :page_size;

-- name: cancel_job
-- The tenant's live job ends CANCELLED; nothing when it has ended already.
UPDATE import_jobs
SET status = 'CANCELLED', stage = NULL, end_time = now(), update_time = clock_timestamp()
WHERE id = :job_id AND tenant = :tenant AND status = ANY(:live::text[])
RETURNING *;

-- name: remove_expired_entries
-- Up to :limit jobs that ended more than :seconds ago lose their entries, chunks and the
-- previous values their writes replaced (so they can no longer be reverted); the
-- job rows stay, marked. SKIP LOCKED: replicas doing this together share the work.
WITH expired AS (
    SELECT id FROM import_jobs
    WHERE end_time < now() - make_interval(secs => :seconds) AND entries_removed_time IS NULL
    ORDER BY end_time
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), entries AS (
    DELETE FROM import_entries e USING expired x WHERE e.job_id = x.id
), chunks AS (
    DELETE FROM import_chunks c USING expired x WHERE c.job_id = x.id
), before_images AS (
    DELETE FROM import_before_images b USING expired x WHERE b.job_id = x.id
)
UPDATE import_jobs j SET entries_removed_time = now()
FROM expired x
WHERE j.id = x.id
RETURNING j.id;

-- name: notify_progress
-- Tells every replica's progress hub the job changed (delivered when the transaction
-- commits).
SELECT pg_notify(:channel, :job_id);

-- name: lock_job
-- The tenant's job, locked until the caller's transaction ends (a revert is decided under it).
SELECT * FROM import_jobs WHERE id = :job_id AND tenant = :tenant FOR UPDATE;

-- name: current_revert
-- The revert of a job that is live or ended without failing or being cancelled: at most one
-- (import_jobs_one_revert).
SELECT * FROM import_jobs
WHERE revert_of = :job_id AND status NOT IN ('FAILED', 'CANCELLED');

-- name: insert_revert
-- A revert of job :job_id, QUEUED with its rows already staged: the original's import type,
-- mode, file name, columns and column map (its chunks read the original's entries' values
-- as the original did) and webhook; chunks of :chunk_rows rows. The original names it as
-- its latest revert.
WITH revert AS (
    INSERT INTO import_jobs (
        id, tenant, import_type, mode, format, options, status, file_name, columns,
        request_id, spec_digest, live, revert_of, chunk_rows, update_time
    )
    SELECT :revert_id, tenant, import_type, mode, format,
           jsonb_strip_nulls(jsonb_build_object(
               'column_map', options -> 'column_map', 'webhook', options -> 'webhook')),
           'QUEUED', file_name, columns, :request_id, :spec_digest, live, id, :chunk_rows,
           clock_timestamp()
    FROM import_jobs WHERE id = :job_id
    RETURNING revert_of
)
UPDATE import_jobs j SET reverted_by = :revert_id FROM revert r WHERE j.id = r.revert_of;

-- name: record_revert_rows
-- How many rows the revert has (its entries are written): its total, all staged.
UPDATE import_jobs
SET total_rows = :total_rows, staged_rows = :total_rows, update_time = clock_timestamp()
WHERE id = :job_id;
