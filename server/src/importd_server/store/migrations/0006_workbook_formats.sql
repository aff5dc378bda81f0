-- Workbooks (XLSX, ODS) are imported too (engine/shapes.py). How a file was read (its
-- dialect: encoding, delimiter, sheet, what was detected) is kept in options.dialect.
ALTER TABLE import_jobs DROP CONSTRAINT import_jobs_format_check;
ALTER TABLE import_jobs ADD CONSTRAINT import_jobs_format_check
    CHECK (format IN ('CSV', 'JSONL', 'XLSX', 'ODS'));
