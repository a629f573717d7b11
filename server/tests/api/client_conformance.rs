//! Tether's own Rust client (the sans-IO core over a native websocket) against (a) Tether's
//! server and (b) the official Node socket.io server, so the client is checked against a server
//! nobody here wrote, not only against our own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::core::{ConnState, CoreConfig, StopReason};
use client::native::{now_wall_ms, NativeClient};
use client::session::{Input, SessionEvent};
use protocol::json::RawJson;
use protocol::HandshakeAuth;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{
    auth, raw, spawn_app, spawn_app_at, spawn_app_with, tcp_socket_in_this_process, value, WAIT,
};

fn fast() -> CoreConfig {
    let mut config = CoreConfig::default();
    config.backoff.min_ms = 50;
    config.backoff.max_ms = 200;
    config
}

/// Auth that follows the stored session, as the browser's localStorage does.
#[derive(Clone, Default)]
struct Storage(Arc<Mutex<HandshakeAuth>>);

impl Storage {
    fn new(value: Value) -> Self {
        Self(Arc::new(Mutex::new(auth(value))))
    }
    fn auth(&self) -> impl FnMut() -> HandshakeAuth + Send + 'static {
        let inner = self.0.clone();
        move || inner.lock().unwrap().clone()
    }
    fn store(&self, session_id: &str) {
        *self.0.lock().unwrap() = auth(json!({ "sessionID": session_id }));
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A Tether user on the Rust client: connected, session stored, roster received.
async fn tether_user(origin: &str, name: &str) -> (NativeClient, Storage, String) {
    let storage = Storage::new(json!({ "username": name }));
    let mut client = NativeClient::spawn(origin, fast(), storage.auth());
    let info = within(
        "session",
        client.wait_for(|e| match e {
            SessionEvent::Session(info) => Some(info.clone()),
            _ => None,
        }),
    )
    .await;
    // `session` comes after the namespace connect, so the client is online now.
    storage.store(&info.session_id);
    (client, storage, info.user_id)
}

async fn until_online(client: &mut NativeClient) {
    client
        .wait_for(|e| matches!(e, SessionEvent::State(ConnState::Online { .. })).then_some(()))
        .await;
}

async fn until_arrived(client: &mut NativeClient) -> protocol::payloads::Message {
    within(
        "a message",
        client.wait_for(|e| match e {
            SessionEvent::Arrived(m) => Some(m.clone()),
            _ => None,
        }),
    )
    .await
}

/// Waits until the client holds at least `len` messages with `peer`, re-checking after each
/// event, and returns the conversation (which must then hold exactly `len`: nothing twice).
async fn conversation_of_len(
    client: &mut NativeClient,
    peer: &str,
    len: usize,
) -> Vec<protocol::payloads::Message> {
    loop {
        let peer = peer.to_owned();
        let held = client.call(move |s, _| s.chat().conversation(&peer)).await;
        if held.len() >= len {
            assert_eq!(held.len(), len, "no message twice");
            return held;
        }
        client.next_event().await.expect("client running");
    }
}

async fn outbox_len(client: &NativeClient) -> usize {
    client.call(|s, _| s.outbox().entries().len()).await
}

async fn until_outbox_empty(client: &mut NativeClient) {
    within("outbox flushed", async {
        while outbox_len(client).await > 0 {
            client
                .wait_for(|e| matches!(e, SessionEvent::OutboxChanged).then_some(()))
                .await;
        }
    })
    .await
}

#[tokio::test]
async fn rust_client_handshakes_with_auth_and_exchanges_acked_messages_with_tether() {
    let app = spawn_app().await;
    let (ada, _, ada_id) = tether_user(&app.url(), "ada").await;
    let (mut bob, _, bob_id) = tether_user(&app.url(), "bob").await;

    let to = bob_id.clone();
    ada.call(move |s, now| {
        s.step(
            Input::Send {
                to: &to,
                content: "hi bob",
                wall_ms: now_wall_ms(),
            },
            now,
        )
    })
    .await;
    let arrived = until_arrived(&mut bob).await;
    assert_eq!(
        (arrived.content.as_str(), arrived.from.as_str()),
        ("hi bob", ada_id.as_str())
    );

    let mut ada = ada;
    until_outbox_empty(&mut ada).await;
    let held = ada.call(move |s, _| s.chat().conversation(&bob_id)).await;
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0].id, arrived.id,
        "the ack gave the sender the stored id"
    );
}

