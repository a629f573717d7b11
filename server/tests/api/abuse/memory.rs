//! Sockets that never read (issue 21, item 1). A hostile websocket that answers pings but
//! reads nothing else asked for its whole history 150 times: the answers piled up for it (and
//! were held again for 30 s each by retry tasks) and server RSS went from 43 MB to 357 MB.
//! Now what waits to be sent to a socket is bounded in bytes (`--socket-buffer-bytes`), past
//! it the socket is closed, and so is one whose connection takes nothing for a heartbeat,
//! pongs or not.
//!
//! Each test runs the real binary and reads its memory from /proc: the growth of its peak
//! resident size (VmHWM, reset with `clear_refs` before the attack) over its resident size
//! before it. The hostile client's socket has a tiny receive buffer and is never read after
//! the handshake, so the server's writes really back up once the kernel's buffers are full.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::helpers::{ChildServer, TestClient, WAIT};

const MIB: u64 = 1024 * 1024;

/// Other guards (per-socket and per-user read budgets) would stop this flood early; they are
/// opened wide here, so that the send budget alone is what holds. Environment variables,
/// which a server without those flags ignores.
const READS_WIDE_OPEN: [(&str, &str); 5] = [
    ("TETHER_READ_BYTES_PER_SEC", "1000000000000"),
    ("TETHER_READ_BURST_BYTES", "1000000000000"),
    ("TETHER_SOCKET_READ_BYTES_PER_SEC", "1000000000000"),
    ("TETHER_SOCKET_READ_BURST_BYTES", "1000000000000"),
    ("TETHER_MAX_ANSWER_BYTES", "1000000000"),
];

/// The binary with this send budget and heartbeat (a connection that takes nothing is closed
/// after `ping_ms` plus `timeout_ms`), and the read guards wide open.
async fn start(dir: &Path, budget: u64, ping_ms: u64, timeout_ms: u64) -> ChildServer {
    start_with_reads(dir, budget, ping_ms, timeout_ms, &READS_WIDE_OPEN).await
}

