-- Issue #25, slice 2 (proof of possession): the P-256 public key a session is bound to, the
-- 65-byte uncompressed SEC1 point its browser's non-extractable key exports. NULL: unbound (a
-- tutorial client's session, or one from before this release, which binds on first proof).
-- Once set it never changes: a handshake resuming the session must sign its connection's
-- Engine.IO sid with that key.
ALTER TABLE sessions ADD COLUMN pop_key BLOB;
