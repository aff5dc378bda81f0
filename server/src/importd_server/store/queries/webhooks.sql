-- Queries on the webhook outbox (webhook_deliveries, filled by a trigger on import_jobs:
-- migration 0006) and its attempts.

-- name: claim_delivery
-- Takes the most overdue pending delivery that no live lease holds, leasing it to :owner
-- for :lease_seconds and counting the attempt. SKIP LOCKED: deliverers on every replica claim
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
SET lease_owner = :owner,
    lease_expires_at = now() + make_interval(secs => :lease_seconds),
    attempts = d.attempts + 1
FROM next
WHERE d.id = next.id
RETURNING d.id, d.tenant, d.live, d.url, d.attempts, d.create_time,
          jsonb_populate_record(NULL::import_jobs, d.job) AS job;

-- name: record_attempt
-- One attempt's outcome, whether or not its deliverer still holds the lease: it was made.
INSERT INTO webhook_attempts (delivery_id, number, start_time, latency_secs, http_status, error)
VALUES (:delivery_id, :number, :start_time, :latency_seconds, :http_status, :error)
ON CONFLICT (delivery_id, number) DO NOTHING;

-- name: finish_delivery
-- After attempt :attempt of delivery :delivery_id by lease holder :owner: DELIVERED when
-- :delivered (a 2xx), FAILED when :refused (the target is refused) or when the next
-- attempt, :retry_in_seconds from now, would fall beyond :retry_seconds after the event;
-- else PENDING until then. A deliverer whose lease was
-- taken over changes nothing.
UPDATE webhook_deliveries
SET state = CASE
        WHEN :delivered THEN 'DELIVERED'
        WHEN :refused OR now() + make_interval(secs => :retry_in_seconds) > create_time + make_interval(secs => :retry_seconds)
            THEN 'FAILED'
        ELSE 'PENDING' END,
    next_attempt_time = now() + make_interval(secs => :retry_in_seconds),
    end_time = CASE
        WHEN :delivered OR :refused OR now() + make_interval(secs => :retry_in_seconds) > create_time + make_interval(secs => :retry_seconds)
            THEN now() END,
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = :delivery_id AND attempts = :attempt AND lease_owner = :owner
RETURNING state;

-- name: release_deliveries
-- A replica shutting down hands back the deliveries it was attempting (they may have
-- reached the receiver: at-least-once, the same webhook-id again).
UPDATE webhook_deliveries
SET lease_owner = NULL, lease_expires_at = NULL
WHERE state = 'PENDING' AND starts_with(lease_owner, :owners);

-- name: list_deliveries
-- A job's deliveries, oldest first.
SELECT id, job_id, url, job_status, state, create_time, next_attempt_time, end_time
FROM webhook_deliveries
WHERE job_id = :job_id
ORDER BY create_time, id;

-- name: list_attempts
-- The attempts of a job's deliveries, in order.
SELECT a.delivery_id, a.number, a.start_time, a.latency_secs, a.http_status, a.error
FROM webhook_attempts a
JOIN webhook_deliveries d ON d.id = a.delivery_id
WHERE d.job_id = :job_id
ORDER BY a.delivery_id, a.number;
