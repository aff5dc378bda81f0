-- Secrets every replica must share, made once by whichever replica needs one first
-- (store/secrets.py): e.g. the key that signs page tokens.
CREATE TABLE importd_secrets (
    name        text PRIMARY KEY,
    value       bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
