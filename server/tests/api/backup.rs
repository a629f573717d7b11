//! `tether backup PATH` against a running server: the copy, restored as the README says, holds
//! every message acknowledged before the backup began; and what it refuses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{ChildServer, TestClient};

/// Runs `tether backup` with these arguments, bounded in time.
async fn backup(args: &[&std::ffi::OsStr]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("backup")
        .args(args)
        // The test's own environment must not point the command elsewhere.
        .env_remove("TETHER_REDIS_URL")
        .env_remove("TETHER_DATA_DIR")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the backup ends in time")
        .expect("the backup command runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The files in `dir`, by name.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn integrity(db: &Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Every message the caller's `restore_state` pages give, id to content.
async fn restore_all(client: &TestClient) -> BTreeMap<i64, String> {
    let mut since = 0;
    let mut seen = BTreeMap::new();
    loop {
        let page = client
            .request("restore_state", json!({ "since": since }))
            .await;
        let page = page.get("ok").unwrap_or_else(|| panic!("refused: {page}"));
        for m in page["messages"].as_array().unwrap() {
            let id = m["id"].as_i64().unwrap();
            seen.insert(id, m["content"].as_str().unwrap().to_owned());
            since = id;
        }
        if page["hasMore"] != true {
            return seen;
        }
    }
}

/// One acknowledged message: who sent it, its id and content, and when its ack came.
#[derive(Clone)]
struct Acked {
    sender: usize,
    id: i64,
    content: String,
    latency: Duration,
    at: Instant,
}

fn quantile(mut samples: Vec<Duration>, q: f64) -> Duration {
    samples.sort_unstable();
    samples
        .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_every_message_acked_before_it_began() {
    const SENDERS: usize = 4;
    const BEFORE: usize = 1_500;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ChildServer::start(&data).await;

    let mut bob = TestClient::connect(&server.url(), json!({ "username": "bob" })).await;
    bob.expect_session().await;
    let (bob_id, bob_session) = (bob.user_id.clone(), bob.session_id.clone());
    bob.close().await;

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let mut client =
            TestClient::connect(&server.url(), json!({ "username": format!("s{sender}") })).await;
        client.expect_session().await;
        let (acked, stop, bob_id) = (acked.clone(), stop.clone(), bob_id.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                // Some bulk, so the database spans many pages and the copy many steps.
                let content = format!("s{sender} #{n} {}", "x".repeat(300));
                let sent = Instant::now();
                let ack = client.send(&bob_id, &content).await;
                let id = ack["ok"]["id"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("not acked: {ack}"));
                acked.lock().unwrap().push(Acked {
                    sender,
                    id,
                    content,
                    latency: sent.elapsed(),
                    at: Instant::now(),
                });
                n += 1;
            }
            client.close().await;
        }));
    }
    let acked_count = || acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_count() < BEFORE {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What was acknowledged before the backup process started: all of it must be in the copy.
    let before: Vec<Acked> = acked.lock().unwrap().clone();
    let began = Instant::now();
    let path = dir.path().join("backup.db");
    // Small steps with pauses: the copy spans many of the server's commits.
    let out = backup(&[
        "--data-dir".as_ref(),
        data.as_os_str(),
        path.as_os_str(),
        "--step-pages".as_ref(),
        "8".as_ref(),
        "--step-pause-ms".as_ref(),
        "10".as_ref(),
    ])
    .await;
    let took = began.elapsed();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("integrity_check ok"), "{stdout}");
    let during = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.at >= began)
        .count();
    // The load goes on for a while after the copy, then stops.
    let after = acked_count() + 200;
    while acked_count() < after {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.expect("a sender failed");
    }
    let all = acked.lock().unwrap().clone();
    let (in_backup, rest): (Vec<_>, Vec<_>) = all.iter().partition(|a| a.at < began);
    let in_backup_window: Vec<Duration> = all
        .iter()
        .filter(|a| a.at >= began && a.at < began + took)
        .map(|a| a.latency)
        .collect();
    println!(
        "backup under load: {}; {} acks before it, {during} during its {:.2} s ({:.0}/s); ack \
         latency p50/p99 before {:?}/{:?}, during {:?}/{:?}",
        stdout.lines().nth(1).unwrap_or_default(),
        in_backup.len(),
        took.as_secs_f64(),
        during as f64 / took.as_secs_f64(),
        quantile(in_backup.iter().map(|a| a.latency).collect(), 0.5),
        quantile(in_backup.iter().map(|a| a.latency).collect(), 0.99),
        quantile(in_backup_window.clone(), 0.5),
        quantile(in_backup_window, 0.99),
    );
    assert!(
        during >= 20,
        "the server must be committing while the copy is made (saw {during} acks during it)"
    );
    assert!(!rest.is_empty());
    server.kill_9().await;

    // The README's restore: the backup file as the data directory's tether.db, then start.
    assert_eq!(integrity(&path), "ok");
    let restored_dir = dir.path().join("restored");
    std::fs::create_dir(&restored_dir).unwrap();
    std::fs::copy(&path, restored_dir.join("tether.db")).unwrap();
    let server = ChildServer::start(&restored_dir).await;
    let mut bob = TestClient::connect(&server.url(), json!({ "sessionID": bob_session })).await;
    bob.expect_session().await;
    assert_eq!(bob.user_id, bob_id, "the session is in the backup");
    let restored = restore_all(&bob).await;

    let missing: Vec<i64> = before
        .iter()
        .filter(|a| restored.get(&a.id) != Some(&a.content))
        .map(|a| a.id)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of the {} messages acked before the backup began are not in it (first ids {:?})",
        missing.len(),
        before.len(),
        &missing[..missing.len().min(10)]
    );
    // One snapshot: each sender waits for an ack before sending again, so what the copy holds
    // of each sender is a prefix of what that sender had acked.
    for sender in 0..SENDERS {
        let sent: Vec<i64> = all
            .iter()
            .filter(|a| a.sender == sender)
            .map(|a| a.id)
            .collect();
        let kept: Vec<i64> = restored
            .iter()
            .filter(|(_, content)| content.starts_with(&format!("s{sender} #")))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(
            kept,
            sent[..kept.len()],
            "sender {sender}: the copy is not a prefix"
        );
    }
    // Ids issued after the backup are never issued again: a tab holding one as its cursor
    // still gets what is sent after the restore.
    let newest_acked = all.iter().map(|a| a.id).max().unwrap();
    let next = bob.send(&bob_id, "after the restore").await["ok"]["id"]
        .as_i64()
        .expect("acked");
    assert!(
        next > newest_acked,
        "{next} reuses an id (up to {newest_acked} were issued)"
    );
    println!(
        "restored {} messages: the {} acked before the backup began, and {} of the {} acked \
         during and after it",
        restored.len(),
        before.len(),
        restored.len() - before.len(),
        all.len() - before.len()
    );
    server.kill_9().await;
    assert_eq!(integrity(&restored_dir.join("tether.db")), "ok");
}

