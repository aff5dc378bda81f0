-- When the retention setting removed a finished job's entries and chunks (the job stays).
ALTER TABLE import_jobs ADD COLUMN entries_removed_time timestamptz;
