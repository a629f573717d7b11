use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use crate::helpers::{http_request, spawn_app, spawn_app_with, ChildServer, TestClient};

const POLLING: &str = "/socket.io/?EIO=4&transport=polling";

#[tokio::test]
async fn a_foreign_origin_is_refused_before_any_handshake() {
    let app = spawn_app().await;
    let (status, _, _) = http_request(app.addr, POLLING, &["Origin: http://evil.example"]).await;
    assert_eq!(status, 403);
    let (status, _, _) = http_request(
        app.addr,
        &format!("{POLLING}&sid=abc"),
        &["Origin: http://evil.example"],
    )
    .await;
    assert_eq!(status, 403, "requests with a sid are checked too");
    let (status, _, _) = http_request(
        app.addr,
        "/socket.io/?EIO=4&transport=websocket",
        &[
            "Origin: http://evil.example",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ],
    )
    .await;
    assert_eq!(status, 403, "websocket upgrades are checked");
}

#[tokio::test]
async fn several_origin_headers_are_refused() {
    let app = spawn_app().await;
    let own = format!("Origin: http://{}", app.addr);
    let (status, _, _) = http_request(
        app.addr,
        POLLING,
        &[own.as_str(), "Origin: http://evil.example"],
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_apps_own_origin_and_listed_origins_pass() {
    let app = spawn_app_with(|c| c.allowed_origins = vec!["https://chat.example".into()]).await;
    let own = format!("Origin: http://{}", app.addr);
    let (status, _, body) = http_request(app.addr, POLLING, &[own.as_str()]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with('0'), "an Engine.IO open packet: {body}");
    let (status, _, _) = http_request(app.addr, POLLING, &["Origin: https://chat.example"]).await;
    assert_eq!(status, 200);
    // On a loopback address, `localhost` names the same server.
    let localhost = format!("Origin: http://localhost:{}", app.addr.port());
    let (status, _, _) = http_request(app.addr, POLLING, &[localhost.as_str()]).await;
    assert_eq!(status, 200);
    let (status, _, _) = http_request(app.addr, POLLING, &["Origin: http://chat.example"]).await;
    assert_eq!(status, 403, "another scheme is another origin");
}

#[tokio::test]
async fn a_public_origin_replaces_the_listen_address_as_the_apps_origin() {
    let app = spawn_app_with(|c| c.public_origin = Some("https://Chat.Example:443/".into())).await;
    let (status, _, _) = http_request(app.addr, POLLING, &["Origin: https://chat.example"]).await;
    assert_eq!(status, 200);
    let own = format!("Origin: http://{}", app.addr);
    let (status, _, _) = http_request(app.addr, POLLING, &[own.as_str()]).await;
    assert_eq!(
        status, 403,
        "the address behind the proxy is not where pages come from"
    );
}

#[tokio::test]
async fn an_origin_flag_that_is_no_origin_stops_the_server_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (flag, value) in [
        ("--public-origin", "chat.example"),
        (
            "--allowed-origins",
            "https://ok.example,https://chat.example/app",
        ),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["--listen", "127.0.0.1:0", "--log", "warn", flag, value])
            .arg("--data-dir")
            .arg(dir.path())
            .output();
        let output = tokio::time::timeout(Duration::from_secs(10), output)
            .await
            .expect("exits at once")
            .expect("runs");
        assert!(!output.status.success());
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!stdout.contains("listening on"), "{stdout}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{stderr}");
    }
}

#[tokio::test]
async fn pages_carry_a_strict_content_security_policy_with_a_nonce() {
    let app = spawn_app().await;
    let (status, head, body) = http_request(app.addr, "/signin", &[]).await;
    assert_eq!(status, 200);
    let csp = head
        .lines()
        .find_map(|l| l.strip_prefix("content-security-policy: "))
        .expect("a CSP header");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("'unsafe-eval'"),
        "{csp}"
    );
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce in script-src");
    assert!(
        body.contains(&format!("nonce=\"{nonce}\"")),
        "the hydration script carries it"
    );
    let (_, head2, _) = http_request(app.addr, "/signin", &[]).await;
    assert!(!head2.contains(nonce), "a fresh nonce per response");
}

#[tokio::test]
async fn a_user_over_the_rate_limit_is_refused_and_others_are_not() {
    let app = spawn_app_with(|c| {
        c.messages_per_sec = 0.001;
        c.message_burst = 3.0;
    })
    .await;
    let ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    for _ in 0..3 {
        assert!(ada.send(&bob.user_id, "hi").await["ok"].is_object());
    }
    let refused = ada.send(&bob.user_id, "one too many").await;
    assert_eq!(refused["error"]["code"], "rate_limited");
    assert!(bob.send(&ada.user_id, "unaffected").await["ok"].is_object());
}

