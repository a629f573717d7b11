//! Delivery you can trust: crash mid-stream, away and back, slow consumers, oversized frames.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use client::core::{ConnState, CoreConfig};
use client::native::{now_wall_ms, NativeClient};
use client::session::{Input, SessionEvent};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::{auth, spawn_app, spawn_app_at, ChildServer, TestClient, WAIT};

fn fast() -> CoreConfig {
    let mut config = CoreConfig::default();
    config.backoff.min_ms = 50;
    config.backoff.max_ms = 300;
    config
}

/// A browser-like user: the Rust client with its session kept in "storage" across reconnects.
struct User {
    client: NativeClient,
    id: String,
}

async fn user(origin: &str, name: &str) -> User {
    let stored = Arc::new(Mutex::new(auth(json!({ "username": name }))));
    let auth = {
        let stored = stored.clone();
        move || stored.lock().unwrap().clone()
    };
    let mut client = NativeClient::spawn(origin, fast(), auth);
    let info = tokio::time::timeout(
        WAIT,
        client.wait_for(|e| match e {
            SessionEvent::Session(info) => Some(info.clone()),
            _ => None,
        }),
    )
    .await
    .expect("session");
    *stored.lock().unwrap() = crate::helpers::auth(json!({ "sessionID": info.session_id }));
    User {
        client,
        id: info.user_id,
    }
}

/// Waits until `f` holds on the session, re-checking after each event.
async fn until(
    client: &mut NativeClient,
    what: &str,
    f: impl Fn(&client::session::Session) -> bool + Send + Sync + Clone + 'static,
) {
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let check = f.clone();
            if client.call(move |s, _| check(s)).await {
                return;
            }
            client.next_event().await.expect("client running");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_acked_message_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path()).await;
    let addr = server.addr;
    let origin = server.url();
    let mut ada = user(&origin, "ada").await;
    let mut bob = user(&origin, "bob").await;

    // 250 each way, all written up front: the outboxes send them in order while the server
    // is killed somewhere in the middle and started again on the same port.
    for i in 0..250 {
        let (to_bob, to_ada) = (bob.id.clone(), ada.id.clone());
        ada.client
            .call(move |s, now| {
                s.step(
                    Input::Send {
                        to: &to_bob,
                        content: &format!("a{i:03}"),
                        wall_ms: now_wall_ms(),
                    },
                    now,
                )
            })
            .await;
        bob.client
            .call(move |s, now| {
                s.step(
                    Input::Send {
                        to: &to_ada,
                        content: &format!("b{i:03}"),
                        wall_ms: now_wall_ms(),
                    },
                    now,
                )
            })
            .await;
    }
    let (ada_id, bob_id) = (ada.id.clone(), bob.id.clone());
    until(&mut ada.client, "some messages were acked", move |s| {
        s.chat().conversation(&bob_id).len() >= 40
    })
    .await;
    server.kill_9().await;
    let server = restart_on(dir.path(), addr).await;

    for (u, peer) in [(&mut ada, bob.id.clone()), (&mut bob, ada_id.clone())] {
        let peer2 = peer.clone();
        until(
            &mut u.client,
            "everything is delivered and resynced",
            move |s| s.outbox().entries().is_empty() && s.chat().conversation(&peer2).len() == 500,
        )
        .await;
        let held = u
            .client
            .call(move |s, _| s.chat().conversation(&peer))
            .await;
        let ids: HashSet<i64> = held.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), 500, "no duplicates on screen");
        for side in ["a", "b"] {
            let texts: Vec<&str> = held
                .iter()
                .filter(|m| m.content.starts_with(side))
                .map(|m| m.content.as_str())
                .collect();
            let expected: Vec<String> = (0..250).map(|i| format!("{side}{i:03}")).collect();
            assert_eq!(texts, expected, "every message once, in the order written");
        }
    }

    server.kill_9().await;

    // The store agrees: 500 rows, none twice, each sender's in the order written.
    let db = rusqlite::Connection::open(dir.path().join("tether.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT content FROM messages ORDER BY id")
        .unwrap();
    let stored: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored.len(), 500);
    for side in ["a", "b"] {
        let texts: Vec<&String> = stored.iter().filter(|c| c.starts_with(side)).collect();
        let expected: Vec<String> = (0..250).map(|i| format!("{side}{i:03}")).collect();
        assert_eq!(texts, expected.iter().collect::<Vec<_>>());
    }
}

