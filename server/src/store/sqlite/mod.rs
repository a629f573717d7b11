//! The embedded default store: one SQLite file in the data directory, WAL, `synchronous=FULL`.
//!
//! - `mod.rs`: [`SqliteStore`], how it opens (pragmas, threads) and its [`Store`] methods.
//! - `writer.rs`: the threads that own the connections: the writer and its group commit (a
//!   write is answered once it is committed), the readers, the WAL checkpointer.
//! - `schema.rs`: the database file ([`db_path`]) and its identity, the migrations, and the
//!   refusal of a store a newer release migrated.
//! - `queries.rs`: the SQL several methods share: message rows and pages, conversation keys,
//!   session touches, the expiry sweep's statements.

mod queries;
mod schema;
mod writer;

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use async_trait::async_trait;
use protocol::payloads::Message;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::presence::LocalPresence;
use super::NewDevice;
use super::{
    cut_to_page, now_ms, ConversationEntry, ConversationPage, Conversations, Device, Expired,
    MarkedRead, NewMessage, Page, ReadCursor, ReadStatus, Session, SettingsChange, SettingsChanged,
    Store, StoreError, Stored, User, UserSettings, UNREAD_MAX,
};
use super::{
    name_key, stored_pop_key, AccountPasskeys, Bind, Created, PasskeyInfo, PopKey, Protect,
    Reissue, RemovedPasskey, Rotate, Secret, StoredPasskey, Touched, PASSKEYS_PER_USER_MAX,
};
use crate::domain::{SessionId, UserId, Username};
use queries::{
    conversation, load_directory, mark_if_sessionless, message_from_row, newest_in, page, pair_key,
    read_cursor, read_receipts, touch, touch_account, unread, CONVERSATIONS_BY_ACTIVITY,
    CONVERSATION_ENTRY, EXPIRED_SESSIONS_EXIST, EXPIRE_SESSIONS, IDLE_ACCOUNTS,
    IDLE_ACCOUNTS_EXIST, MESSAGE_COLUMNS,
};
pub use schema::{db_path, DB_FILE};
use schema::{migrate, DbFile};
pub use writer::Gather;
use writer::{checkpoint_loop, reader_loop, writer_loop, Isolation, Job, ReadJob};

/// A session's `last_seen_at` is rewritten at most this often (or a third of the idle time,
/// when that is shorter), so a session used more often than it idles never expires.
const TOUCH_EVERY_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle: Duration,
    pub max_age: Duration,
}

/// How a commit reaches the disk (see `--sqlite-sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit: survives power loss.
    #[default]
    Full,
    /// fsync at checkpoints: survives a crash of the server process.
    Normal,
}

pub struct SqliteStore {
    jobs: mpsc::Sender<(Isolation, Job)>,
    /// The checkpoint thread runs while this lives.
    _alive: Arc<()>,
    reads: mpsc::Sender<ReadJob>,
    presence: LocalPresence,
    policy: SessionPolicy,
    /// Every user, in sign-up order. Users are only ever added, and only by this process (the
    /// database file is this server's alone), so the directory is loaded once and appended to
    /// after each committed sign-up: the roster is built without a trip to the writer thread.
    directory: std::sync::RwLock<Arc<Vec<User>>>,
    /// The database file as opened, to tell when it is no longer where it was.
    file: DbFile,
}

impl SqliteStore {
    /// Opens (creating if needed) `tether.db` in `data_dir` and applies pending migrations.
    pub fn open(data_dir: &Path, policy: SessionPolicy) -> anyhow::Result<Self> {
        Self::open_with(data_dir, policy, Durability::Full, Gather::default())
    }

    pub fn open_with(
        data_dir: &Path,
        policy: SessionPolicy,
        durability: Durability,
        gather: Gather,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let mut conn = Connection::open(db_path(data_dir))?;
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        // WAL checkpoints: the checkpoint thread copies committed frames into the database file
        // every CHECKPOINT_EVERY (PASSIVE, beside the writer), so the writer's own checkpoint,
        // which restarts the WAL at `wal_autocheckpoint` frames (16 MiB), has little left to
        // copy. The writer must keep checkpointing: a PASSIVE checkpoint alone never catches
        // up with a writer that commits continuously, and the WAL then grows without bound
        // (measured: 900 MB in 10 s). A 64 MiB page cache keeps index pages off the disk.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = {synchronous};
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -65536;
             PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = 4000;"
        ))?;
        migrate(&mut conn)?;
        let directory = load_directory(&conn)?;
        let (jobs, rx) = mpsc::channel::<(Isolation, Job)>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, gather))?;
        let checkpointer = Connection::open(db_path(data_dir))?;
        checkpointer.execute_batch(&format!(
            "PRAGMA busy_timeout = 5000; PRAGMA synchronous = {synchronous};"
        ))?;
        let alive = Arc::new(());
        let store = Arc::downgrade(&alive);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, store))?;
        let (reads, read_rx) = mpsc::channel::<ReadJob>();
        let read_rx = Arc::new(std::sync::Mutex::new(read_rx));
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        for index in 0..readers {
            let conn = Connection::open_with_flags(
                db_path(data_dir),
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.execute_batch(
                "PRAGMA busy_timeout = 5000; PRAGMA query_only = ON; PRAGMA cache_size = -16384;",
            )?;
            let rx = read_rx.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{index}"))
                .spawn(move || reader_loop(conn, rx))?;
        }
        Ok(Self {
            jobs,
            reads,
            _alive: alive,
            presence: LocalPresence::default(),
            policy,
            directory: std::sync::RwLock::new(Arc::new(directory)),
            file: DbFile::opened(db_path(data_dir)),
        })
    }
}

impl SqliteStore {
    fn touch_every_ms(&self) -> i64 {
        TOUCH_EVERY_MS.min(self.policy.idle.as_millis() as i64 / 3)
    }

