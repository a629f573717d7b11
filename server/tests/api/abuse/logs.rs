//! See `super`. Nothing secret in any log line (issue 21, item 6): a whole session through the
//! real binary at the most verbose per-module filter an operator could write, every line
//! grepped for the session ids, the Engine.IO sids, the message bodies and IP addresses; in
//! text and in JSON (`--log-format json`, issue 22).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Payload, TransportType};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{ChildServer, RedisServer, TestClient, WAIT};

/// Every crate that touches the wire, at trace, each by the most specific directive that could
/// lift a cap set for its crate.
const MOST_VERBOSE: &str = "trace,server=trace,\
    tungstenite=trace,tungstenite::protocol=trace,tungstenite::protocol::frame=trace,\
    tungstenite::handshake=trace,tokio_tungstenite=trace,\
    engineioxide=trace,engineioxide_core=trace,socketioxide=trace,socketioxide_core=trace,\
    socketioxide_parser_common=trace,socketioxide_redis=trace,\
    hyper=trace,hyper_util=trace,h2=trace,axum=trace,axum::rejection=trace,axum::serve=trace,\
    tower=trace,tower_http=trace,leptos_axum=trace,[{sid}]=trace,[{socket.id}]=trace";

/// The whole test, server start to last line, stays under this.
const BUDGET: Duration = Duration::from_secs(10);

#[tokio::test]
async fn no_log_line_at_any_filter_holds_a_session_id_a_sid_a_message_body_or_an_ip() {
    no_line_holds_a_secret("text").await;
}

#[tokio::test]
async fn no_json_log_line_at_any_filter_holds_a_session_id_a_sid_a_message_body_or_an_ip() {
    no_line_holds_a_secret("json").await;
}

