-- Fewer random B-tree pages written per message (each dirty page is written to the WAL and
-- again at checkpoint; they were most of the writer's cost).
--
-- A restore (messages since an id) now reads the viewer's conversations (`peers`) through the
-- pair index, so the sender and recipient indexes only cost writes: two of the four random
-- pages each message dirtied.
DROP INDEX IF EXISTS messages_by_sender;
DROP INDEX IF EXISTS messages_by_recipient;

-- The resend check keys on the client's id first: Tether's clients send UUID v7 ids, which
-- grow with time, so new entries land together at the end of the index instead of on a random
-- page each. Any UUID is still accepted; random ones only cost what they did before.
DROP INDEX IF EXISTS messages_by_client_id;
CREATE UNIQUE INDEX messages_by_client_id ON messages(client_id, from_user)
    WHERE client_id IS NOT NULL;
