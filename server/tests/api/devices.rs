//! Devices (issue #25, slice 1): `devices` lists every session of the account with the asking
//! one marked, `revoke_device` ends one and closes its sockets within a second, on one node and
//! across two over Redis; another account's device is unknown and nothing changes.
//!
//! A second session of a user cannot be made over the wire yet (a passkey sign-in will, in
//! slice 4), so the tests make it in the store, as that sign-in will.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use server::domain::UserId;
use server::store::sqlite::{SessionPolicy, SqliteStore};
use server::store::Store;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::{
    on_redis_and_cluster, spawn_app_in, ChildServer, SharedRedis, TestApp, TestClient,
};

/// Revocation must close the revoked session's sockets within this.
const WITHIN: Duration = Duration::from_secs(1);

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

fn policy() -> SessionPolicy {
    SessionPolicy {
        idle: Duration::from_secs(3600),
        max_age: Duration::from_secs(7200),
    }
}

/// Another session of `user` made in the SQLite store of `data_dir` (a second instance on the
/// same file, only for this write), labelled `label`; its secret.
pub(crate) async fn second_device(data_dir: &Path, user: &str, label: &str) -> String {
    let store = SqliteStore::open(data_dir, policy()).expect("the store opens");
    let user = UserId::parse(user).expect("a user id");
    let (session, _) = store
        .create_device_session(&user, label, 50, None)
        .await
        .unwrap()
        .created()
        .expect("the user exists");
    session.expose_secret().to_owned()
}

/// Signs `name` up over a raw WebSocket whose upgrade request carries `user_agent`; its secret.
async fn sign_up_with_user_agent(
    addr: std::net::SocketAddr,
    name: &str,
    user_agent: &str,
) -> String {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("user-agent", user_agent.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
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
            let auth = json!({ "username": name });
            ws.send(WsMessage::text(format!("40{auth}"))).await.unwrap();
        } else if let Some(event) = text.strip_prefix("42") {
            let args: Vec<Value> = serde_json::from_str(event).unwrap();
            if args[0] == "session" {
                let _ = ws.close(None).await;
                return args[1]["sessionID"].as_str().unwrap().to_owned();
            }
        } else if text.starts_with("44") {
            panic!("refused: {text}");
        }
    }
}

fn listed(answer: &Value) -> Vec<Value> {
    answer["ok"]["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("a device list: {answer}"))
        .clone()
}

async fn devices_of(client: &TestClient) -> Vec<Value> {
    listed(&client.request("devices", json!({})).await)
}

/// The device id of the `current` (or not) entry of `client`'s list with this browser.
async fn id_of(client: &TestClient, browser: &str) -> String {
    let devices = devices_of(client).await;
    let device = devices
        .iter()
        .find(|d| d["browser"] == browser)
        .unwrap_or_else(|| panic!("{browser} in {devices:?}"));
    device["deviceID"].as_str().unwrap().to_owned()
}

/// Waits until `client`'s socket is closed by the server, at most `within`.
async fn closed_within(client: &mut TestClient, within: Duration) {
    tokio::time::timeout(within, client.next("close"))
        .await
        .unwrap_or_else(|_| panic!("the socket was not closed within {within:?}"));
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("ok")
}

async fn app_in(dir: &tempfile::TempDir) -> TestApp {
    spawn_app_in(dir.path()).await
}

#[tokio::test]
async fn the_device_list_marks_this_session_and_names_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir).await;
    let laptop_secret = sign_up_with_user_agent(app.addr, "ada", FIREFOX).await;
    let laptop = app.resume(&laptop_secret).await;
    let phone_secret = second_device(dir.path(), &laptop.user_id, "Safari on iOS").await;
    let phone = app.resume(&phone_secret).await;
    assert_eq!(phone.user_id, laptop.user_id);
    let bob = app.connect_as("bob").await;

    let devices = devices_of(&laptop).await;
    assert_eq!(devices.len(), 2, "{devices:?}");
    let browsers: Vec<(&str, bool)> = devices
        .iter()
        .map(|d| (d["browser"].as_str().unwrap(), d["current"] == true))
        .collect();
    assert!(
        browsers.contains(&("Firefox on Linux", true)),
        "{browsers:?}"
    );
    assert!(browsers.contains(&("Safari on iOS", false)), "{browsers:?}");
    for device in &devices {
        let id = device["deviceID"].as_str().unwrap();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        for secret in [&laptop_secret, &phone_secret] {
            assert!(!secret.contains(id) && !id.contains(secret.as_str()));
        }
        let (first, last) = (
            device["firstSeen"].as_i64().unwrap(),
            device["lastSeen"].as_i64().unwrap(),
        );
        assert!(first > 0 && last >= first, "{device}");
        let keys: Vec<&String> = device.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 5, "nothing else is told: {device}");
    }
    // The other device sees the same two, itself current.
    let from_phone = devices_of(&phone).await;
    let current: Vec<&str> = from_phone
        .iter()
        .filter(|d| d["current"] == true)
        .map(|d| d["browser"].as_str().unwrap())
        .collect();
    assert_eq!(current, ["Safari on iOS"]);
    // Another user sees only their own (a client without a User-Agent is "Other browser").
    let bobs = devices_of(&bob).await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0]["browser"], "Other browser");
    assert_eq!(bobs[0]["current"], true);
}

