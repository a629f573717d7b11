-- Issue #25, slice 4: passkeys. An account's passkeys (webauthn-rs `Passkey` as JSON; the
-- credential id is unique across accounts, as webauthn-rs requires), the names they protect
-- (compared trimmed and lower-cased: `store::name_key`), and the sign-in ceremonies waiting
-- between their two HTTP requests (single use, deleted when taken or past `expires_at`).
CREATE TABLE passkeys (
    cred_id       TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users(user_id),
    passkey       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX passkeys_by_user ON passkeys(user_id);
CREATE TABLE protected_names (
    name_key      TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL UNIQUE REFERENCES users(user_id),
    protected_at  INTEGER NOT NULL
) STRICT;
CREATE TABLE passkey_ceremonies (
    id          TEXT PRIMARY KEY NOT NULL,
    state       TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX ceremonies_by_expiry ON passkey_ceremonies(expires_at);
