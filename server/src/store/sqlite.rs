//! The embedded default store: one SQLite file in the data directory, WAL, `synchronous=FULL`.
//!
//! One writer thread owns the connection. Requests queue on a channel; the thread takes every
//! request waiting (up to [`MAX_BATCH`]), runs them in one transaction, commits once, and only
//! then answers them all. Under load this turns many fsyncs into one (group commit) while every
//! answer still means "committed". A request made of several writes runs inside its own
//! savepoint, so its failure undoes only its own writes; a request whose writes are each undone
//! by SQLite if they fail, and harmless if it stops between them (storing a message), needs none
//! and skips the savepoint's page copies, which were a tenth of the writer's time under message
//! load. Reads (session lookups, rosters, restore and history pages) run beside it on a few
//! reader threads with read-only connections, so they never wait behind a batch of writes; a
//! checkpoint thread copies the WAL into the database file beside the writer, whose own
//! checkpoints then have little left to do.

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use protocol::payloads::Message;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use tokio::sync::oneshot;

use super::presence::LocalPresence;
use super::{
    cut_to_page, now_ms, Conversations, Expired, NewMessage, Page, Session, Store, StoreError,
    Stored, User,
};
use crate::domain::{SessionId, UserId, Username};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_peers.sql"),
    include_str!("../../migrations/0003_message_indexes.sql"),
    include_str!("../../migrations/0004_peers_without_trigger.sql"),
    include_str!("../../migrations/0005_expiry.sql"),
    include_str!("../../migrations/0006_health.sql"),
];
const MAX_BATCH: usize = 512;
/// A session's `last_seen_at` is rewritten at most this often (or a third of the idle time,
/// when that is shorter), so a session used more often than it idles never expires.
const TOUCH_EVERY_MS: i64 = 60_000;

/// A job runs on the writer thread. It returns whether it succeeded and the reply to send once
/// the batch is committed.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;
/// How a failing job is kept from touching the rest of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// Several writes: the job runs in a savepoint, rolled back if it fails or panics.
    Savepoint,
    /// Write statements that SQLite undoes one by one if they fail, ordered so that the store
    /// is consistent after any prefix of them (a job that stops early leaves nothing wrong).
    Statement,
}
/// How often the checkpoint thread copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// A read runs on one of the reader threads, each with its own read-only connection (WAL lets
/// readers run beside the writer); it answers by itself.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;
/// Answers a job once its batch is done: with the commit's error, if the commit failed.
type Reply = Box<dyn FnOnce(Option<&Arc<rusqlite::Error>>) + Send>;

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

/// The database file a store opened. In WAL mode SQLite goes on writing to a database file
/// deleted (or its directory removed) under it: every commit succeeds and is lost at the next
/// start. The readiness probe compares what the path names now with what was opened.
#[derive(Debug, Clone)]
struct DbFile {
    path: std::path::PathBuf,
    id: Option<FileId>,
}

/// A file's identity: device and inode where there are such things.
type FileId = (u64, u64);

