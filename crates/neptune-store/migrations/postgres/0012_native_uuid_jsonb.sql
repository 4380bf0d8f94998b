-- Ids become native UUIDs and JSON documents jsonb: the database refuses a
-- malformed one on every write, and an id takes 16 bytes instead of 36 in
-- every row and index. Existing text converts in place; a value that does
-- not convert fails the migration (and, in its transaction, changes
-- nothing) rather than being lost.
--
-- A foreign key must join columns of one type, so every key is dropped
-- while both of its sides change, then made again as it was (same name,
-- same ON DELETE).
ALTER TABLE tokens DROP CONSTRAINT tokens_user_id_fkey;
ALTER TABLE hosts DROP CONSTRAINT hosts_datacenter_id_fkey;
ALTER TABLE templates DROP CONSTRAINT templates_owner_id_fkey;
ALTER TABLE vis DROP CONSTRAINT vis_owner_id_fkey;
ALTER TABLE vis DROP CONSTRAINT vis_home_datacenter_id_fkey;
ALTER TABLE vi_events DROP CONSTRAINT vi_events_vi_id_fkey;
ALTER TABLE vms DROP CONSTRAINT vms_vi_id_fkey;
ALTER TABLE vms DROP CONSTRAINT vms_host_id_fkey;
ALTER TABLE jobs DROP CONSTRAINT jobs_vi_id_fkey;
ALTER TABLE addresses DROP CONSTRAINT addresses_vi_id_fkey;
ALTER TABLE ssh_keys DROP CONSTRAINT ssh_keys_user_id_fkey;

ALTER TABLE users ALTER COLUMN id TYPE uuid USING id::uuid;
ALTER TABLE tokens
    ALTER COLUMN id TYPE uuid USING id::uuid,
    ALTER COLUMN user_id TYPE uuid USING user_id::uuid;
ALTER TABLE ssh_keys
    ALTER COLUMN id TYPE uuid USING id::uuid,
    ALTER COLUMN user_id TYPE uuid USING user_id::uuid;
ALTER TABLE datacenters ALTER COLUMN id TYPE uuid USING id::uuid;
ALTER TABLE hosts
    ALTER COLUMN id TYPE uuid USING id::uuid,
    ALTER COLUMN datacenter_id TYPE uuid USING datacenter_id::uuid;
ALTER TABLE templates
    ALTER COLUMN id TYPE uuid USING id::uuid,
    ALTER COLUMN owner_id TYPE uuid USING owner_id::uuid,
    ALTER COLUMN software TYPE jsonb USING software::jsonb;
ALTER TABLE vis
    ALTER COLUMN id TYPE uuid USING id::uuid,
    ALTER COLUMN owner_id TYPE uuid USING owner_id::uuid,
    ALTER COLUMN home_datacenter_id TYPE uuid USING home_datacenter_id::uuid,
    ALTER COLUMN address_plan TYPE jsonb USING address_plan::jsonb;
ALTER TABLE vi_events
    ALTER COLUMN vi_id TYPE uuid USING vi_id::uuid,
    ALTER COLUMN actor TYPE uuid USING actor::uuid;
ALTER TABLE vms
    ALTER COLUMN vi_id TYPE uuid USING vi_id::uuid,
    ALTER COLUMN host_id TYPE uuid USING host_id::uuid;
ALTER TABLE jobs
    ALTER COLUMN id TYPE uuid USING id::uuid,
    ALTER COLUMN vi_id TYPE uuid USING vi_id::uuid,
    ALTER COLUMN steps TYPE jsonb USING steps::jsonb;
ALTER TABLE addresses
    ALTER COLUMN vi_id TYPE uuid USING vi_id::uuid,
    ALTER COLUMN owner TYPE jsonb USING owner::jsonb;

ALTER TABLE tokens ADD CONSTRAINT tokens_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE hosts ADD CONSTRAINT hosts_datacenter_id_fkey
    FOREIGN KEY (datacenter_id) REFERENCES datacenters (id);
ALTER TABLE templates ADD CONSTRAINT templates_owner_id_fkey
    FOREIGN KEY (owner_id) REFERENCES users (id);
ALTER TABLE vis ADD CONSTRAINT vis_owner_id_fkey
    FOREIGN KEY (owner_id) REFERENCES users (id);
ALTER TABLE vis ADD CONSTRAINT vis_home_datacenter_id_fkey
    FOREIGN KEY (home_datacenter_id) REFERENCES datacenters (id);
ALTER TABLE vi_events ADD CONSTRAINT vi_events_vi_id_fkey
    FOREIGN KEY (vi_id) REFERENCES vis (id) ON DELETE CASCADE;
ALTER TABLE vms ADD CONSTRAINT vms_vi_id_fkey
    FOREIGN KEY (vi_id) REFERENCES vis (id);
ALTER TABLE vms ADD CONSTRAINT vms_host_id_fkey
    FOREIGN KEY (host_id) REFERENCES hosts (id);
ALTER TABLE jobs ADD CONSTRAINT jobs_vi_id_fkey
    FOREIGN KEY (vi_id) REFERENCES vis (id);
ALTER TABLE addresses ADD CONSTRAINT addresses_vi_id_fkey
    FOREIGN KEY (vi_id) REFERENCES vis (id);
ALTER TABLE ssh_keys ADD CONSTRAINT ssh_keys_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users (id);
