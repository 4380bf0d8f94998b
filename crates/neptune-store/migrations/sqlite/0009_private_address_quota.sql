-- A quota on private addresses: the link subnets and address blocks a
-- user's VIs take from the Service Switching domain's private pools.
ALTER TABLE users ADD COLUMN quota_private_addresses BIGINT NOT NULL DEFAULT 4096;
