//! The messenger's events under attack: `typing` floods (to one user and to many, and
//! malformed), `typing` to a recipient that reads nothing, searches with huge and odd queries
//! and in floods, `read`s with absurd cursors and in floods, `conversations` and `settings`
//! floods. Each on loopback, bounded in count and time, with the bound it must hold asserted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{tight_reads, tight_reads_allow, tight_reads_args};
use crate::helpers::{spawn_app, spawn_app_with, ChildServer, RedisServer, TestApp, TestClient};

/// A Socket.IO connection spoken by hand, so a test can put thousands of packets on the wire
/// without waiting for anything.
pub(super) struct Raw {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a raw connection received.
#[derive(Debug, Default)]
pub(super) struct Received {
    pub(super) acks: Vec<Value>,
    pub(super) events: Vec<(String, Value)>,
    /// The server disconnected the socket (or closed the connection).
    pub(super) closed: bool,
}

impl Raw {
    /// Connects with this session and waits for `session`.
    pub(super) async fn connect(addr: SocketAddr, session_id: &str) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Raw::over(stream, addr, session_id).await
    }

    /// As [`Raw::connect`], with a receive buffer of a few KiB: while the test reads nothing
    /// from it, the server's writes back up as soon as its own send buffer is full.
    async fn small_window(addr: SocketAddr, session_id: &str) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.expect("connect");
        Raw::over(stream, addr, session_id).await
    }

    async fn over(stream: TcpStream, addr: SocketAddr, session_id: &str) -> Raw {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket opens");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let frame = tokio::time::timeout_at(deadline, ws.next())
                .await
                .expect("the handshake in time")
                .expect("open")
                .expect("a frame");
            let WsMessage::Text(text) = frame else {
                continue;
            };
            if text.starts_with('0') {
                let auth = json!({ "sessionID": session_id });
                ws.send(WsMessage::text(format!("40{auth}"))).await.unwrap();
            } else if text.starts_with("42[\"session\"") {
                return Raw { ws };
            } else if text.starts_with("44") {
                panic!("refused: {text}");
            }
        }
    }

    /// Puts every packet on the wire, then flushes once.
    pub(super) async fn flood(&mut self, packets: impl IntoIterator<Item = String>) {
        for packet in packets {
            if self.ws.feed(WsMessage::text(packet)).await.is_err() {
                return;
            }
        }
        let _ = self.ws.flush().await;
    }

    /// Reads until the server closes the socket, `acks` answers arrived, or `quiet` passes
    /// without anything but pings; ten seconds at most in all.
    pub(super) async fn receive(&mut self, acks: usize, quiet: Duration) -> Received {
        let mut got = Received::default();
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut until = (tokio::time::Instant::now() + quiet).min(end);
        while got.acks.len() < acks {
            let frame = match tokio::time::timeout_at(until, self.ws.next()).await {
                Err(_) => break,
                Ok(Some(Ok(WsMessage::Text(text)))) => text.to_string(),
                Ok(Some(Ok(_))) => continue,
                Ok(_) => {
                    got.closed = true;
                    break;
                }
            };
            if frame == "2" {
                let _ = self.ws.send(WsMessage::text("3")).await;
                continue;
            }
            until = (tokio::time::Instant::now() + quiet).min(end);
            if frame.starts_with("41") {
                got.closed = true;
                break;
            } else if let Some(ack) = frame.strip_prefix("43") {
                let args = &ack[ack.find('[').expect("an ack's arguments")..];
                let mut args: Vec<Value> = serde_json::from_str(args).unwrap();
                got.acks.push(args.swap_remove(0));
            } else if let Some(event) = frame.strip_prefix("42") {
                let mut args: Vec<Value> = serde_json::from_str(event).unwrap();
                let data = if args.len() > 1 {
                    args.swap_remove(1)
                } else {
                    Value::Null
                };
                got.events
                    .push((args[0].as_str().unwrap_or_default().to_owned(), data));
            }
        }
        got
    }
}