async fn no_line_holds_a_secret(format: &str) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Refusals are logged as counts per kind; reported often here, so that the refused
    // handshakes below are reported before the server is killed.
    let args = [
        "--log-format".to_owned(),
        format.to_owned(),
        "--refusal-log-ms".to_owned(),
        "100".to_owned(),
    ];
    let server = ChildServer::start_logging_with(dir.path(), MOST_VERBOSE, Some(tx), &args).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let body = |n: u32| format!("logprobe-body-{n}-{tag}");
    let mut secrets: Vec<(&str, String)> = Vec::new();

    // Bob over a raw websocket, Ada over raw HTTP long-polling: both Engine.IO sids are known.
    let mut bob = RawSocket::websocket(server.addr, None).await;
    let (bob_session, bob_id) = bob.connect(json!({ "username": "bob" })).await;
    let mut ada = RawSocket::polling(server.addr).await;
    let (ada_session, ada_id) = ada.connect(json!({ "username": "ada" })).await;
    secrets.push(("bob's sid", bob.sid.clone()));
    secrets.push(("ada's sid", ada.sid.clone()));
    secrets.push(("bob's session id", bob_session.clone()));
    secrets.push(("ada's session id", ada_session.clone()));

    let sent = ada
        .request(
            "private message",
            json!({ "to": bob_id, "content": body(1) }),
        )
        .await;
    assert!(sent["ok"].is_object(), "{sent}");
    let got = bob.event("private message").await;
    assert_eq!(got["content"], body(1));
    let sent = bob
        .request(
            "private message",
            json!({ "to": ada_id, "content": body(2) }),
        )
        .await;
    assert!(sent["ok"].is_object(), "{sent}");
    assert_eq!(ada.event("private message").await["content"], body(2));
    // A body in the wrong shape and one too long: refused, and neither may be echoed to a log.
    let refused = ada
        .request("private message", json!([body(3), { "to": bob_id }]))
        .await;
    assert!(refused["error"].is_object(), "{refused}");
    let long = format!("{}{}", body(4), "x".repeat(5_000));
    let refused = ada
        .request("private message", json!({ "to": bob_id, "content": long }))
        .await;
    assert!(refused["error"].is_object(), "{refused}");

    // Ada upgrades her polling transport to a websocket, as socket.io-client does: the sid
    // travels in the upgrade request's query string.
    ada.upgrade(server.addr).await;
    let restored = ada.request("restore_state", json!({ "since": 0 })).await;
    assert!(restored["ok"]["messages"].is_array(), "{restored}");
    let history = ada
        .request("history", json!({ "with": bob_id, "limit": 10 }))
        .await;
    assert_eq!(history["ok"]["messages"].as_array().map(Vec::len), Some(2));

    // Refusals: an unknown session id and an invalid username, each on a sid of its own.
    let mut stranger = RawSocket::websocket(server.addr, None).await;
    let forged = bob_session.to_uppercase();
    let refusal = stranger.refused(json!({ "sessionID": forged })).await;
    assert!(refusal.contains("invalid username"), "{refusal}");
    secrets.push(("a refused socket's sid", stranger.sid.clone()));
    secrets.push(("a forged session id", forged));
    let mut nameless = RawSocket::polling(server.addr).await;
    nameless.refused(json!({ "username": "" })).await;
    secrets.push(("a refused polling sid", nameless.sid.clone()));

    // Bob again through two clients nobody here wrote: rust_socketio over polling that
    // upgrades, and over a websocket.
    let mut upgrading = Official::connect(
        &server.url(),
        TransportType::Any,
        json!({ "sessionID": bob_session }),
    )
    .await;
    upgrading.next("session").await;
    let sent = upgrading
        .request(
            "private message",
            json!({ "to": ada_id, "content": body(5) }),
        )
        .await;
    assert!(sent["ok"].is_object(), "{sent}");
    assert_eq!(ada.event("private message").await["content"], body(5));
    let mut tab = TestClient::connect(&server.url(), json!({ "sessionID": bob_session })).await;
    tab.expect_session().await;
    tab.sync().await;
    assert!(tab.send(&ada_id, &body(6)).await["ok"].is_object());
    assert_eq!(ada.event("private message").await["content"], body(6));

    // Sign out: Ada from her upgraded socket, Bob everywhere.
    assert_eq!(ada.request("logout", json!(null)).await["ok"], true);
    let out = tab.request("logout", json!({ "everywhere": true })).await;
    assert_eq!(out["ok"], true, "{out}");
    tab.next("close").await;
    upgrading.close().await;

    // Stop the server: its stdout closes, the reader drains it and drops the sender.
    server.kill_9().await;
    let mut lines = Vec::new();
    while let Some(line) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the log stream ends once the server is gone")
    {
        lines.push(strip_ansi(&line));
    }
    secrets.push(("a message body", tag.clone()));
    secrets.extend((1..=6).map(|n| ("a message body", body(n))));
    let leaks = leaks(&lines, &secrets);
    assert!(
        leaks.is_empty(),
        "{} of {} log lines leak:\n{}",
        leaks.len(),
        lines.len(),
        leaks.join("\n")
    );
    // The session was logged, each line about a socket by its derived id; the refused
    // handshakes by their count.
    let (conn, refusal) = match format {
        "json" => {
            for line in &lines {
                let object: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("not a JSON line ({e}): {line}");
                });
                assert!(object["level"].is_string() && object["message"].is_string());
            }
            ("\"conn\":\"", "\"class\":\"invalid_username\"")
        }
        _ => (" conn=", "refused class=invalid_username"),
    };
    for expected in [
        "handshake accepted",
        "socket connected",
        "signed out",
        "socket disconnected",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(expected) && l.contains(conn)),
            "`{expected}` with its conn: {lines:#?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains(refusal)),
        "the refused handshakes counted: {lines:#?}"
    );
    assert!(
        started.elapsed() < BUDGET,
        "the session took {:?}",
        started.elapsed()
    );
}