/// A request sent the moment a client is connected is answered, even in a connect storm.
/// socketioxide sends CONNECT before it even spawns the connect handler, so handlers registered
/// there could miss a client's first event (it was dropped and the client waited out its 10 s
/// ack timeout; about 1 % of clients in a 1,000-user storm). Many clients connecting at once
/// make that window wide. Tether's client sends `conversations` and `settings` as CONNECT
/// arrives; each client here sends a `settings` of its own as soon as it sees the connection
/// up, and waits for that answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_right_after_connecting_is_answered_even_in_a_connect_storm() {
    // Heartbeats as in production terms (seconds): a client task starved for a moment on a
    // loaded machine must not be closed and sign up again, which would only add to the storm.
    let app = spawn_app_with(|c| {
        c.ping_interval_ms = 5_000;
        c.ping_timeout_ms = 5_000;
    })
    .await;
    let origin = app.url();
    let clients = (0..300u64).map(|i| {
        let origin = origin.clone();
        tokio::spawn(async move {
            let mut client = NativeClient::spawn(&origin, fast(), move || {
                auth(json!({ "username": format!("s{i}") }))
            });
            // The handshake may queue behind the other 299 on a loaded 2-core machine.
            tokio::time::timeout(
                3 * WAIT,
                client.wait_for(|e| {
                    matches!(e, SessionEvent::State(ConnState::Online { .. })).then_some(())
                }),
            )
            .await
            .expect("connected");
            let tag = (1 << 40) + i;
            let request = raw(json!({}));
            client
                .call(move |session, now| {
                    session.step(
                        Input::Request {
                            tag,
                            event: "settings",
                            data: &request,
                        },
                        now,
                    )
                })
                .await;
            // A dropped request is only given up after ACK_TIMEOUT_MS = 10 s, so any wait
            // under it tells the two apart.
            tokio::time::timeout(
                Duration::from_millis(client::session::ACK_TIMEOUT_MS - 1_000),
                client.wait_for(|e| match e {
                    SessionEvent::Reply { tag: t, .. } if *t == tag => Some(()),
                    _ => None,
                }),
            )
            .await
            .is_ok()
        })
    });
    let mut unanswered = 0;
    for client in clients.collect::<Vec<_>>() {
        if !client.await.expect("client task") {
            unanswered += 1;
        }
    }
    assert_eq!(
        unanswered, 0,
        "clients whose first request was never answered"
    );
}

#[tokio::test]
async fn rust_client_stops_on_invalid_username_without_a_reconnect_loop() {
    let app = spawn_app().await;
    let mut client = NativeClient::spawn(&app.url(), fast(), || auth(json!({})));
    within(
        "signed out",
        client.wait_for(|e| matches!(e, SessionEvent::SignedOut).then_some(())),
    )
    .await;
    let (state, deadline) = client.call(|s, _| (s.state(), s.next_deadline())).await;
    assert_eq!(state, ConnState::Stopped(StopReason::Unauthorized));
    assert_eq!(deadline, None, "nothing scheduled: no retry");
}

#[tokio::test]
async fn rust_client_answers_pings_and_stays_connected_over_several_intervals() {
    let app = spawn_app().await; // ping 300 ms, timeout 1 s
    let (client, _, _) = tether_user(&app.url(), "ada").await;
    // Five ping intervals: without pongs the server would have closed the socket after 1.3 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (state, reconnects) = client.call(|s, _| (s.state(), s.reconnects())).await;
    assert!(matches!(state, ConnState::Online { .. }), "{state:?}");
    assert_eq!(reconnects, 0);
}

#[tokio::test]
async fn rust_client_reconnects_after_a_restart_restores_state_and_flushes_its_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_at(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let addr = app.addr;
    let url = app.url();
    let (mut ada, _, ada_id) = tether_user(&url, "ada").await;
    let (mut bob, _, bob_id) = tether_user(&url, "bob").await;
    app.stop().await;

    // Written while the server is down: kept in the outbox.
    let to = bob_id.clone();
    ada.call(move |s, now| {
        s.step(
            Input::Send {
                to: &to,
                content: "sent while down",
                wall_ms: now_wall_ms(),
            },
            now,
        )
    })
    .await;
    assert_eq!(outbox_len(&ada).await, 1);

    let app = spawn_app_at(dir.path(), addr).await;
    within("ada back", until_online(&mut ada)).await;
    until_outbox_empty(&mut ada).await;
    // Bob reconnects on his own schedule: the message reaches him live or through his
    // restore_state, whichever comes first; either way exactly once.
    let held = within("bob has it", conversation_of_len(&mut bob, &ada_id, 1)).await;
    assert_eq!(held[0].content, "sent while down");
    assert_eq!(ada.call(|s, _| s.reconnects()).await, 1);

    // What bob missed while away comes back through restore_state.
    bob.call(|s, now| s.step(Input::Disconnect, now)).await;
    let to = bob_id.clone();
    ada.call(move |s, now| {
        s.step(
            Input::Send {
                to: &to,
                content: "while you were away",
                wall_ms: now_wall_ms(),
            },
            now,
        )
    })
    .await;
    until_outbox_empty(&mut ada).await;
    bob.call(|s, now| s.step(Input::Connect, now)).await;
    within("bob back", until_online(&mut bob)).await;
    let held = within("restored", conversation_of_len(&mut bob, &ada_id, 2)).await;
    assert_eq!(held[1].content, "while you were away");
    app.stop().await;
}

// ---- against the official Node socket.io server ----

