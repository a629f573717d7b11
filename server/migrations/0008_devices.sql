-- Issue #25, slice 1: a session is a device, keyed by its family (the digest of its first
-- secret: session_digest, unchanged, so no row is rewritten). Each records the browser it
-- signed up in ("Firefox on Linux"), classified from the User-Agent; the header itself is
-- never stored. Sessions from before this release have no label ('').
ALTER TABLE sessions ADD COLUMN device TEXT NOT NULL DEFAULT '';
