//! Reads priced by what they return, answers bounded in bytes, sockets per user under
//! concurrent handshakes, and every documented error code as the server answers it.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::{spawn_app_with, ChildServer, RedisServer, TestApp, TestClient};

/// A message body of `n` characters that JSON does not escape.
fn body(n: usize) -> String {
    "x".repeat(n)
}

/// Sends `count` messages of `chars` characters from `from` to `to`.
async fn fill(from: &TestClient, to: &str, count: usize, chars: usize) {
    for i in 0..count {
        let ack = from.send(to, &format!("{i:03} {}", body(chars - 4))).await;
        assert!(ack.get("ok").is_some(), "{ack}");
    }
}

/// Restores from 0, a page at a time from the last id received, as clients do; how many
/// messages came. Any refused page fails the test.
async fn restore_all(client: &TestClient) -> usize {
    let (mut since, mut seen) = (0, 0);
    loop {
        let page = client
            .request("restore_state", json!({ "since": since }))
            .await;
        let page = page.get("ok").unwrap_or_else(|| panic!("refused: {page}"));
        let messages = page["messages"].as_array().unwrap();
        seen += messages.len();
        since = messages.last().map_or(since, |m| m["id"].as_i64().unwrap());
        if page["hasMore"] != true {
            return seen;
        }
    }
}

fn answer_bytes(answer: &Value) -> usize {
    answer.to_string().len()
}

