-- Jobs are visible from their file's first byte: the job row is committed before the
-- upload (stage RECEIVING, then STAGING), and a short transaction of its own records how far
-- the upload got while the entries are stored by the staging transaction.
ALTER TABLE import_jobs
    ADD COLUMN received_bytes bigint NOT NULL DEFAULT 0,
    ADD COLUMN staged_rows bigint NOT NULL DEFAULT 0;
UPDATE import_jobs SET received_bytes = file_size_bytes, staged_rows = coalesce(total_rows, 0);
-- The housekeeper looks for uploads whose heartbeat (update_time) stopped: a handful of rows.
CREATE INDEX import_jobs_receiving ON import_jobs (update_time)
    WHERE stage IN ('RECEIVING', 'STAGING');
