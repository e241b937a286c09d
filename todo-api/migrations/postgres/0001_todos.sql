CREATE TABLE todos (
    id          BIGSERIAL PRIMARY KEY,
    title       TEXT    NOT NULL,
    done        BIGINT  NOT NULL DEFAULT 0,
    created_by  TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
CREATE INDEX todos_done ON todos (done, id);
