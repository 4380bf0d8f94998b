-- A VI's revision grows with every write of what a reader is shown about
-- it: the VI row, its history, its jobs and its placement, whichever
-- Manager makes the write. One indexed read of it then tells a Manager
-- whether a view of the VI it keeps is still current. Triggers do the
-- counting so that no write path, present or future, can forget it.
ALTER TABLE vis ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
-- Stamps are read from these indexes alone, not from the wide VI rows
-- with their designs.
CREATE INDEX vis_stamp ON vis (id, owner_id, revision);
CREATE INDEX vis_owner_revision ON vis (owner_id, revision);

-- An update that sets the revision itself (the triggers below) is counted once.
CREATE FUNCTION vis_count_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.revision = OLD.revision THEN
        NEW.revision := OLD.revision + 1;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER vis_revision BEFORE UPDATE ON vis
FOR EACH ROW EXECUTE FUNCTION vis_count_revision();

-- For rows that belong to a VI through their vi_id column.
CREATE FUNCTION vi_part_count_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE vis SET revision = revision + 1 WHERE id = OLD.vi_id;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.vi_id IS DISTINCT FROM OLD.vi_id) THEN
        UPDATE vis SET revision = revision + 1 WHERE id = NEW.vi_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER vi_events_revision AFTER INSERT ON vi_events
FOR EACH ROW EXECUTE FUNCTION vi_part_count_revision();

CREATE TRIGGER jobs_revision AFTER INSERT OR UPDATE OR DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION vi_part_count_revision();

CREATE TRIGGER vms_revision AFTER INSERT OR UPDATE OR DELETE ON vms
FOR EACH ROW EXECUTE FUNCTION vi_part_count_revision();