    /// The cut-offs at `now`: sessions last used before the first, or created before the
    /// second, have expired.
    fn session_cutoffs(&self, now: i64) -> (i64, i64) {
        (
            now - self.policy.idle.as_millis() as i64,
            now - self.policy.max_age.as_millis() as i64,
        )
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_session(
        &self,
        username: &Username,
        device: &str,
        pop_key: Option<&PopKey>,
    ) -> Result<Created, StoreError> {
        let key = name_key(username.as_str());
        let pop_key = pop_key.cloned();
        let username = username.as_str().to_owned();
        let device = super::stored_label(device);
        let created = self
            .run(move |conn| {
                // In the writer's job with the insert, so no `protect` comes in between.
                let protected: bool = conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM protected_names WHERE name_key = ?1)",
                    )?
                    .query_row(params![key], |r| r.get(0))?;
                if protected {
                    return Ok(None);
                }
                let now = now_ms();
                // Ids are 122 random bits, so a clash is astronomically unlikely; the store still
                // checks (INSERT OR IGNORE + changes) and draws again rather than assume.
                let user_id = loop {
                    let candidate = UserId::random();
                    let inserted = conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO users (user_id, username, created_at, last_seen_at, name_key)
                         VALUES (?1, ?2, ?3, ?3, ?4)",
                    )?
                    .execute(params![candidate.as_str(), username, now, key])?;
                    if inserted == 1 {
                        break candidate;
                    }
                };
                let session_id = insert_session(conn, &user_id, &device, now, pop_key.as_ref())?;
                let session = Session {
                    pop_key,
                    ..Session::made(&session_id, user_id, username, now)
                };
                Ok(Some((session_id, session)))
            })
            .await?;
        let Some((session_id, session)) = created else {
            return Ok(Created::NameProtected);
        };
        // Committed: the new user joins the directory.
        let mut directory = self.directory.write().unwrap_or_else(|e| e.into_inner());
        Arc::make_mut(&mut directory).push(User {
            user_id: session.user_id.clone(),
            username: session.username.clone(),
            protected: false,
        });
        Ok(Created::Session(session_id, session))
    }

    async fn create_device_session(
        &self,
        user: &UserId,
        device: &str,
        max_sessions: u32,
        pop_key: Option<&PopKey>,
    ) -> Result<NewDevice, StoreError> {
        let user = user.clone();
        let pop_key = pop_key.cloned();
        let device = super::stored_label(device);
        let now = now_ms();
        let (idle_cut, age_cut) = self.session_cutoffs(now);
        // On the writer thread: the count and the insert are one step.
        self.run(move |conn| {
            let username: Option<String> = conn
                .prepare_cached("SELECT username FROM users WHERE user_id = ?1")?
                .query_row(params![user.as_str()], |r| r.get(0))
                .optional()?;
            let Some(username) = username else {
                return Ok(NewDevice::UnknownUser);
            };
            let live: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM sessions
                     WHERE user_id = ?1 AND last_seen_at >= ?2 AND created_at >= ?3",
                )?
                .query_row(params![user.as_str(), idle_cut, age_cut], |r| r.get(0))?;
            if live >= i64::from(max_sessions) {
                return Ok(NewDevice::TooManySessions);
            }
            let session_id = insert_session(conn, &user, &device, now, pop_key.as_ref())?;
            touch_account(conn, user.as_str(), now)?;
            let session = Session {
                pop_key,
                ..Session::made(&session_id, user, username, now)
            };
            Ok(NewDevice::Created(session_id, session))
        })
        .await
    }

    async fn devices(&self, user: &UserId) -> Result<Vec<Device>, StoreError> {
        let user = user.as_str().to_owned();
        let (idle_cut, age_cut) = self.session_cutoffs(now_ms());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT session_digest, device, created_at, last_seen_at,
                        coalesce(length(pop_key), 0) > 0 FROM sessions
                 WHERE user_id = ?1 AND last_seen_at >= ?2 AND created_at >= ?3
                 ORDER BY created_at, session_digest",
            )?
            .query_map(params![user, idle_cut, age_cut], |r| {
                Ok(Device {
                    family: r.get(0)?,
                    label: r.get(1)?,
                    created: r.get(2)?,
                    last_seen: r.get(3)?,
                    bound: r.get(4)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn end_family(&self, user: &UserId, family: &str) -> Result<bool, StoreError> {
        let user = user.as_str().to_owned();
        let family = family.to_owned();
        self.run(move |conn| {
            let ended = conn
                .prepare_cached("DELETE FROM sessions WHERE session_digest = ?1 AND user_id = ?2")?
                .execute(params![family, user])?;
            if ended > 0 {
                mark_if_sessionless(conn, &user)?;
            }
            Ok(ended > 0)
        })
        .await
    }

    async fn end_unbound(&self, user: &UserId) -> Result<Vec<String>, StoreError> {
        let user = user.as_str().to_owned();
        self.run(move |conn| {
            let ended = conn
                .prepare_cached(
                    "DELETE FROM sessions WHERE user_id = ?1 AND coalesce(length(pop_key), 0) = 0
                     RETURNING session_digest",
                )?
                .query_map(params![user], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            if !ended.is_empty() {
                mark_if_sessionless(conn, &user)?;
            }
            Ok(ended)
        })
        .await
    }

    async fn find_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let digest = id.digest();
        // The secret (current or retired), its session and the session's current secret.
        let found = self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT s.session_digest, s.user_id, u.username, s.created_at, s.last_seen_at,
                            s.pop_key, x.issued_at, x.retired_at, c.digest
                     FROM session_secrets x
                     JOIN sessions s ON s.session_digest = x.session_digest
                     JOIN users u ON u.user_id = s.user_id
                     LEFT JOIN session_secrets c
                       ON c.session_digest = x.session_digest AND c.retired_at IS NULL
                     WHERE x.digest = ?1",
                )?
                .query_row(params![digest], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<Vec<u8>>>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                    ))
                })
                .optional()
            })
            .await?;
        let Some((
            family,
            user_id,
            username,
            created_at,
            last_seen_at,
            pop_key,
            issued_at,
            retired_at,
            current,
        )) = found
        else {
            return Ok(None);
        };
        let secret = match (retired_at, current) {
            (None, _) => Secret::Current { issued_at },
            (Some(retired_at), Some(current)) => Secret::Retired {
                retired_at,
                current,
            },
            // A session always has a current secret (rotate_secret retires one and adds the
            // next in one transaction).
            (Some(_), None) => {
                return Err(StoreError::Unreadable(
                    "a session has no current secret".into(),
                ))
            }
        };
        let now = now_ms();
        let idle_ms = self.policy.idle.as_millis() as i64;
        let max_age_ms = self.policy.max_age.as_millis() as i64;
        if now - last_seen_at > idle_ms || now - created_at > max_age_ms {
            // Expired: delete it (unless another connect refreshed it meanwhile).
            self.run(move |conn| {
                let ended: Option<String> = conn
                    .prepare_cached(
                        "DELETE FROM sessions WHERE session_digest = ?1
                         AND (last_seen_at < ?2 OR created_at < ?3) RETURNING user_id",
                    )?
                    .query_row(params![family, now - idle_ms, now - max_age_ms], |r| {
                        r.get(0)
                    })
                    .optional()?;
                if let Some(user) = ended {
                    mark_if_sessionless(conn, &user)?;
                }
                Ok(())
            })
            .await?;
            return Ok(None);
        }
        if now - last_seen_at > self.touch_every_ms() {
            let (user, family) = (user_id.clone(), family.clone());
            self.run_one(move |conn| touch(conn, &family, &user, now))
                .await?;
        }
        Ok(Some(Session {
            user_id: UserId::from_store(user_id),
            username,
            // Empty: made without a key (unbound for good); absent: from before keys.
            pop_key: pop_key
                .as_deref()
                .filter(|k| !k.is_empty())
                .map(stored_pop_key)
                .transpose()?,
            family,
            secret,
        }))
    }

    async fn rotate_secret(
        &self,
        family: &str,
        expect_current: &str,
        cap: Reissue,
    ) -> Result<Rotate, StoreError> {
        let family = family.to_owned();
        let expect = expect_current.to_owned();
        // On the writer thread, in one transaction: the compare, the count and both writes.
        self.run(move |conn| {
            let current: Option<String> = conn
                .prepare_cached(
                    "SELECT digest FROM session_secrets
                     WHERE session_digest = ?1 AND retired_at IS NULL",
                )?
                .query_row(params![family], |r| r.get(0))
                .optional()?;
            let Some(current) = current else {
                return Ok(Rotate::Gone);
            };
            if current != expect {
                return Ok(Rotate::Moved);
            }
            let recent: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM session_secrets
                     WHERE session_digest = ?1 AND retired_at >= ?2",
                )?
                .query_row(params![family, cap.since], |r| r.get(0))?;
            if recent >= i64::from(cap.max) {
                return Ok(Rotate::TooMany);
            }
            let now = now_ms();
            conn.prepare_cached("UPDATE session_secrets SET retired_at = ?2 WHERE digest = ?1")?
                .execute(params![current, now])?;
            Ok(Rotate::Rotated(insert_secret(conn, &family, now)?))
        })
        .await
    }

    async fn mark_rotation_due(&self, user: &UserId, except: &str) -> Result<usize, StoreError> {
        let user = user.as_str().to_owned();
        let except = except.to_owned();
        self.run_one(move |conn| {
            conn.prepare_cached(
                "UPDATE session_secrets SET issued_at = 0
                 WHERE retired_at IS NULL AND session_digest IN (
                     SELECT session_digest FROM sessions WHERE user_id = ?1 AND session_digest <> ?2)",
            )?
            .execute(params![user, except])
        })
        .await
    }

    async fn bind_key(&self, family: &str, key: &PopKey) -> Result<Bind, StoreError> {
        let family = family.to_owned();
        let key = key.as_bytes().to_vec();
        self.run(move |conn| {
            let bound = conn
                .prepare_cached(
                    "UPDATE sessions SET pop_key = ?2 WHERE session_digest = ?1 AND pop_key IS NULL",
                )?
                .execute(params![family, key])?;
            if bound == 1 {
                return Ok(Bind::Bound);
            }
            let held: Option<Option<Vec<u8>>> = conn
                .prepare_cached("SELECT pop_key FROM sessions WHERE session_digest = ?1")?
                .query_row(params![family], |r| r.get(0))
                .optional()?;
            Ok(match held {
                None | Some(None) => Bind::Gone,
                Some(Some(held)) if held.is_empty() => Bind::Never,
                Some(Some(held)) if held == key => Bind::AlreadyThis,
                Some(Some(_)) => Bind::OtherKey,
            })
        })
        .await
    }

    async fn delete_session(&self, id: &SessionId) -> Result<bool, StoreError> {
        let digest = id.digest();
        self.run(move |conn| {
            // By any of its secrets: the session is its family's row.
            let ended: Option<String> = conn
                .prepare_cached(
                    "DELETE FROM sessions WHERE session_digest =
                         (SELECT session_digest FROM session_secrets WHERE digest = ?1)
                     RETURNING user_id",
                )?
                .query_row(params![digest], |r| r.get(0))
                .optional()?;
            if let Some(user) = &ended {
                mark_if_sessionless(conn, user)?;
            }
            Ok(ended.is_some())
        })
        .await
    }

    async fn delete_user_sessions(&self, user: &UserId) -> Result<usize, StoreError> {
        let user = user.as_str().to_owned();
        self.run(move |conn| {
            let ended = conn
                .prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
                .execute(params![user])?;
            mark_if_sessionless(conn, &user)?;
            Ok(ended)
        })
        .await
    }

    async fn expire_sessions(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let (idle_cut, age_cut) = self.session_cutoffs(now_ms());
        // Most seconds nothing is due: a reader answers that without a trip to the writer.
        let due = self
            .read(move |conn| {
                conn.prepare_cached(EXPIRED_SESSIONS_EXIST)?
                    .query_row(params![idle_cut, age_cut], |r| r.get::<_, bool>(0))
            })
            .await?;
        if !due {
            return Ok(Vec::new());
        }
        self.run(move |conn| {
            let ended = conn
                .prepare_cached(EXPIRE_SESSIONS)?
                .query_map(params![idle_cut, age_cut, limit as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let users: std::collections::BTreeSet<&str> =
                ended.iter().map(|(_, user)| user.as_str()).collect();
            for user in users {
                mark_if_sessionless(conn, user)?;
            }
            Ok(ended.into_iter().map(|(digest, _)| digest).collect())
        })
        .await
    }

    async fn expire_accounts(&self, idle: Duration, limit: usize) -> Result<Expired, StoreError> {
        let cutoff = now_ms() - idle.as_millis() as i64;
        let due = self
            .read(move |conn| {
                conn.prepare_cached(IDLE_ACCOUNTS_EXIST)?
                    .query_row(params![cutoff], |r| r.get::<_, bool>(0))
            })
            .await?;
        if !due {
            return Ok(Expired::default());
        }
        let (users, sessions) = self
            .run(move |conn| {
                let users = conn
                    .prepare_cached(IDLE_ACCOUNTS)?
                    .query_map(params![cutoff, limit as i64], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut sessions = Vec::new();
                for user in &users {
                    let ended = conn
                        .prepare_cached(
                            "DELETE FROM sessions WHERE user_id = ?1 RETURNING session_digest",
                        )?
                        .query_map(params![user], |r| r.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    sessions.extend(ended);
                    conn.prepare_cached("DELETE FROM users WHERE user_id = ?1")?
                        .execute(params![user])?;
                }
                Ok((users, sessions))
            })
            .await?;
        if !users.is_empty() {
            // Committed: the accounts leave the directory, in one pass.
            let gone: std::collections::HashSet<String> = users.iter().cloned().collect();
            let mut directory = self.directory.write().unwrap_or_else(|e| e.into_inner());
            Arc::make_mut(&mut directory).retain(|u| !gone.contains(u.user_id.as_str()));
        }
        Ok(Expired {
            sessions,
            users: users.len(),
        })
    }

    async fn touch_sessions(&self, digests: Vec<String>) -> Result<Touched, StoreError> {
        if digests.is_empty() {
            return Ok(Touched::default());
        }
        let now = now_ms();
        let (idle_cut, age_cut) = self.session_cutoffs(now);
        // Single writes, each harmless alone: no savepoint needed.
        self.run_one(move |conn| {
            let mut touched = Touched::default();
            for digest in digests {
                let user: Option<String> = conn
                    .prepare_cached(
                        "UPDATE sessions SET last_seen_at = MAX(last_seen_at, ?2)
                         WHERE session_digest = ?1 AND last_seen_at >= ?3 AND created_at >= ?4
                         RETURNING user_id",
                    )?
                    .query_row(params![digest, now, idle_cut, age_cut], |r| r.get(0))
                    .optional()?;
                match user {
                    Some(user) => {
                        touch_account(conn, &user, now)?;
                        let due = conn
                            .prepare_cached(
                                "SELECT 1 FROM session_secrets
                                 WHERE session_digest = ?1 AND retired_at IS NULL AND issued_at = 0",
                            )?
                            .exists(params![digest])?;
                        if due {
                            touched.due.push(digest);
                        }
                    }
                    None => touched.gone.push(digest),
                }
            }
            Ok(touched)
        })
        .await
    }

    async fn protect(
        &self,
        user: &UserId,
        passkey: StoredPasskey,
        added_in: &str,
    ) -> Result<Protect, StoreError> {
        let user_id = user.clone();
        let user = user.as_str().to_owned();
        let added_in = super::stored_label(added_in);
        let done = self
            .run(move |conn| {
                let key: Option<String> = conn
                    .prepare_cached("SELECT name_key FROM users WHERE user_id = ?1")?
                    .query_row(params![user], |r| r.get(0))
                    .optional()?;
                let Some(key) = key else {
                    return Ok(Protect::UnknownUser);
                };
                let owner: Option<String> = conn
                    .prepare_cached("SELECT user_id FROM protected_names WHERE name_key = ?1")?
                    .query_row(params![key], |r| r.get(0))
                    .optional()?;
                if owner.as_ref().is_some_and(|owner| *owner != user) {
                    return Ok(Protect::NameTaken);
                }
                // Only the oldest account with this name key may claim it (the directory's order).
                let oldest: String = conn
                    .prepare_cached(
                        "SELECT user_id FROM users WHERE name_key = ?1
                     ORDER BY created_at, rowid LIMIT 1",
                    )?
                    .query_row(params![key], |r| r.get(0))?;
                if owner.is_none() && oldest != user {
                    return Ok(Protect::NameTaken);
                }
                // In the order the contract gives: a registered credential (this account's own, on
                // a retry, included) before a full account.
                let registered: bool = conn
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM passkeys WHERE cred_id = ?1)")?
                    .query_row(params![passkey.cred_id], |r| r.get(0))?;
                if registered {
                    return Ok(Protect::CredentialTaken);
                }
                let held: i64 = conn
                    .prepare_cached("SELECT COUNT(*) FROM passkeys WHERE user_id = ?1")?
                    .query_row(params![user], |r| r.get(0))?;
                if held as usize >= PASSKEYS_PER_USER_MAX {
                    return Ok(Protect::Full);
                }
                let now = now_ms();
                conn.prepare_cached(
                    "INSERT INTO passkeys (cred_id, user_id, passkey, created_at, last_used_at, added_in)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                )?
                .execute(params![passkey.cred_id, user, passkey.json, now, added_in])?;
                if owner.is_some() {
                    return Ok(Protect::Added);
                }
                conn.prepare_cached(
                "INSERT INTO protected_names (name_key, user_id, protected_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, user, now])?;
                // Kept: the account sweep takes message-less accounts only.
                conn.prepare_cached("UPDATE users SET messaged = 1 WHERE user_id = ?1")?
                    .execute(params![user])?;
                Ok(Protect::Protected)
            })
            .await?;
        if done == Protect::Protected {
            // Committed: the roster marks the owner.
            let mut directory = self.directory.write().unwrap_or_else(|e| e.into_inner());
            if let Some(owner) = Arc::make_mut(&mut directory)
                .iter_mut()
                .find(|u| u.user_id == user_id)
            {
                owner.protected = true;
            }
        }
        Ok(done)
    }

    async fn passkeys_by_name(
        &self,
        username: &str,
    ) -> Result<Option<(User, Vec<StoredPasskey>)>, StoreError> {
        let key = name_key(username);
        self.read(move |conn| {
            let owner: Option<(String, String)> = conn
                .prepare_cached(
                    "SELECT u.user_id, u.username FROM protected_names p
                     JOIN users u ON u.user_id = p.user_id WHERE p.name_key = ?1",
                )?
                .query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((user_id, username)) = owner else {
                return Ok(None);
            };
            let passkeys = conn
                .prepare_cached(
                    "SELECT cred_id, passkey FROM passkeys WHERE user_id = ?1 ORDER BY cred_id",
                )?
                .query_map(params![user_id], |r| {
                    Ok(StoredPasskey {
                        cred_id: r.get(0)?,
                        json: r.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((
                User {
                    user_id: UserId::from_store(user_id),
                    username,
                    protected: true,
                },
                passkeys,
            )))
        })
        .await
    }

    async fn oldest_with_name(&self, username: &str) -> Result<Option<UserId>, StoreError> {
        let key = name_key(username);
        let oldest: Option<String> = self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT user_id FROM users WHERE name_key = ?1
                     ORDER BY created_at, rowid LIMIT 1",
                )?
                .query_row(params![key], |r| r.get(0))
                .optional()
            })
            .await?;
        Ok(oldest.map(UserId::from_store))
    }

    async fn passkeys(&self, user: &UserId) -> Result<AccountPasskeys, StoreError> {
        let user = user.as_str().to_owned();
        self.read(move |conn| {
            let protected: bool = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM protected_names WHERE user_id = ?1)")?
                .query_row(params![user], |r| r.get(0))?;
            let passkeys = conn
                .prepare_cached(
                    "SELECT cred_id, added_in, created_at, last_used_at FROM passkeys
                     WHERE user_id = ?1 ORDER BY created_at, cred_id",
                )?
                .query_map(params![user], |r| {
                    Ok(PasskeyInfo {
                        cred_id: r.get(0)?,
                        added_in: r.get(1)?,
                        added: r.get(2)?,
                        last_used: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(AccountPasskeys {
                protected,
                passkeys,
            })
        })
        .await
    }

    async fn remove_passkey(
        &self,
        user: &UserId,
        cred_id: &str,
    ) -> Result<RemovedPasskey, StoreError> {
        let user_id = user.clone();
        let user = user.as_str().to_owned();
        let cred_id = cred_id.to_owned();
        let done = self
            .run(move |conn| {
                let removed = conn
                    .prepare_cached("DELETE FROM passkeys WHERE cred_id = ?1 AND user_id = ?2")?
                    .execute(params![cred_id, user])?;
                if removed == 0 {
                    return Ok(RemovedPasskey::Unknown);
                }
                let left: i64 = conn
                    .prepare_cached("SELECT COUNT(*) FROM passkeys WHERE user_id = ?1")?
                    .query_row(params![user], |r| r.get(0))?;
                if left == 0 {
                    // The last one: the name is given up.
                    conn.prepare_cached("DELETE FROM protected_names WHERE user_id = ?1")?
                        .execute(params![user])?;
                }
                let protected: bool = conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM protected_names WHERE user_id = ?1)",
                    )?
                    .query_row(params![user], |r| r.get(0))?;
                Ok(RemovedPasskey::Removed { protected })
            })
            .await?;
        if done == (RemovedPasskey::Removed { protected: false }) {
            // Committed: the roster no longer marks the account.
            let mut directory = self.directory.write().unwrap_or_else(|e| e.into_inner());
            if let Some(owner) = Arc::make_mut(&mut directory)
                .iter_mut()
                .find(|u| u.user_id == user_id && u.protected)
            {
                owner.protected = false;
            }
        }
        Ok(done)
    }

    async fn passkey_used(
        &self,
        user: &UserId,
        was: &StoredPasskey,
        now: StoredPasskey,
    ) -> Result<bool, StoreError> {
        if was.cred_id != now.cred_id {
            return Ok(false);
        }
        let user = user.as_str().to_owned();
        let was = was.json.clone();
        self.run(move |conn| {
            let replaced = conn
                .prepare_cached(
                    "UPDATE passkeys SET passkey = ?1, last_used_at = ?2
                     WHERE cred_id = ?3 AND user_id = ?4 AND passkey = ?5",
                )?
                .execute(params![now.json, now_ms(), now.cred_id, user, was])?;
            Ok(replaced == 1)
        })
        .await
    }

    async fn put_ceremony(&self, id: &str, state: String, ttl: Duration) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |conn| {
            let now = now_ms();
            // Lapsed ceremonies go with the next one stored (by the expiry index): their number
            // is bounded by the ceremonies admitted per ttl.
            conn.prepare_cached("DELETE FROM passkey_ceremonies WHERE expires_at < ?1")?
                .execute(params![now])?;
            conn.prepare_cached(
                "INSERT OR REPLACE INTO passkey_ceremonies (id, state, expires_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, state, now + ttl.as_millis() as i64])?;
            Ok(())
        })
        .await
    }

    async fn take_ceremony(&self, id: &str) -> Result<Option<String>, StoreError> {
        let id = id.to_owned();
        self.run(move |conn| {
            conn.prepare_cached(
                "DELETE FROM passkey_ceremonies WHERE id = ?1 RETURNING state, expires_at",
            )?
            .query_row(params![id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .optional()
            .map(|taken| taken.and_then(|(state, expires)| (expires >= now_ms()).then_some(state)))
        })
        .await
    }

    async fn list_users(&self) -> Result<Arc<Vec<User>>, StoreError> {
        Ok(self
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    async fn insert_message(&self, message: NewMessage) -> Result<Option<Stored>, StoreError> {
        self.run_one(move |conn| {
            let from = message.from.as_str();
            let to = message.to.as_str();
            let client_id = message.client_id.as_ref().map(|c| c.as_str().to_owned());
            if let Some(client_id) = &client_id {
                let earlier = conn
                    .prepare_cached(&format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE from_user = ?1 AND client_id = ?2"
                    ))?
                    .query_row(params![from, client_id], message_from_row)
                    .optional()?;
                if let Some(earlier) = earlier {
                    return Ok(Some(Stored::Duplicate(earlier)));
                }
            }
            let recipient_known = conn
                .prepare_cached("SELECT 1 FROM users WHERE user_id = ?1")?
                .query_row(params![to], |_| Ok(()))
                .optional()?
                .is_some();
            if !recipient_known {
                return Ok(None);
            }
            let ts = now_ms();
            // The conversation first: a `peers` row without its message (if the insert below
            // fails) only names a conversation with nothing in it yet, while a message without
            // its `peers` rows would be missing from every restore. It is found by the sender's
            // `peers` row, not by its name: a conversation named by a job that stopped before
            // its `peers` rows gets them now. Each statement is one write (none needs a
            // statement journal, migration 4), and the store is consistent after any prefix.
            let conv = conn
                .prepare_cached("SELECT conv FROM peers WHERE user_id = ?1 AND peer_id = ?2")?
                .query_row(params![from, to], |r| r.get(0))
                .optional()?;
            let conv = match conv {
                Some(conv) => conv,
                None => new_conversation(conn, from, to)?,
            };
            conn.prepare_cached(
                "INSERT INTO messages (ts, from_user, to_user, conv, content, client_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                ts,
                from,
                to,
                conv,
                message.content.as_str(),
                client_id
            ])?;
            Ok(Some(Stored::New(Message {
                id: conn.last_insert_rowid(),
                ts,
                content: message.content.into_inner(),
                from: from.to_owned(),
                to: to.to_owned(),
                client_id,
            })))
        })
        .await
    }

    async fn conversations(
        &self,
        viewer: &UserId,
        per_peer: u32,
        since: i64,
        most: u32,
    ) -> Result<Conversations, StoreError> {
        let viewer = viewer.as_str().to_owned();
        // One index range per conversation (newest first, at most `per_peer`), all in one
        // statement: the cost of a connect follows the number of conversations, not the
        // length of the user's history. A loop over the conversations in Rust cost ~18 µs
        // each; this, ~1 µs (BENCHMARKS.md, session 7). The ids are picked from the
        // conversation index alone, the newest `most` of them overall, and only those rows are read: a
        // thousand people writing to the viewer cannot make a connect read their messages.
        self.read(move |conn| {
            let peers = conn
                .prepare_cached("SELECT peer_id FROM peers WHERE user_id = ?1")?
                .query_map(params![viewer], |r| {
                    r.get::<_, String>(0).map(UserId::from_store)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let messages = conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN (
                         SELECT m.id FROM peers p JOIN messages m ON m.id IN (
                             SELECT id FROM messages WHERE conv = p.conv AND id > ?2
                             ORDER BY id DESC LIMIT ?3)
                         WHERE p.user_id = ?1 ORDER BY m.id DESC LIMIT ?4)
                     ORDER BY id"
                ))?
                .query_map(params![viewer, since, per_peer, most], message_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // One index range (the cursors' primary key starts with the user).
            let read = conn
                .prepare_cached("SELECT peer_id, up_to FROM read_cursors WHERE user_id = ?1")?
                .query_map(params![viewer], |r| {
                    Ok((UserId::from_store(r.get::<_, String>(0)?), r.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Conversations {
                peers,
                messages,
                read,
            })
        })
        .await
    }

    async fn messages_since(
        &self,
        viewer: &UserId,
        since: i64,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let viewer = viewer.as_str().to_owned();
        // Through the viewer's conversations (`peers`): the ids after `since` in each, from the
        // conversation index alone (no table reads), the first `limit + 1` of them overall, then those
        // rows. Messages carry no per-user index (each would be one more random page written
        // per message), so a restore costs one index seek per conversation, like a connect:
        // ~2 µs each, measured in BENCHMARKS.md.
        self.read(move |conn| {
            page(
                conn,
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN (
                         SELECT m.id FROM peers p JOIN messages m ON m.conv = p.conv AND m.id > ?2
                         WHERE p.user_id = ?1 ORDER BY m.id LIMIT ?3)
                     ORDER BY id"
                ),
                params![viewer, since, limit + 1],
                limit,
                false,
            )
        })
        .await
    }

    async fn history(
        &self,
        viewer: &UserId,
        peer: &UserId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let (v, p) = (viewer.as_str().to_owned(), peer.as_str().to_owned());
        let before = before.unwrap_or(i64::MAX);
        self.read(move |conn| {
            let conv = conversation(conn, &v, &p)?;
            page(
                conn,
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages
                     WHERE conv = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
                ),
                params![conv, before, limit + 1],
                limit,
                true,
            )
        })
        .await
    }

    async fn mark_read(
        &self,
        viewer: &UserId,
        peer: &UserId,
        up_to: i64,
    ) -> Result<Option<MarkedRead>, StoreError> {
        let (v, p) = (viewer.as_str().to_owned(), peer.as_str().to_owned());
        // On a reader first: most `read`s move nothing (a conversation opened again), and are
        // answered without a trip to the writer. Only a cursor that moves is written, by one
        // statement that cannot take it back whatever else is written meanwhile.
        let looked = {
            let (v, p) = (v.clone(), p.clone());
            self.read(move |conn| {
                if read_receipts(conn, &p)?.is_none() {
                    return Ok(None);
                }
                let conv = conversation(conn, &v, &p)?;
                let newest = newest_in(conn, conv)?;
                let cursor = read_cursor(conn, &v, &p)?.unwrap_or_default();
                let target = up_to.min(newest);
                if newest == 0 || target <= cursor.up_to {
                    return Ok(Some(Ok(read_status(conn, conv, &v, cursor)?)));
                }
                Ok(Some(Err(target)))
            })
            .await?
        };
        let target = match looked {
            None => return Ok(None),
            Some(Ok(status)) => {
                return Ok(Some(MarkedRead {
                    status,
                    moved: false,
                    seen: None,
                }))
            }
            Some(Err(target)) => target,
        };
        let at = now_ms();
        let (cursor, moved, shared) = {
            let (v, p) = (v.clone(), p.clone());
            self.run_one(move |conn| {
                // On the writer, in the same job as the write: a settings change is either
                // before it (and counts) or after it, never between.
                let shared = receipts_shared(conn, &v, &p)?;
                // The seen cursor follows only a move made while receipts are shared.
                let moved = conn
                    .prepare_cached(
                        "INSERT INTO read_cursors (user_id, peer_id, up_to, at, seen_up_to, seen_at)
                         VALUES (?1, ?2, ?3, ?4,
                             CASE WHEN ?5 THEN ?3 ELSE 0 END, CASE WHEN ?5 THEN ?4 ELSE 0 END)
                         ON CONFLICT (user_id, peer_id) DO UPDATE SET up_to = excluded.up_to,
                         at = excluded.at,
                         seen_up_to = CASE WHEN ?5 THEN excluded.up_to ELSE seen_up_to END,
                         seen_at = CASE WHEN ?5 THEN excluded.at ELSE seen_at END
                         WHERE excluded.up_to > read_cursors.up_to",
                    )?
                    .execute(params![v, p, target, at, shared])?
                    > 0;
                Ok((
                    read_cursor(conn, &v, &p)?.unwrap_or_default(),
                    moved,
                    shared,
                ))
            })
            .await?
        };
        let status = self
            .read(move |conn| read_status(conn, conversation(conn, &v, &p)?, &v, cursor))
            .await?;
        Ok(Some(MarkedRead {
            status,
            moved,
            seen: (moved && shared).then_some(cursor),
        }))
    }

    async fn conversation_page(
        &self,
        viewer: &UserId,
        before: Option<i64>,
        limit: u32,
        unread_max: u32,
    ) -> Result<ConversationPage, StoreError> {
        let viewer = viewer.as_str().to_owned();
        let before = before.unwrap_or(i64::MAX);
        self.read(move |conn| {
            let considered: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM peers WHERE user_id = ?1")?
                .query_row(params![viewer], |r| r.get(0))?;
            let mut scanned = considered.max(0) as u64;
            let latest = conn
                .prepare_cached(CONVERSATIONS_BY_ACTIVITY)?
                .query_map(params![viewer, before, i64::from(limit) + 1], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let (latest, has_more) = cut_to_page(latest, limit);
            let viewer_shares = read_receipts(conn, &viewer)?.unwrap_or(true);
            let mut conversations = Vec::with_capacity(latest.len());
            for (peer, last, conv) in latest {
                let row = conn
                    .prepare_cached(CONVERSATION_ENTRY)?
                    .query_row(params![viewer, peer, last], |r| {
                        Ok((
                            message_from_row(r)?,
                            r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                            r.get::<_, Option<bool>>(7)?.unwrap_or(true),
                            cursor_at(r, 8)?,
                            cursor_at(r, 10)?,
                        ))
                    })
                    .optional()?;
                let Some((message, username, peer_shares, read, peer_seen)) = row else {
                    continue;
                };
                let (count, read_rows) = unread(conn, conv, &viewer, read.up_to, last, unread_max)?;
                scanned += read_rows + 1;
                let shared = viewer_shares && peer_shares && peer != viewer;
                conversations.push(ConversationEntry::read(
                    peer,
                    username,
                    message,
                    i64::from(count),
                    read,
                    peer_seen,
                    shared,
                ));
            }
            Ok(ConversationPage {
                conversations,
                has_more,
                scanned,
            })
        })
        .await
    }

    async fn settings(&self, user: &UserId) -> Result<UserSettings, StoreError> {
        let user = user.as_str().to_owned();
        self.read(move |conn| {
            Ok(UserSettings {
                read_receipts: read_receipts(conn, &user)?.unwrap_or(true),
            })
        })
        .await
    }

    async fn change_settings(
        &self,
        user: &UserId,
        change: SettingsChange,
    ) -> Result<Option<SettingsChanged>, StoreError> {
        let user = user.as_str().to_owned();
        // One read, then at most one write: harmless if it stops between them.
        self.run_one(move |conn| {
            let Some(read_receipts) = read_receipts(conn, &user)? else {
                return Ok(None);
            };
            let before = UserSettings { read_receipts };
            let after = change.applied_to(before);
            if after != before {
                conn.prepare_cached("UPDATE users SET read_receipts = ?2 WHERE user_id = ?1")?
                    .execute(params![user, after.read_receipts])?;
            }
            Ok(Some(SettingsChanged {
                settings: after,
                changed: after != before,
            }))
        })
        .await
    }

    async fn socket_connected(&self, user: &UserId) -> Result<u32, StoreError> {
        Ok(self.presence.connect(user))
    }

    async fn socket_disconnected(&self, user: &UserId) -> Result<Option<u32>, StoreError> {
        Ok(self.presence.disconnect(user))
    }

    async fn socket_count(&self, user: &UserId) -> Result<u32, StoreError> {
        Ok(self.presence.count(user))
    }

    async fn online_users(&self) -> Result<Arc<std::collections::HashSet<UserId>>, StoreError> {
        Ok(self.presence.online())
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let file = self.file.clone();
        // A one-row upsert in a batch of its own or of others: it begins, writes and commits
        // (fsync with `--sqlite-sync full`) as every write does.
        self.run_one(move |conn| {
            file.still_in_place()?;
            conn.prepare_cached(
                "INSERT INTO health (id, checked_at) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            )?
            .execute(params![now_ms()])?;
            Ok(())
        })
        .await
    }
}

/// The viewer's read state of a conversation with this cursor, counted as of its newest message.
fn read_status(
    conn: &Connection,
    conv: i64,
    viewer: &str,
    cursor: ReadCursor,
) -> rusqlite::Result<ReadStatus> {
    let as_of = newest_in(conn, conv)?;
    let (unread, _) = unread(conn, conv, viewer, cursor.up_to, as_of, UNREAD_MAX)?;
    Ok(ReadStatus {
        cursor,
        unread: unread.min(UNREAD_MAX),
        as_of,
    })
}

/// Starts the conversation of `from` and `to`: marks both accounts as having messages, names
/// the conversation (or finds the one a job that stopped early named) and gives both parties
/// their `peers` row. Three statements, each one write (the last writes both rows or neither),
/// in an order that leaves the store consistent after any prefix of them (see
/// [`Isolation::Statement`]). Returns its id.
fn new_conversation(conn: &Connection, from: &str, to: &str) -> rusqlite::Result<i64> {
    // The conversation may be either party's first: neither account expires from now on
    // (migration 5). First: a flag without its conversation only keeps an account, while
    // `peers` rows of an account still flagged message-less would keep `IDLE_ACCOUNTS_EXIST`
    // true for ever.
    conn.prepare_cached(
        "UPDATE users SET messaged = 1 WHERE user_id IN (?1, ?2) AND messaged = 0",
    )?
    .execute(params![from, to])?;
    let pair = pair_key(from, to);
    conn.prepare_cached("INSERT OR IGNORE INTO conversations (pair) VALUES (?1)")?
        .execute(params![pair])?;
    let conv: i64 = conn
        .prepare_cached("SELECT id FROM conversations WHERE pair = ?1")?
        .query_row(params![pair], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO peers (user_id, peer_id, conv) VALUES (?1, ?2, ?3), (?2, ?1, ?3)",
    )?
    .execute(params![from, to, conv])?;
    Ok(conv)
}

/// Whether both have read receipts on (never for notes to self).
fn receipts_shared(conn: &Connection, viewer: &str, peer: &str) -> rusqlite::Result<bool> {
    Ok(viewer != peer
        && read_receipts(conn, viewer)?.unwrap_or(true)
        && read_receipts(conn, peer)?.unwrap_or(true))
}

/// Inserts a new session of `user` with a fresh secret (drawn again in the astronomically
/// unlikely case its digest is taken, by a session or by any secret) and returns the secret.
/// Its key is `key`'s bytes, or empty: unbound for good (NULL is left to sessions from before
/// keys, which bind once).
fn insert_session(
    conn: &Connection,
    user: &UserId,
    device: &str,
    now: i64,
    key: Option<&PopKey>,
) -> rusqlite::Result<SessionId> {
    let key: &[u8] = key.map_or(&[], |k| k.as_bytes());
    loop {
        let candidate = SessionId::random();
        let digest = candidate.digest();
        let taken: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM session_secrets WHERE digest = ?1)")?
            .query_row(params![digest], |r| r.get(0))?;
        if taken {
            continue;
        }
        let inserted = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO sessions (session_digest, user_id, created_at, last_seen_at, device, pop_key)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5)",
            )?
            .execute(params![digest, user.as_str(), now, device, key])?;
        if inserted == 1 {
            conn.prepare_cached(
                "INSERT INTO session_secrets (digest, session_digest, issued_at) VALUES (?1, ?1, ?2)",
            )?
            .execute(params![digest, now])?;
            return Ok(candidate);
        }
    }
}

/// Adds a fresh current secret to the session `family` (whose current one the caller just
/// retired), drawn again in the astronomically unlikely case its digest is taken.
fn insert_secret(conn: &Connection, family: &str, now: i64) -> rusqlite::Result<SessionId> {
    loop {
        let candidate = SessionId::random();
        let digest = candidate.digest();
        let taken: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM sessions WHERE session_digest = ?1)
                     OR EXISTS (SELECT 1 FROM session_secrets WHERE digest = ?1)",
            )?
            .query_row(params![digest], |r| r.get(0))?;
        if taken {
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO session_secrets (digest, session_digest, issued_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![digest, family, now])?;
        return Ok(candidate);
    }
}

/// A cursor from two nullable columns (up_to, at) starting at `index`: zero when absent.
fn cursor_at(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<ReadCursor> {
    Ok(ReadCursor {
        up_to: row.get::<_, Option<i64>>(index)?.unwrap_or(0),
        at: row.get::<_, Option<i64>>(index + 1)?.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn policy() -> SessionPolicy {
        SessionPolicy {
            idle: Duration::from_secs(3600),
            max_age: Duration::from_secs(7200),
        }
    }

    pub(super) fn open(dir: &Path) -> SqliteStore {
        SqliteStore::open(dir, policy()).unwrap()
    }

    #[tokio::test]
    async fn the_readiness_probe_commits_a_write_and_fails_once_the_database_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .check_ready()
            .await
            .expect("a fresh store takes writes");
        let checked: i64 = store
            .read(|conn| conn.query_row("SELECT checked_at FROM health", [], |r| r.get(0)))
            .await
            .unwrap();
        assert!(checked > 0);
        // In WAL mode every other write still succeeds here, into files nothing can reach.
        std::fs::remove_dir_all(dir.path()).unwrap();
        let failed = store.check_ready().await.expect_err("the file is gone");
        assert!(format!("{failed:#}").contains("deleted"), "{failed:#}");
        // (That no error shows a path is the store contract's to check.)
    }

    /// A conversation named by a job that stopped before its `peers` rows (see
    /// [`new_conversation`]) is the one the next message takes: one conversation per pair.
    #[tokio::test]
    async fn a_conversation_named_by_a_job_that_stopped_early_is_the_one_its_pair_uses() {
        use crate::domain::MessageContent;
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut users = Vec::new();
        for name in ["ada", "bob"] {
            let created = store
                .create_session(&Username::parse(name).unwrap(), "", None)
                .await;
            users.push(created.unwrap().into_session().unwrap().1.user_id);
        }
        let (a, b) = (users[0].clone(), users[1].clone());
        let pair = pair_key(a.as_str(), b.as_str());
        let named: i64 = store
            .run(move |conn| {
                conn.execute("INSERT INTO conversations (pair) VALUES ('x:y')", [])?;
                conn.query_row(
                    "INSERT INTO conversations (pair) VALUES (?1) RETURNING id",
                    params![pair],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        for (from, to) in [(&b, &a), (&a, &b)] {
            let message = NewMessage {
                from: from.clone(),
                to: to.clone(),
                content: MessageContent::parse("hi", 10).unwrap(),
                client_id: None,
            };
            assert!(matches!(
                store.insert_message(message).await.unwrap(),
                Some(Stored::New(_))
            ));
        }
        let (convs, rows): (Vec<i64>, i64) = store
            .read(|conn| {
                let convs = conn
                    .prepare("SELECT DISTINCT conv FROM peers UNION SELECT conv FROM messages")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let rows =
                    conn.query_row("SELECT COUNT(*) FROM conversations", [], |r| r.get(0))?;
                Ok((convs, rows))
            })
            .await
            .unwrap();
        assert_eq!(convs, [named]);
        assert_eq!(rows, 2);
        for (viewer, peer) in [(&a, &b), (&b, &a)] {
            let seen = store.history(viewer, peer, None, 10).await.unwrap();
            assert_eq!(seen.messages.len(), 2);
            let roster = store.conversations(viewer, 10, 0, u32::MAX).await.unwrap();
            assert_eq!(roster.peers, std::slice::from_ref(peer));
        }
    }
}
