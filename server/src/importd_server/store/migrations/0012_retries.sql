-- Retries (issue 11): a job started by RetryJob, or by StartImport with
-- ImportSpec.retry_of, names the job it retries. The parent lists its retries through
-- ListJobs' filter `retry_of = "<id>"`, a scan of this index. Its rows link to the
-- parent's through their importd_row column (import_jobs.columns says where it is).
ALTER TABLE import_jobs ADD COLUMN retry_of uuid;
CREATE INDEX import_jobs_retry_of ON import_jobs (tenant, retry_of, create_time DESC, id DESC)
    WHERE retry_of IS NOT NULL;
