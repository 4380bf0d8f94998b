-- Advanced by every change to tokens and users, in the changing
-- transaction: a Manager keeps the tokens it verified until the epoch
-- moves, so a revocation through another Manager reaches it within the
-- second it reads the epoch (neptune-store's token_cache).
CREATE TABLE auth_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO auth_epoch (id, epoch) VALUES (1, 0);
-- The epoch's row is locked before any token or user row a statement
-- changes, so that every transaction takes the two in the same order (a
-- transaction that held a token and waited for the epoch, beside one that
-- held the epoch and waited for that token, would deadlock).
CREATE FUNCTION lock_auth_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM auth_epoch WHERE id = 1 FOR UPDATE;
    RETURN NULL;
END
$$;
CREATE FUNCTION advance_auth_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER tokens_epoch_lock BEFORE UPDATE OR DELETE ON tokens
FOR EACH STATEMENT EXECUTE FUNCTION lock_auth_epoch();
CREATE TRIGGER users_epoch_lock BEFORE UPDATE OR DELETE ON users
FOR EACH STATEMENT EXECUTE FUNCTION lock_auth_epoch();
-- Row by row: a statement that changes nothing leaves the epoch, and the
-- tokens kept, alone. So does a token deleted once expired (the Manager's
-- sweep, every few seconds): it was refused already, nowhere usable.
CREATE TRIGGER tokens_epoch AFTER UPDATE ON tokens
FOR EACH ROW EXECUTE FUNCTION advance_auth_epoch();
CREATE TRIGGER tokens_delete_epoch AFTER DELETE ON tokens
FOR EACH ROW
WHEN (OLD.expires_at IS NULL
      OR OLD.expires_at > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT)
EXECUTE FUNCTION advance_auth_epoch();
CREATE TRIGGER users_epoch AFTER UPDATE OR DELETE ON users
FOR EACH ROW EXECUTE FUNCTION advance_auth_epoch();
