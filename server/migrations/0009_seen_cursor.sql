-- Read receipts (issue 24 review): each read cursor gets a *seen* cursor beside it, what the
-- peer may know its owner read. It moves with the read cursor only when the read cursor moves
-- while both users have read receipts on (see `Store::mark_read`); a read made while either has
-- them off moves the read cursor alone, so turning receipts on again reports nothing of it. The
-- peer's "Seen" (`seen` events, `peerRead` in `conversations`) is taken from here.
ALTER TABLE read_cursors ADD COLUMN seen_up_to INTEGER NOT NULL DEFAULT 0;
ALTER TABLE read_cursors ADD COLUMN seen_at INTEGER NOT NULL DEFAULT 0;

-- What peers are shown today stays shown: a cursor of two users who share receipts now was
-- already reported, so it becomes the seen cursor. Where either has them off nobody sees it,
-- and nobody can tell which part of it was read while receipts were shared: nothing is seen
-- until the next read made with receipts shared. (A user row that is gone counts as on, as the
-- store reads it; none is, for an account with messages.)
UPDATE read_cursors SET seen_up_to = up_to, seen_at = at
WHERE user_id <> peer_id
  AND COALESCE((SELECT read_receipts FROM users WHERE users.user_id = read_cursors.user_id), 1) = 1
  AND COALESCE((SELECT read_receipts FROM users WHERE users.user_id = read_cursors.peer_id), 1) = 1;
