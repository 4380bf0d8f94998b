-- What each VI takes of its owner's quota, recorded when it is requested
-- and accepted: a quota check sums these instead of reading and parsing
-- every design of the user. NULL: not recorded yet (VIs requested before
-- this migration); the Manager records it the first time it needs it.
ALTER TABLE vis ADD COLUMN usage_vms BIGINT;
ALTER TABLE vis ADD COLUMN usage_vcpus BIGINT;
ALTER TABLE vis ADD COLUMN usage_ram_mib BIGINT;
ALTER TABLE vis ADD COLUMN usage_public_addresses BIGINT;
ALTER TABLE vis ADD COLUMN usage_private_addresses BIGINT;
