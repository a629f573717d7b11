//! docs/PROTOCOL.md and the server agree on every error: the documented ack codes are exactly
//! the server's, the documented handshake refusals are exactly what the server says, and each
//! one is produced over the wire by a request that should get it.

use std::collections::BTreeSet;

use protocol::ErrorCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, ChildServer, RedisServer, TestClient};

const PROTOCOL_MD: &str = include_str!("../../../docs/PROTOCOL.md");

/// The first column of the table under the heading `heading`: every `` `code` `` in it.
fn documented(heading: &str) -> BTreeSet<String> {
    let section = PROTOCOL_MD
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("docs/PROTOCOL.md has a `## {heading}` section"));
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(code, _)| code.to_owned())
        .collect()
}

/// The handshake refusals, each produced by a test: below, `too many sign-ups` in
/// `abuse::signup`, `name protected` in `passkeys`, `proof required` in `proof`, and
/// `session reused` in `rotation`.
const REFUSALS: [&str; 9] = [
    "invalid username",
    "too many connections",
    "session already active",
    "server unavailable",
    "too many sign-ups",
    "too many requests",
    "name protected",
    "proof required",
    "session reused",
];

#[test]
fn the_documented_ack_codes_are_exactly_the_servers() {
    let server: BTreeSet<String> = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    assert_eq!(documented("Error codes"), server);
}

#[test]
fn the_documented_handshake_refusals_are_exactly_those_tested_here() {
    let tested: BTreeSet<String> = REFUSALS.iter().map(|r| (*r).to_owned()).collect();
    assert_eq!(documented("Handshake refusals"), tested);
}

/// The `message` of a CONNECT_ERROR as the Rust client reports it (`… frame: {json}`).
fn message_of(refusal: &str) -> String {
    refusal
        .split_once(": ")
        .and_then(|(_, json)| serde_json::from_str::<Value>(json).ok())
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| refusal.to_owned())
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error ack: {answer}"))
}

#[tokio::test]
async fn each_ack_code_is_answered_to_the_request_that_earns_it() {
    let app = spawn_app().await;
    let a = app.connect_as("a").await;
    let b = app.connect_as("b").await;
    let message = |v: Value| a.request("private message", v);

    assert_eq!(code(&message(json!(42)).await), "invalid_payload");
    assert_eq!(
        code(&message(json!({ "to": b.user_id, "content": "   " })).await),
        "invalid_content"
    );
    assert_eq!(
        code(&message(json!({ "to": b.user_id, "content": "x", "clientId": "nope" })).await),
        "invalid_client_id"
    );
    assert_eq!(
        code(&message(json!({ "to": uuid::Uuid::new_v4().to_string(), "content": "x" })).await),
        "unknown_recipient"
    );
    assert_eq!(
        code(&a.request("restore_state", json!({ "since": -1 })).await),
        "invalid_cursor"
    );
    assert_eq!(
        code(
            &a.request("history", json!({ "with": b.user_id, "before": -5 }))
                .await
        ),
        "invalid_cursor"
    );
    assert_eq!(
        code(&a.request("restore_state", json!({ "since": "soon" })).await),
        "invalid_cursor"
    );
    assert_eq!(
        code(
            &a.request("history", json!({ "with": b.user_id, "before": "soon" }))
                .await
        ),
        "invalid_payload"
    );
    // `null` and absent mean 0, as documented.
    for since in [json!({ "since": null }), json!({}), Value::Null] {
        let answer = a.request("restore_state", since.clone()).await;
        assert!(answer.get("ok").is_some(), "{since}: {answer}");
    }
}

#[tokio::test]
async fn rate_limited_is_answered_past_the_message_budget() {
    let app = spawn_app_with(|c| {
        c.messages_per_sec = 0.001;
        c.message_burst = 1.0;
    })
    .await;
    let a = app.connect_as("a").await;
    let b = app.connect_as("b").await;
    assert!(a.send(&b.user_id, "one").await.get("ok").is_some());
    assert_eq!(code(&a.send(&b.user_id, "two").await), "rate_limited");
}

#[tokio::test]
async fn store_unavailable_is_answered_when_the_store_is_gone() {
    let redis = RedisServer::start_own().await;
    let dir = tempfile::tempdir().unwrap();
    let node = ChildServer::start_with(dir.path(), &redis.node_args()).await;
    let mut a = TestClient::connect(&node.url(), json!({ "username": "a" })).await;
    a.expect_session().await;
    drop(redis);
    let answer = a
        .request("history", json!({ "with": a.user_id.clone() }))
        .await;
    assert_eq!(code(&answer), "store_unavailable");
    // The handshake's refusal when the store is down.
    let mut refused = TestClient::connect(&node.url(), json!({ "username": "b" })).await;
    let error = refused.next("error").await;
    assert_eq!(message_of(error.as_str().unwrap()), "server unavailable");
}

#[tokio::test]
async fn each_handshake_refusal_is_sent_when_it_applies() {
    let app = spawn_app_with(|c| {
        c.max_sockets_per_user = 1;
        c.tab_policy = server::config::TabPolicy::Reject;
    })
    .await;
    assert_eq!(
        message_of(&app.refusal(json!({ "username": "" })).await),
        "invalid username"
    );
    let one = app.connect_as("one").await;
    assert_eq!(
        message_of(&app.refusal(json!({ "sessionID": one.session_id })).await),
        "too many connections"
    );

    let tabs = spawn_app_with(|c| c.tab_policy = server::config::TabPolicy::Reject).await;
    let first = tabs.connect_as("first").await;
    assert_eq!(
        message_of(&tabs.refusal(json!({ "sessionID": first.session_id })).await),
        "session already active"
    );
}

#[tokio::test]
async fn a_socket_that_keeps_sending_past_its_limit_is_let_go_and_its_session_waits() {
    let app = spawn_app_with(|c| {
        c.messages_per_sec = 0.001;
        c.message_burst = 1.0;
        c.max_refused_requests = 5;
    })
    .await;
    let mut a = app.connect_as("a").await;
    let b = app.connect_as("b").await;
    assert!(a.send(&b.user_id, "one").await.get("ok").is_some());
    for _ in 0..5 {
        assert_eq!(code(&a.send(&b.user_id, "again").await), "rate_limited");
    }
    a.next("close").await;
    assert_eq!(
        message_of(&app.refusal(json!({ "sessionID": a.session_id })).await),
        "too many requests"
    );
    // Other users are unaffected.
    let c = app.connect_as("c").await;
    assert!(c.send(&b.user_id, "hi").await.get("ok").is_some());
}
