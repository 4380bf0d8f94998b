-- Tokens get an id (to list and revoke them by), a scope ('user': the
-- user's rights; 'agent': register and heartbeat one host only) and, for an
-- Agent's token, its host ('DATACENTER/HOST'). Existing tokens keep the
-- user's rights; their id is taken from their hash (a digest of a digest
-- of the secret, which tells nothing of it). Users can be disabled.
ALTER TABLE tokens ADD COLUMN id TEXT;
UPDATE tokens SET id = substr(hash, 1, 8) || '-' || substr(hash, 9, 4) || '-' || substr(hash, 13, 4)
    || '-' || substr(hash, 17, 4) || '-' || substr(hash, 21, 12);
CREATE UNIQUE INDEX tokens_id ON tokens (id);
ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'user' CHECK (scope IN ('user', 'agent'));
ALTER TABLE tokens ADD COLUMN host TEXT;
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
