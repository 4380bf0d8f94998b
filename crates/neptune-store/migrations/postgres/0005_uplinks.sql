-- Host uplinks: the bandwidth of a host's link to its datacenter's switch
-- (0: not registered, unlimited), and what the placed VIs take of it. A VM
-- row holds its share: the bandwidth of its virtual links to VMs on other
-- hosts, which all crosses its host's uplink.
ALTER TABLE hosts ADD COLUMN uplink_mbps BIGINT NOT NULL DEFAULT 0 CHECK (uplink_mbps >= 0);
ALTER TABLE hosts ADD COLUMN used_uplink_mbps BIGINT NOT NULL DEFAULT 0;
ALTER TABLE vms ADD COLUMN uplink_mbps BIGINT NOT NULL DEFAULT 0 CHECK (uplink_mbps >= 0);