impl DbFile {
    fn opened(path: std::path::PathBuf) -> Self {
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
    fn still_in_place(&self) -> rusqlite::Result<()> {
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

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "tether.db";

/// The database file of the store in `data_dir` (its WAL and shared memory are beside it, with
/// `-wal` and `-shm` appended).
pub fn db_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(DB_FILE)
}

impl SqliteStore {
    /// Opens (creating if needed) `tether.db` in `data_dir` and applies pending migrations.
    pub fn open(data_dir: &Path, policy: SessionPolicy) -> anyhow::Result<Self> {
        Self::open_with(data_dir, policy, Durability::Full)
    }

    pub fn open_with(
        data_dir: &Path,
        policy: SessionPolicy,
        durability: Durability,
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
            .spawn(move || writer_loop(conn, rx))?;
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

    /// Runs a job of several writes (in its own savepoint) on the writer thread and answers
    /// once its batch is committed.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.write(Isolation::Savepoint, f).await
    }

    /// Runs a job without a savepoint on the writer thread (see [`Isolation::Statement`]: one
    /// write statement, or several that are harmless if it stops after any of them), and
    /// answers once its batch is committed.
    async fn run_one<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.write(Isolation::Statement, f).await
    }

    async fn write<T, F>(&self, isolation: Isolation, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit_error| {
                let answer = match commit_error {
                    Some(e) => Err(StoreError::Sqlite(e.clone())),
                    None => result.map_err(StoreError::from),
                };
                let _ = tx.send(answer);
            });
            (ok, reply)
        });
        let started = Instant::now();
        self.jobs
            .send((isolation, job))
            .map_err(|_| StoreError::Stopped("the writer thread is gone"))?;
        let answer = rx
            .await
            .map_err(|_| StoreError::Stopped("a write ended without an answer"))?;
        metrics::histogram!("tether_store_latency_seconds").record(started.elapsed().as_secs_f64());
        answer
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

    /// Runs a read on a reader thread. Every write is answered only after its commit, so a
    /// read that starts after a write's answer sees that write.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(f(conn).map_err(StoreError::from));
        });
        let started = Instant::now();
        self.reads
            .send(job)
            .map_err(|_| StoreError::Stopped("the reader threads are gone"))?;
        let answer = rx
            .await
            .map_err(|_| StoreError::Stopped("a read ended without an answer"))?;
        metrics::histogram!("tether_store_latency_seconds").record(started.elapsed().as_secs_f64());
        answer
    }
}

fn reader_loop(conn: Connection, rx: Arc<std::sync::Mutex<mpsc::Receiver<ReadJob>>>) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        // A panicking read drops its reply (its caller sees an error); the thread lives on.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&conn))).is_err() {
            tracing::error!("a store read panicked");
        }
    }
}

fn load_directory(conn: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut stmt =
        conn.prepare("SELECT user_id, username FROM users ORDER BY created_at, rowid")?;
    let users = stmt
        .query_map([], |r| {
            Ok(User {
                user_id: UserId::from_store(r.get(0)?),
                username: r.get(1)?,
            })
        })?
        .collect();
    users
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let applied: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    // A store a newer release migrated has tables this binary does not know how to keep
    // consistent: refuse it rather than run on it (a downgrade is a restore from backup).
    anyhow::ensure!(
        applied <= MIGRATIONS.len(),
        "the store is at schema version {applied}, newer than this release knows ({}): run the \
         release that migrated it, or restore a backup taken before the upgrade",
        MIGRATIONS.len()
    );
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<(Isolation, Job)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch);
    }
}

/// Copies committed WAL frames back into the database file every [`CHECKPOINT_EVERY`]
/// (PASSIVE: it never blocks the writer or the readers), until the store is dropped.
fn checkpoint_loop(conn: Connection, store: std::sync::Weak<()>) {
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        if store.upgrade().is_none() {
            return;
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
        }
    }
}

/// Runs a batch in one transaction and answers every job after the commit. A job dropped
/// unanswered (when the transaction cannot even begin) reports the store as unavailable.
fn run_batch(conn: &Connection, batch: Vec<(Isolation, Job)>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, jobs = batch.len(), "store could not begin a transaction");
        return;
    }
    let mut replies = Vec::with_capacity(batch.len());
    for (isolation, job) in batch {
        let savepoint = isolation == Isolation::Savepoint;
        if savepoint {
            if let Err(e) = conn.execute_batch("SAVEPOINT job") {
                tracing::error!(error = %e, "store could not open a savepoint");
                continue;
            }
        }
        // A panicking job must not take the writer thread (and so the whole store) down: its
        // caller, whose reply is dropped, sees an error. A savepoint job's writes are rolled
        // back; a statement job's one write, if it completed before the panic, stays (a client
        // resending it with the same id gets the stored message back).
        let Ok((ok, reply)) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn)))
        else {
            tracing::error!("a store job panicked");
            if savepoint {
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            }
            continue;
        };
        if savepoint {
            let end = if ok {
                "RELEASE job"
            } else {
                "ROLLBACK TO job; RELEASE job"
            };
            if let Err(e) = conn.execute_batch(end) {
                tracing::error!(error = %e, "store could not close a savepoint");
            }
        }
        replies.push(reply);
    }
    let commit_error = conn.execute_batch("COMMIT").map_err(Arc::new).err();
    if let Some(e) = &commit_error {
        tracing::error!(error = %e, "store commit failed; the batch was rolled back");
        let _ = conn.execute_batch("ROLLBACK");
    }
    for reply in replies {
        reply(commit_error.as_ref());
    }
}

