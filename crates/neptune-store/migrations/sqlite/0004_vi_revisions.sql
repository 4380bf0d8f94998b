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

-- Runs once per update: its own UPDATE changes the revision, so the WHEN
-- clause stops it from firing again.
CREATE TRIGGER vis_revision AFTER UPDATE ON vis
FOR EACH ROW WHEN NEW.revision = OLD.revision
BEGIN
    UPDATE vis SET revision = OLD.revision + 1 WHERE id = NEW.id;
END;

CREATE TRIGGER vi_events_revision AFTER INSERT ON vi_events
FOR EACH ROW
BEGIN
    UPDATE vis SET revision = revision + 1 WHERE id = NEW.vi_id;
END;

CREATE TRIGGER jobs_insert_revision AFTER INSERT ON jobs
FOR EACH ROW
BEGIN
    UPDATE vis SET revision = revision + 1 WHERE id = NEW.vi_id;
END;

CREATE TRIGGER jobs_update_revision AFTER UPDATE ON jobs
FOR EACH ROW
BEGIN
    UPDATE vis SET revision = revision + 1 WHERE id IN (OLD.vi_id, NEW.vi_id);
END;

CREATE TRIGGER jobs_delete_revision AFTER DELETE ON jobs
FOR EACH ROW
BEGIN
    UPDATE vis SET revision = revision + 1 WHERE id = OLD.vi_id;
END;

CREATE TRIGGER vms_insert_revision AFTER INSERT ON vms
FOR EACH ROW
BEGIN
    UPDATE vis SET revision = revision + 1 WHERE id = NEW.vi_id;
END;

CREATE TRIGGER vms_update_revision AFTER UPDATE ON vms
FOR EACH ROW
BEGIN
    UPDATE vis SET revision = revision + 1 WHERE id IN (OLD.vi_id, NEW.vi_id);
END;

CREATE TRIGGER vms_delete_revision AFTER DELETE ON vms
FOR EACH ROW
BEGIN
    UPDATE vis SET revision = revision + 1 WHERE id = OLD.vi_id;
END;
