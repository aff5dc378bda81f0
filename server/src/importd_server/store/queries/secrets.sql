-- Queries on importd_secrets.

-- name: offer_secret
-- Stores :value as the secret :name unless one exists: the first replica's random value
-- wins.
INSERT INTO importd_secrets (name, value) VALUES (:name, :value) ON CONFLICT (name) DO NOTHING;

-- name: get_secret
-- A statement of its own after offer_secret, so it sees a value another replica committed
-- while our offer waited.
SELECT value FROM importd_secrets WHERE name = :name;