/// A message-less user left with no session: its account is due for the next sweep
/// (`last_seen_at` 0, see migration 5).
fn mark_if_sessionless(conn: &Connection, user: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE users SET last_seen_at = 0 WHERE user_id = ?1 AND messaged = 0
         AND NOT EXISTS (SELECT 1 FROM sessions WHERE user_id = ?1)",
    )?
    .execute(params![user])?;
    Ok(())
}

/// A session in use at `now`, and its account if it is message-less. Two single writes, each
/// harmless alone (see [`Isolation::Statement`]).
fn touch(conn: &Connection, digest: &str, user: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE sessions SET last_seen_at = MAX(last_seen_at, ?2) WHERE session_digest = ?1",
    )?
    .execute(params![digest, now])?;
    touch_account(conn, user, now)
}

fn touch_account(conn: &Connection, user: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE users SET last_seen_at = MAX(last_seen_at, ?2) WHERE user_id = ?1 AND messaged = 0",
    )?
    .execute(params![user, now])?;
    Ok(())
}

/// The expiry sweep's statements, shared with the test that checks their query plans: what
/// is due is found through an index, never by reading every session or account.
const EXPIRED_SESSIONS_EXIST: &str =
    "SELECT EXISTS (SELECT 1 FROM sessions WHERE last_seen_at < ?1)
     OR EXISTS (SELECT 1 FROM sessions WHERE created_at < ?2)";
const EXPIRE_SESSIONS: &str = "DELETE FROM sessions WHERE session_digest IN (
         SELECT session_digest FROM sessions WHERE last_seen_at < ?1
         UNION SELECT session_digest FROM sessions WHERE created_at < ?2
         LIMIT ?3)
     RETURNING session_digest, user_id";
const IDLE_ACCOUNTS_EXIST: &str =
    "SELECT EXISTS (SELECT 1 FROM users WHERE messaged = 0 AND last_seen_at < ?1)";
const IDLE_ACCOUNTS: &str = "SELECT user_id FROM users WHERE messaged = 0 AND last_seen_at < ?1
     AND NOT EXISTS (SELECT 1 FROM peers p WHERE p.user_id = users.user_id)
     LIMIT ?2";

fn pair_key(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}:{b}")
    } else {
        format!("{b}:{a}")
    }
}

const MESSAGE_COLUMNS: &str = "id, ts, content, from_user, to_user, client_id";

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: row.get(0)?,
        ts: row.get(1)?,
        content: row.get(2)?,
        from: row.get(3)?,
        to: row.get(4)?,
        client_id: row.get(5)?,
    })
}

