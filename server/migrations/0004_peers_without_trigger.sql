-- The insert of a message names its conversation in `peers` itself, in the same job and before
-- the message (see `insert_message`), instead of through a trigger.
--
-- A trigger makes the message's INSERT a statement of several writes, and SQLite gives every
-- such statement inside a transaction a statement journal: a copy of each page it touches that
-- the transaction had already changed (the table's and the indexes' last pages, again for every
-- message of a batch). A single-row INSERT without a trigger checks its constraints before it
-- writes anything, so it needs none.
DROP TRIGGER IF EXISTS messages_peers;
