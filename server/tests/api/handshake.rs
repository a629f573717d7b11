use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_handshake_without_auth_is_refused_with_invalid_username() {
    let app = spawn_app().await;
    assert!(app.refusal(json!(null)).await.contains("invalid username"));
    assert!(app.refusal(json!({})).await.contains("invalid username"));
}

#[tokio::test]
async fn an_empty_or_blank_username_is_refused() {
    let app = spawn_app().await;
    assert!(app
        .refusal(json!({ "username": "" }))
        .await
        .contains("invalid username"));
    assert!(app
        .refusal(json!({ "username": "   " }))
        .await
        .contains("invalid username"));
    assert!(app
        .refusal(json!({ "username": "x".repeat(33) }))
        .await
        .contains("invalid username"));
}

#[tokio::test]
async fn an_unknown_or_malformed_session_id_without_username_is_refused() {
    let app = spawn_app().await;
    for session_id in [
        json!("no-such-session"),
        json!(42),
        json!({ "a": 1 }),
        json!([]),
        json!(""),
    ] {
        let refusal = app.refusal(json!({ "sessionID": session_id })).await;
        assert!(
            refusal.contains("invalid username"),
            "{session_id}: {refusal}"
        );
    }
}

#[tokio::test]
async fn a_new_user_gets_distinct_session_and_user_ids_and_sees_itself_online() {
    let app = spawn_app().await;
    let ada = app.connect_as("  Ada  ").await;
    assert_ne!(ada.session_id, ada.user_id);
    assert!(ada.session_id.len() >= 32);
    let me = ada
        .users
        .iter()
        .find(|u| u["userID"] == ada.user_id.as_str())
        .expect("the caller is in users");
    assert_eq!(me["username"], "Ada");
    assert_eq!(me["connected"], true);
    assert_eq!(me["messages"], json!([]));
}

#[tokio::test]
async fn resuming_by_session_id_keeps_the_user_and_ignores_a_username() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let mut again = app
        .connect(json!({ "sessionID": ada.session_id, "username": "mallory" }))
        .await;
    again.expect_session().await;
    assert_eq!(again.user_id, ada.user_id);
    assert_eq!(again.session_id, ada.session_id);
    let me = again
        .users
        .iter()
        .find(|u| u["userID"] == ada.user_id.as_str())
        .unwrap();
    assert_eq!(me["username"], "ada");
}

#[tokio::test]
async fn an_unknown_session_id_with_a_username_creates_a_new_session() {
    let app = spawn_app().await;
    let mut client = app
        .connect(json!({ "sessionID": "forgotten", "username": "bea" }))
        .await;
    client.expect_session().await;
    assert_ne!(client.session_id, "forgotten");
}

#[tokio::test]
async fn other_users_learn_of_a_connection_without_any_session_id() {
    let app = spawn_app().await;
    let mut ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    let announced = ada.next("user connected").await;
    assert_eq!(
        announced,
        json!({ "userID": bob.user_id, "username": "bob", "connected": true, "messages": [] })
    );
    assert!(!announced.to_string().contains(&bob.session_id));
}