/// Runs a query for at most `limit` messages, asking for one more to learn whether more exist.
fn page(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    limit: u32,
    newest_first: bool,
) -> rusqlite::Result<Page> {
    let mut stmt = conn.prepare_cached(sql)?;
    let messages = stmt
        .query_map(params, message_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (mut messages, has_more) = cut_to_page(messages, limit);
    if newest_first {
        messages.reverse();
    }
    Ok(Page { messages, has_more })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_session(
        &self,
        username: &Username,
    ) -> Result<(SessionId, Session), StoreError> {
        let username = username.as_str().to_owned();
        let created = self.run(move |conn| {
            let now = now_ms();
            // Ids are 122 random bits, so a clash is astronomically unlikely; the store still
            // checks (INSERT OR IGNORE + changes) and draws again rather than assume.
            let user_id = loop {
                let candidate = UserId::random();
                let inserted = conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO users (user_id, username, created_at, last_seen_at)
                         VALUES (?1, ?2, ?3, ?3)",
                    )?
                    .execute(params![candidate.as_str(), username, now])?;
                if inserted == 1 {
                    break candidate;
                }
            };
            let session_id = loop {
                let candidate = SessionId::random();
                let inserted = conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO sessions (session_digest, user_id, created_at, last_seen_at)
                         VALUES (?1, ?2, ?3, ?3)",
                    )?
                    .execute(params![candidate.digest(), user_id.as_str(), now])?;
                if inserted == 1 {
                    break candidate;
                }
            };
            Ok((session_id, Session { user_id, username }))
        })
        .await?;
        // Committed: the new user joins the directory.
        let mut directory = self.directory.write().unwrap_or_else(|e| e.into_inner());
        Arc::make_mut(&mut directory).push(User {
            user_id: created.1.user_id.clone(),
            username: created.1.username.clone(),
        });
        Ok(created)
    }

    async fn find_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let digest = id.digest();
        let found = {
            let digest = digest.clone();
            self.read(move |conn| {
                conn.prepare_cached(
                    "SELECT s.user_id, u.username, s.created_at, s.last_seen_at
                     FROM sessions s JOIN users u ON u.user_id = s.user_id
                     WHERE s.session_digest = ?1",
                )?
                .query_row(params![digest], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .optional()
            })
            .await?
        };
        let Some((user_id, username, created_at, last_seen_at)) = found else {
            return Ok(None);
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
                    .query_row(params![digest, now - idle_ms, now - max_age_ms], |r| {
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
            let user = user_id.clone();
            self.run_one(move |conn| touch(conn, &digest, &user, now))
                .await?;
        }
        Ok(Some(Session {
            user_id: UserId::from_store(user_id),
            username,
        }))
    }

    async fn delete_session(&self, id: &SessionId) -> Result<bool, StoreError> {
        let digest = id.digest();
        self.run(move |conn| {
            let ended: Option<String> = conn
                .prepare_cached("DELETE FROM sessions WHERE session_digest = ?1 RETURNING user_id")?
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

    async fn touch_sessions(&self, digests: Vec<String>) -> Result<Vec<String>, StoreError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let (idle_cut, age_cut) = self.session_cutoffs(now);
        // Single writes, each harmless alone: no savepoint needed.
        self.run_one(move |conn| {
            let mut gone = Vec::new();
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
                    Some(user) => touch_account(conn, &user, now)?,
                    None => gone.push(digest),
                }
            }
            Ok(gone)
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
            let pair = pair_key(from, to);
            // The conversation first: a `peers` row without its message (if the insert below
            // fails) only names a conversation with nothing in it yet, while a message without
            // its `peers` rows would be missing from every restore. Both statements are single
            // writes, so neither needs a statement journal (migration 4).
            let new_conversation = conn.prepare_cached(
                "INSERT OR IGNORE INTO peers (user_id, peer_id, pair) VALUES (?1, ?2, ?3), (?2, ?1, ?3)",
            )?
            .execute(params![from, to, pair])?
                > 0;
            // A new conversation may be either party's first: neither account expires from now
            // on (migration 5). Before the message, like `peers`: a flag without its message
            // only keeps an account.
            if new_conversation {
                conn.prepare_cached(
                    "UPDATE users SET messaged = 1 WHERE user_id IN (?1, ?2) AND messaged = 0",
                )?
                .execute(params![from, to])?;
            }
            conn.prepare_cached(
                "INSERT INTO messages (ts, from_user, to_user, pair, content, client_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                ts,
                from,
                to,
                pair,
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
        // each; this, ~1 µs (BENCHMARKS.md, session 7). The ids are picked from the pair
        // index alone, the newest `most` of them overall, and only those rows are read: a
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
                             SELECT id FROM messages WHERE pair = p.pair AND id > ?2
                             ORDER BY id DESC LIMIT ?3)
                         WHERE p.user_id = ?1 ORDER BY m.id DESC LIMIT ?4)
                     ORDER BY id"
                ))?
                .query_map(params![viewer, since, per_peer, most], message_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Conversations { peers, messages })
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
        // pair index alone (no table reads), the first `limit + 1` of them overall, then those
        // rows. Messages carry no per-user index (each would be one more random page written
        // per message), so a restore costs one index seek per conversation, like a connect:
        // ~2 µs each, measured in BENCHMARKS.md.
        self.read(move |conn| {
            page(
                conn,
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN (
                         SELECT m.id FROM peers p JOIN messages m ON m.pair = p.pair AND m.id > ?2
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
        let pair = pair_key(viewer.as_str(), peer.as_str());
        let before = before.unwrap_or(i64::MAX);
        self.read(move |conn| {
            page(
                conn,
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages
                     WHERE pair = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
                ),
                params![pair, before, limit + 1],
                limit,
                true,
            )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageContent;

    fn policy() -> SessionPolicy {
        SessionPolicy {
            idle: Duration::from_secs(3600),
            max_age: Duration::from_secs(7200),
        }
    }

    fn open(dir: &Path) -> SqliteStore {
        SqliteStore::open(dir, policy()).unwrap()
    }

    async fn user(store: &SqliteStore, name: &str) -> UserId {
        let created = store.create_session(&Username::parse(name).unwrap()).await;
        created.unwrap().1.user_id
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

    #[tokio::test]
    async fn a_database_from_before_the_peers_table_is_upgraded_with_its_conversations() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The file as the first release left it: migration 1 only, two conversations.
            let conn = Connection::open(dir.path().join("tether.db")).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
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
        assert_eq!(indexes, ["messages_by_client_id", "messages_by_pair"]);
        // The resend check's index starts with the (time-ordered) client id.
        let columns =
            names("SELECT name FROM pragma_index_info('messages_by_client_id') ORDER BY seqno");
        assert_eq!(columns, ["client_id", "from_user"]);
        // A message's INSERT is a single write (no trigger), so it needs no statement journal.
        let triggers = names("SELECT name FROM sqlite_master WHERE type = 'trigger'");
        assert!(triggers.is_empty(), "{triggers:?}");
    }

    /// The names in the directory the roster is built from.
    fn names(store: &SqliteStore) -> Vec<String> {
        let directory = store.directory.read().unwrap_or_else(|e| e.into_inner());
        directory.iter().map(|u| u.username.clone()).collect()
    }

    #[tokio::test]
    async fn the_sweeps_find_what_is_due_through_indexes_without_reading_every_row() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let conn = Connection::open(dir.path().join("tether.db")).unwrap();
        let plan = |sql: &str, args: &[i64]| -> String {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap()
                .join("\n")
        };
        let sessions = ["sessions_by_last_seen", "sessions_by_created"];
        for (sql, args, indexes) in [
            (EXPIRE_SESSIONS, &[0, 0, 10][..], &sessions[..]),
            (EXPIRED_SESSIONS_EXIST, &[0, 0][..], &sessions[..]),
            (IDLE_ACCOUNTS, &[0, 10][..], &["users_without_messages"][..]),
            (
                IDLE_ACCOUNTS_EXIST,
                &[0][..],
                &["users_without_messages"][..],
            ),
        ] {
            let shown = plan(sql, args);
            for index in indexes {
                assert!(shown.contains(index), "{index} not used:\n{shown}");
            }
            assert!(!shown.contains("SCAN sessions"), "{shown}");
            assert!(!shown.contains("SCAN users"), "{shown}");
        }
    }

    #[tokio::test]
    async fn an_older_database_learns_which_accounts_have_messages() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The file as release 4 left it: two who talked, one who never did.
            let mut conn = Connection::open(dir.path().join("tether.db")).unwrap();
            for sql in &MIGRATIONS[..4] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 4).unwrap();
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
