-- A task's version, for ETag and If-Match: every change adds one.
ALTER TABLE tasks ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
