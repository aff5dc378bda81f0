-- Queries on import_chunks, run by JobStore only: a chunk is a range of a job's rows that
-- one transaction processes, leased to one worker at a time.

-- name: create_chunks
-- Splits rows 1..:total_rows of a job into chunks of :chunk_rows rows.
INSERT INTO import_chunks (job_id, chunk_number, first_row, last_row)
SELECT :job_id, n, (n - 1) * :chunk_rows + 1, least(n * :chunk_rows, :total_rows)
FROM generate_series(1, ceil(:total_rows::numeric / :chunk_rows)::integer) AS n;

-- name: claim_chunk
-- Leases the oldest live job's next free chunk to :owner for :lease_seconds: never leased,
-- or its lease expired (its worker died). SKIP LOCKED lets many workers on many replicas
-- claim without waiting on each other.
WITH next AS (
    SELECT c.job_id, c.chunk_number
    FROM import_chunks c
    JOIN import_jobs j ON j.id = c.job_id
    WHERE c.status = 'PENDING'
      AND (c.lease_expires_at IS NULL OR c.lease_expires_at < now())
      AND j.status = ANY(:live::text[])
    ORDER BY j.create_time, c.job_id, c.chunk_number
    FOR UPDATE OF c SKIP LOCKED
    LIMIT 1
)
UPDATE import_chunks c
SET lease_owner = :owner,
    lease_expires_at = now() + make_interval(secs => :lease_seconds),
    attempts = c.attempts + 1
FROM next
WHERE c.job_id = next.job_id AND c.chunk_number = next.chunk_number
RETURNING c.job_id, c.chunk_number, c.first_row, c.last_row, c.attempts;

-- name: lock_claimed_chunk
-- The chunk, locked until its processing transaction ends, if :owner still holds it.
SELECT first_row, last_row
FROM import_chunks
WHERE job_id = :job_id AND chunk_number = :chunk_number AND status = 'PENDING'
  AND lease_owner = :owner
FOR UPDATE;

-- name: extend_lease
UPDATE import_chunks
SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
WHERE job_id = :job_id AND chunk_number = :chunk_number;

-- name: complete_chunk
-- The chunk is done; :outcomes holds one character per row (store/targets.py OUTCOMES).
UPDATE import_chunks
SET status = 'DONE', lease_expires_at = NULL, outcomes = :outcomes, done_time = now()
WHERE job_id = :job_id AND chunk_number = :chunk_number;

-- name: release_leases
-- A replica shutting down hands back the chunks its workers (owners starting with :owners)
-- were processing: they rolled back, so the attempt does not count.
UPDATE import_chunks
SET lease_owner = NULL, lease_expires_at = NULL, attempts = greatest(attempts - 1, 0)
WHERE status = 'PENDING' AND starts_with(lease_owner, :owners);
