use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn logout_disconnects_every_socket_of_the_session_and_ends_it() {
    let app = spawn_app().await;
    let mut ada = app.connect_as("ada").await;
    let mut tab2 = app.resume(&ada.session_id).await;
    let mut bob = app.connect_as("bob").await;

    let ack = ada.request("logout", json!(null)).await;
    assert_eq!(ack, json!({ "ok": true }));
    ada.next("close").await;
    tab2.next("close").await;
    assert_eq!(bob.next("user disconnected").await, json!(ada.user_id));

    let refusal = app.refusal(json!({ "sessionID": ada.session_id })).await;
    assert!(refusal.contains("invalid username"), "{refusal}");
    // Bob's session is untouched.
    let bob_again = app.resume(&bob.session_id).await;
    assert_eq!(bob_again.user_id, bob.user_id);
}

#[tokio::test]
async fn logout_everywhere_ends_every_session_of_the_user() {
    let app = spawn_app().await;
    let mut ada = app.connect_as("ada").await;
    let ack = ada.request("logout", json!({ "everywhere": true })).await;
    assert_eq!(ack, json!({ "ok": true }));
    ada.next("close").await;
    let refusal = app.refusal(json!({ "sessionID": ada.session_id })).await;
    assert!(refusal.contains("invalid username"));
}

#[tokio::test]
async fn every_tab_learns_how_many_tabs_its_user_has() {
    let app = spawn_app().await;
    let mut ada = app.connect_as("ada").await;
    assert_eq!(ada.next("tabs").await, json!({ "count": 1 }));
    let tab2 = app.resume(&ada.session_id).await;
    assert_eq!(ada.next("tabs").await, json!({ "count": 2 }));
    tab2.close().await;
    assert_eq!(ada.next("tabs").await, json!({ "count": 1 }));
}
