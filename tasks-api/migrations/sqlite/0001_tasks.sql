CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    owner       TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    description TEXT,
    due         TEXT,
    done        INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
CREATE INDEX tasks_owner ON tasks (owner, id);
