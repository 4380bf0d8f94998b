-- A job's lease (its owner and lease_until, renewed every few seconds while
-- it runs) is not shown to a VI's readers: renewing it no longer grows the
-- VI's revision, so the views kept of the VI stay current. The update
-- trigger fires only for updates that set a column readers are shown.
DROP TRIGGER jobs_revision ON jobs;
CREATE TRIGGER jobs_revision AFTER INSERT OR DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION vi_part_count_revision();
CREATE TRIGGER jobs_update_revision
AFTER UPDATE OF vi_id, kind, state, steps, cursor, total, error, created_at, updated_at ON jobs
FOR EACH ROW EXECUTE FUNCTION vi_part_count_revision();
