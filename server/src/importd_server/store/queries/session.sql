-- Settings of a store's transaction.

-- name: by_key_only
-- For the rest of the transaction, rows are found through indexes. The statements of a
-- chunk and of staging touch rows by key; statistics taken while the target (or the
-- entries) were nearly empty would make a sequential scan look cheaper, and a scan of the
-- target per row of a chunk is quadratic in the import.
SET LOCAL enable_seqscan = off;
