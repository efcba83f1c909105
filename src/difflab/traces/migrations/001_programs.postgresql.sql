-- difflab traces: the program search tree, one row per program (PostgreSQL).
CREATE TABLE IF NOT EXISTS programs (
    id           bigint PRIMARY KEY,
    code         text NOT NULL,
    value        double precision DEFAULT 0,
    visits       integer DEFAULT 0,
    parent_id    bigint REFERENCES programs (id) DEFERRABLE INITIALLY DEFERRED,
    response     text,
    reasoning    text,
    state_before jsonb,
    state_after  jsonb,
    version      text,
    created_at   timestamptz DEFAULT now()
);
CREATE INDEX IF NOT EXISTS programs_parent_id_idx ON programs (parent_id);
CREATE INDEX IF NOT EXISTS programs_version_id_idx ON programs (version, id);
