-- Review of issue #25 slice 4: who owns a name. Each user keeps the key its name is compared by
-- (`protocol::domain::name_key`: NFKC case folding, invisible characters dropped, UTS #39
-- look-alikes made one, spaces collapsed), computed in Rust: the migration step in
-- `store/sqlite/schema.rs` fills it for the users already here, and rewrites the keys of
-- `protected_names` (made by 0010 as trim + lower case) the same way. Only the oldest user with a
-- key may protect it, so the index orders a key's users as the directory does.
ALTER TABLE users ADD COLUMN name_key TEXT NOT NULL DEFAULT '';
CREATE INDEX users_by_name_key ON users(name_key, created_at);
