-- A restore (messages since an id) now reads the viewer's conversations (`peers`) through the
-- pair index, so the sender and recipient indexes only cost writes: each was a random B-tree
-- page dirtied by every message (two of the four such pages per message, each written to the
-- WAL and again at checkpoint).
DROP INDEX IF EXISTS messages_by_sender;
DROP INDEX IF EXISTS messages_by_recipient;
