-- Per-user URL grants for the access claim (seed 003): a JSON array of paths.
ALTER TABLE users ADD COLUMN access TEXT NOT NULL DEFAULT '[]';
