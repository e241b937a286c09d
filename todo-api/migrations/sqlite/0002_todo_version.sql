-- A todo's version, for ETag and If-Match: every change adds one.
ALTER TABLE todos ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
