-- Jobs started with a test token are test jobs (always dry runs); test tokens see only them.
ALTER TABLE import_jobs ADD COLUMN live boolean NOT NULL DEFAULT true;