/// An event packet asking for an ack with id `id`.
pub(super) fn request(id: usize, event: &str, data: &Value) -> String {
    format!("42{id}{}", json!([event, data]))
}

fn event(name: &str, data: &Value) -> String {
    format!("42{}", json!([name, data]))
}

impl Received {
    /// Each ack's error code, "ok" for an answer.
    pub(super) fn codes(&self) -> Vec<&str> {
        self.acks
            .iter()
            .map(|a| a["error"]["code"].as_str().unwrap_or("ok"))
            .collect()
    }

    /// How many of the requests were served; each of them was served or refused as rate
    /// limited (asserted).
    pub(super) fn served(&self) -> usize {
        let codes = self.codes();
        assert!(
            codes.iter().all(|c| *c == "ok" || *c == "rate_limited"),
            "{codes:?}"
        );
        codes.iter().filter(|c| **c == "ok").count()
    }
}

/// Waits up to `within` for `user`'s next `event`; how many arrived by then (draining them).
async fn count_for(client: &mut TestClient, event: &str, within: Duration) -> usize {
    tokio::time::sleep(within).await;
    client.sync().await;
    client.drain(event).len()
}

#[tokio::test]
async fn a_typing_flood_reaches_its_target_once_and_its_socket_is_let_go() {
    let app = spawn_app().await;
    let attacker = app.connect_as("attacker").await;
    let mut bob = app.connect_as("bob").await;
    let cy = app.connect_as("cy").await;
    // The one relay the flood gets is volatile, dropped if Bob's connection still has something
    // queued: his connect's roster and `user connected` for cy, then the attacker's new socket's
    // `user connected`. Wait until all of it reached him.
    let mut raw = Raw::connect(app.addr, &attacker.session_id).await;
    loop {
        let told = bob.next("user connected").await;
        if told["userID"] == attacker.user_id.as_str() {
            break;
        }
    }
    bob.sync().await;
    let started = Instant::now();
    let to_bob = json!({ "to": bob.user_id });
    raw.flood((0..5000).map(|_| event("typing", &to_bob))).await;
    let got = raw.receive(usize::MAX, Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    assert!(got.closed, "the flooding socket is disconnected");
    // Seconds, not the flood's 5,000 events' worth of work (a loaded debug build is slow).
    assert!(elapsed < Duration::from_secs(10), "within {elapsed:?}");
    // One relay per --typing-every-ms (3 s), whatever was sent within it.
    let relayed = count_for(&mut bob, "typing", Duration::from_millis(100)).await;
    assert!(
        relayed <= 1 + elapsed.as_secs() as usize / 3,
        "{relayed} relayed"
    );
    assert!(relayed >= 1);
    // Its session waits out the cooldown; others are served as before.
    let refused = app
        .refusal(json!({ "sessionID": attacker.session_id }))
        .await;
    assert!(refused.contains("too many requests"), "{refused}");
    assert!(cy
        .send(&bob.user_id, "still here")
        .await
        .get("ok")
        .is_some());
    eprintln!("typing flood: 5000 sent, {relayed} relayed, disconnected after {elapsed:?}");
}

#[tokio::test]
async fn a_typing_flood_to_many_people_passes_on_at_most_the_budget() {
    const PEOPLE: usize = 20;
    let app: TestApp = spawn_app_with(|c| {
        c.typing_per_sec = 2.0;
        c.typing_burst = 5.0;
    })
    .await;
    let attacker = app.connect_as("attacker").await;
    let mut people = Vec::new();
    for i in 0..PEOPLE {
        people.push(app.connect_as(&format!("p{i}")).await);
    }
    let mut raw = Raw::connect(app.addr, &attacker.session_id).await;
    let started = Instant::now();
    // Each person once, and then a thousand people who do not exist.
    let targets = people
        .iter()
        .map(|p| p.user_id.clone())
        .chain((0..1000).map(|_| uuid::Uuid::new_v4().to_string()));
    raw.flood(targets.map(|to| event("typing", &json!({ "to": to }))))
        .await;
    let got = raw.receive(usize::MAX, Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    assert!(got.closed, "the flooding socket is disconnected");
    let mut relayed = 0;
    for person in &mut people {
        relayed += count_for(person, "typing", Duration::ZERO).await;
    }
    let allowed = 5 + (2.0 * elapsed.as_secs_f64()).ceil() as usize;
    assert!(
        relayed <= allowed,
        "{relayed} relayed in {elapsed:?}, the budget allows {allowed}"
    );
    assert!(relayed >= 1);
    eprintln!("typing fan-out: {relayed} of {PEOPLE} relayed in {elapsed:?}");
}

/// Someone types to a recipient whose connection takes nothing (it reads nothing, and the
/// server's writes to it are backed up behind more than the kernel buffers), at the most their
/// budget allows, each one relayed (`--typing-every-ms 1`), for two seconds. `typing` is
/// volatile: it goes only to a connection that can take it now, so none of it waits for this
/// one, not even the newest (which used to wait, one per socket, and came after everything
/// else). Nothing else changes: the recipient keeps its socket and gets every message once it
/// reads again, and the typist and everyone else are served at once meanwhile.
#[tokio::test]
async fn typing_to_a_recipient_that_reads_nothing_is_dropped_never_held() {
    const TYPING_PER_SEC: f64 = 20.0;
    const CHARS: usize = 60_000;
    // The most a TCP send buffer grows to (the receiver's is a few KiB): twice it, and more,
    // waits in the server's queue.
    let send_buffer_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let fill = (2 * send_buffer_max + (1 << 20)) / CHARS;
    let app = spawn_app_with(|c| {
        c.typing_every_ms = 1;
        c.typing_per_sec = TYPING_PER_SEC;
        c.typing_burst = TYPING_PER_SEC;
        c.max_message_chars = CHARS;
        // Room for the backlog, and no heartbeat or write deadline within the test: only the
        // rule under test may drop anything.
        c.socket_buffer_bytes = 2 * fill * CHARS;
        c.ping_interval_ms = 20_000;
        c.ping_timeout_ms = 20_000;
    })
    .await;
    let stalled = app.connect_as("stalled").await;
    stalled.close().await;
    app.until_room_is_empty(&stalled.user_id).await;
    let mut raw = Raw::small_window(app.addr, &stalled.session_id).await;
    let filler = app.connect_as("filler").await;
    let typist = app.connect_as("typist").await;
    let mut other = app.connect_as("other").await;

    // More than the connection can hold: its writer stalls.
    let body = "x".repeat(CHARS);
    for _ in 0..fill {
        let ack = filler.send(&stalled.user_id, &body).await;
        assert!(ack["ok"].is_object(), "{ack}");
    }

    // Typing at the budget's rate (a little under it, so that none is refused), and a message
    // to someone else with each, timed.
    let to_stalled = json!({ "to": stalled.user_id });
    let every = Duration::from_secs_f64(1.2 / TYPING_PER_SEC);
    let started = Instant::now();
    let mut typed = 0;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(2) {
        let tick = Instant::now();
        typist
            .client
            .emit("typing", to_stalled.clone())
            .await
            .unwrap();
        typed += 1;
        let ack = typist.send(&other.user_id, &format!("t{typed}")).await;
        assert!(ack["ok"].is_object(), "{ack}");
        other.next("private message").await;
        slowest = slowest.max(tick.elapsed());
        tokio::time::sleep(every.saturating_sub(tick.elapsed())).await;
    }
    let typing_for = started.elapsed();
    assert!(
        slowest < Duration::from_secs(1),
        "a message took {slowest:?}"
    );
    assert!(
        typist.sync().await["ok"].is_object(),
        "the typist is served"
    );

    // The recipient reads again: every message, and none of the typing sent meanwhile.
    let got = raw.receive(usize::MAX, Duration::from_millis(500)).await;
    assert!(!got.closed, "the recipient keeps its socket");
    let count = |name: &str| got.events.iter().filter(|(e, _)| e == name).count();
    assert_eq!(count("private message"), fill, "every message arrives");
    assert_eq!(
        count("typing"),
        0,
        "of {typed} typing events relayed while its connection took nothing, none waited for it"
    );
    eprintln!(
        "typing to a stalled recipient ({} MB behind): {typed} relayed in {:?}, 0 held, slowest \
         message {slowest:?}",
        fill * CHARS / 1_000_000,
        typing_for
    );
}

#[tokio::test]
async fn searches_with_huge_or_odd_queries_are_answered_at_once() {
    let app = spawn_app().await;
    let mut searcher = app.connect_as("searcher").await;
    app.connect_as("Ada Lovelace").await;
    app.connect_as("%_.*").await;
    let started = Instant::now();
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "query": "a".repeat(60_000) }), "invalid_payload"),
        (json!({ "query": "a".repeat(65) }), "invalid_payload"),
        (json!({ "query": " ".repeat(1000) }), "invalid_payload"),
        (json!({ "query": "" }), "invalid_payload"),
        (json!({ "query": ["a"] }), "invalid_payload"),
        (json!({ "query": { "$regex": ".*" } }), "invalid_payload"),
        (json!({ "query": "a", "limit": -5 }), "invalid_payload"),
        (json!({ "query": "a", "limit": 1e20 }), "invalid_payload"),
        (json!("ada"), "invalid_payload"),
        (json!({ "query": "🎉".repeat(64) }), "ok"),
        (json!({ "query": "\u{0}\u{1}\u{202e}" }), "ok"),
        (json!({ "query": ".*" }), "ok"),
        (json!({ "query": "%" }), "ok"),
        (json!({ "query": "a", "limit": 4_294_967_295u32 }), "ok"),
        (json!({ "query": "LOVE" }), "ok"),
    ];
    for (query, expected) in &cases {
        let answer = searcher.request("users_search", query.clone()).await;
        let got = answer["error"]["code"].as_str().unwrap_or("ok");
        assert_eq!(got, *expected, "{answer}");
        if let Some(users) = answer["ok"]["users"].as_array() {
            assert!(users.len() <= 50);
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // What matched what it should, and only that.
    let literal = searcher
        .request("users_search", json!({ "query": "%_.*" }))
        .await;
    assert_eq!(literal["ok"]["users"].as_array().unwrap().len(), 1);
    let love = searcher
        .request("users_search", json!({ "query": "LOVE" }))
        .await;
    assert_eq!(love["ok"]["users"][0]["username"], "Ada Lovelace");
    assert!(searcher.drain("close").is_empty(), "still connected");
}

#[tokio::test]
async fn a_search_flood_is_priced_by_the_directory_it_scans() {
    const USERS: usize = 60;
    let app = spawn_app_with(|c| {
        tight_reads(c);
        c.roster_full_max = 10;
    })
    .await;
    let searcher = app.connect_as("searcher").await;
    for i in 0..USERS {
        app.connect_as(&format!("user{i:02}")).await;
    }
    let mut raw = Raw::connect(app.addr, &searcher.session_id).await;
    let started = Instant::now();
    let query = json!({ "query": "user", "limit": 50 });
    raw.flood((0..400).map(|i| request(i, "users_search", &query)))
        .await;
    let got = raw.receive(400, Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    let served = got.served();
    // Each search costs at least its request, a byte price per directory entry compared and
    // its 50 entries: no more fit in the budget.
    let each = 256 + (USERS + 1) * 8 + 50 * 100;
    let allowed = tight_reads_allow(elapsed, each);
    assert!(
        served <= allowed,
        "{served} searches served in {elapsed:?}, the budget allows {allowed}"
    );
    assert!(served >= 1);
    assert!(got.closed, "the flooding socket is disconnected");
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    eprintln!(
        "search flood: 400 sent, {served} served, {} answered, disconnected after {elapsed:?}",
        got.acks.len()
    );
}

#[tokio::test]
async fn reads_with_absurd_cursors_never_read_the_future() {
    let app = spawn_app().await;
    let mut ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    let first = bob.send(&ada.user_id, "one").await["ok"]["id"]
        .as_i64()
        .unwrap();
    let started = Instant::now();
    for (up_to, expected) in [
        (json!(i64::MAX), "ok"),
        (json!(first + 1_000_000_000), "ok"),
        (json!(1e30), "invalid_payload"),
        (json!(-1), "invalid_cursor"),
        (json!(i64::MIN), "invalid_cursor"),
        (json!("9999"), "invalid_payload"),
        (json!(null), "invalid_payload"),
        (json!([1]), "invalid_payload"),
    ] {
        let answer = ada
            .request("read", json!({ "with": bob.user_id, "upTo": up_to }))
            .await;
        let got = answer["error"]["code"].as_str().unwrap_or("ok");
        assert_eq!(got, expected, "{up_to}: {answer}");
        if expected == "ok" {
            assert_eq!(answer["ok"]["upTo"], first, "clamped to the newest");
        }
    }
    let nobody = ada
        .request(
            "read",
            json!({ "with": uuid::Uuid::new_v4().to_string(), "upTo": i64::MAX }),
        )
        .await;
    assert_eq!(nobody["error"]["code"], "unknown_recipient");
    // The next message is unread: the cursor did not jump ahead of it.
    let second = bob.send(&ada.user_id, "two").await["ok"]["id"]
        .as_i64()
        .unwrap();
    let list = ada.request("conversations", json!({})).await;
    let entry = &list["ok"]["conversations"][0];
    assert_eq!(
        (&entry["readUpTo"], &entry["unread"]),
        (&json!(first), &json!(1))
    );
    assert_eq!(entry["last"]["id"], second);
    assert!(started.elapsed() < Duration::from_secs(3));
    ada.drain("read");
}

#[tokio::test]
async fn a_read_flood_is_refused_past_its_budget_and_its_socket_let_go() {
    let app = spawn_app_with(|c| {
        c.read_marks_per_sec = 5.0;
        c.read_mark_burst = 20.0;
    })
    .await;
    let mut ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let ack = bob.send(&ada.user_id, &format!("m{i}")).await;
        ids.push(ack["ok"]["id"].as_i64().unwrap());
    }
    let mut raw = Raw::connect(app.addr, &ada.session_id).await;
    let started = Instant::now();
    // Every cursor once, moving forward each time: every one that is served is a write.
    raw.flood((0..1000).map(|i| {
        let up_to = ids[0] + i as i64;
        request(i, "read", &json!({ "with": bob.user_id, "upTo": up_to }))
    }))
    .await;
    let got = raw.receive(1000, Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    let served = got.served();
    let allowed = 20 + (5.0 * elapsed.as_secs_f64()).ceil() as usize;
    assert!(
        served <= allowed,
        "{served} served in {elapsed:?}, allowed {allowed}"
    );
    assert!(got.closed, "the flooding socket is disconnected");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // What was written: every cursor that moved is told to the user's other socket (the
    // answers of reads still in the store when the socket was let go are lost with it). None
    // may have moved: on a loaded machine the refusals, which are instant, can close the socket
    // before the first write is taken (as in the devices floods).
    ada.sync().await;
    let moved = ada.drain("read");
    assert!(moved.len() <= allowed, "{} moved", moved.len());
    // Never past the newest.
    let newest = *ids.last().unwrap();
    let told = got
        .events
        .iter()
        .filter(|(e, _)| e == "read")
        .map(|(_, v)| v);
    for state in moved.iter().chain(told) {
        assert!(state["upTo"].as_i64().unwrap() <= newest, "{state}");
    }
    eprintln!(
        "read flood: 1000 sent, {} moved the cursor, {} answered, disconnected after {elapsed:?}",
        moved.len(),
        got.acks.len()
    );
}

/// A user whose every conversation has more unread messages than a page counts floods
/// `conversations`: each page reads a row per conversation and per message counted, and that
/// is reserved before the store is read, so a hundred pages sent at once read no more than the
/// read buckets hold (before, only the answer was reserved and the rows billed after: a dozen
/// pages at once each read them, and the buckets fell far below zero). The rest are refused
/// `rate_limited`, and everyone else is served meanwhile. (The socket is kept past its refusals
/// here, so that every answer is seen: the other floods show it let go.)
#[tokio::test]
async fn a_conversations_flood_is_priced_by_the_rows_it_reads_before_it_reads_them() {
    const PEERS: usize = 10;
    const UNREAD: u32 = 50;
    let app = spawn_app_with(|c| {
        tight_reads(c);
        // An answer costs little beside the rows read for it (a page is cut to a couple of
        // entries; every one of them is read and counted all the same).
        c.max_answer_bytes = 1024;
        c.max_message_chars = 100;
        c.unread_count_max = UNREAD;
        // The flooder's connects cost little of its budget.
        c.roster_max_bytes = 4096;
        c.messages_per_sec = 1000.0;
        c.message_burst = 1000.0;
        c.max_refused_requests = 10_000;
    })
    .await;
    let flooder = app.connect_as("flooder").await;
    for i in 0..PEERS {
        let peer = app.connect_as(&format!("peer{i}")).await;
        for m in 0..=UNREAD {
            let ack = peer.send(&flooder.user_id, &format!("m{m}")).await;
            assert!(ack["ok"].is_object(), "{ack}");
        }
        peer.close().await;
    }
    let mut other = app.connect_as("other").await;
    let ada = app.connect_as("ada").await;
    ada.send(&other.user_id, "hi").await;
    let mut raw = Raw::connect(app.addr, &flooder.session_id).await;
    let started = Instant::now();
    let page = json!({ "limit": PEERS });
    raw.flood((0..400).map(|i| request(i, "conversations", &page)))
        .await;
    let got = raw.receive(400, Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    let served = got.served();
    // Each page read at least a row per conversation and per message counted.
    let each = 256 + PEERS * (1 + UNREAD as usize) * 128;
    let allowed = tight_reads_allow(elapsed, each);
    assert!(
        served <= allowed,
        "{served} pages served in {elapsed:?}, the budget allows {allowed}"
    );
    assert!(served >= 1);
    let refused = got.codes().iter().filter(|c| **c == "rate_limited").count();
    assert_eq!(served + refused, 400, "every page answered");
    // Others are served, their unread counts too.
    let list = other.request("conversations", json!({})).await;
    assert_eq!(list["ok"]["conversations"][0]["unread"], 1, "{list}");
    assert!(ada.send(&other.user_id, "still here").await["ok"].is_object());
    other.next("private message").await;
    eprintln!("conversations flood: 400 sent, {served} served, {refused} refused in {elapsed:?}");
}

/// A flood of `settings` reads is priced as reads: refused `rate_limited` once the read
/// buckets are spent, and others served (the socket kept past its refusals, so that every
/// answer is seen).
#[tokio::test]
async fn a_settings_flood_is_refused_once_the_read_budget_is_spent() {
    const SENT: usize = 3000;
    let app = spawn_app_with(|c| {
        tight_reads(c);
        c.max_refused_requests = 100_000;
    })
    .await;
    let flooder = app.connect_as("flooder").await;
    let other = app.connect_as("other").await;
    let mut raw = Raw::connect(app.addr, &flooder.session_id).await;
    let started = Instant::now();
    raw.flood((0..SENT).map(|i| request(i, "settings", &json!({}))))
        .await;
    let got = raw.receive(SENT, Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    let served = got.served();
    // Each read costs its request and its answer.
    let each = 256 + 32;
    let allowed = tight_reads_allow(elapsed, each);
    assert!(
        served <= allowed,
        "{served} served in {elapsed:?}, the budget allows {allowed}"
    );
    assert!(served >= 1);
    let refused = got.codes().iter().filter(|c| **c == "rate_limited").count();
    assert_eq!(served + refused, SENT, "every read answered");
    let settings = other.request("settings", json!({})).await;
    assert_eq!(settings["ok"]["readReceipts"], true, "{settings}");
    eprintln!("settings flood: {SENT} sent, {served} served, {refused} refused in {elapsed:?}");
}

/// How many scripts this Redis has run (`EVALSHA`), from `INFO commandstats`.
async fn scripts_run(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A search is reserved before anything is read, the directory included: on Redis, where
/// reading the directory is a round trip (a script), a flood of searches past the read budget
/// costs the store nothing for those refused. (Before, each read the directory first, refused or
/// not.)
#[tokio::test]
async fn a_refused_search_reads_nothing_not_even_the_directory() {
    const SENT: usize = 400;
    let redis = RedisServer::start_own().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = redis.node_args();
    args.extend(tight_reads_args());
    for (flag, value) in [
        ("--roster-full-max", 10),
        // Every answer seen: the socket is kept past its refusals.
        ("--max-refused-requests", 100_000),
    ] {
        args.extend([flag.to_owned(), value.to_string()]);
    }
    let node = ChildServer::start_with(dir.path(), &args).await;
    let connect_as = async |name: &str| {
        let mut client = TestClient::connect(&node.url(), json!({ "username": name })).await;
        client.expect_session().await;
        client
    };
    let searcher = connect_as("searcher").await;
    for i in 0..20 {
        connect_as(&format!("user{i:02}")).await;
    }
    let mut raw = Raw::connect(node.addr, &searcher.session_id).await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let before = scripts_run(&mut conn).await;
    let query = json!({ "query": "user", "limit": 50 });
    raw.flood((0..SENT).map(|i| request(i, "users_search", &query)))
        .await;
    let got = raw.receive(SENT, Duration::from_secs(3)).await;
    let run = scripts_run(&mut conn).await - before;
    let served = got.served();
    let refused = got.acks.len() - served;
    assert_eq!(got.acks.len(), SENT, "every search answered");
    assert!(served >= 1 && refused >= SENT / 2, "{served} served");
    // A served search reads the directory and who is online (a script each); a refused one
    // nothing. A few more for the node's heartbeat meanwhile.
    assert!(
        run <= 2 * served as u64 + 10,
        "{run} scripts run for {served} searches served and {refused} refused"
    );
    eprintln!("search flood on Redis: {served} served, {refused} refused, {run} scripts run");
}

/// A flood of malformed `typing` packets (no recipient, a recipient of the wrong type or form,
/// to oneself) takes the sender's `typing` tokens as well-formed ones do, before anything is
/// read: past the budget they are refused, the socket is let go, and everyone else's `typing`
/// still goes through. (Before, a malformed one was read and dropped without a token: the flood
/// was never refused.)
#[tokio::test]
async fn a_flood_of_malformed_typing_spends_the_budget_and_its_socket_is_let_go() {
    let app = spawn_app().await;
    let attacker = app.connect_as("attacker").await;
    let mut bob = app.connect_as("bob").await;
    let cy = app.connect_as("cy").await;
    let mut raw = Raw::connect(app.addr, &attacker.session_id).await;
    let started = Instant::now();
    let malformed = [
        json!({ "to": "not-a-user" }),
        json!({ "to": 5 }),
        json!("x".repeat(1000)),
        json!([bob.user_id]),
        json!({ "to": attacker.user_id }),
    ];
    raw.flood((0..5000).map(|i| event("typing", &malformed[i % malformed.len()])))
        .await;
    let got = raw.receive(usize::MAX, Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    assert!(got.closed, "the flooding socket is disconnected");
    assert!(elapsed < Duration::from_secs(5), "within {elapsed:?}");
    let refused = app
        .refusal(json!({ "sessionID": attacker.session_id }))
        .await;
    assert!(refused.contains("too many requests"), "{refused}");
    // Nothing reached anyone; others' typing still does.
    assert_eq!(count_for(&mut bob, "typing", Duration::ZERO).await, 0);
    cy.client
        .emit("typing", json!({ "to": bob.user_id }))
        .await
        .unwrap();
    assert_eq!(bob.next("typing").await["from"], cy.user_id);
    eprintln!("malformed typing flood: 5000 sent, disconnected after {elapsed:?}");
}
