-- Queries on import_jobs. Columns are listed once per query on purpose: a reader
-- sees exactly what leaves the database.

-- name: get_job
SELECT * FROM import_jobs WHERE id = $1 AND tenant = $2;

-- name: list_jobs
-- A keyset page of one tenant's jobs, newest first. $3/$4 are the cursor
-- (create_time, id) of the previous page's last job, both NULL on the first page.
SELECT *
FROM import_jobs
WHERE tenant = $1
  AND (cardinality($2::text[]) = 0 OR status = ANY($2::text[]))
  AND ($5::text IS NULL OR import_type = $5)
  AND ($3::timestamptz IS NULL OR (create_time, id) < ($3, $4::uuid))
ORDER BY create_time DESC, id DESC
LIMIT $6;
