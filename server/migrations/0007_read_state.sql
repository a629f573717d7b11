-- Read state (issue 24): each user's read cursor per conversation, and their settings.
--
-- A cursor is written only when its owner reads (`read`), never when a message is stored: the
-- writer's cost per message stays what it was (issue 26). What changes with every message, a
-- conversation's latest activity and its unread count, is computed when read, from
-- `messages_by_pair` (one index seek per conversation for its newest id; the messages after a
-- cursor, newest first, for a count).
CREATE TABLE read_cursors (
    user_id TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    -- the newest message id read (never more than the conversation's newest when written)
    up_to   INTEGER NOT NULL,
    -- when it last moved, ms since the Unix epoch
    at      INTEGER NOT NULL,
    PRIMARY KEY (user_id, peer_id)
) STRICT, WITHOUT ROWID;

-- Send read receipts and see other people's: on by default.
ALTER TABLE users ADD COLUMN read_receipts INTEGER NOT NULL DEFAULT 1;
