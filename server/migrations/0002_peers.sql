-- Who each user has a conversation with, so that a connect reads the newest messages of each
-- conversation (an index range per peer) instead of every message the user ever sent or got.
-- Kept by a trigger, inside the statement that inserts the message: both or neither.
CREATE TABLE peers (
    user_id TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    pair    TEXT NOT NULL,
    PRIMARY KEY (user_id, peer_id)
) STRICT, WITHOUT ROWID;

INSERT OR IGNORE INTO peers (user_id, peer_id, pair)
    SELECT from_user, to_user, pair FROM messages;
INSERT OR IGNORE INTO peers (user_id, peer_id, pair)
    SELECT to_user, from_user, pair FROM messages;

CREATE TRIGGER messages_peers AFTER INSERT ON messages
BEGIN
    INSERT OR IGNORE INTO peers (user_id, peer_id, pair)
        VALUES (NEW.from_user, NEW.to_user, NEW.pair), (NEW.to_user, NEW.from_user, NEW.pair);
END;
