//! The database file and its schema: where the file is, how to tell it is still the one opened,
//! and the migrations that bring an older store up to this release (and refuse a newer one).

use std::path::Path;

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/0001_init.sql"),
    include_str!("../../../migrations/0002_peers.sql"),
    include_str!("../../../migrations/0003_message_indexes.sql"),
    include_str!("../../../migrations/0004_peers_without_trigger.sql"),
    include_str!("../../../migrations/0005_expiry.sql"),
    include_str!("../../../migrations/0006_health.sql"),
    include_str!("../../../migrations/0007_read_state.sql"),
    include_str!("../../../migrations/0008_devices.sql"),
    include_str!("../../../migrations/0009_seen_cursor.sql"),
    include_str!("../../../migrations/0010_passkeys.sql"),
    include_str!("../../../migrations/0011_name_keys.sql"),
    include_str!("../../../migrations/0012_pop_key.sql"),
    include_str!("../../../migrations/0013_session_secrets.sql"),
    include_str!("../../../migrations/0014_passkey_added_in.sql"),
    include_str!("../../../migrations/0015_conversation_ids.sql"),
];

/// The migration (its number) after whose SQL [`fill_name_keys`] runs.
const NAME_KEYS: usize = 11;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "tether.db";

/// The database file of the store in `data_dir` (its WAL and shared memory are beside it, with
/// `-wal` and `-shm` appended).
pub fn db_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(DB_FILE)
}

/// The database file a store opened. In WAL mode SQLite goes on writing to a database file
/// deleted (or its directory removed) under it: every commit succeeds and is lost at the next
/// start. The readiness probe compares what the path names now with what was opened.
#[derive(Debug, Clone)]
pub(super) struct DbFile {
    path: std::path::PathBuf,
    id: Option<FileId>,
}

/// A file's identity: device and inode where there are such things.
type FileId = (u64, u64);

impl DbFile {
    pub(super) fn opened(path: std::path::PathBuf) -> Self {
        let id = Self::id_of(&path);
        Self { path, id }
    }

    #[cfg(unix)]
    fn id_of(path: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }

    #[cfg(not(unix))]
    fn id_of(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().map(|_| (0, 0))
    }

    /// Fails as SQLite does when it notices a moved database (`SQLITE_READONLY_DBMOVED`).
    pub(super) fn still_in_place(&self) -> rusqlite::Result<()> {
        let now = Self::id_of(&self.path);
        if now.is_some() && now == self.id {
            return Ok(());
        }
        Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY_DBMOVED),
            Some("the database file was deleted or replaced since the server opened it".into()),
        ))
    }
}

pub(super) fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let applied: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    // A store a newer release migrated has tables this binary does not know how to keep
    // consistent: refuse it rather than run on it (a downgrade is a restore from backup).
    anyhow::ensure!(
        applied <= MIGRATIONS.len(),
        "the store is at schema version {applied}, newer than this release knows ({}): run the \
         release that migrated it, or restore a backup taken before the upgrade",
        MIGRATIONS.len()
    );
    if applied == MIGRATIONS.len() {
        return Ok(());
    }
    // Some migrations rewrite every message (15: about 6 s a million): say so before a start that
    // does not listen for that long.
    tracing::info!(
        from = applied,
        to = MIGRATIONS.len(),
        "migrating the store's schema"
    );
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if index + 1 == NAME_KEYS {
            fill_name_keys(&tx)?;
        }
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    // A migration's transaction went through the WAL whole (for 15, about the live data's
    // size): copy it into the database file and give its space back now, not at the next
    // start.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    tracing::info!(version = MIGRATIONS.len(), "the store's schema is migrated");
    Ok(())
}

