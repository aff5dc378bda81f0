-- RevertJob (issue 11): what a job's writes replaced, recorded with the writes, and the
-- link between a job and the job that reverts it.

-- The previous values of the target rows one statement of a chunk changed: one row per
-- batch of rows :first_row..:last_row of the job, `images` a JSON object of row number ->
-- the row's values before the write (the columns the job updated, or the whole row it
-- deleted). Rows the job created need none: their values are the entry's. Removed by
-- retention with the job's entries.
CREATE TABLE import_before_images (
    job_id    uuid NOT NULL,
    first_row bigint NOT NULL,
    last_row  bigint NOT NULL,
    images    jsonb NOT NULL,
    PRIMARY KEY (job_id, first_row)
);

-- A revert is a job of its own; revert_of is the job it undoes, reverted_by the latest
-- revert of a job. Jobs staged before this migration recorded no previous values, so they
-- cannot be reverted.
ALTER TABLE import_jobs
    ADD COLUMN revert_of uuid REFERENCES import_jobs (id),
    ADD COLUMN reverted_by uuid,
    ADD COLUMN revertible boolean NOT NULL DEFAULT false;
ALTER TABLE import_jobs ALTER COLUMN revertible SET DEFAULT true;

-- One revert of a job at a time: a revert that failed or was cancelled leaves room for
-- another (its rows already reverted are then SKIPPED, as changed since the import).
CREATE UNIQUE INDEX import_jobs_one_revert ON import_jobs (revert_of)
    WHERE revert_of IS NOT NULL AND status NOT IN ('FAILED', 'CANCELLED');