#[tokio::test]
async fn sockets_per_user_are_capped() {
    let app = spawn_app_with(|c| c.max_sockets_per_user = 2).await;
    let ada = app.connect_as("ada").await;
    let _tab2 = app.resume(&ada.session_id).await;
    let refusal = app.refusal(json!({ "sessionID": ada.session_id })).await;
    assert!(refusal.contains("too many connections"), "{refusal}");
}

#[tokio::test]
async fn session_ids_never_appear_in_the_logs_of_a_full_session() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = ChildServer::start_logging(dir.path(), "trace", Some(tx)).await;
    let mut ada = TestClient::connect(&server.url(), json!({ "username": "ada" })).await;
    ada.expect_session().await;
    let mut bob = TestClient::connect(&server.url(), json!({ "username": "bob" })).await;
    bob.expect_session().await;
    ada.send(&bob.user_id, "a secret message body").await;
    let mut again =
        TestClient::connect(&server.url(), json!({ "sessionID": ada.session_id })).await;
    again.expect_session().await;
    again.request("restore_state", json!({ "since": 0 })).await;
    let refused = TestClient::connect(
        &server.url(),
        json!({ "sessionID": bob.session_id.to_uppercase() }),
    )
    .await;
    drop(refused);
    ada.request("logout", json!(null)).await;
    ada.next("close").await;
    // The server writes its lines as it goes, and a kill loses what it had not written yet: take
    // what arrives until the trace shows a whole session (or the wait ends), then stop it.
    let mut lines = Vec::new();
    let enough = tokio::time::Instant::now() + crate::helpers::WAIT;
    while lines.len() <= 10 {
        match tokio::time::timeout_at(enough, rx.recv()).await {
            Ok(Some(line)) => lines.push(line),
            _ => break,
        }
    }
    // Stop the server: its stdout closes, the reader drains it and drops the sender.
    server.kill_9().await;
    while let Some(line) = tokio::time::timeout(crate::helpers::WAIT, rx.recv())
        .await
        .expect("the log stream ends once the server is gone")
    {
        lines.push(line);
    }
    assert!(lines.len() > 10, "trace logging produced output: {lines:?}");
    let log = lines.join("\n");
    for secret in [&ada.session_id, &bob.session_id] {
        let leaks: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(secret.as_str()))
            .collect();
        assert!(
            leaks.is_empty(),
            "a session id leaked into the logs: {leaks:?}"
        );
        assert!(
            !log.contains(&secret.to_uppercase()),
            "a session id leaked into the logs"
        );
    }
    assert!(
        !log.contains("a secret message body"),
        "a message body leaked into the logs"
    );
}

#[tokio::test]
async fn garbage_frames_wrong_types_and_unknown_events_never_hurt_other_users() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let mut bob = app.connect_as("bob").await;
    let junk = [
        "",
        "9",
        "4",
        "49",
        "42",
        "42garbage",
        "42[",
        "42[1,2]",
        "42{}",
        "42[\"private message\"]",
        "42[\"private message\",null]",
        "42[\"private message\",[1,2,3]]",
        "4299999999999999999999[\"history\",{}]",
        "42[\"no such event\",{}]",
        "43abc",
        "451-[\"x\",{\"_placeholder\":true,\"num\":0}]",
        "40{\"username\":\"again\"}",
        "41",
        "2probe",
        "5",
        "6",
        "0",
        "1",
    ];
    for frame in junk {
        let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
        let _ = ws.next().await; // open
        let _ = ws
            .send(WsMessage::text(r#"40{"username":"mallory"}"#))
            .await;
        let _ = ws.send(WsMessage::text(frame)).await;
        let _ = ws.send(WsMessage::binary(vec![0xff, 0x00, 0x13])).await;
        drop(ws);
    }
    // Everyone else carries on.
    assert!(ada.send(&bob.user_id, "still fine").await["ok"].is_object());
    assert_eq!(bob.next("private message").await["content"], "still fine");
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_oversized_polling_payload_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.max_payload_bytes = 8 * 1024).await;
    let (status, _, body) = http_request(app.addr, POLLING, &[]).await;
    assert_eq!(status, 200);
    let open: serde_json::Value = serde_json::from_str(&body[1..]).expect("open packet");
    let sid = open["sid"].as_str().unwrap();
    let payload = format!("4{}", "x".repeat(20_000));
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "POST {POLLING}&sid={sid} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        app.addr,
        payload.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    let status: u16 = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert_eq!(status, 413, "{response}");
}

#[tokio::test]
async fn a_transport_that_never_connects_to_the_namespace_is_dropped() {
    use futures_util::StreamExt;
    let app = spawn_app_with(|c| c.connect_timeout_ms = 300).await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let closed = tokio::time::timeout(crate::helpers::WAIT, async {
        while let Some(Ok(frame)) = ws.next().await {
            if frame.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closed the idle transport");
}
