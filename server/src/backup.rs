//! `tether backup PATH`: a consistent copy of the embedded SQLite store, made by a second process
//! beside the running server.
//!
//! SQLite's online backup API, run inside one read transaction on the live database. In WAL mode
//! a reader never blocks the writer, so the server keeps committing while the copy is made, and
//! the copy is the database as of the moment that transaction began: every message acknowledged
//! before then, nothing half-written. The transaction is what makes the copy finish at all: on
//! its own each backup step takes a fresh snapshot, and SQLite starts a backup over whenever
//! another connection wrote between two steps, which a server committing many times a second
//! always has. Held across the steps, it lets the copy go in steps of `--step-pages` pages with
//! `--step-pause-ms` between them, so the copy leaves the server some disk and CPU.
//!
//! Why not `VACUUM INTO`: it also copies one snapshot without blocking the writer, and its copy
//! is compacted, but it rebuilds every table and index (a sort per index, CPU the server needs
//! on a small machine) in one statement that can neither be paced nor report progress. The
//! backup API copies pages as they are.
//!
//! What it costs the server: while the read transaction is open, checkpoints cannot move past
//! its snapshot, so the server's `-wal` file grows by what is written during the copy (the next
//! checkpoint after the copy catches up; the file keeps its size until the server stops).
//!
//! PATH is never half written: the copy goes to a hidden temporary file beside PATH, which is
//! switched to a rollback journal (one self-contained file, no `-wal` beside it), checked with
//! `PRAGMA integrity_check`, synced, and only then renamed to PATH, and the directory synced. An
//! existing PATH is refused unless `--force`, and the live database itself always is.
//!
//! One thing in the copy differs from the snapshot: the next message id, moved
//! [`MESSAGE_ID_GAP`] ahead so that a restored server never issues an id again that the live
//! one issued after the backup (open tabs hold those ids as cursors).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::store::sqlite::db_path;

/// `tether backup PATH` (the store's location comes from the global `--data-dir`).
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// The file to write: a complete database (the directory must exist). An existing file is
    /// refused unless --force.
    pub path: PathBuf,

    /// Replace PATH if it exists (atomically: PATH is the old file until the new one is whole).
    #[arg(long)]
    pub force: bool,

    /// Database pages copied per step (a page is 4 KiB by default).
    #[arg(long, env = "TETHER_BACKUP_STEP_PAGES", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub step_pages: u32,

    /// Pause between two steps, in milliseconds: room for the server on a busy machine. Longer
    /// makes the copy slower, and the server's `-wal` file grows by what it writes meanwhile.
    #[arg(long, env = "TETHER_BACKUP_STEP_PAUSE_MS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub step_pause_ms: u64,
}

/// What a backup copied, for the operator.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub source: PathBuf,
    pub path: PathBuf,
    pub pages: u64,
    pub page_size: u64,
    /// The backup file's size.
    pub bytes: u64,
    pub copy_time: Duration,
    pub check_time: Duration,
    /// From the start to the copy synced and in place.
    pub total_time: Duration,
    pub users: u64,
    pub messages: u64,
    pub newest_message_id: Option<i64>,
    /// The id a server restored from the copy gives the next message (see [`MESSAGE_ID_GAP`]).
    pub next_message_id: i64,
    pub schema_version: i64,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "backed up {} to {}",
            self.source.display(),
            self.path.display()
        )?;
        writeln!(
            f,
            "copied {} pages of {} bytes ({} bytes, {:.1} MiB) in {:.2} s; integrity_check ok \
             in {:.2} s; synced and in place after {:.2} s",
            self.pages,
            self.page_size,
            self.bytes,
            self.bytes as f64 / (1024.0 * 1024.0),
            self.copy_time.as_secs_f64(),
            self.check_time.as_secs_f64(),
            self.total_time.as_secs_f64(),
        )?;
        let newest = self
            .newest_message_id
            .map_or_else(|| "none".to_owned(), |id| id.to_string());
        write!(
            f,
            "the copy holds {} users and {} messages (newest message id {newest}), schema \
             version {}; restored, it numbers new messages from {}",
            self.users, self.messages, self.schema_version, self.next_message_id
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "the store is Redis (--redis-url / TETHER_REDIS_URL is set), not SQLite: `tether backup` \
         copies the embedded SQLite store only; back Redis up with Redis's own persistence \
         (an RDB snapshot or the AOF)"
    )]
    RedisStore,
    #[error(
        "no database at {}: is --data-dir (or TETHER_DATA_DIR) the server's data directory?",
        .0.display()
    )]
    NoDatabase(PathBuf),
    #[error("{} already exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error("{} is a directory; give the backup file's path", .0.display())]
    IsDirectory(PathBuf),
    #[error("{} is the live database (or its WAL); write the backup elsewhere", .0.display())]
    LiveDatabase(PathBuf),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}")]
    Sqlite {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{} is not a Tether database (no schema version); nothing was written", .0.display())]
    NotTether(PathBuf),
    #[error("the database stayed busy for {} s; nothing was written", BUSY_LIMIT.as_secs())]
    Busy,
    #[error("the copy failed its integrity check, nothing was written: {0}")]
    Corrupt(String),
}

