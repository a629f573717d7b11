-- Users are public addresses; sessions are private bearer secrets (kept only as SHA-256
-- digests); messages are direct messages between two users.
CREATE TABLE users (
    user_id     TEXT PRIMARY KEY NOT NULL,
    username    TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    session_digest TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users(user_id),
    created_at     INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts         INTEGER NOT NULL,
    from_user  TEXT NOT NULL REFERENCES users(user_id),
    to_user    TEXT NOT NULL REFERENCES users(user_id),
    -- the two parties in sorted order, joined by ':': one key per conversation
    pair       TEXT NOT NULL,
    content    TEXT NOT NULL,
    client_id  TEXT
) STRICT;

CREATE UNIQUE INDEX messages_by_client_id ON messages(from_user, client_id)
    WHERE client_id IS NOT NULL;
CREATE INDEX messages_by_pair ON messages(pair, id);
CREATE INDEX messages_by_sender ON messages(from_user, id);
CREATE INDEX messages_by_recipient ON messages(to_user, id);
