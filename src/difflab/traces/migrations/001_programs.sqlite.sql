-- difflab traces: the program search tree, one row per program (SQLite, the embedded default).
CREATE TABLE IF NOT EXISTS programs (
    id           INTEGER PRIMARY KEY,
    code         TEXT NOT NULL,
    value        REAL DEFAULT 0,
    visits       INTEGER DEFAULT 0,
    parent_id    INTEGER REFERENCES programs (id) DEFERRABLE INITIALLY DEFERRED,
    response     TEXT,
    reasoning    TEXT,
    state_before TEXT,
    state_after  TEXT,
    version      TEXT,
    created_at   TEXT DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS programs_parent_id_idx ON programs (parent_id);
CREATE INDEX IF NOT EXISTS programs_version_id_idx ON programs (version, id);