/// How far past the copy's newest message id a server restored from it numbers new messages.
/// Ids the live server issued after the backup would otherwise be issued again for other
/// messages, and a tab that saw the first ones (its cursor past the copy's newest id) would
/// never ask for the new ones, or would take one for a message it already has. Skipping 2^32
/// ids keeps them apart unless that many messages were sent between backup and restore, and
/// leaves room for two million restores below 2^53 (what a JavaScript number holds exactly).
pub const MESSAGE_ID_GAP: i64 = 1 << 32;

/// How long a step may keep answering busy before the backup gives up.
const BUSY_LIMIT: Duration = Duration::from_secs(30);

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

fn sql(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Sqlite { context, source }
}

/// The temporary file and what SQLite may put beside it, removed unless the backup succeeded.
struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Partial {
    fn companions(&self) -> impl Iterator<Item = PathBuf> + '_ {
        ["", "-journal", "-wal", "-shm"].into_iter().map(|suffix| {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            PathBuf::from(name)
        })
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            for file in self.companions() {
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

/// Copies the SQLite store of `data_dir` to `args.path` (see the module documentation).
pub fn run(
    data_dir: &Path,
    redis_url: Option<&str>,
    args: &BackupArgs,
) -> Result<BackupReport, BackupError> {
    if redis_url.is_some() {
        return Err(BackupError::RedisStore);
    }
    let source = db_path(data_dir);
    if !source.is_file() {
        return Err(BackupError::NoDatabase(source));
    }
    let target = args.path.clone();
    let name = target
        .file_name()
        .ok_or_else(|| BackupError::IsDirectory(target.clone()))?
        .to_owned();
    if target.is_dir() {
        return Err(BackupError::IsDirectory(target));
    }
    if !args.force && target.symlink_metadata().is_ok() {
        return Err(BackupError::Exists(target));
    }
    let dir = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let live = source
        .canonicalize()
        .map_err(io(format!("cannot resolve {}", source.display())))?;
    let resolved = dir
        .canonicalize()
        .map_err(io(format!("cannot use directory {}", dir.display())))?
        .join(&name);
    let is_live = ["", "-wal", "-shm", "-journal"].iter().any(|suffix| {
        let mut file = live.clone().into_os_string();
        file.push(suffix);
        resolved == Path::new(&file)
    });
    if is_live {
        return Err(BackupError::LiveDatabase(target));
    }

    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(&name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let partial = Partial {
        path: dir.join(temp_name),
        kept: false,
    };
    // A new empty file (refusing one left by someone else) is an empty SQLite database.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial.path)
        .map_err(io(format!("cannot create {}", partial.path.display())))?;

    let started = Instant::now();
    let (pages, page_size) = copy(&source, &partial.path, args)?;
    let copy_time = started.elapsed();

    let checked = Instant::now();
    let contents = finish_and_check(&partial.path)?;
    let check_time = checked.elapsed();

    let file = std::fs::File::open(&partial.path)
        .map_err(io(format!("cannot reopen {}", partial.path.display())))?;
    file.sync_all()
        .map_err(io(format!("cannot sync {}", partial.path.display())))?;
    let bytes = file
        .metadata()
        .map_err(io(format!("cannot stat {}", partial.path.display())))?
        .len();
    drop(file);
    let mut partial = partial;
    place(&partial.path, &target, args.force)?;
    partial.kept = true;
    // The rename is durable once the directory is.
    #[cfg(unix)]
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("cannot sync directory {}", dir.display())))?;

    Ok(BackupReport {
        source,
        path: target,
        pages,
        page_size,
        bytes,
        copy_time,
        check_time,
        total_time: started.elapsed(),
        users: contents.users,
        messages: contents.messages,
        newest_message_id: contents.newest_message_id,
        next_message_id: contents.next_message_id,
        schema_version: contents.schema_version,
    })
}

/// Copies every page of `source`, as of one snapshot, into the empty database `temp`.
/// Returns the pages copied and the page size.
fn copy(source: &Path, temp: &Path, args: &BackupArgs) -> Result<(u64, u64), BackupError> {
    let shown = source.display();
    // Read-only: this process never writes the live database, and never creates one.
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(format!("cannot open {shown}")))?;
    src.busy_timeout(Duration::from_secs(5))
        .map_err(sql("cannot set a busy timeout"))?;
    // The snapshot: a read transaction begins at its first read and lasts until it ends, across
    // every step below (see the module documentation).
    src.execute_batch("BEGIN DEFERRED")
        .map_err(sql(format!("cannot read {shown}")))?;
    let schema_version: i64 = src
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql(format!("cannot read {shown}")))?;
    if schema_version < 1 {
        return Err(BackupError::NotTether(source.to_path_buf()));
    }
    let page_size: u64 = src
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(sql(format!("cannot read {shown}")))?;

    let mut dst = Connection::open(temp).map_err(sql(format!("cannot open {}", temp.display())))?;
    // The temporary file needs no journal or syncs of its own: it is checked, synced and
    // renamed only once whole, and removed otherwise.
    dst.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
        .map_err(sql(format!("cannot prepare {}", temp.display())))?;
    let pages = {
        let backup = Backup::new(&src, &mut dst).map_err(sql("cannot start the backup"))?;
        let pause = Duration::from_millis(args.step_pause_ms);
        let mut busy_since: Option<Instant> = None;
        loop {
            match backup
                .step(args.step_pages as std::os::raw::c_int)
                .map_err(sql("the copy failed"))?
            {
                StepResult::Done => break,
                StepResult::More => {
                    busy_since = None;
                    std::thread::sleep(pause);
                }
                // Busy or Locked (or anything newer: `StepResult` is non-exhaustive): no
                // progress, retried for a while.
                _ => {
                    let since = *busy_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > BUSY_LIMIT {
                        return Err(BackupError::Busy);
                    }
                    std::thread::sleep(pause.max(Duration::from_millis(10)));
                }
            }
        }
        backup.progress().pagecount.max(0) as u64
    };
    src.execute_batch("COMMIT")
        .map_err(sql(format!("cannot end the read of {shown}")))?;
    dst.close()
        .map_err(|(_, e)| sql(format!("cannot close {}", temp.display()))(e))?;
    Ok((pages, page_size))
}

