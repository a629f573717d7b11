use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};
use server::config::TabPolicy;

#[tokio::test]
async fn under_the_share_policy_tabs_of_a_session_coexist() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let tab2 = app.resume(&ada.session_id).await;
    assert_eq!(tab2.user_id, ada.user_id);
}

#[tokio::test]
async fn under_the_reject_policy_a_second_tab_is_refused_unless_it_takes_over() {
    let app = spawn_app_with(|c| c.tab_policy = TabPolicy::Reject).await;
    let mut ada = app.connect_as("ada").await;
    let refusal = app.refusal(json!({ "sessionID": ada.session_id })).await;
    assert!(refusal.contains("session already active"), "{refusal}");

    let mut taker = app
        .connect(json!({ "sessionID": ada.session_id, "takeover": true }))
        .await;
    taker.expect_session().await;
    assert_eq!(taker.user_id, ada.user_id);
    ada.next("session moved").await;
    ada.next("close").await;

    // The replaced tab can take it back the same way.
    let mut back = app
        .connect(json!({ "sessionID": ada.session_id, "takeover": true }))
        .await;
    back.expect_session().await;
    taker.next("session moved").await;
    taker.next("close").await;
}
