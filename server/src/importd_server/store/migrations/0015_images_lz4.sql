-- Issue 10: the previous values RevertJob needs are compressed with lz4 instead of pglz. An
-- all-updates 1M-row import spent ~10 % of its processing CPU in pglz on them (BENCHMARKS.md:
-- 15.3-16.4 s against 17.5-17.8 s). Only where PostgreSQL was built with lz4; elsewhere
-- (and for values stored before) pglz stays, and both read alike.
DO $$
BEGIN
    IF 'lz4' = ANY (SELECT unnest(enumvals) FROM pg_settings
                    WHERE name = 'default_toast_compression') THEN
        ALTER TABLE import_before_images ALTER COLUMN images SET COMPRESSION lz4;
    END IF;
END
$$;
