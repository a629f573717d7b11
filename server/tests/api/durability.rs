use serde_json::json;

use crate::helpers::{spawn_app_in, ChildServer, TestClient};

#[tokio::test]
async fn a_graceful_restart_keeps_sessions_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    let ack = ada.send(&bob.user_id, "before restart").await;
    let (ada_session, bob_session) = (ada.session_id.clone(), bob.session_id.clone());
    app.stop().await;

    let app = spawn_app_in(dir.path()).await;
    let ada_again = app.resume(&ada_session).await;
    assert_eq!(ada_again.user_id, ada.user_id);
    let bob_again = app.resume(&bob_session).await;
    let restored = bob_again
        .request("restore_state", json!({ "since": 0 }))
        .await;
    assert_eq!(restored["ok"]["messages"][0]["id"], ack["ok"]["id"]);
    assert_eq!(restored["ok"]["messages"][0]["content"], "before restart");
}

#[tokio::test]
async fn kill_9_keeps_sessions_and_every_acked_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path()).await;
    let mut ada = TestClient::connect(&server.url(), json!({ "username": "ada" })).await;
    ada.expect_session().await;
    let mut bob = TestClient::connect(&server.url(), json!({ "username": "bob" })).await;
    bob.expect_session().await;

    let mut acked = Vec::new();
    for i in 0..50 {
        let ack = ada.send(&bob.user_id, &format!("m{i}")).await;
        acked.push(ack["ok"]["id"].as_i64().expect("acked"));
    }
    server.kill_9().await;

    let server = ChildServer::start(dir.path()).await;
    let mut bob_again =
        TestClient::connect(&server.url(), json!({ "sessionID": bob.session_id })).await;
    bob_again.expect_session().await;
    assert_eq!(bob_again.user_id, bob.user_id);
    let restored = bob_again
        .request("restore_state", json!({ "since": 0 }))
        .await;
    let ids: Vec<i64> = restored["ok"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, acked, "every acked message, once, in order");
    server.kill_9().await;
}

#[tokio::test]
async fn message_ids_keep_increasing_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let ada = app.connect_as("ada").await;
    let first = ada.send(&ada.user_id, "one").await["ok"]["id"]
        .as_i64()
        .unwrap();
    let session = ada.session_id.clone();
    app.stop().await;
    let app = spawn_app_in(dir.path()).await;
    let ada = app.resume(&session).await;
    let second = ada.send(&ada.user_id, "two").await["ok"]["id"]
        .as_i64()
        .unwrap();
    assert!(second > first);
}