async fn restart_on(dir: &std::path::Path, addr: SocketAddr) -> ChildServer {
    // The port was just freed by the killed process; the binary binds it again.
    let server = ChildServer::start_on(dir, addr).await;
    assert_eq!(server.addr, addr);
    server
}

#[tokio::test]
async fn fifty_messages_sent_while_away_arrive_once_and_in_order_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_at(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let (addr, origin) = (app.addr, app.url());
    let ada = TestClient::connect(&origin, json!({ "username": "ada" })).await;
    let mut ada = ada;
    ada.expect_session().await;
    let mut bob = user(&origin, "bob").await;
    let ada_id = ada.user_id.clone();
    until(&mut bob.client, "bob sees ada", {
        let ada_id = ada_id.clone();
        move |s| s.chat().peer(&ada_id).is_some()
    })
    .await;

    bob.client
        .call(|s, now| s.step(Input::Disconnect, now))
        .await;
    for i in 0..25 {
        assert!(ada.send(&bob.id, &format!("m{i:02}")).await["ok"].is_object());
    }
    app.stop().await;
    let app = spawn_app_at(dir.path(), addr).await;
    let mut ada = TestClient::connect(&origin, json!({ "sessionID": ada.session_id })).await;
    ada.expect_session().await;
    for i in 25..50 {
        assert!(ada.send(&bob.id, &format!("m{i:02}")).await["ok"].is_object());
    }

    bob.client.call(|s, now| s.step(Input::Connect, now)).await;
    let peer = ada_id.clone();
    until(&mut bob.client, "bob restored all 50", move |s| {
        s.chat().conversation(&peer).len() >= 50
    })
    .await;
    let held = bob
        .client
        .call(move |s, _| s.chat().conversation(&ada_id))
        .await;
    let texts: Vec<String> = held.iter().map(|m| m.content.clone()).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
    assert_eq!(texts, expected);
    assert!(matches!(
        bob.client.call(|s, _| s.state()).await,
        ConnState::Online { .. }
    ));
    app.stop().await;
}

