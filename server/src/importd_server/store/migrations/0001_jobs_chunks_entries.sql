-- The job tables. Status and mode are text: readable in psql, checked here.
CREATE TABLE import_jobs (
    id              uuid PRIMARY KEY,
    tenant          text NOT NULL,
    import_type     text NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('INSERT', 'UPSERT', 'UPDATE', 'DELETE')),
    format          text NOT NULL CHECK (format IN ('CSV', 'JSONL')),
    options         jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL CHECK (status IN ('QUEUED', 'RUNNING', 'SUCCEEDED',
                        'PARTIALLY_SUCCEEDED', 'FAILED', 'CANCELLED')),
    stage           text CHECK (stage IN ('RECEIVING', 'STAGING', 'PROCESSING', 'FINALIZING')),
    file_name       text NOT NULL DEFAULT '',
    file_size_bytes bigint NOT NULL DEFAULT 0,
    sha256          text NOT NULL DEFAULT '',
    columns         text[] NOT NULL DEFAULT '{}',
    total_rows      bigint,
    processed_rows  bigint NOT NULL DEFAULT 0,
    created_count   bigint NOT NULL DEFAULT 0,
    updated_count   bigint NOT NULL DEFAULT 0,
    unchanged_count bigint NOT NULL DEFAULT 0,
    skipped_count   bigint NOT NULL DEFAULT 0,
    failed_count    bigint NOT NULL DEFAULT 0,
    deleted_count   bigint NOT NULL DEFAULT 0,
    rows_per_second double precision NOT NULL DEFAULT 0,
    error_code      text,
    error_reason    text,
    error_message   text,
    dry_run         boolean NOT NULL DEFAULT false,
    all_or_nothing  boolean NOT NULL DEFAULT false,
    max_errors      bigint,
    labels          jsonb NOT NULL DEFAULT '{}',
    request_id      text,
    spec_digest     text,
    create_time     timestamptz NOT NULL DEFAULT now(),
    start_time      timestamptz,
    end_time        timestamptz,
    update_time     timestamptz NOT NULL DEFAULT now()
);

-- ListJobs: a tenant's jobs newest first, as a keyset scan.
CREATE INDEX import_jobs_tenant_newest ON import_jobs (tenant, create_time DESC, id DESC);
-- AIP-155: one job per (tenant, request_id).
CREATE UNIQUE INDEX import_jobs_request_id ON import_jobs (tenant, request_id)
    WHERE request_id IS NOT NULL;

CREATE TABLE import_chunks (
    job_id           uuid NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    chunk_number     integer NOT NULL,
    first_row        bigint NOT NULL,
    last_row         bigint NOT NULL,
    status           text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'DONE')),
    lease_owner      text,
    lease_expires_at timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, chunk_number)
);

-- Workers look for claimable chunks only among the unfinished ones.
CREATE INDEX import_chunks_claimable ON import_chunks (job_id, chunk_number)
    WHERE status = 'PENDING';

-- Every row of every file. fillfactor leaves room in each page so that recording a row's
-- outcome is a HOT update (no index work).
CREATE TABLE import_entries (
    job_id       uuid NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    row_number   bigint NOT NULL,
    line_number  bigint NOT NULL,
    status       text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'CREATED',
                     'UPDATED', 'UNCHANGED', 'SKIPPED', 'FAILED', 'DELETED')),
    key          text,
    raw          text[] NOT NULL,  -- the row's fields, in the order of import_jobs.columns
    errors       jsonb,
    note         text,
    process_time timestamptz,
    PRIMARY KEY (job_id, row_number)
) WITH (fillfactor = 70);