#[tokio::test]
async fn revoking_another_device_closes_its_sockets_and_leaves_this_one() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir).await;
    let laptop = app.connect_as("ada").await;
    let phone_secret = second_device(dir.path(), &laptop.user_id, "Safari on iOS").await;
    let mut phone = app.resume(&phone_secret).await;
    let mut phone_tab = app.resume(&phone_secret).await;
    let phone_id = id_of(&laptop, "Safari on iOS").await;

    let started = Instant::now();
    let ack = laptop
        .request("revoke_device", json!({ "deviceID": phone_id }))
        .await;
    assert_eq!(ack, json!({ "ok": true }));
    closed_within(&mut phone, WITHIN).await;
    closed_within(&mut phone_tab, WITHIN).await;
    eprintln!(
        "revoked device's sockets closed after {:?}",
        started.elapsed()
    );

    let refusal = app.refusal(json!({ "sessionID": phone_secret })).await;
    assert!(
        refusal.contains("invalid username"),
        "no longer resumes: {refusal}"
    );
    assert!(laptop.sync().await.get("ok").is_some(), "this one stays");
    let left = devices_of(&laptop).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["current"], true);
    let again = laptop
        .request("revoke_device", json!({ "deviceID": phone_id }))
        .await;
    assert_eq!(code(&again), "unknown_device", "once");
}

#[tokio::test]
async fn revoking_this_device_signs_this_browser_out_and_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir).await;
    let mut laptop = app.connect_as("ada").await;
    let phone_secret = second_device(dir.path(), &laptop.user_id, "Safari on iOS").await;
    let phone = app.resume(&phone_secret).await;
    let devices = devices_of(&laptop).await;
    let mine = devices.iter().find(|d| d["current"] == true).unwrap();

    let ack = laptop
        .request("revoke_device", json!({ "deviceID": mine["deviceID"] }))
        .await;
    assert_eq!(
        ack,
        json!({ "ok": true }),
        "answered before the socket closes"
    );
    closed_within(&mut laptop, WITHIN).await;
    let refusal = app.refusal(json!({ "sessionID": laptop.session_id })).await;
    assert!(refusal.contains("invalid username"), "{refusal}");
    assert!(phone.sync().await.get("ok").is_some());
    assert_eq!(devices_of(&phone).await.len(), 1);
}

#[tokio::test]
async fn a_device_of_another_user_is_unknown_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(&dir).await;
    let ada = app.connect_as("ada").await;
    let phone_secret = second_device(dir.path(), &ada.user_id, "Safari on iOS").await;
    let mut phone = app.resume(&phone_secret).await;
    let mallory = app.connect_as("mallory").await;
    let ada_ids: Vec<String> = devices_of(&ada)
        .await
        .iter()
        .map(|d| d["deviceID"].as_str().unwrap().to_owned())
        .collect();

    for id in &ada_ids {
        let answer = mallory
            .request("revoke_device", json!({ "deviceID": id }))
            .await;
        assert_eq!(code(&answer), "unknown_device", "{answer}");
    }
    let answer = ada
        .request("revoke_device", json!({ "deviceID": "0123456789abcdef" }))
        .await;
    assert_eq!(code(&answer), "unknown_device");
    for bad in [
        json!(null),
        json!("0123456789abcdef"),
        json!({}),
        json!({ "deviceID": 7 }),
        json!({ "deviceID": "x".repeat(10_000) }),
        json!({ "deviceID": ada.session_id }),
    ] {
        let answer = ada.request("revoke_device", bad.clone()).await;
        assert_eq!(code(&answer), "invalid_payload", "{bad}: {answer}");
    }
    assert_eq!(
        code(&ada.request("devices", json!(5)).await),
        "invalid_payload"
    );

    // Nothing changed: both of ada's devices are listed and connected.
    assert_eq!(devices_of(&ada).await.len(), 2);
    assert!(phone.sync().await.get("ok").is_some());
    assert!(phone.drain("close").is_empty());
    app.resume(&phone_secret).await;
    app.resume(&ada.session_id).await;
}

/// Two nodes over one Redis: a device revoked on node 0 has its socket on node 1 closed within
/// a second, and its secret no longer resumes on either node.
async fn a_revoked_device_is_disconnected_on_the_other_node_within_a_second(redis: SharedRedis) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut nodes = Vec::new();
    for dir in &dirs {
        nodes.push(ChildServer::start_with(dir.path(), &redis.node_args()).await);
    }
    let url = |i: usize| nodes[i].url();
    let mut laptop = TestClient::connect(&url(0), json!({ "username": "ada" })).await;
    laptop.expect_session().await;
    let store: Arc<dyn Store> = Arc::new(redis.store(policy()).await);
    let (phone_secret, _) = store
        .create_device_session(
            &UserId::parse(&laptop.user_id).unwrap(),
            "Safari on iOS",
            50,
            None,
        )
        .await
        .unwrap()
        .created()
        .expect("ada exists");
    let phone_secret = phone_secret.expose_secret().to_owned();
    let mut phone = TestClient::connect(&url(1), json!({ "sessionID": phone_secret })).await;
    phone.expect_session().await;
    let phone_id = id_of(&laptop, "Safari on iOS").await;

    let started = Instant::now();
    let ack = laptop
        .request("revoke_device", json!({ "deviceID": phone_id }))
        .await;
    assert_eq!(ack, json!({ "ok": true }));
    closed_within(&mut phone, WITHIN).await;
    eprintln!("closed on the other node after {:?}", started.elapsed());
    for node in 0..2 {
        let mut again = TestClient::connect(&url(node), json!({ "sessionID": phone_secret })).await;
        let refusal = again.next("error").await;
        assert!(
            refusal
                .as_str()
                .unwrap_or_default()
                .contains("invalid username"),
            "node {node}: {refusal}"
        );
    }
    assert!(laptop.sync().await.get("ok").is_some());
    laptop.drain("user disconnected");
    assert_eq!(devices_of(&laptop).await.len(), 1);
}

on_redis_and_cluster!(a_revoked_device_is_disconnected_on_the_other_node_within_a_second);
