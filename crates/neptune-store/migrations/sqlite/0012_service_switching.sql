-- Service Switching. Each datacenter's Edge Service Switch as the Manager
-- reaches it (the key stays in its file; only the path is kept).
CREATE TABLE switches (
    datacenter_id TEXT PRIMARY KEY NOT NULL REFERENCES datacenters (id),
    url TEXT NOT NULL,
    key_file TEXT NOT NULL,
    care_of TEXT NOT NULL,
    port TEXT NOT NULL,
    via TEXT,
    updated_at BIGINT NOT NULL
);

-- The last generation given to an update of a Home Address, on any
-- switch: every update takes a greater one, so none can be older than
-- one already applied.
CREATE TABLE address_generations (
    address TEXT PRIMARY KEY NOT NULL,
    generation BIGINT NOT NULL
);

-- Where a migrating VI's VMs go: reserved on the target hosts beside
-- their current slots (the vms rows) until the move is committed.
CREATE TABLE vm_moves (
    vi_id TEXT NOT NULL REFERENCES vis (id),
    node_id TEXT NOT NULL,
    host_id TEXT NOT NULL REFERENCES hosts (id),
    vcpus BIGINT NOT NULL,
    ram_mib BIGINT NOT NULL,
    disk_mib BIGINT NOT NULL,
    uplink_mbps BIGINT NOT NULL,
    PRIMARY KEY (vi_id, node_id)
);
CREATE INDEX vm_moves_host ON vm_moves (host_id);

-- The datacenter a VI's VMs run in (or, suspended, last ran in); NULL:
-- its home datacenter.
ALTER TABLE vis ADD COLUMN location_id TEXT REFERENCES datacenters (id);

-- An owner's request to move a VI, waiting for an administrator.
CREATE TABLE migration_requests (
    vi_id TEXT PRIMARY KEY NOT NULL REFERENCES vis (id),
    datacenter_id TEXT NOT NULL REFERENCES datacenters (id),
    requested_by TEXT NOT NULL REFERENCES users (id),
    requested_at BIGINT NOT NULL
);

CREATE TRIGGER vm_moves_insert_revision AFTER INSERT ON vm_moves
FOR EACH ROW
BEGIN
    UPDATE vis SET revision = revision + 1 WHERE id = NEW.vi_id;
END;

CREATE TRIGGER vm_moves_delete_revision AFTER DELETE ON vm_moves
FOR EACH ROW
BEGIN
    UPDATE vis SET revision = revision + 1 WHERE id = OLD.vi_id;
END;

CREATE TRIGGER migration_requests_insert_revision AFTER INSERT ON migration_requests
FOR EACH ROW
BEGIN
    UPDATE vis SET revision = revision + 1 WHERE id = NEW.vi_id;
END;

CREATE TRIGGER migration_requests_delete_revision AFTER DELETE ON migration_requests
FOR EACH ROW
BEGIN
    UPDATE vis SET revision = revision + 1 WHERE id = OLD.vi_id;
END;
