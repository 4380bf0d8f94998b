-- Users' SSH public keys: every guest of their VIs accepts them (they go
-- into the guests' cloud-init seeds). A key is kept once per user, by its
-- fingerprint.
CREATE TABLE ssh_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    public_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (user_id, fingerprint)
);
