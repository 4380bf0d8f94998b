-- Advanced by every change to tokens and users, in the changing
-- transaction: a Manager keeps the tokens it verified until the epoch
-- moves, so a revocation through another Manager reaches it within the
-- second it reads the epoch (neptune-store's token_cache).
CREATE TABLE auth_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO auth_epoch (id, epoch) VALUES (1, 0);
CREATE TRIGGER tokens_update_epoch AFTER UPDATE ON tokens
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
-- A token deleted once expired (the Manager's sweep, every few seconds)
-- was refused already: no Manager kept it usable, so the epoch stays and
-- what the Managers keep is not forgotten at every sweep.
CREATE TRIGGER tokens_delete_epoch AFTER DELETE ON tokens
WHEN OLD.expires_at IS NULL
  OR OLD.expires_at > CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER users_update_epoch AFTER UPDATE ON users
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
CREATE TRIGGER users_delete_epoch AFTER DELETE ON users
BEGIN UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1; END;
