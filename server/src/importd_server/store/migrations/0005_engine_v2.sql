-- Engine v2: an entry is written once, at staging, already validated (`clean` holds the
-- canonical text of a row whose values the file did not already spell canonically). A
-- processed chunk records its rows' outcomes as one string instead of updating each entry;
-- only rows whose outcome carries a note or errors (SKIPPED, FAILED) are updated.
ALTER TABLE import_entries ADD COLUMN clean text[];
-- Entries are no longer updated row by row: fill their pages.
ALTER TABLE import_entries SET (fillfactor = 100);
-- A foreign key check per copied row costs more than it protects: entries are removed with
-- their job's chunks by retention (remove_expired_entries), and jobs are never deleted.
ALTER TABLE import_entries DROP CONSTRAINT import_entries_job_id_fkey;

-- Rows per chunk: row n of a job is in chunk (n - 1) / chunk_rows + 1 (NULL: no chunks).
ALTER TABLE import_jobs ADD COLUMN chunk_rows integer;
UPDATE import_jobs j SET chunk_rows = c.last_row - c.first_row + 1
FROM import_chunks c
WHERE c.job_id = j.id AND c.chunk_number = 1;
-- Jobs staged before this migration did not validate their rows at staging: a worker
-- validates their pending rows first.
ALTER TABLE import_jobs ADD COLUMN validated_at_staging boolean NOT NULL DEFAULT false;
ALTER TABLE import_jobs ALTER COLUMN validated_at_staging SET DEFAULT true;

-- One character per row of the chunk (store/targets.py OUTCOMES), set when it is done.
ALTER TABLE import_chunks ADD COLUMN outcomes text, ADD COLUMN done_time timestamptz;
-- Keeps a chunk's outcomes inline and uncompressed (up to ~8,000 rows), so reading one
-- row's outcome is a substring, not a detoasting.
ALTER TABLE import_chunks SET (toast_tuple_target = 8160);
