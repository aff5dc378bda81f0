-- Queries on the webhook outbox (webhook_deliveries, filled by a trigger on import_jobs:
-- migration 0006) and its attempts.

-- name: claim_delivery
-- Takes the most overdue pending delivery that no live lease holds, leasing it to $1 for
-- $2 seconds and counting the attempt. SKIP LOCKED: deliverers on every replica claim
-- without waiting on each other; an expired lease (its replica died) frees the row.
-- `job` is the import_jobs row as it was when the status changed.
WITH next AS (
    SELECT id
    FROM webhook_deliveries
    WHERE state = 'PENDING'
      AND next_attempt_time <= now()
      AND (lease_expires_at IS NULL OR lease_expires_at < now())
    ORDER BY next_attempt_time
    FOR UPDATE SKIP LOCKED
    LIMIT 1
)
UPDATE webhook_deliveries d
SET lease_owner = $1,
    lease_expires_at = now() + make_interval(secs => $2),
    attempts = d.attempts + 1
FROM next
WHERE d.id = next.id
RETURNING d.id, d.tenant, d.live, d.url, d.attempts, d.create_time,
          jsonb_populate_record(NULL::import_jobs, d.job) AS job;

-- name: record_attempt
-- One attempt's outcome, whether or not its deliverer still holds the lease: it was made.
INSERT INTO webhook_attempts (delivery_id, number, start_time, latency_secs, http_status, error)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (delivery_id, number) DO NOTHING;

-- name: finish_delivery
-- After attempt $2 of delivery $1 by lease holder $3: DELIVERED when $4 (a 2xx), FAILED when
-- $5 (the target is refused) or when the next attempt, $6 seconds from now, would fall
-- beyond $7 seconds after the event; else PENDING until then. A deliverer whose lease was
-- taken over changes nothing.
UPDATE webhook_deliveries
SET state = CASE
        WHEN $4 THEN 'DELIVERED'
        WHEN $5 OR now() + make_interval(secs => $6) > create_time + make_interval(secs => $7)
            THEN 'FAILED'
        ELSE 'PENDING' END,
    next_attempt_time = now() + make_interval(secs => $6),
    end_time = CASE
        WHEN $4 OR $5 OR now() + make_interval(secs => $6) > create_time + make_interval(secs => $7)
            THEN now() END,
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = $1 AND attempts = $2 AND lease_owner = $3
RETURNING state;

-- name: release_deliveries
-- A replica shutting down hands back the deliveries it was attempting (they may have
-- reached the receiver: at-least-once, the same webhook-id again).
UPDATE webhook_deliveries
SET lease_owner = NULL, lease_expires_at = NULL
WHERE state = 'PENDING' AND lease_owner LIKE $1;

-- name: list_deliveries
-- A job's deliveries, oldest first.
SELECT id, job_id, url, job_status, state, create_time, next_attempt_time, end_time
FROM webhook_deliveries
WHERE job_id = $1
ORDER BY create_time, id;

-- name: list_attempts
-- The attempts of a job's deliveries, in order.
SELECT a.delivery_id, a.number, a.start_time, a.latency_secs, a.http_status, a.error
FROM webhook_attempts a
JOIN webhook_deliveries d ON d.id = a.delivery_id
WHERE d.job_id = $1
ORDER BY a.delivery_id, a.number;
