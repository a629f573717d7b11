-- Expiry (issue 21): sessions are ended by a sweep when their deadline passes, and accounts
-- that never sent or received a message are deleted once idle or left without a session.
--
-- The sweep finds expired sessions through these two indexes (idle: `last_seen_at`; maximum
-- age: `created_at`) instead of reading every session each second.
CREATE INDEX sessions_by_last_seen ON sessions(last_seen_at);
CREATE INDEX sessions_by_created ON sessions(created_at);

-- 1 once the user sent or received a message (set before the message is written): such an
-- account is never deleted by expiry.
ALTER TABLE users ADD COLUMN messaged INTEGER NOT NULL DEFAULT 0;
-- The account's last handshake or connected socket, for message-less accounts; 0 once its
-- last session ended (the next account sweep deletes it).
ALTER TABLE users ADD COLUMN last_seen_at INTEGER NOT NULL DEFAULT 0;

UPDATE users SET messaged = 1
    WHERE EXISTS (SELECT 1 FROM peers p WHERE p.user_id = users.user_id);
UPDATE users SET last_seen_at = COALESCE(
        (SELECT MAX(s.last_seen_at) FROM sessions s WHERE s.user_id = users.user_id), 0)
    WHERE messaged = 0;

-- The account sweep reads only message-less accounts, oldest first.
CREATE INDEX users_without_messages ON users(last_seen_at) WHERE messaged = 0;