/// A data directory with a server's database in it (the server stopped).
async fn data_dir_with_a_database(root: &Path) -> PathBuf {
    let data = root.join("data");
    let server = ChildServer::start(&data).await;
    let mut ada = TestClient::connect(&server.url(), json!({ "username": "ada" })).await;
    ada.expect_session().await;
    let ack = ada.send(&ada.user_id, "note to self").await;
    assert!(ack.get("ok").is_some(), "{ack}");
    ada.close().await;
    server.kill_9().await;
    data
}

#[tokio::test]
async fn a_backup_never_replaces_an_existing_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir_with_a_database(dir.path()).await;
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let path = out_dir.join("backup.db");
    std::fs::write(&path, "yesterday's backup").unwrap();

    let out = backup(&["--data-dir".as_ref(), data.as_os_str(), path.as_os_str()]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "yesterday's backup"
    );
    assert_eq!(files_in(&out_dir), ["backup.db"], "nothing left beside it");

    // `--data-dir` after the path works as well as before the subcommand.
    let out = backup(&[
        path.as_os_str(),
        "--force".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(integrity(&path), "ok");
    assert_eq!(files_in(&out_dir), ["backup.db"]);

    // Nor the live database, even with --force.
    let live = data.join("tether.db");
    let out = backup(&[
        "--data-dir".as_ref(),
        data.as_os_str(),
        live.as_os_str(),
        "--force".as_ref(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("live database"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(integrity(&live), "ok");
}

#[tokio::test]
async fn a_backup_of_a_redis_store_is_refused_as_not_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir_with_a_database(dir.path()).await;
    let path = dir.path().join("backup.db");
    let out = backup(&[
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--redis-url".as_ref(),
        "redis://:secret@127.0.0.1:6379/".as_ref(),
        path.as_os_str(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Redis") && stderr.contains("not SQLite"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
    assert!(!path.exists());

    // The environment's Redis URL counts as well.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("backup")
        .arg(&path)
        .env("TETHER_DATA_DIR", &data)
        .env("TETHER_REDIS_URL", "redis://127.0.0.1:6379/")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not SQLite"));
    assert!(!path.exists());
}

#[tokio::test]
async fn a_backup_of_a_data_dir_without_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let path = dir.path().join("backup.db");
    for data in [empty.clone(), dir.path().join("absent")] {
        let out = backup(&["--data-dir".as_ref(), data.as_os_str(), path.as_os_str()]).await;
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("no database at"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!path.exists());
    }
    assert!(files_in(&empty).is_empty(), "no database was created");
    assert!(!dir.path().join("absent").exists());
}
