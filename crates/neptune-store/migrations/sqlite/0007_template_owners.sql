-- Templates have an owner and a visibility: private (its owner's alone) or
-- public (every user's, made so by an administrator). Names are unique per
-- owner, and among public templates. Existing templates of administrators
-- (or of nobody) are public; those users saved stay their own.
CREATE TABLE templates_new (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    owner_id TEXT REFERENCES users (id),
    visibility TEXT NOT NULL CHECK (visibility IN ('private', 'public')),
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
INSERT INTO templates_new
SELECT id, name, owner_id,
       CASE WHEN owner_id IS NULL OR owner_id IN (SELECT id FROM users WHERE role = 'admin')
            THEN 'public' ELSE 'private' END,
       image_path, format, size_mib, os_name, vcpus, ram_mib, disk_mib, software, created_at
FROM templates;
DROP TABLE templates;
ALTER TABLE templates_new RENAME TO templates;
CREATE UNIQUE INDEX templates_owner_name ON templates (owner_id, name);
CREATE UNIQUE INDEX templates_public_name ON templates (name) WHERE visibility = 'public';
