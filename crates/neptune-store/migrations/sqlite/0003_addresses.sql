-- Address plans. One row per allocated prefix ('owned', with its VI and
-- owner) and one per prefix of the pool containing it ('covers', counted).
-- UNIQUE (pool, prefix) then refuses every overlapping commit: a plain
-- INSERT of an owned prefix fails if anything is at that prefix, and a
-- covers upsert affects no row when the prefix is owned (see neptune-ipam).
CREATE TABLE addresses (
    pool TEXT NOT NULL,
    prefix TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('owned', 'covers')),
    vi_id TEXT REFERENCES vis (id),
    owner TEXT,
    count BIGINT NOT NULL,
    PRIMARY KEY (pool, prefix)
);
CREATE INDEX addresses_vi ON addresses (vi_id);

-- The address plan committed with a VI (JSON), and each datacenter's Home Address pools.
ALTER TABLE vis ADD COLUMN address_plan TEXT;
ALTER TABLE datacenters ADD COLUMN home_pools TEXT NOT NULL DEFAULT '';
