-- Queries on import_chunks: claiming with leases, and completing.

-- name: create_chunks
-- Splits rows 1..$2 of a job into chunks of $3 rows.
INSERT INTO import_chunks (job_id, chunk_number, first_row, last_row)
SELECT $1, n, (n - 1) * $3 + 1, least(n * $3, $2)
FROM generate_series(1, ceil($2::numeric / $3)::integer) AS n;

-- name: claim_chunk
-- Takes the oldest job's next free chunk: never leased, or its lease expired (its worker
-- died). SKIP LOCKED lets many workers on many replicas claim without waiting on each other.
WITH next AS (
    SELECT c.job_id, c.chunk_number
    FROM import_chunks c
    JOIN import_jobs j ON j.id = c.job_id
    WHERE c.status = 'PENDING'
      AND (c.lease_expires_at IS NULL OR c.lease_expires_at < now())
      AND j.status IN ('QUEUED', 'RUNNING')
    ORDER BY j.create_time, c.job_id, c.chunk_number
    FOR UPDATE OF c SKIP LOCKED
    LIMIT 1
)
UPDATE import_chunks c
SET lease_owner = $1,
    lease_expires_at = now() + make_interval(secs => $2),
    attempts = c.attempts + 1
FROM next
WHERE c.job_id = next.job_id AND c.chunk_number = next.chunk_number
RETURNING c.job_id, c.chunk_number, c.first_row, c.last_row, c.attempts;

-- name: start_job
UPDATE import_jobs
SET status = 'RUNNING', stage = 'PROCESSING', start_time = now(), update_time = clock_timestamp()
WHERE id = $1 AND status = 'QUEUED';

-- name: lock_claimed_chunk
-- The chunk, locked for its processing transaction, if this worker still holds it.
SELECT first_row, last_row
FROM import_chunks
WHERE job_id = $1 AND chunk_number = $2 AND status = 'PENDING' AND lease_owner = $3
FOR UPDATE;

-- name: extend_lease
UPDATE import_chunks
SET lease_expires_at = now() + make_interval(secs => $3)
WHERE job_id = $1 AND chunk_number = $2;

-- name: complete_chunk
-- The chunk is done; $3 is its outcome string (one character per row).
UPDATE import_chunks
SET status = 'DONE', lease_expires_at = NULL, outcomes = $3, done_time = now()
WHERE job_id = $1 AND chunk_number = $2;

-- name: release_leases
-- A replica shutting down hands back the chunks it was processing (they rolled back).
UPDATE import_chunks
SET lease_owner = NULL, lease_expires_at = NULL, attempts = greatest(attempts - 1, 0)
WHERE status = 'PENDING' AND lease_owner LIKE $1;

-- name: by_key_only
-- For the rest of the transaction: rows are found through indexes. The statements of a
-- chunk and of staging touch rows by key; statistics taken while the target (or the
-- entries) were nearly empty would make a sequential scan look cheaper, and a scan of the
-- target per row of a chunk is quadratic in the import.
SET LOCAL enable_seqscan = off;