/// A websocket client that handshakes as a new user and then stops reading.
async fn stalled_socket(
    addr: SocketAddr,
    auth: Value,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    String,
    String,
) {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let mut session = None;
    while session.is_none() {
        let frame = ws.next().await.expect("frame").expect("frame ok");
        let WsMessage::Text(text) = frame else {
            continue;
        };
        if text.starts_with('0') {
            ws.send(WsMessage::text(format!("40{auth}"))).await.unwrap();
        } else if let Some(event) = text.strip_prefix("42") {
            let value: Value = serde_json::from_str(event).unwrap();
            if value[0] == "session" {
                session = Some((
                    value[1]["sessionID"].as_str().unwrap().to_owned(),
                    value[1]["userID"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    let (sid, uid) = session.unwrap();
    (ws, sid, uid)
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_and_resyncs_everything_on_return() {
    let app = spawn_app().await; // ping 300 ms / timeout 1 s
    let ada = app.connect_as("ada").await;
    // Holds the socket open but never reads again.
    let (stalled, slow_session, slow_id) =
        stalled_socket(app.addr, json!({ "username": "slow" })).await;
    let body = "x".repeat(3000);
    for i in 0..400 {
        let ack = ada.send(&slow_id, &format!("{i:03}{body}")).await;
        assert!(ack["ok"].is_object(), "the sender is never held up: {ack}");
    }
    // The server gives up on it (heartbeat unanswered; its send queue is bounded meanwhile).
    app.until_room_is_empty(&slow_id).await;
    drop(stalled);

    let back = app.resume(&slow_session).await;
    let mut restored = Vec::new();
    let mut since = 0;
    loop {
        let page = back
            .request("restore_state", json!({ "since": since }))
            .await;
        let messages = page["ok"]["messages"].as_array().unwrap().clone();
        since = messages
            .last()
            .map(|m| m["id"].as_i64().unwrap())
            .unwrap_or(since);
        restored.extend(messages);
        if page["ok"]["hasMore"] == false {
            break;
        }
    }
    assert_eq!(restored.len(), 400, "everything it missed");
    assert!(restored[0]["content"].as_str().unwrap().starts_with("000"));
    assert!(restored[399]["content"]
        .as_str()
        .unwrap()
        .starts_with("399"));
}

#[tokio::test]
async fn a_socket_over_its_send_budget_is_closed_and_its_client_misses_nothing() {
    // A socket that stops reading fills the kernel's buffers, then its 64 KiB send budget:
    // the server closes it then (the heartbeat, two minutes here, is not what closes it). What
    // it got is everything up to some message, never a later one after a gap; the rest comes
    // from a restore when its client returns.
    let app = crate::helpers::spawn_app_with(|c| {
        c.socket_buffer_bytes = 64 * 1024;
        c.ping_interval_ms = 120_000;
        c.ping_timeout_ms = 120_000;
        // The returning client's `users` must fit the small budget beside `session` and
        // `tabs` (by default it may carry 256 KiB of messages, four such budgets).
        c.roster_max_bytes = 16 * 1024;
    })
    .await;
    let ada = app.connect_as("ada").await;
    let (mut stalled, slow_session, slow_id) =
        stalled_socket(app.addr, json!({ "username": "slow" })).await;
    let body = "x".repeat(3990);
    let mut sent = Vec::new();
    while !app.io.within(slow_id.clone()).sockets().is_empty() {
        assert!(sent.len() < 4000, "closed before 16 MB were sent to it");
        let ack = ada
            .send(&slow_id, &format!("{:04}{body}", sent.len()))
            .await;
        sent.push(ack["ok"]["id"].as_i64().expect("stored"));
    }
    let mut live = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(Ok(frame)) = stalled.next().await {
            let WsMessage::Text(text) = frame else {
                continue;
            };
            let Some(event) = text.strip_prefix("42") else {
                continue;
            };
            let value: Value = serde_json::from_str(event).unwrap();
            if value[0] == "private message" {
                live.push(value[1]["id"].as_i64().unwrap());
            }
        }
    })
    .await
    .expect("the connection ends once what the kernel held is read");
    assert!(live.len() < sent.len(), "the budget overflowed");
    assert_eq!(live, sent[..live.len()], "a prefix, with no gap");

    let back = app.resume(&slow_session).await;
    let mut since = live.last().copied().unwrap_or(0);
    let mut restored = Vec::new();
    loop {
        let page = back
            .request("restore_state", json!({ "since": since }))
            .await;
        let messages = page["ok"]["messages"].as_array().unwrap().clone();
        restored.extend(messages.iter().map(|m| m["id"].as_i64().unwrap()));
        since = restored.last().copied().unwrap_or(since);
        if page["ok"]["hasMore"] == false {
            break;
        }
    }
    assert_eq!(restored, sent[live.len()..], "the rest, restored");
}

#[tokio::test]
async fn an_oversized_websocket_frame_closes_that_socket_only() {
    let app = spawn_app_with_small_payload().await;
    let ada = app.connect_as("ada").await;
    let (mut ws, _, _) = stalled_socket(app.addr, json!({ "username": "big" })).await;
    let huge = format!(
        r#"42["private message",{{"to":"{}","content":"{}"}}]"#,
        ada.user_id,
        "x".repeat(20_000)
    );
    let _ = ws.send(WsMessage::text(huge)).await;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("the server closes the socket");
    assert!(closed);
    assert!(ada.send(&ada.user_id, "others are unaffected").await["ok"].is_object());
    assert!(ada.sync().await["ok"]["messages"].as_array().unwrap().len() == 1);
}

async fn spawn_app_with_small_payload() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(|c| c.max_payload_bytes = 8 * 1024).await
}
