-- One row that the readiness probe (`/readyz`) rewrites: its proof that the store takes writes.
CREATE TABLE health (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);
