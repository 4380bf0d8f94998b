-- Templates have an owner and a visibility: private (its owner's alone) or
-- public (every user's, made so by an administrator). Names are unique per
-- owner, and among public templates. Existing templates of administrators
-- (or of nobody) are public; those users saved stay their own.
ALTER TABLE templates ADD COLUMN visibility TEXT NOT NULL DEFAULT 'public'
    CHECK (visibility IN ('private', 'public'));
UPDATE templates SET visibility = 'private'
    WHERE owner_id IS NOT NULL AND owner_id NOT IN (SELECT id FROM users WHERE role = 'admin');
ALTER TABLE templates ALTER COLUMN visibility DROP DEFAULT;
ALTER TABLE templates DROP CONSTRAINT templates_name_key;
CREATE UNIQUE INDEX templates_owner_name ON templates (owner_id, name);
CREATE UNIQUE INDEX templates_public_name ON templates (name) WHERE visibility = 'public';
