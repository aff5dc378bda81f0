-- Webhooks from an outbox, and each job's trace context.

-- The W3C traceparent of the span that created the job: chunk spans on any replica join
-- that trace (tracing.py). NULL when tracing was off.
ALTER TABLE import_jobs ADD COLUMN trace_parent text;

-- The outbox: one row per event of a job that asked for a webhook
-- (options.webhook = {"url": ..., "events": "TERMINAL" | "ALL"}), written by the trigger
-- below in the transaction that changed the job's status, whichever code path did it.
-- Deliverers on every replica claim due rows with a lease (webhooks/deliverer.py).
CREATE TABLE webhook_deliveries (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),  -- the webhook-id header
    job_id            uuid NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    tenant            text NOT NULL,
    live              boolean NOT NULL,
    url               text NOT NULL,
    job_status        text NOT NULL,
    job               jsonb NOT NULL,  -- the import_jobs row as committed: the body's Job
    state             text NOT NULL DEFAULT 'PENDING'
                          CHECK (state IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempts          integer NOT NULL DEFAULT 0,
    create_time       timestamptz NOT NULL DEFAULT clock_timestamp(),
    next_attempt_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_owner       text,
    lease_expires_at  timestamptz,
    end_time          timestamptz,
    -- A status is reached once: one event per status, whatever retries the engine makes.
    UNIQUE (job_id, job_status)
);

-- Deliverers look for due rows only among the pending ones.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_time)
    WHERE state = 'PENDING';

-- Every POST of a delivery, for ListWebhookDeliveries.
CREATE TABLE webhook_attempts (
    delivery_id   uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    number        integer NOT NULL,
    start_time    timestamptz NOT NULL,
    latency_secs  double precision NOT NULL,
    http_status   integer,
    error         text,
    PRIMARY KEY (delivery_id, number)
);

-- Runs when the transaction that changed a job's status commits (a deferred trigger), and
-- reads the job as it is then: a job created and finished in one transaction (an
-- unreadable file) has one event, FAILED, with its final counts, not a QUEUED one too.
CREATE FUNCTION importd_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    job import_jobs;
BEGIN
    SELECT * INTO job FROM import_jobs WHERE id = NEW.id;
    IF job.status IS DISTINCT FROM NEW.status THEN
        RETURN NULL;  -- changed again later in this transaction: that change has its event
    END IF;
    IF job.status IN ('QUEUED', 'RUNNING')
       AND job.options -> 'webhook' ->> 'events' IS DISTINCT FROM 'ALL' THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (job_id, tenant, live, url, job_status, job)
    VALUES (job.id, job.tenant, job.live, job.options -> 'webhook' ->> 'url', job.status,
            to_jsonb(job))
    ON CONFLICT (job_id, job_status) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER import_jobs_webhook_created
    AFTER INSERT ON import_jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.options ? 'webhook')
    EXECUTE FUNCTION importd_webhook_outbox();

CREATE CONSTRAINT TRIGGER import_jobs_webhook_status_changed
    AFTER UPDATE OF status ON import_jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.options ? 'webhook' AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION importd_webhook_outbox();
