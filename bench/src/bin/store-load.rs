//! The embedded store alone under `tether-load`'s message pattern, without sockets: half the
//! users each send to one partner, one message in flight each, for a few seconds. Prints the
//! messages committed per second and the store writer thread's CPU per message, the figure the
//! socket benchmark cannot separate from the network's noise.
//!
//!   cargo run --release -p tether-bench --bin store-load -- [users] [seconds]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use server::domain::{ClientMsgId, MessageContent, Username};
use server::process::Process;
use server::store::sqlite::{SessionPolicy, SqliteStore};
use server::store::{NewMessage, Store};

/// The embedded store's writer thread (its name in the server).
const WRITER_THREAD: &str = "sqlite-writer";

/// A time-ordered (v7-shaped) client id, as Tether's clients send.
fn client_id(seq: u64) -> ClientMsgId {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let raw = format!(
        "{:08x}-{:04x}-7{:03x}-8{:03x}-{:012x}",
        ms >> 16,
        ms & 0xffff,
        (seq >> 48) & 0xfff,
        (seq >> 36) & 0xfff,
        seq & 0xffff_ffff_ffff
    );
    ClientMsgId::parse(&raw).expect("a UUID")
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let users: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000)
        .max(2);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let policy = SessionPolicy {
        idle: Duration::from_secs(3600),
        max_age: Duration::from_secs(3600),
    };
    let store = Arc::new(SqliteStore::open(dir.path(), policy).expect("the store opens"));
    let mut ids = Vec::with_capacity(users);
    for i in 0..users {
        let name = Username::parse(&format!("user{i}")).expect("a username");
        let (_, session) = store
            .create_session(&name, "", None)
            .await
            .expect("a session")
            .into_session()
            .expect("no name is protected");
        ids.push(session.user_id);
    }
    let half = users / 2;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let own = Process::current();
    let (writer_before, started) = (own.thread_cpu(WRITER_THREAD), Instant::now());
    let tasks: Vec<_> = (0..half)
        .map(|i| {
            let (store, stop, sent, seq) = (store.clone(), stop.clone(), sent.clone(), seq.clone());
            let (from, to) = (ids[i].clone(), ids[half + i].clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let message = NewMessage {
                        from: from.clone(),
                        to: to.clone(),
                        content: MessageContent::parse(&n.to_string(), 4000).expect("content"),
                        client_id: Some(client_id(n)),
                    };
                    store.insert_message(message).await.expect("stored");
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let writer = own.thread_cpu(WRITER_THREAD).saturating_sub(writer_before);
    let n = sent.load(Ordering::Relaxed);
    println!(
        "{users} users, {n} messages in {elapsed:.1} s: {:.0} committed/s, writer CPU {:.1} µs per message",
        n as f64 / elapsed,
        writer.as_micros() as f64 / n.max(1) as f64
    );
}
