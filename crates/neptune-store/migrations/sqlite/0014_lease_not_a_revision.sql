-- A job's lease (its owner and lease_until, renewed every few seconds while
-- it runs) is not shown to a VI's readers: renewing it no longer grows the
-- VI's revision, so the views kept of the VI stay current. The trigger
-- fires only for updates that set a column readers are shown.
DROP TRIGGER jobs_update_revision;
CREATE TRIGGER jobs_update_revision
AFTER UPDATE OF vi_id, kind, state, steps, cursor, total, error, created_at, updated_at ON jobs
FOR EACH ROW
BEGIN
    UPDATE vis SET revision = revision + 1 WHERE id IN (OLD.vi_id, NEW.vi_id);
END;
