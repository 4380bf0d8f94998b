-- A plan reads the roomiest ready hosts of its datacenter with a free slot
-- (Store::roomiest_hosts), most free vCPUs first, then RAM: this index
-- gives them in that order, so the read stops after its limit instead of
-- sorting every host of the datacenter at each accept.
CREATE INDEX hosts_roomiest ON hosts
    (datacenter_id, (cpus - used_vcpus) DESC, (ram_mib - used_ram_mib) DESC, name)
    WHERE state = 'ready';