struct NodeServer {
    child: tokio::process::Child,
    port: u16,
}

impl NodeServer {
    async fn start(port: u16) -> NodeServer {
        let fixture =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../end2end/fixtures/sio-server.js");
        let modules =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../end2end/node_modules/socket.io");
        assert!(
            modules.exists(),
            "npm packages missing: run `bash scripts/setup.sh` (or npm ci in end2end/)"
        );
        let mut child = tokio::process::Command::new("node")
            .arg(&fixture)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = within("node server", async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("node printed its port");
                if let Some(port) = line.strip_prefix("listening on ") {
                    break port.parse().unwrap();
                }
            }
        })
        .await;
        NodeServer { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn reply(client: &mut NativeClient, event: &'static str, data: Value) -> Value {
    static TAGS: AtomicU64 = AtomicU64::new(1);
    let tag = TAGS.fetch_add(1, Ordering::Relaxed);
    let data = raw(data);
    client
        .call(move |s, now| {
            let data = &data;
            s.step(Input::Request { tag, event, data }, now)
        })
        .await;
    within(
        "reply",
        client.wait_for(|e| match e {
            SessionEvent::Reply { tag: got, result } if *got == tag => Some(result.clone()),
            _ => None,
        }),
    )
    .await
    .map(|result| value(&result))
    .expect("acked")
}

#[tokio::test]
async fn rust_client_speaks_to_the_official_node_server() {
    let node = NodeServer::start(0).await;

    // connect_error with the tutorial's message stops the client.
    let mut refused = NativeClient::spawn(&node.url(), fast(), || auth(json!({})));
    within(
        "refused",
        refused.wait_for(|e| matches!(e, SessionEvent::SignedOut).then_some(())),
    )
    .await;

    // Other connect errors are retried, not treated as a sign-out.
    let mut flaky = NativeClient::spawn(&node.url(), fast(), || {
        auth(json!({ "username": "unavailable" }))
    });
    within(
        "offline",
        flaky.wait_for(|e| {
            matches!(e, SessionEvent::State(ConnState::Offline { .. })).then_some(())
        }),
    )
    .await;

    let mut client =
        NativeClient::spawn(&node.url(), fast(), || auth(json!({ "username": "ada" })));
    let hello = within(
        "hello",
        client.wait_for(|e| match e {
            SessionEvent::ServerEvent { event, data } if event == "hello" => Some(data.clone()),
            _ => None,
        }),
    )
    .await;
    assert_eq!(
        value(&hello)["auth"],
        json!({ "username": "ada" }),
        "the handshake auth reached the server"
    );
    // Client → server with an ack.
    assert_eq!(
        reply(&mut client, "echo", json!({ "x": [1, 2] })).await,
        json!({ "x": [1, 2] })
    );
    // Server → client with an ack: the server reports the answer it got back.
    client
        .call(|s, now| {
            s.step(
                Input::Emit {
                    event: "ask me",
                    data: &RawJson::null(),
                },
                now,
            )
        })
        .await;
    let answered = within(
        "answered",
        client.wait_for(|e| match e {
            SessionEvent::ServerEvent { event, data } if event == "answered" => Some(data.clone()),
            _ => None,
        }),
    )
    .await;
    assert_eq!(value(&answered), Value::Null, "our ack reached the server");
    // Heartbeat: several ping intervals, longer than interval + timeout, pass without a reconnect.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(client.call(|s, _| s.reconnects()).await, 0);
}

#[tokio::test]
async fn rust_client_reconnects_to_a_restarted_node_server_and_flushes_its_outbox() {
    let node = NodeServer::start(0).await;
    let port = node.port;
    let mut client =
        NativeClient::spawn(&node.url(), fast(), || auth(json!({ "username": "ada" })));
    within("online", until_online(&mut client)).await;
    node.kill().await;
    within(
        "offline",
        client.wait_for(|e| {
            matches!(e, SessionEvent::State(ConnState::Offline { .. })).then_some(())
        }),
    )
    .await;

    client
        .call(|s, now| {
            s.step(
                Input::Send {
                    to: "someone",
                    content: "queued offline",
                    wall_ms: now_wall_ms(),
                },
                now,
            )
        })
        .await;
    assert_eq!(outbox_len(&client).await, 1);

    let node = NodeServer::start(port).await;
    within("back online", until_online(&mut client)).await;
    until_outbox_empty(&mut client).await;
    assert_eq!(client.call(|s, _| s.reconnects()).await, 1);
    node.kill().await;
}

#[tokio::test]
async fn the_native_client_sends_small_frames_at_once() {
    let app = spawn_app().await;
    let (_client, _, _) = tether_user(&app.url(), "ada").await;
    let server = app.addr;
    let client_end = tcp_socket_in_this_process(|local, peer| peer == server && local != server)
        .expect("the client's socket");
    // As browsers do: a frame sent while the one before is unacknowledged must not wait for
    // the server's delayed ACK.
    assert!(client_end.nodelay().unwrap(), "TCP_NODELAY is not set");
}
