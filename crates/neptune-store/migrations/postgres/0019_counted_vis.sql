-- A terminated VI stays, with its history. The design and usage quota
-- checks read the holdings index from the owner's first VI to their last,
-- terminated or not, so they grew slower with every VI the owner had
-- ever ended: in a second round of 1 000 VIs, the usage reads took twice
-- as long as in the first. Partial indexes hold only the VIs that count,
-- and the checks' conditions are theirs word for word (a partial index
-- serves only the queries whose conditions imply the index's). Both keep
-- the state too, as SQLite's must.
CREATE INDEX vis_designs ON vis (owner_id, id, state, design_bytes)
    WHERE state <> 'terminated';
CREATE INDEX vis_usage ON vis
    (owner_id, id, state, usage_vms, usage_vcpus, usage_ram_mib,
     usage_public_addresses, usage_private_addresses)
    WHERE state NOT IN ('defined', 'rejected', 'terminated');
DROP INDEX vis_holdings;
