-- Issue #25: an account's passkeys are listed to its sessions, each with the browser it was
-- added in (a device label, as `sessions.device`); empty for those added before.
ALTER TABLE passkeys ADD COLUMN added_in TEXT NOT NULL DEFAULT '';