/// As [`start`], with these environment settings for the read guards (none: the defaults).
async fn start_with_reads(
    dir: &Path,
    budget: u64,
    ping_ms: u64,
    timeout_ms: u64,
    reads: &[(&str, &str)],
) -> ChildServer {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["--listen", "127.0.0.1:0", "--log", "warn"])
        .args(["--messages-per-sec", "10000", "--message-burst", "10000"])
        .arg("--socket-buffer-bytes")
        .arg(budget.to_string())
        .arg("--ping-interval-ms")
        .arg(ping_ms.to_string())
        .arg("--ping-timeout-ms")
        .arg(timeout_ms.to_string())
        .arg("--data-dir")
        .arg(dir)
        .envs(reads.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("server binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(rest) = line.strip_prefix("listening on http://") {
                return rest.parse().expect("address");
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server starts listening in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    ChildServer { child, addr }
}

fn pid(server: &ChildServer) -> u32 {
    server.child.id().expect("running")
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Starts measuring the peak resident size from now; returns the resident size now (bytes).
fn measure_from_here(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak");
    status_kib(pid, "VmRSS") * 1024
}

/// How far the peak resident size went above `before` (bytes).
fn peak_growth(pid: u32, before: u64) -> u64 {
    (status_kib(pid, "VmHWM") * 1024).saturating_sub(before)
}

/// The server's open sockets (its listener, its connections, and a few of the runtime's).
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

async fn until(what: &str, within: Duration, done: impl Fn() -> bool) {
    tokio::time::timeout(within, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

/// A user whose account holds `count` messages of `chars` characters, sent by another user.
/// Both stay connected, so that the server's sockets change only with the attack's.
async fn account_with_history(
    server: &ChildServer,
    count: usize,
    chars: usize,
) -> (TestClient, TestClient) {
    let mut owner = TestClient::connect(&server.url(), json!({ "username": "hoarder" })).await;
    owner.expect_session().await;
    let mut sender = TestClient::connect(&server.url(), json!({ "username": "sender" })).await;
    sender.expect_session().await;
    let body = "x".repeat(chars);
    for i in 0..count {
        let ack = sender.send(&owner.user_id, &format!("{i:04}{body}")).await;
        assert!(ack["ok"].is_object(), "stored: {ack}");
    }
    (owner, sender)
}

/// A websocket that joins as `session_id` and then reads nothing: its receive buffer is a
/// few KiB, so the server's writes back up once its own send buffer is full.
async fn not_reading(server: &ChildServer, session_id: &str) -> WebSocketStream<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.expect("connect");
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket handshake");
    tokio::time::timeout(WAIT, async {
        loop {
            let Some(Ok(Message::Text(text))) = ws.next().await else {
                panic!("the server closed before the session");
            };
            if text.starts_with('0') {
                let auth = json!({ "sessionID": session_id });
                ws.send(Message::text(format!("40{auth}"))).await.unwrap();
            } else if text == "2" {
                ws.send(Message::text("3")).await.unwrap();
            } else if text.starts_with(r#"42["session""#) {
                return;
            }
        }
    })
    .await
    .expect("the session comes");
    ws
}

/// Asks for the whole history `times` times, one request every `pace`, with a pong (never
/// reading the pings) every fifth request, then goes on ponging until the server drops the
/// connection. Returns how long that took from the first request.
///
/// Paced, so that what is measured is what waits to be sent, not how many answers the server
/// builds at once for a burst of requests (bounded by the read budgets, opened wide here).
async fn flood_and_pong(
    mut ws: WebSocketStream<TcpStream>,
    times: usize,
    pace: Duration,
) -> Duration {
    let start = Instant::now();
    for i in 0..times {
        let request = format!(r#"42{i}["restore_state",{{"since":0}}]"#);
        if ws.send(Message::text(request)).await.is_err() {
            break;
        }
        if i % 5 == 0 && ws.send(Message::text("3")).await.is_err() {
            break;
        }
        tokio::time::sleep(pace).await;
    }
    // Answers the pings it never reads, blindly: a pong every 100 ms keeps a heartbeat happy.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while ws.send(Message::text("3")).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    start.elapsed()
}

#[tokio::test]
async fn a_socket_that_asks_for_everything_and_reads_nothing_is_closed_within_a_few_mib() {
    let dir = tempfile::tempdir().unwrap();
    // Answers of ~330 KiB, more than the budget: the second one queued closes the socket.
    let server = start(dir.path(), 256 * 1024, 300, 200).await;
    let pid = pid(&server);
    let (owner, _sender) = account_with_history(&server, 300, 1000).await;

    let sockets_before = sockets(pid);
    let before = measure_from_here(pid);
    let ws = not_reading(&server, &owner.session_id).await;
    let start = Instant::now();
    let flood = tokio::spawn(flood_and_pong(ws, 150, Duration::from_millis(10)));
    until(
        "the server drops the connection",
        Duration::from_secs(10),
        || sockets(pid) <= sockets_before,
    )
    .await;
    let closed_after = start.elapsed();
    let growth = peak_growth(pid, before);
    let refused_after = flood.await.unwrap();
    eprintln!(
        "one socket: peak RSS growth {:.1} MiB, connection dropped after {closed_after:?} \
         (its sends failed after {refused_after:?})",
        growth as f64 / MIB as f64
    );
    assert!(
        growth < 8 * MIB,
        "peak RSS grew {:.1} MiB",
        growth as f64 / MIB as f64
    );
    assert!(
        closed_after < Duration::from_secs(5),
        "dropped after {closed_after:?}"
    );
}

#[tokio::test]
async fn twenty_sockets_that_read_nothing_are_bounded_by_their_budgets() {
    const SOCKETS: usize = 20;
    const BUDGET: u64 = 512 * 1024;
    let dir = tempfile::tempdir().unwrap();
    // Answers of ~160 KiB (40 long messages). The heartbeat is long enough for each socket's
    // kernel buffers (up to 4 MiB on loopback, not in the server's RSS) and then its queue to
    // fill at one request every 100 ms; then its stalled write closes it, or its budget.
    // Every guard as deployed (the read budgets too, at their defaults): what a crowd of
    // hostile sockets can make the server hold is what their send budgets allow.
    let server = start_with_reads(dir.path(), BUDGET, 2000, 1000, &[]).await;
    let pid = pid(&server);
    let (owner, _sender) = account_with_history(&server, 40, 3990).await;
    let answer = owner
        .request("restore_state", json!({ "since": 0 }))
        .await
        .to_string()
        .len() as u64;

    let sockets_before = sockets(pid);
    let idle = measure_from_here(pid);
    let mut hostile = Vec::new();
    for _ in 0..SOCKETS {
        hostile.push(not_reading(&server, &owner.session_id).await);
    }
    // What a connection costs while idle is not what the budget bounds.
    let before = measure_from_here(pid);
    eprintln!(
        "{SOCKETS} idle sockets: {:.1} MiB",
        before.saturating_sub(idle) as f64 / MIB as f64
    );
    let floods: Vec<_> = hostile
        .into_iter()
        .map(|ws| tokio::spawn(flood_and_pong(ws, 150, Duration::from_millis(100))))
        .collect();
    until(
        "the server drops every connection",
        Duration::from_secs(15),
        || sockets(pid) <= sockets_before,
    )
    .await;
    let growth = peak_growth(pid, before);
    let mut lasted = Vec::new();
    for flood in floods {
        lasted.push(flood.await.unwrap().as_millis());
    }
    lasted.sort();
    eprintln!("the hostile sockets' sends failed after {lasted:?} ms");
    // The issue's bound: together, not more than their budgets.
    let bound = SOCKETS as u64 * BUDGET;
    eprintln!(
        "{SOCKETS} sockets: peak RSS growth {:.1} MiB (bound {:.1} MiB: {SOCKETS} budgets of {} \
         KiB; answers of {} KiB)",
        growth as f64 / MIB as f64,
        bound as f64 / MIB as f64,
        BUDGET / 1024,
        answer / 1024
    );
    assert!(
        growth < bound,
        "peak RSS grew {:.1} MiB",
        growth as f64 / MIB as f64
    );
}

/// What an honest client asks for after such a close: everything is still there.
#[tokio::test]
async fn the_client_of_a_closed_socket_restores_everything_on_return() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 256 * 1024, 300, 200).await;
    let (owner, _sender) = account_with_history(&server, 100, 1000).await;
    let ws = not_reading(&server, &owner.session_id).await;
    flood_and_pong(ws, 20, Duration::from_millis(10)).await;

    let auth = json!({ "sessionID": owner.session_id });
    let mut back = TestClient::connect(&server.url(), auth).await;
    back.expect_session().await;
    let page = back.request("restore_state", json!({ "since": 0 })).await;
    let messages: Vec<Value> = page["ok"]["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 100, "{page}");
}
