//! The threads that own the store's connections.
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

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::SqliteStore;
use crate::store::StoreError;

const MAX_BATCH: usize = 512;
/// A job runs on the writer thread. It returns whether it succeeded and the reply to send once
/// the batch is committed.
pub(super) type Job = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;
/// How a failing job is kept from touching the rest of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isolation {
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
pub(super) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;
/// Answers a job once its batch is done: with the commit's error, if the commit failed.
type Reply = Box<dyn FnOnce(Option<&Arc<rusqlite::Error>>) + Send>;

impl SqliteStore {
    /// Runs a job of several writes (in its own savepoint) on the writer thread and answers
    /// once its batch is committed.
    pub(super) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.write(Isolation::Savepoint, f).await
    }

    /// Runs a job without a savepoint on the writer thread (see [`Isolation::Statement`]: one
    /// write statement, or several that are harmless if it stops after any of them), and
    /// answers once its batch is committed.
    pub(super) async fn run_one<T, F>(&self, f: F) -> Result<T, StoreError>
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

    /// Runs a read on a reader thread. Every write is answered only after its commit, so a
    /// read that starts after a write's answer sees that write.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
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

/// When the writer waits for more jobs before it commits (`--sqlite-commit-gather-us`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gather {
    /// Longest wait after a batch's first job; zero commits at once (group commit only
    /// takes what queued during the previous commit).
    pub window: Duration,
}

pub(super) fn writer_loop(conn: Connection, rx: mpsc::Receiver<(Isolation, Job)>, gather: Gather) {
    // Whether the previous commit answered more than one job: writes are arriving faster
    // than commits, so waiting a little fills the next one. Writes on a quiet server do not
    // wait (they would pay the window and share their fsync with nobody), except the first
    // one after a burst whose last commit was shared: it waits one window.
    let mut shared = false;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        take_queued(&rx, &mut batch);
        let until = (shared && !gather.window.is_zero())
            .then(|| Instant::now().checked_add(gather.window))
            .flatten();
        if let Some(until) = until {
            while batch.len() < MAX_BATCH {
                let Some(left) = until.checked_duration_since(Instant::now()) else {
                    break;
                };
                match rx.recv_timeout(left) {
                    Ok(job) => {
                        batch.push(job);
                        take_queued(&rx, &mut batch);
                    }
                    Err(_) => break,
                }
            }
        }
        shared = batch.len() > 1;
        run_batch(&conn, batch);
    }
}

/// Adds every job already queued to the batch, up to [`MAX_BATCH`].
fn take_queued(rx: &mpsc::Receiver<(Isolation, Job)>, batch: &mut Vec<(Isolation, Job)>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
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

pub(super) fn reader_loop(conn: Connection, rx: Arc<std::sync::Mutex<mpsc::Receiver<ReadJob>>>) {
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

/// Copies committed WAL frames back into the database file every [`CHECKPOINT_EVERY`]
/// (PASSIVE: it never blocks the writer or the readers), until the store is dropped.
pub(super) fn checkpoint_loop(conn: Connection, store: std::sync::Weak<()>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A job that writes one row and, once its batch is committed, says so on `done`.
    fn job(done: &mpsc::Sender<()>) -> (Isolation, Job) {
        let done = done.clone();
        let job: Job = Box::new(move |conn: &Connection| {
            conn.execute("INSERT INTO t (v) VALUES (1)", []).unwrap();
            let reply: Reply = Box::new(move |_| {
                let _ = done.send(());
            });
            (true, reply)
        });
        (Isolation::Statement, job)
    }

    /// Runs a writer with this window: two jobs queued before it starts (so its first commit
    /// answers both), then one job, and another `gap` later. Returns how many commits it made.
    fn commits_with(window: Duration, gap: Duration) -> usize {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        let commits = Arc::new(AtomicUsize::new(0));
        let counted = commits.clone();
        conn.commit_hook(Some(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            false
        }));
        let (tx, rx) = mpsc::channel();
        let (done, answered) = mpsc::channel();
        tx.send(job(&done)).unwrap();
        tx.send(job(&done)).unwrap();
        let writer = std::thread::spawn(move || writer_loop(conn, rx, Gather { window }));
        for _ in 0..2 {
            answered.recv().unwrap();
        }
        tx.send(job(&done)).unwrap();
        std::thread::sleep(gap);
        tx.send(job(&done)).unwrap();
        for _ in 0..2 {
            answered.recv().unwrap();
        }
        drop(tx);
        writer.join().unwrap();
        commits.load(Ordering::SeqCst)
    }

    #[test]
    fn after_a_shared_commit_a_window_lets_the_next_writes_share_one() {
        let gap = Duration::from_millis(20);
        assert_eq!(
            commits_with(Duration::ZERO, gap),
            3,
            "no window: the third write commits before the fourth comes"
        );
        assert_eq!(
            commits_with(Duration::from_secs(1), gap),
            2,
            "the third write waits, and the fourth shares its commit"
        );
    }

    #[test]
    fn writes_on_a_quiet_writer_do_not_wait_for_the_window() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        let (tx, rx) = mpsc::channel();
        let (done, answered) = mpsc::channel();
        let window = Duration::from_secs(30);
        let writer = std::thread::spawn(move || writer_loop(conn, rx, Gather { window }));
        let started = Instant::now();
        for _ in 0..3 {
            tx.send(job(&done)).unwrap();
            answered.recv().unwrap();
        }
        assert!(
            started.elapsed() < window / 2,
            "each commit answered one write, so none waited"
        );
        drop(tx);
        writer.join().unwrap();
    }
}
