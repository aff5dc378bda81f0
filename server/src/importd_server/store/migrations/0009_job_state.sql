-- One owner for job state (issue 10): a job's error is stored as the errors.py kind it was
-- raised as (InvalidArgument, FailedPrecondition, Aborted, Internal), which api/status.py
-- maps to a status code, instead of the code's name. The names below are those the
-- versions before this migration stored.
ALTER TABLE import_jobs RENAME COLUMN error_code TO error_kind;
UPDATE import_jobs
SET error_kind = CASE error_kind
        WHEN 'INVALID_ARGUMENT' THEN 'InvalidArgument'
        WHEN 'FAILED_PRECONDITION' THEN 'FailedPrecondition'
        WHEN 'ABORTED' THEN 'Aborted'
        ELSE 'Internal' END
WHERE error_kind IS NOT NULL;