/// The `q` quantile (0..=1) of `samples`.
fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Round trips of one message between two honest users: ack to sender and delivery to peer.
async fn round_trips(a: &mut TestClient, b: &mut TestClient, n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let ack = a.send(&b.user_id, &format!("ping {i}")).await;
        assert!(ack.get("ok").is_some(), "{ack}");
        b.next("private message").await;
        samples.push(start.elapsed());
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_flood_is_priced_by_bytes_and_refused_past_its_budget() {
    const BURST: u64 = 512 * 1024;
    const RATE: u64 = 128 * 1024;
    let app = spawn_app_with(|c| {
        c.read_burst_bytes = BURST;
        c.read_bytes_per_sec = RATE;
        c.max_answer_bytes = 128 * 1024;
    })
    .await;
    let mut hoarder = app.connect_as("hoarder").await;
    let peer = app.connect_as("peer").await;
    // ~400 KB of history: one restore from 0 is three full pages.
    fill(&peer, &hoarder.user_id, 100, 4000).await;
    hoarder.drain("private message");
    let mut a = app.connect_as("alice").await;
    let mut b = app.connect_as("bob").await;
    let quiet = round_trips(&mut a, &mut b, 200).await;

    // 150 restores in flight at once from one socket, as the attacker did, for as long as the
    // honest pair talks.
    let started = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (flooding, started_flooding) = tokio::sync::oneshot::channel();
    let flood = flood_restores(app.addr, &hoarder.session_id, 150, stopped, flooding);
    let honest = async {
        // From the first flood of requests on (the attacker's connect is an ordinary one).
        let _ = started_flooding.await;
        let samples = round_trips(&mut a, &mut b, 200).await;
        let _ = stop.send(true);
        samples
    };
    let (flood, during) = tokio::join!(flood, honest);
    let elapsed = started.elapsed();
    let answers = flood.answers;

    let (ok, limited): (Vec<&Value>, Vec<&Value>) =
        answers.iter().partition(|a| a.get("ok").is_some());
    for refused in &limited {
        assert_eq!(refused["error"]["code"], "rate_limited", "{refused}");
    }
    let served: usize = ok.iter().map(|a| answer_bytes(a)).sum();
    let allowed = BURST as f64 + RATE as f64 * elapsed.as_secs_f64();
    assert!(
        (served as f64) <= allowed,
        "served {served} bytes in {elapsed:?}, the budget allows {allowed:.0}"
    );
    let (quiet50, quiet99) = (quantile(&quiet, 0.5), quantile(&quiet, 0.99));
    let (during50, during99) = (quantile(&during, 0.5), quantile(&during, 0.99));
    eprintln!(
        "read flood: {} restores in {elapsed:?}, {} served ({served} bytes), disconnected {} times, \
         {} handshakes refused; honest round trip p50/p99 {quiet50:?}/{quiet99:?} quiet, \
         {during50:?}/{during99:?} during",
        answers.len(),
        ok.len(),
        flood.disconnected,
        flood.refusals.len()
    );
    // The flooding socket was let go, and its session waited out its cooldown.
    assert!(
        flood.disconnected >= 1,
        "the flooding socket was never disconnected"
    );
    assert!(
        flood.refusals.iter().all(|r| r == "too many requests"),
        "{:?}",
        flood.refusals
    );
    // Honest latency within 2x of the quiet figure. The median, not the p99: this runs beside
    // the rest of the suite on two cores, where one scheduling hiccup is a p99 of its own
    // (the p99 is printed above; BENCHMARKS.md has it from a pinned run). Before reads were
    // priced, the median went from ~3 ms to over 60 ms.
    let bound = (quiet50 * 2).max(Duration::from_millis(5));
    assert!(
        during50 <= bound,
        "honest median round trip went from {quiet50:?} to {during50:?} during the flood"
    );
}

/// What a restore flood came to.
struct Flood {
    /// Every answer's first argument.
    answers: Vec<Value>,
    /// Times the server disconnected the flooding socket.
    disconnected: usize,
    /// Handshake refusals met while trying to come back, by message.
    refusals: Vec<String>,
}

/// Floods as an attacker would: a raw WebSocket on `session_id` keeps `window`
/// `restore_state {since: 0}` in flight (a new one for each answer), and when the server
/// disconnects it, it connects again at once, until `stop`.
async fn flood_restores(
    addr: std::net::SocketAddr,
    session_id: &str,
    window: usize,
    stop: tokio::sync::watch::Receiver<bool>,
    started: tokio::sync::oneshot::Sender<()>,
) -> Flood {
    let mut started = Some(started);
    let mut flood = Flood {
        answers: Vec::new(),
        disconnected: 0,
        refusals: Vec::new(),
    };
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !*stop.borrow() {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("websocket opens");
        let mut sent = 0usize;
        let mut admitted = false;
        loop {
            let frame = tokio::time::timeout_at(deadline, ws.next())
                .await
                .expect("the server answers in time");
            let text = match frame {
                Some(Ok(WsMessage::Text(text))) => text.to_string(),
                Some(Ok(_)) => continue,
                _ => break,
            };
            if text.starts_with('0') {
                let auth = json!({ "sessionID": session_id });
                ws.send(WsMessage::text(format!("40{auth}"))).await.unwrap();
            } else if text == "2" {
                let _ = ws.send(WsMessage::text("3")).await;
            } else if let Some(error) = text.strip_prefix("44") {
                let error: Value = serde_json::from_str(error).unwrap();
                flood
                    .refusals
                    .push(error["message"].as_str().unwrap_or("").to_owned());
                // Refused: wait a little, as a client backing off would, and try again.
                tokio::time::sleep(Duration::from_millis(20)).await;
                break;
            } else if text.starts_with("41") {
                break;
            } else if text.starts_with("42[\"session\"") {
                for _ in 0..window {
                    let request = format!(r#"42{sent}["restore_state",{{"since":0}}]"#);
                    ws.feed(WsMessage::text(request)).await.unwrap();
                    sent += 1;
                }
                ws.flush().await.unwrap();
                admitted = true;
                if let Some(started) = started.take() {
                    let _ = started.send(());
                }
            } else if let Some(ack) = text.strip_prefix("43") {
                let args = &ack[ack.find('[').expect("an ack's arguments")..];
                let mut args: Vec<Value> = serde_json::from_str(args).unwrap();
                flood.answers.push(args.swap_remove(0));
                if *stop.borrow() {
                    return flood;
                }
                let request = format!(r#"42{sent}["restore_state",{{"since":0}}]"#);
                if ws.send(WsMessage::text(request)).await.is_err() {
                    break;
                }
                sent += 1;
            }
        }
        // Connected, then the server let go of this socket (its stop was not asked for).
        if admitted {
            flood.disconnected += 1;
        }
    }
    flood
}

#[tokio::test]
async fn restore_and_history_answers_are_cut_to_the_byte_bound() {
    const MAX: usize = 64 * 1024;
    let app = spawn_app_with(|c| c.max_answer_bytes = MAX).await;
    let reader = app.connect_as("reader").await;
    let writer = app.connect_as("writer").await;
    fill(&writer, &reader.user_id, 40, 4000).await;

    let restored = reader.request("restore_state", json!({ "since": 0 })).await;
    let page = &restored["ok"];
    assert_eq!(page["hasMore"], true, "40 x 4 KB is more than 64 KiB");
    let messages = page["messages"].as_array().unwrap();
    assert!(!messages.is_empty());
    assert!(
        answer_bytes(&page["messages"]) <= MAX,
        "restore page too large"
    );

    let history = reader
        .request("history", json!({ "with": writer.user_id, "limit": 200 }))
        .await;
    let page = &history["ok"];
    assert_eq!(page["hasMore"], true);
    assert!(
        answer_bytes(&page["messages"]) <= MAX,
        "history page too large"
    );
    // History keeps the newest of the page: the last message sent is in it.
    let last = page["messages"].as_array().unwrap().last().unwrap();
    assert!(last["content"].as_str().unwrap().starts_with("039 "));

    // Paging on from the last id gets the rest, nothing twice.
    assert_eq!(restore_all(&reader).await, 40);
}

#[tokio::test]
async fn a_connects_users_is_bounded_in_bytes_whatever_others_send() {
    const MAX: usize = 64 * 1024;
    let app = spawn_app_with(|c| c.roster_max_bytes = MAX).await;
    let victim = app.connect_as("victim").await;
    // 40 throwaway accounts, 30 long messages each: 4.8 MB of conversation.
    for i in 0..40 {
        let sender = app.connect_as(&format!("spam{i}")).await;
        fill(&sender, &victim.user_id, 30, 4000).await;
        sender.close().await;
    }
    let again = app.resume(&victim.session_id).await;
    let users = Value::Array(again.users.clone());
    let messages: usize = again
        .users
        .iter()
        .map(|u| answer_bytes(&u["messages"]))
        .sum();
    assert!(
        messages <= MAX,
        "users carried {messages} bytes of messages (bound {MAX})"
    );
    assert!(answer_bytes(&users) <= MAX + 42 * 300, "users too large");
    // Every sender is still listed; older messages come from `history`.
    assert_eq!(again.users.len(), 41);
    let spam0 = again
        .users
        .iter()
        .find(|u| u["username"] == "spam0")
        .unwrap();
    let older = again
        .request("history", json!({ "with": spam0["userID"], "limit": 10 }))
        .await;
    assert_eq!(older["ok"]["messages"].as_array().unwrap().len(), 10);
}

/// What one raw handshake came to.
#[derive(Debug, PartialEq)]
enum Handshake {
    /// Connected, got its `session` and stayed.
    Connected,
    /// CONNECT_ERROR with this message.
    Refused(String),
    /// Connected, then closed by the server before `session`.
    Closed,
}

/// `count` handshakes at once with one session, spread over `addrs`; what each came to. The
/// connected ones stay open until the returned sender is dropped.
async fn storm(
    addrs: &[std::net::SocketAddr],
    session_id: &str,
    count: usize,
) -> (Vec<Handshake>, tokio::sync::watch::Sender<bool>) {
    let (release, hold) = tokio::sync::watch::channel(false);
    let waits = (0..count).map(|i| {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let auth = json!({ "sessionID": session_id });
        tokio::spawn(raw_handshake(
            addrs[i % addrs.len()],
            auth,
            hold.clone(),
            done,
        ));
        outcome
    });
    let outcomes = futures_util::future::join_all(waits)
        .await
        .into_iter()
        .map(|o| o.unwrap_or(Handshake::Closed))
        .collect();
    (outcomes, release)
}

/// One Socket.IO handshake over a raw WebSocket (`40{auth}`), answering pings. Says what it
/// came to once that is settled: connected means it got `session` and was still open two
/// seconds later; a connected socket then stays open until `hold` is released.
async fn raw_handshake(
    addr: std::net::SocketAddr,
    auth: Value,
    hold: tokio::sync::watch::Receiver<bool>,
    done: tokio::sync::oneshot::Sender<Handshake>,
) {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket opens");
    let mut done = Some(done);
    let mut hold = hold;
    // Settled: connected for this long with nothing but pings and presence afterwards.
    let settle = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(settle);
    let mut connected = false;
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            _ = &mut settle, if connected && done.is_some() => {
                let _ = done.take().unwrap().send(Handshake::Connected);
                continue;
            }
            _ = hold.wait_for(|released| *released), if done.is_none() => break,
        };
        let text = match frame {
            Some(Ok(WsMessage::Text(text))) => text.to_string(),
            Some(Ok(_)) => continue,
            _ => break,
        };
        if text.starts_with('0') {
            ws.send(WsMessage::text(format!("40{auth}"))).await.unwrap();
        } else if text == "2" {
            let _ = ws.send(WsMessage::text("3")).await;
        } else if let Some(error) = text.strip_prefix("44") {
            let error: Value = serde_json::from_str(error).unwrap();
            if let Some(done) = done.take() {
                let message = error["message"].as_str().unwrap_or("").to_owned();
                let _ = done.send(Handshake::Refused(message));
            }
            return;
        } else if text.starts_with("42[\"session\"") {
            connected = true;
        } else if text.starts_with("41") {
            break;
        }
    }
    if let Some(done) = done.take() {
        let _ = done.send(Handshake::Closed);
    }
}

fn connected(outcomes: &[Handshake]) -> usize {
    outcomes
        .iter()
        .filter(|o| **o == Handshake::Connected)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sockets_per_user_limit_holds_under_concurrent_handshakes() {
    const MAX: u32 = 8;
    let app: TestApp = spawn_app_with(|c| c.max_sockets_per_user = MAX).await;
    let first = app.connect_as("many").await;
    let (outcomes, release) = storm(&[app.addr], &first.session_id, 120).await;
    let live = app.io.sockets().len();
    drop(release);
    assert!(
        connected(&outcomes) < MAX as usize,
        "{} of 120 concurrent handshakes stayed connected beside the first (limit {MAX})",
        connected(&outcomes)
    );
    assert!(live <= MAX as usize, "{live} sockets live (limit {MAX})");
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Handshake::Connected | Handshake::Closed)
                || *outcome == Handshake::Refused("too many connections".into()),
            "{outcome:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sockets_per_user_limit_holds_across_nodes() {
    const MAX: u32 = 6;
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = redis.node_args();
    args.extend(["--max-sockets-per-user".into(), MAX.to_string()]);
    let a = ChildServer::start_with(dir.path(), &args).await;
    let b = ChildServer::start_with(dir.path(), &args).await;
    let mut first = TestClient::connect(&a.url(), json!({ "username": "spread" })).await;
    first.expect_session().await;
    let (outcomes, release) = storm(&[a.addr, b.addr], &first.session_id, 60).await;
    drop(release);
    assert!(
        connected(&outcomes) < MAX as usize,
        "{} of 60 handshakes over two nodes stayed connected beside the first (limit {MAX})",
        connected(&outcomes)
    );
}

#[tokio::test]
async fn reconnecting_in_a_loop_pays_for_each_roster_and_is_then_refused() {
    let app = spawn_app_with(|c| {
        c.read_burst_bytes = 400 * 1024;
        c.read_bytes_per_sec = 1;
        c.max_answer_bytes = 64 * 1024;
        c.roster_max_bytes = 128 * 1024;
        c.roster_full_max = 10;
    })
    .await;
    let owner = app.connect_as("owner").await;
    let writer = app.connect_as("writer").await;
    // A roster of ~128 KiB on every connect.
    fill(&writer, &owner.user_id, 40, 4000).await;
    let mut refused_after = None;
    for attempt in 1..=10 {
        let mut again = app.connect(json!({ "sessionID": owner.session_id })).await;
        let first = tokio::time::timeout(crate::helpers::WAIT, async {
            loop {
                let event = again.next_any().await;
                if event.0 == "session" || event.0 == "error" {
                    return event;
                }
            }
        })
        .await
        .expect("an answer to the handshake");
        if first.0 == "error" {
            let refusal = first.1.as_str().unwrap_or_default().to_owned();
            assert!(refusal.contains("too many requests"), "{refusal}");
            refused_after = Some(attempt);
            break;
        }
        again.next("users").await;
        again.close().await;
    }
    let refused_after = refused_after.expect("ten connects of 128 KiB each on a 400 KiB budget");
    assert!(
        refused_after <= 5,
        "refused only at connect {refused_after}"
    );
    // Someone else connects as ever.
    app.connect_as("other").await;
}

#[tokio::test]
async fn an_honest_catch_up_larger_than_the_burst_is_slowed_not_refused() {
    let app = spawn_app_with(|c| {
        c.max_answer_bytes = 64 * 1024;
        c.roster_full_max = 10;
        c.socket_read_burst_bytes = 400 * 1024;
        c.socket_read_bytes_per_sec = 1024 * 1024;
    })
    .await;
    let reader = app.connect_as("reader").await;
    let writer = app.connect_as("writer").await;
    // ~800 KB to catch up on, twice the socket's burst, one page at a time as clients do.
    fill(&writer, &reader.user_id, 200, 4000).await;
    assert_eq!(restore_all(&reader).await, 200);
}