struct Contents {
    users: u64,
    messages: u64,
    newest_message_id: Option<i64>,
    schema_version: i64,
    next_message_id: i64,
}

/// Makes the copy one self-contained file (a rollback journal instead of the source's WAL),
/// checks it, and says what it holds.
fn finish_and_check(temp: &Path) -> Result<Contents, BackupError> {
    let shown = temp.display();
    let conn = Connection::open_with_flags(
        temp,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(format!("cannot open {shown}")))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(sql(format!("cannot set the journal mode of {shown}")))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(BackupError::Corrupt(format!(
            "the copy stayed in journal mode {mode}"
        )));
    }
    conn.execute_batch(&format!(
        "INSERT INTO sqlite_sequence (name, seq)
             SELECT 'messages', coalesce((SELECT max(id) FROM messages), 0)
             WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'messages');
         UPDATE sqlite_sequence SET seq = seq + {MESSAGE_ID_GAP} WHERE name = 'messages';"
    ))
    .map_err(sql(format!("cannot set the next message id of {shown}")))?;
    // The check reads every page and index entry: through a memory map it is about twice as
    // fast as through read calls (measured on a 700 MB store).
    conn.execute_batch("PRAGMA mmap_size = 1073741824")
        .map_err(sql(format!("cannot map {shown}")))?;
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut check| {
            check
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(format!("cannot check {shown}")))?;
    if problems != ["ok"] {
        return Err(BackupError::Corrupt(problems.join("; ")));
    }
    let contents = conn
        .query_row(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM messages),
                    (SELECT max(id) FROM messages), (SELECT user_version FROM pragma_user_version),
                    (SELECT seq + 1 FROM sqlite_sequence WHERE name = 'messages')",
            [],
            |r| {
                Ok(Contents {
                    users: r.get::<_, i64>(0)?.max(0) as u64,
                    messages: r.get::<_, i64>(1)?.max(0) as u64,
                    newest_message_id: r.get(2)?,
                    schema_version: r.get(3)?,
                    next_message_id: r.get(4)?,
                })
            },
        )
        .map_err(sql(format!("cannot read {shown}")))?;
    conn.close()
        .map_err(|(_, e)| sql(format!("cannot close {shown}"))(e))?;
    Ok(contents)
}

