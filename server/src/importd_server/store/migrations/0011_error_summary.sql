-- Issue 11: a job's row errors by code and column (model.ErrorCount), as a jsonb list of
-- {"code", "field", "count"}, most frequent first. Written in the same transactions as the
-- counts (staging's commit, each chunk's), so it is as exact as they are. Jobs from before
-- this migration read as an empty summary.
ALTER TABLE import_jobs ADD COLUMN error_summary jsonb NOT NULL DEFAULT '[]';
