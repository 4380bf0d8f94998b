-- Neptune Manager schema, PostgreSQL flavour. Ids are UUID text; times are
-- milliseconds since the Unix epoch.
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    quota_vms BIGINT NOT NULL,
    quota_vcpus BIGINT NOT NULL,
    quota_ram_mib BIGINT NOT NULL,
    quota_public_addresses BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('session', 'api')),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX tokens_user ON tokens (user_id);

CREATE TABLE datacenters (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE hosts (
    id TEXT PRIMARY KEY NOT NULL,
    datacenter_id TEXT NOT NULL REFERENCES datacenters (id),
    name TEXT NOT NULL UNIQUE,
    agent_url TEXT NOT NULL,
    cpus BIGINT NOT NULL CHECK (cpus > 0),
    ram_mib BIGINT NOT NULL CHECK (ram_mib > 0),
    disk_mib BIGINT NOT NULL CHECK (disk_mib > 0),
    vm_slots BIGINT NOT NULL CHECK (vm_slots > 0),
    state TEXT NOT NULL CHECK (state IN ('ready', 'unreachable')),
    last_seen BIGINT NOT NULL
);

CREATE TABLE templates (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    owner_id TEXT REFERENCES users (id),
    image_path TEXT NOT NULL,
    format TEXT NOT NULL,
    size_mib BIGINT NOT NULL,
    os_name TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    ram_mib BIGINT NOT NULL,
    disk_mib BIGINT NOT NULL,
    software TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE vis (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    design_xml TEXT NOT NULL,
    home_datacenter_id TEXT REFERENCES datacenters (id),
    reject_reason TEXT,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX vis_owner ON vis (owner_id);

CREATE TABLE vi_events (
    seq BIGSERIAL PRIMARY KEY,
    vi_id TEXT NOT NULL REFERENCES vis (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX vi_events_vi ON vi_events (vi_id);
