-- A job is committed at its file's first byte (0008), QUEUED with stage RECEIVING. Its
-- QUEUED webhook event still waits until the file is staged (the stage cleared, total_rows
-- known), as before 0008; a job that fails or is cancelled while receiving its file has
-- only that event.
CREATE OR REPLACE FUNCTION importd_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    job import_jobs;
BEGIN
    SELECT * INTO job FROM import_jobs WHERE id = NEW.id;
    IF job.status IS DISTINCT FROM NEW.status THEN
        RETURN NULL;  -- changed again later in this transaction: that change has its event
    END IF;
    IF job.stage IN ('RECEIVING', 'STAGING') THEN
        RETURN NULL;  -- still receiving its file: QUEUED once the file is staged
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

-- Also when the file is staged: the stage leaves RECEIVING/STAGING, the status stays QUEUED.
DROP TRIGGER import_jobs_webhook_status_changed ON import_jobs;
CREATE CONSTRAINT TRIGGER import_jobs_webhook_status_changed
    AFTER UPDATE OF status, stage ON import_jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.options ? 'webhook' AND (
        OLD.status IS DISTINCT FROM NEW.status
        OR (OLD.stage IN ('RECEIVING', 'STAGING') AND NEW.stage IS NULL)))
    EXECUTE FUNCTION importd_webhook_outbox();