/// Issue 27: a cluster node that forwards another node's long-polling requests and relays its
/// upgrade names neither the sid nor the other node's address in any line, at the most verbose
/// filter, on either node.
#[tokio::test]
async fn forwarding_between_nodes_logs_no_sid_no_session_id_no_body_and_no_ip() {
    let redis = RedisServer::start().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (tx, mut rx) = mpsc::unbounded_channel();
    let args = redis.node_args();
    let owner =
        ChildServer::start_logging_with(dirs[0].path(), MOST_VERBOSE, Some(tx.clone()), &args)
            .await;
    let relay =
        ChildServer::start_logging_with(dirs[1].path(), MOST_VERBOSE, Some(tx), &args).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let body = |n: u32| format!("fwdprobe-body-{n}-{tag}");

    // Ada's session is opened on the owner; everything after the open goes through the relay.
    let mut ada = RawSocket::polling(owner.addr).await;
    ada.link = Link::Polling(relay.addr);
    let (ada_session, ada_id) = ada.connect(json!({ "username": "ada" })).await;
    let mut bob = RawSocket::websocket(relay.addr, None).await;
    let (bob_session, bob_id) = bob.connect(json!({ "username": "bob" })).await;
    let sent = ada
        .request(
            "private message",
            json!({ "to": bob_id, "content": body(1) }),
        )
        .await;
    assert!(sent["ok"].is_object(), "{sent}");
    assert_eq!(bob.event("private message").await["content"], body(1));
    // The upgrade through the relay: relayed byte for byte to the owner.
    ada.upgrade(relay.addr).await;
    let sent = bob
        .request(
            "private message",
            json!({ "to": ada_id, "content": body(2) }),
        )
        .await;
    assert!(sent["ok"].is_object(), "{sent}");
    assert_eq!(ada.event("private message").await["content"], body(2));
    // A made-up sid with the owner's tag: forwarded, and unknown there.
    let forged = format!("{}{}", &ada.sid[..2], "A".repeat(14));
    let (status, _) = http(
        relay.addr,
        "GET",
        &format!("/socket.io/?EIO=4&transport=polling&sid={forged}"),
        "",
    )
    .await;
    assert_eq!(status, 400);

    owner.kill_9().await;
    relay.kill_9().await;
    let mut lines = Vec::new();
    while let Some(line) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the log streams end once both nodes are gone")
    {
        lines.push(strip_ansi(&line));
    }
    let secrets = [
        ("ada's sid", ada.sid.clone()),
        ("bob's sid", bob.sid.clone()),
        ("a forged sid", forged),
        ("ada's session id", ada_session),
        ("bob's session id", bob_session),
        ("a message body", tag.clone()),
    ];
    let leaks = leaks(&lines, &secrets);
    assert!(
        leaks.is_empty(),
        "{} of {} log lines leak:\n{}",
        leaks.len(),
        lines.len(),
        leaks.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("forwarding a request") && l.contains("upgrade=true")),
        "the relay logged its forwarding, upgrade included: {lines:#?}"
    );
}

/// The lines that hold a secret (in any case, or hex-encoded as a frame dump's `payload: 0x…`)
/// or an IP address, each named by what leaked.
fn leaks(lines: &[String], secrets: &[(&str, String)]) -> Vec<String> {
    let mut leaks = Vec::new();
    for line in lines {
        let lower = line.to_lowercase();
        for (what, secret) in secrets {
            if lower.contains(&secret.to_lowercase()) || lower.contains(&hex::encode(secret)) {
                leaks.push(format!("{what}: {line}"));
            }
        }
        if let Some(ip) = ip_literal(line) {
            leaks.push(format!("an IP address ({ip}): {line}"));
        }
    }
    leaks
}

#[test]
fn the_ip_detector_finds_addresses_and_not_module_paths() {
    assert_eq!(
        ip_literal("peer=127.0.0.1:51234 accepted").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        ip_literal("connection [::1]:4000 accepted").as_deref(),
        Some("::1")
    );
    assert!(ip_literal("from ::ffff:10.1.2.3").is_some());
    assert!(ip_literal("fe80::1%eth0").is_some());
    for clean in [
        "2026-05-01T10:11:12.123456Z TRACE tungstenite::protocol: Received message",
        "DEBUG server::transport::handshake: handshake accepted conn=3fa9c02e77d1 user.id=ab12",
        "INFO server: tether started port=4000 data_dir=data version=0.1.0",
        "took_ms=12 before_mib=43 after_mib=40",
    ] {
        assert_eq!(ip_literal(clean), None, "{clean}");
    }
}

