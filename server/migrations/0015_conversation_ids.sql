-- Issue #26 (the store writer's CPU per message): a conversation is keyed by an integer, not by
-- its two parties' ids joined (`pair`, 73 characters of text, written into every message row
-- and into every entry of the index a conversation is read through).
--
-- Each message dirties the last leaf of its conversation's range in that index: under load,
-- one random page per message, most of what the writer does (store-load, 1,000 users: 21 µs
-- of writer CPU per message with that index, 7 with none). With keys of a few bytes instead of
-- 73 a leaf holds about eight times the entries, B-tree searches compare integers instead of
-- strings, each message row is 73 bytes shorter, and a message's conversation is one lookup
-- (`peers`) instead of an insert of two rows: 14 µs per message (BENCHMARKS.md, session 29).
--
-- `conversations` names each conversation once (its `pair`, unique: the guard that two
-- parties have one conversation); `peers` and `messages` carry its id (`conv`). Both tables are
-- rebuilt, keeping every message id and the id sequence (AUTOINCREMENT: an id is never used
-- twice). Conversations are taken from `peers` and from `messages`, so a message whose
-- conversation `peers` did not name (none should exist) keeps its place in every read.
CREATE TABLE conversations (
    id   INTEGER PRIMARY KEY,
    pair TEXT NOT NULL UNIQUE
) STRICT;
INSERT INTO conversations (pair)
    SELECT pair FROM peers UNION SELECT pair FROM messages ORDER BY 1;

CREATE TABLE peers_by_id (
    user_id TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    conv    INTEGER NOT NULL,
    PRIMARY KEY (user_id, peer_id)
) STRICT, WITHOUT ROWID;
INSERT OR IGNORE INTO peers_by_id (user_id, peer_id, conv)
    SELECT p.user_id, p.peer_id, c.id FROM peers p JOIN conversations c ON c.pair = p.pair;
INSERT OR IGNORE INTO peers_by_id (user_id, peer_id, conv)
    SELECT m.from_user, m.to_user, c.id FROM messages m JOIN conversations c ON c.pair = m.pair;
INSERT OR IGNORE INTO peers_by_id (user_id, peer_id, conv)
    SELECT m.to_user, m.from_user, c.id FROM messages m JOIN conversations c ON c.pair = m.pair;
-- Whoever has a conversation has messages (migration 5), also those `peers` learns of here.
UPDATE users SET messaged = 1
    WHERE messaged = 0 AND EXISTS (SELECT 1 FROM peers_by_id p WHERE p.user_id = users.user_id);
DROP TABLE peers;
ALTER TABLE peers_by_id RENAME TO peers;

CREATE TABLE messages_by_id (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts         INTEGER NOT NULL,
    from_user  TEXT NOT NULL REFERENCES users(user_id),
    to_user    TEXT NOT NULL REFERENCES users(user_id),
    -- no REFERENCES: it is read from `peers` in the same job (a foreign key would cost each
    -- message one more B-tree search)
    conv       INTEGER NOT NULL,
    content    TEXT NOT NULL,
    client_id  TEXT
) STRICT;
INSERT INTO messages_by_id (id, ts, from_user, to_user, conv, content, client_id)
    SELECT m.id, m.ts, m.from_user, m.to_user, c.id, m.content, m.client_id
    FROM messages m JOIN conversations c ON c.pair = m.pair ORDER BY m.id;
-- The sequence goes on from where the old table's stopped (past its newest id, even one no
-- longer there, or past a backup's gap in an empty table). The row is made first in case the
-- copy made none (SQLite 3.50 makes it even for a copy of no rows).
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'messages_by_id', 0
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'messages_by_id');
UPDATE sqlite_sequence SET seq = MAX(seq,
        COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0))
    WHERE name = 'messages_by_id';
DROP TABLE messages;
ALTER TABLE messages_by_id RENAME TO messages;

-- The resend check's index as migration 3 made it; the conversation index, by integer.
CREATE UNIQUE INDEX messages_by_client_id ON messages(client_id, from_user)
    WHERE client_id IS NOT NULL;
CREATE INDEX messages_by_conv ON messages(conv, id);
