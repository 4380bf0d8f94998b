-- A design's size in bytes, kept with its VI: the design quota sums it
-- instead of measuring the text of every design of the owner at each
-- create and edit (LENGTH read every design, and counted characters).
-- The holdings index covers the design and usage quota checks, so they
-- read neither the rows nor their designs.
ALTER TABLE vis ADD COLUMN design_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE vis SET design_bytes = OCTET_LENGTH(design_xml);
CREATE INDEX vis_holdings ON vis
    (owner_id, state, id, design_bytes, usage_vms, usage_vcpus, usage_ram_mib,
     usage_public_addresses, usage_private_addresses);
DROP INDEX vis_owner;