/// Puts the finished copy at `target`: atomically replacing it with `force`, else only if no
/// file is there (a hard link cannot overwrite; where links are not supported, a last check
/// and a rename).
fn place(temp: &Path, target: &Path, force: bool) -> Result<(), BackupError> {
    let rename = || {
        std::fs::rename(temp, target).map_err(io(format!(
            "cannot move the backup into place at {}",
            target.display()
        )))
    };
    if force {
        return rename();
    }
    match std::fs::hard_link(temp, target) {
        Ok(()) => {
            let _ = std::fs::remove_file(temp);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(BackupError::Exists(target.to_path_buf()))
        }
        Err(_) if target.symlink_metadata().is_ok() => {
            Err(BackupError::Exists(target.to_path_buf()))
        }
        Err(_) => rename(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::config::{Command, Config};

    fn parsed(argv: &[&str]) -> (Config, Option<super::BackupArgs>) {
        let mut config = Config::parse_from(argv);
        let args = config.command.take().map(|Command::Backup(args)| args);
        (config, args)
    }

    #[test]
    fn the_store_flags_work_before_or_after_the_subcommand() {
        for argv in [
            [
                "tether",
                "--data-dir",
                "/d",
                "--redis-url",
                "redis://r/",
                "backup",
                "/b.db",
            ],
            [
                "tether",
                "backup",
                "/b.db",
                "--data-dir",
                "/d",
                "--redis-url",
                "redis://r/",
            ],
            [
                "tether",
                "backup",
                "--data-dir",
                "/d",
                "--redis-url",
                "redis://r/",
                "/b.db",
            ],
        ] {
            let (config, args) = parsed(&argv);
            let args = args.expect("the backup subcommand");
            assert_eq!(config.data_dir, std::path::Path::new("/d"), "{argv:?}");
            assert_eq!(config.redis_url.as_deref(), Some("redis://r/"), "{argv:?}");
            assert_eq!(args.path, std::path::Path::new("/b.db"));
            assert!(!args.force);
        }
    }

    #[test]
    fn without_a_subcommand_the_server_serves() {
        let (config, args) = parsed(&["tether", "--data-dir", "/d", "--listen", "127.0.0.1:0"]);
        assert!(args.is_none());
        assert_eq!(config.data_dir, std::path::Path::new("/d"));
        assert!(
            Config::try_parse_from(["tether", "backup"]).is_err(),
            "PATH is required"
        );
    }
}
