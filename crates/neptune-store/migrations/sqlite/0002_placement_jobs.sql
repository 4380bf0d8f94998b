-- Placement reservations and durable jobs.
-- Host usage counters are updated with conditional UPDATEs, so a host is
-- never over capacity even when plans are committed concurrently.
ALTER TABLE hosts ADD COLUMN used_vcpus BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN used_ram_mib BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN used_disk_mib BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN used_slots BIGINT NOT NULL DEFAULT 0;

-- One row per placed VM: the VM slot it uses on its host.
CREATE TABLE vms (
    vi_id TEXT NOT NULL REFERENCES vis (id),
    node_id TEXT NOT NULL,
    host_id TEXT NOT NULL REFERENCES hosts (id),
    vcpus BIGINT NOT NULL,
    ram_mib BIGINT NOT NULL,
    disk_mib BIGINT NOT NULL,
    PRIMARY KEY (vi_id, node_id)
);
CREATE INDEX vms_host ON vms (host_id);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY NOT NULL,
    vi_id TEXT NOT NULL REFERENCES vis (id),
    kind TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'rolling_back', 'succeeded', 'rolled_back', 'failed')),
    steps TEXT NOT NULL,
    cursor BIGINT NOT NULL,
    total BIGINT NOT NULL,
    error TEXT,
    owner TEXT,
    lease_until BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_vi ON jobs (vi_id);
CREATE INDEX jobs_state ON jobs (state);
