-- Issue #25, slice 3 (rotation and reuse detection): a session's secrets rotate. Each secret of a
-- session is a row here, by its digest (never the secret): the current one (retired_at NULL) and
-- every one rotated out (kept while the session lives, so a rotated-out secret presented again is
-- told apart from an unknown one). The session keeps its key, its family: the digest of its first
-- secret (session_digest, unchanged). Rows go with their session (ON DELETE CASCADE).
CREATE TABLE session_secrets (
    digest          TEXT PRIMARY KEY NOT NULL,
    session_digest  TEXT NOT NULL REFERENCES sessions(session_digest) ON DELETE CASCADE,
    -- when it was issued (ms); 0: due for rotation at the session's next handshake (a sign-in
    -- from another device)
    issued_at       INTEGER NOT NULL,
    -- when it was rotated out (ms); NULL: the session's current secret
    retired_at      INTEGER
) STRICT;
CREATE UNIQUE INDEX secrets_current ON session_secrets(session_digest) WHERE retired_at IS NULL;
CREATE INDEX secrets_by_session ON session_secrets(session_digest, retired_at);
-- Every session from before this release keeps its one secret, issued when it was created.
INSERT INTO session_secrets (digest, session_digest, issued_at)
    SELECT session_digest, session_digest, created_at FROM sessions;