/// The first IPv4 or IPv6 literal in `line`, if any.
fn ip_literal(line: &str) -> Option<String> {
    let v4 = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .flat_map(|run| {
            // A dotted run may hold more than four parts (a version, a timestamp); any four in
            // a row that parse are an address.
            let parts: Vec<&str> = run.split('.').collect();
            (0..parts.len().saturating_sub(3))
                .map(move |i| parts[i..i + 4].join("."))
                .collect::<Vec<_>>()
        })
        .find(|candidate| candidate.parse::<Ipv4Addr>().is_ok());
    if v4.is_some() {
        return v4;
    }
    line.split(|c: char| !(c.is_ascii_hexdigit() || c == ':' || c == '.' || c == '%'))
        .map(|run| run.split('%').next().unwrap_or(run))
        .filter(|run| run.contains("::") || run.matches(':').count() >= 7)
        // `tungstenite::protocol` leaves `e::`: an address has a decimal digit somewhere.
        .filter(|run| run.chars().any(|c| c.is_ascii_digit()))
        .find(|run| run.parse::<Ipv6Addr>().is_ok())
        .map(str::to_owned)
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A Socket.IO client written out by hand, packet by packet, so the test knows its Engine.IO
/// sid (the open packet's `sid`), over HTTP long-polling or a websocket.
struct RawSocket {
    sid: String,
    link: Link,
    backlog: Vec<String>,
    next_ack: u64,
}

enum Link {
    Polling(SocketAddr),
    Websocket(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
}

impl RawSocket {
    async fn polling(addr: SocketAddr) -> RawSocket {
        let (status, body) = http(addr, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
        assert_eq!(status, 200, "{body}");
        RawSocket {
            sid: open_sid(&body),
            link: Link::Polling(addr),
            backlog: Vec::new(),
            next_ack: 0,
        }
    }

    async fn websocket(addr: SocketAddr, upgrading: Option<&str>) -> RawSocket {
        let mut url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        if let Some(sid) = upgrading {
            url.push_str(&format!("&sid={sid}"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket opens");
        let mut socket = RawSocket {
            sid: upgrading.map(str::to_owned).unwrap_or_default(),
            link: Link::Websocket(Box::new(ws)),
            backlog: Vec::new(),
            next_ack: 0,
        };
        if upgrading.is_none() {
            let open = socket.packet(|p| p.starts_with('0')).await;
            socket.sid = open_sid(&open);
        }
        socket
    }

    /// Moves a polling socket onto a websocket: `2probe`, `3probe`, `5`.
    async fn upgrade(&mut self, addr: SocketAddr) {
        let mut ws = RawSocket::websocket(addr, Some(&self.sid)).await;
        ws.send("2probe").await;
        ws.packet(|p| p == "3probe").await;
        ws.send("5").await;
        self.link = ws.link;
    }

    /// Sends `CONNECT` with `auth`; returns the session id and the user id.
    async fn connect(&mut self, auth: Value) -> (String, String) {
        self.send(&format!("40{auth}")).await;
        self.packet(|p| p.starts_with("40")).await;
        let session = self.event("session").await;
        (
            session["sessionID"].as_str().expect("sessionID").to_owned(),
            session["userID"].as_str().expect("userID").to_owned(),
        )
    }

    /// Sends `CONNECT` with `auth` and expects a `CONNECT_ERROR`; returns its text.
    async fn refused(&mut self, auth: Value) -> String {
        self.send(&format!("40{auth}")).await;
        self.packet(|p| p.starts_with("44")).await
    }

    /// Emits `event` with an ack id and returns the ack's first argument.
    async fn request(&mut self, event: &str, data: Value) -> Value {
        self.next_ack += 1;
        let id = self.next_ack;
        self.send(&format!("42{id}{}", json!([event, data]))).await;
        let prefix = format!("43{id}[");
        let ack = self.packet(|p| p.starts_with(&prefix)).await;
        let args: Value = serde_json::from_str(&ack[prefix.len() - 1..]).expect("ack is JSON");
        args[0].clone()
    }

    /// The next `event`'s first argument.
    async fn event(&mut self, event: &str) -> Value {
        let prefix = format!("42[{}", json!(event));
        let packet = self.packet(|p| p.starts_with(&prefix)).await;
        let args: Value = serde_json::from_str(&packet[2..]).expect("event is JSON");
        args[1].clone()
    }

    async fn send(&mut self, packet: &str) {
        match &mut self.link {
            Link::Polling(addr) => {
                let path = format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid);
                let (status, body) = http(*addr, "POST", &path, packet).await;
                assert_eq!(status, 200, "{body}");
            }
            Link::Websocket(ws) => ws
                .send(Message::text(packet.to_owned()))
                .await
                .expect("websocket send"),
        }
    }

    /// The next packet that `wanted` picks; others wait in the backlog. Answers pings.
    async fn packet(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(i) = self.backlog.iter().position(|p| wanted(p)) {
                return self.backlog.remove(i);
            }
            let batch = tokio::time::timeout_at(deadline, self.receive())
                .await
                .unwrap_or_else(|_| panic!("timed out; saw {:?}", self.backlog));
            for packet in batch {
                if packet == "2" {
                    self.send("3").await;
                } else {
                    self.backlog.push(packet);
                }
            }
        }
    }

    async fn receive(&mut self) -> Vec<String> {
        match &mut self.link {
            Link::Polling(addr) => {
                let path = format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid);
                let (status, body) = http(*addr, "GET", &path, "").await;
                assert_eq!(status, 200, "{body}");
                body.split('\u{1e}').map(str::to_owned).collect()
            }
            Link::Websocket(ws) => match ws.next().await {
                Some(Ok(Message::Text(text))) => vec![text.to_string()],
                Some(Ok(_)) => Vec::new(),
                other => panic!("websocket ended: {other:?}"),
            },
        }
    }
}

fn open_sid(open: &str) -> String {
    let open: Value = serde_json::from_str(open.strip_prefix('0').expect("an open packet"))
        .expect("the open packet is JSON");
    open["sid"].as_str().expect("a sid").to_owned()
}

/// One HTTP/1.1 request on its own connection; returns the status and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain;charset=UTF-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("the response arrives")
        .expect("read");
    let response = String::from_utf8(response).expect("UTF-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    assert!(
        !head.to_ascii_lowercase().contains("chunked"),
        "a sized response: {head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}

/// rust_socketio, a client nobody here wrote, on a transport of the test's choosing.
struct Official {
    client: Client,
    events: mpsc::UnboundedReceiver<(String, Value)>,
}

fn first_arg(payload: Payload) -> Value {
    match payload {
        Payload::Text(mut values) if !values.is_empty() => values.swap_remove(0),
        _ => Value::Null,
    }
}

impl Official {
    async fn connect(url: &str, transport: TransportType, auth: Value) -> Official {
        let (tx, events) = mpsc::unbounded_channel();
        let client = ClientBuilder::new(url)
            .transport_type(transport)
            .reconnect(false)
            .auth(auth)
            .on_any(move |event, payload, _| {
                let _ = tx.send((String::from(event.as_str()), first_arg(payload)));
                async {}.boxed()
            })
            .connect()
            .await
            .expect("transport opens");
        Official { client, events }
    }

    async fn next(&mut self, event: &str) -> Value {
        loop {
            let (name, value) = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for `{event}`"))
                .expect("the client is alive");
            if name == event {
                return value;
            }
        }
    }

    async fn request(&self, event: &str, data: Value) -> Value {
        crate::helpers::request_on(&self.client, event, data).await
    }

    async fn close(&self) {
        let _ = self.client.disconnect().await;
    }
}
