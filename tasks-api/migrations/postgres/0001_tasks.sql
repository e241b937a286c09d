CREATE TABLE tasks (
    id          BIGSERIAL PRIMARY KEY,
    owner       TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    description TEXT,
    due         TEXT,
    done        BIGINT  NOT NULL DEFAULT 0,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
CREATE INDEX tasks_owner ON tasks (owner, id);