/// Migration 11's step in Rust (SQLite has no Unicode folding): every user's `name_key`, and
/// the keys of the protected names rewritten from their owners' names. Two claims whose names
/// now share a key keep the one protected first (the other account keeps its passkeys, which
/// no longer sign in by name).
fn fill_name_keys(conn: &Connection) -> rusqlite::Result<()> {
    let users: Vec<(String, String)> = conn
        .prepare("SELECT user_id, username FROM users")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut set_key = conn.prepare("UPDATE users SET name_key = ?2 WHERE user_id = ?1")?;
    for (user, name) in &users {
        set_key.execute(rusqlite::params![user, crate::store::name_key(name)])?;
    }
    let claims: Vec<(String, String, i64)> = conn
        .prepare(
            "SELECT u.name_key, p.user_id, p.protected_at FROM protected_names p
             JOIN users u ON u.user_id = p.user_id ORDER BY p.protected_at, p.user_id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    conn.execute("DELETE FROM protected_names", [])?;
    let mut claim = conn.prepare(
        "INSERT OR IGNORE INTO protected_names (name_key, user_id, protected_at)
         VALUES (?1, ?2, ?3)",
    )?;
    for (key, user, at) in &claims {
        claim.execute(rusqlite::params![key, user, at])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rusqlite::params;

    use super::super::queries::pair_key;
    use super::super::tests::{open, policy};
    use super::super::SqliteStore;
    use super::*;
    use crate::domain::{MessageContent, UserId, Username};
    use crate::store::{NewMessage, Store};

    /// The database file in `dir` as release `release` left it: migrations 1 to `release`
    /// applied, and its schema version recorded.
    fn file_at(dir: &Path, release: usize) -> Connection {
        let mut conn = Connection::open(dir.join(DB_FILE)).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..release] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", release).unwrap();
        tx.commit().unwrap();
        conn
    }

    async fn user(store: &SqliteStore, name: &str) -> UserId {
        let created = store
            .create_session(&Username::parse(name).unwrap(), "Firefox on Linux", None)
            .await;
        created.unwrap().into_session().unwrap().1.user_id
    }

    /// The names in the directory the roster is built from.
    fn names(store: &SqliteStore) -> Vec<String> {
        let directory = store.directory.read().unwrap_or_else(|e| e.into_inner());
        directory.iter().map(|u| u.username.clone()).collect()
    }

    #[tokio::test]
    async fn a_database_from_before_the_peers_table_is_upgraded_with_its_conversations() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The file as the first release left it: migration 1 only, two conversations.
            let conn = file_at(dir.path(), 1);
            for user in ["a", "b", "c"] {
                conn.execute(
                    "INSERT INTO users (user_id, username, created_at) VALUES (?1, ?1, 0)",
                    params![user],
                )
                .unwrap();
            }
            for (from, to, text) in [("a", "b", "ab"), ("c", "a", "ca"), ("b", "c", "bc")] {
                conn.execute(
                    "INSERT INTO messages (ts, from_user, to_user, pair, content) VALUES (0, ?1, ?2, ?3, ?4)",
                    params![from, to, pair_key(from, to), text],
                )
                .unwrap();
            }
        }
        let store = open(dir.path());
        let a = UserId::from_store("a".into());
        let seen = store.conversations(&a, 10, 0, u32::MAX).await.unwrap();
        let texts: Vec<_> = seen.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["ab", "ca"]);
        // New messages keep the table current (the insert names their conversation).
        let d = user(&store, "d").await;
        let da = NewMessage {
            from: d,
            to: a.clone(),
            content: MessageContent::parse("da", 10).unwrap(),
            client_id: None,
        };
        store.insert_message(da).await.unwrap();
        let seen = store.conversations(&a, 10, 0, u32::MAX).await.unwrap();
        assert_eq!(seen.messages.last().unwrap().content, "da");
    }

    /// Migration 11: users from before it get their name key, and protected names are claimed
    /// under their owners' new keys (two claims that now share one keep the first protected).
    #[tokio::test]
    async fn a_database_from_before_name_keys_gets_them_and_keeps_the_first_claim() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = file_at(dir.path(), 10);
            // Old keys: trimmed and lower-cased only, so the fullwidth name had its own.
            for (user, name, at) in [("a", "Ada", 1), ("w", "\u{ff21}\u{ff24}\u{ff21}", 2)] {
                conn.execute(
                    "INSERT INTO users (user_id, username, created_at) VALUES (?1, ?2, ?3)",
                    params![user, name, at],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO protected_names (name_key, user_id, protected_at)
                     VALUES (?1, ?2, ?3)",
                    params![name.to_lowercase(), user, at],
                )
                .unwrap();
            }
        }
        let store = open(dir.path());
        let (keys, claims) = store
            .read(|conn| {
                let keys: Vec<String> = conn
                    .prepare("SELECT name_key FROM users ORDER BY user_id")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let claims: Vec<(String, String)> = conn
                    .prepare("SELECT name_key, user_id FROM protected_names")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                Ok((keys, claims))
            })
            .await
            .unwrap();
        assert_eq!(keys, ["ada", "ada"]);
        assert_eq!(claims, [("ada".to_owned(), "a".to_owned())]);
        let refused = store
            .create_session(&Username::parse("\u{430}da").unwrap(), "", None)
            .await
            .unwrap();
        assert_eq!(refused, crate::store::Created::NameProtected);
    }

    #[tokio::test]
    async fn messages_are_indexed_by_conversation_and_by_client_id_first_without_a_trigger() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let conn = Connection::open(dir.path().join("tether.db")).unwrap();
        let names = |sql: &str| -> Vec<String> {
            conn.prepare(sql)
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let indexes = names(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' ORDER BY name",
        );
        assert_eq!(indexes, ["messages_by_client_id", "messages_by_conv"]);
        // The resend check's index starts with the (time-ordered) client id.
        let columns =
            names("SELECT name FROM pragma_index_info('messages_by_client_id') ORDER BY seqno");
        assert_eq!(columns, ["client_id", "from_user"]);
        // Unique where a client id is given: a resend finds its message, never a second copy.
        let sql = names("SELECT sql FROM sqlite_master WHERE name = 'messages_by_client_id'");
        assert!(
            sql[0].contains("UNIQUE") && sql[0].contains("WHERE client_id IS NOT NULL"),
            "{sql:?}"
        );
        // A message's INSERT is a single write (no trigger), so it needs no statement journal.
        let triggers = names("SELECT name FROM sqlite_master WHERE type = 'trigger'");
        assert!(triggers.is_empty(), "{triggers:?}");
    }

    #[tokio::test]
    async fn an_older_database_learns_which_accounts_have_messages() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The file as release 4 left it: two who talked, one who never did.
            let mut conn = file_at(dir.path(), 4);
            let tx = conn.transaction().unwrap();
            for user in ["a", "b", "c"] {
                tx.execute(
                    "INSERT INTO users (user_id, username, created_at) VALUES (?1, ?1, 0)",
                    params![user],
                )
                .unwrap();
            }
            tx.execute(
                "INSERT INTO peers (user_id, peer_id, pair) VALUES ('a', 'b', 'a:b'), ('b', 'a', 'a:b')",
                [],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO messages (ts, from_user, to_user, pair, content) VALUES (0, 'a', 'b', 'a:b', 'x')",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = open(dir.path());
        let swept = store
            .expire_accounts(Duration::from_secs(3600), 10)
            .await
            .unwrap();
        assert_eq!(swept.users, 1, "c had no message and no session");
        assert_eq!(names(&store), ["a", "b"]);
    }

    #[tokio::test]
    async fn a_session_from_before_devices_resumes_by_the_same_id_and_is_listed_as_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let secret = crate::domain::SessionId::random();
        let now = crate::store::now_ms();
        {
            // The file as release 7 left it, with one live session.
            let mut conn = file_at(dir.path(), 7);
            let tx = conn.transaction().unwrap();
            tx.execute(
                "INSERT INTO users (user_id, username, created_at, last_seen_at) VALUES ('a', 'ada', ?1, ?1)",
                params![now],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO sessions (session_digest, user_id, created_at, last_seen_at) VALUES (?1, 'a', ?2, ?2)",
                params![secret.digest(), now],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = open(dir.path());
        let found = store.find_session(&secret).await.unwrap().expect("resumes");
        assert_eq!(found.username, "ada");
        let devices = store.devices(&found.user_id).await.unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(
            devices[0].family,
            secret.digest(),
            "the family is the old digest"
        );
        assert_eq!(devices[0].label, "", "no label was known");
        assert_eq!(devices[0].created, now);
    }

    #[tokio::test]
    async fn a_session_from_before_rotation_keeps_its_secret_issued_at_its_creation_and_rotates() {
        use crate::store::{Reissue, Rotate, Secret};
        let dir = tempfile::tempdir().unwrap();
        let secret = crate::domain::SessionId::random();
        let created = crate::store::now_ms() - 1000;
        {
            // The file as release 12 left it, with one live session.
            let conn = file_at(dir.path(), 12);
            conn.execute(
                "INSERT INTO users (user_id, username, created_at, last_seen_at, name_key) VALUES ('a', 'ada', ?1, ?1, 'ada')",
                params![created],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO sessions (session_digest, user_id, created_at, last_seen_at) VALUES (?1, 'a', ?2, ?2)",
                params![secret.digest(), created],
            )
            .unwrap();
        }
        let store = open(dir.path());
        let found = store.find_session(&secret).await.unwrap().expect("resumes");
        assert_eq!(found.family, secret.digest());
        assert_eq!(found.secret, Secret::Current { issued_at: created });
        let cap = Reissue { since: 0, max: 16 };
        let Rotate::Rotated(next) = store
            .rotate_secret(&found.family, &secret.digest(), cap)
            .await
            .unwrap()
        else {
            panic!("rotates");
        };
        assert_eq!(
            store.find_session(&next).await.unwrap().unwrap().family,
            secret.digest()
        );
        assert!(matches!(
            store.find_session(&secret).await.unwrap().unwrap().secret,
            Secret::Retired { .. }
        ));
    }

    #[test]
    fn the_seen_cursors_start_at_the_read_cursors_peers_are_shown_today_and_nowhere_else() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The file as release 8 left it: a and b share receipts, c has them off.
            let mut conn = file_at(dir.path(), 8);
            let tx = conn.transaction().unwrap();
            for (user, receipts) in [("a", 1), ("b", 1), ("c", 0)] {
                tx.execute(
                    "INSERT INTO users (user_id, username, created_at, read_receipts) VALUES (?1, ?1, 0, ?2)",
                    params![user, receipts],
                )
                .unwrap();
            }
            for (user, peer, up_to) in [
                ("a", "b", 3),
                ("b", "a", 4),
                ("a", "c", 5),
                ("c", "a", 6),
                ("a", "a", 7),
            ] {
                tx.execute(
                    "INSERT INTO read_cursors (user_id, peer_id, up_to, at) VALUES (?1, ?2, ?3, ?3 * 100)",
                    params![user, peer, up_to],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        drop(open(dir.path()));
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let rows: Vec<(String, i64, i64, i64, i64)> = conn
            .prepare("SELECT user_id || peer_id, up_to, at, seen_up_to, seen_at FROM read_cursors ORDER BY 1")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let expected = [
            // A note to self is never seen.
            ("aa", 7, 700, 0, 0),
            ("ab", 3, 300, 3, 300),
            // c has receipts off: nobody is shown these, and nothing of them becomes seen.
            ("ac", 5, 500, 0, 0),
            ("ba", 4, 400, 4, 400),
            ("ca", 6, 600, 0, 0),
        ]
        .map(|(k, u, a, su, sa)| (k.to_owned(), u, a, su, sa));
        assert_eq!(rows, expected);
    }

    /// Migration 15: conversations get integer ids. Every message keeps its id and its place in
    /// its conversation's reads, the id sequence goes on past the newest id ever given (even one
    /// no longer stored), a resend still finds its message, and a message whose conversation
    /// `peers` never named is read with the rest.
    #[tokio::test]
    async fn a_database_from_before_conversation_ids_keeps_every_message_in_its_conversation() {
        use crate::domain::ClientMsgId;
        use crate::store::Stored;
        let dir = tempfile::tempdir().unwrap();
        let resent = ClientMsgId::parse("01890000-0000-7000-8000-000000000001").unwrap();
        {
            // The file as release 14 left it.
            let mut conn = file_at(dir.path(), 14);
            let tx = conn.transaction().unwrap();
            // c's flag was never set: its one conversation is not in `peers` either.
            for (user, messaged) in [("a", 1), ("b", 1), ("c", 0)] {
                tx.execute(
                    "INSERT INTO users (user_id, username, created_at, messaged, name_key)
                     VALUES (?1, ?1, 0, ?2, ?1)",
                    params![user, messaged],
                )
                .unwrap();
            }
            // a and b, and a's notes to self, are named in `peers`; c's message to a is not.
            tx.execute(
                "INSERT INTO peers (user_id, peer_id, pair)
                 VALUES ('a', 'b', 'a:b'), ('b', 'a', 'a:b'), ('a', 'a', 'a:a')",
                [],
            )
            .unwrap();
            for (from, to, text, client_id) in [
                ("a", "b", "ab", Some(resent.as_str())),
                ("b", "a", "ba", None),
                ("c", "a", "ca", None),
                ("a", "a", "aa", None),
            ] {
                tx.execute(
                    "INSERT INTO messages (ts, from_user, to_user, pair, content, client_id)
                     VALUES (0, ?1, ?2, ?3, ?4, ?5)",
                    params![from, to, pair_key(from, to), text, client_id],
                )
                .unwrap();
            }
            // Messages 5 to 9 were given out and are gone: no id may be given twice.
            tx.execute(
                "UPDATE sqlite_sequence SET seq = 9 WHERE name = 'messages'",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = open(dir.path());
        let [a, b, c] = ["a", "b", "c"].map(|u| UserId::from_store(u.into()));
        let texts = |page: crate::store::Page| -> Vec<(i64, String)> {
            page.messages
                .into_iter()
                .map(|m| (m.id, m.content))
                .collect()
        };
        let history = |viewer: &UserId, peer: &UserId| {
            let (store, viewer, peer) = (&store, viewer.clone(), peer.clone());
            async move { texts(store.history(&viewer, &peer, None, 10).await.unwrap()) }
        };
        let pairs = |list: &[(i64, &str)]| -> Vec<(i64, String)> {
            list.iter().map(|(id, t)| (*id, t.to_string())).collect()
        };
        assert_eq!(history(&a, &b).await, pairs(&[(1, "ab"), (2, "ba")]));
        assert_eq!(history(&b, &a).await, pairs(&[(1, "ab"), (2, "ba")]));
        assert_eq!(history(&c, &a).await, pairs(&[(3, "ca")]));
        assert_eq!(history(&a, &a).await, pairs(&[(4, "aa")]));
        assert_eq!(
            texts(store.messages_since(&a, 0, 10).await.unwrap()).len(),
            4
        );
        assert_eq!(
            texts(store.messages_since(&c, 0, 10).await.unwrap()),
            pairs(&[(3, "ca")])
        );
        let roster = store.conversations(&c, 10, 0, u32::MAX).await.unwrap();
        assert_eq!(roster.peers, std::slice::from_ref(&a));
        let checks = store
            .read(|conn| {
                let integrity: String =
                    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
                let orphans: i64 =
                    conn.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                        r.get(0)
                    })?;
                let flagged: i64 =
                    conn.query_row("SELECT SUM(messaged) FROM users", [], |r| r.get(0))?;
                Ok((integrity, orphans, flagged))
            })
            .await
            .unwrap();
        assert_eq!(checks, ("ok".to_owned(), 0, 3), "c has messages now");
        // The resend of message 1 finds it; a new message takes id 10, in its conversation.
        let message =
            |from: &UserId, to: &UserId, text: &str, client_id: Option<ClientMsgId>| NewMessage {
                from: from.clone(),
                to: to.clone(),
                content: MessageContent::parse(text, 10).unwrap(),
                client_id,
            };
        let again = store
            .insert_message(message(&a, &b, "ab", Some(resent)))
            .await;
        assert!(matches!(again.unwrap(), Some(Stored::Duplicate(m)) if m.id == 1));
        let new = store.insert_message(message(&a, &c, "ac", None)).await;
        assert!(matches!(new.unwrap(), Some(Stored::New(m)) if m.id == 10));
        assert_eq!(history(&c, &a).await, pairs(&[(3, "ca"), (10, "ac")]));
        // The list by recency, with c's one message to a unread.
        let listed = store.conversation_page(&a, None, 10, 100).await.unwrap();
        let listed: Vec<_> = listed
            .conversations
            .iter()
            .map(|e| (e.peer.as_str().to_owned(), e.last.id, e.unread))
            .collect();
        let expected = [("c", 10, 0), ("a", 4, 0), ("b", 2, 1)];
        assert_eq!(listed, expected.map(|(p, l, u)| (p.to_owned(), l, u)));
    }

    /// A store with no message left (a backup of an empty store, whose next id was moved on by
    /// the backup's gap) goes on from its sequence, not from 1.
    #[tokio::test]
    async fn an_empty_message_table_keeps_its_id_sequence_through_migration_15() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut conn = file_at(dir.path(), 14);
            let tx = conn.transaction().unwrap();
            tx.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', 1000)",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = open(dir.path());
        let (a, b) = (user(&store, "ada").await, user(&store, "bob").await);
        let message = NewMessage {
            from: a,
            to: b,
            content: MessageContent::parse("hi", 10).unwrap(),
            client_id: None,
        };
        let stored = store.insert_message(message).await.unwrap();
        assert!(matches!(stored, Some(crate::store::Stored::New(m)) if m.id == 1001));
    }

    #[test]
    fn a_store_migrated_by_a_newer_release_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path(), policy()).unwrap());
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.pragma_update(None, "user_version", MIGRATIONS.len() + 1)
                .unwrap();
        }
        let error = SqliteStore::open(dir.path(), policy())
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains("newer than this release"), "{error}");
    }
}
