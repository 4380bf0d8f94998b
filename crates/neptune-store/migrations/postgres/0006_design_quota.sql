-- A quota on stored designs: how many VIs a user may hold (every state but
-- terminated, so designs never requested count too), and how many MiB of
-- design text they may take together.
ALTER TABLE users ADD COLUMN quota_designs BIGINT NOT NULL DEFAULT 100;
ALTER TABLE users ADD COLUMN quota_design_mib BIGINT NOT NULL DEFAULT 64;
