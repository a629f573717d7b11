use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestClient};

#[tokio::test]
async fn two_tabs_of_one_user_are_one_entry_in_users() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let _tab2 = app.resume(&ada.session_id).await;
    let bob = app.connect_as("bob").await;
    let ada_entries = bob
        .users
        .iter()
        .filter(|u| u["userID"] == ada.user_id.as_str())
        .count();
    assert_eq!(ada_entries, 1);
    assert_eq!(bob.users.len(), 2);
}

#[tokio::test]
async fn closing_one_of_two_tabs_keeps_the_user_online() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let tab2 = app.resume(&ada.session_id).await;
    let mut bob = app.connect_as("bob").await;

    tab2.close().await;
    // A third tab opening after the close proves the close was handled first.
    let tab3 = app.resume(&ada.session_id).await;
    let state = bob.sync().await;
    let ada_presence = state["ok"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userID"] == ada.user_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(ada_presence["connected"], true);
    assert!(bob.drain("user disconnected").is_empty());

    ada.close().await;
    tab3.close().await;
    assert_eq!(bob.next("user disconnected").await, json!(ada.user_id));
}

#[tokio::test]
async fn twenty_tabs_closing_at_once_announce_offline_exactly_once() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let mut tabs: Vec<TestClient> = vec![ada];
    let session_id = tabs[0].session_id.clone();
    for _ in 1..20 {
        tabs.push(app.resume(&session_id).await);
    }
    let mut bob = app.connect_as("bob").await;
    let ada_id = tabs[0].user_id.clone();

    join_all(tabs.iter().map(|t| t.close())).await;
    assert_eq!(bob.next("user disconnected").await, json!(ada_id));

    // Let every disconnect handler finish, then make sure no second announcement follows.
    let state = bob.sync().await;
    let online = |state: &serde_json::Value| {
        state["ok"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["userID"] == ada_id.as_str() && u["connected"] == true)
    };
    assert!(!online(&state));
    // socketioxide keeps a closing socket in its rooms until its disconnect handler returns:
    // once the room is empty, every handler has run and queued whatever it was going to send.
    app.until_room_is_empty(&ada_id).await;
    bob.sync().await;
    assert!(
        bob.drain("user disconnected").is_empty(),
        "offline announced once"
    );
}

#[tokio::test]
async fn an_offline_recipient_finds_the_message_on_return() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    let (bob_session, bob_id) = (bob.session_id.clone(), bob.user_id.clone());
    bob.close().await;

    let ack = ada.send(&bob_id, "while you were away").await;
    let id = ack["ok"]["id"].as_i64().unwrap();

    let back = app.resume(&bob_session).await;
    let with_ada = back
        .users
        .iter()
        .find(|u| u["userID"] == ada.user_id.as_str())
        .unwrap();
    assert_eq!(with_ada["messages"][0]["content"], "while you were away");
    assert_eq!(with_ada["connected"], true);

    let restored = back
        .request("restore_state", json!({ "since": id - 1 }))
        .await;
    assert_eq!(restored["ok"]["messages"][0]["id"], id);
    assert_eq!(restored["ok"]["hasMore"], false);
}

#[tokio::test]
async fn a_peers_only_restore_names_just_the_people_in_its_messages() {
    let app = crate::helpers::spawn_app().await;
    let ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    let _cat = app.connect_as("cat").await;
    let ack = ada.send(&bob.user_id, "hello").await;
    let id = ack["ok"]["id"].as_i64().unwrap();

    let names = |answer: &Value| -> Vec<String> {
        let mut names: Vec<String> = answer["ok"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let peers = bob
        .request(
            "restore_state",
            json!({ "since": id - 1, "peersOnly": true }),
        )
        .await;
    assert_eq!(peers["ok"]["messages"][0]["id"], id);
    assert_eq!(names(&peers), ["ada", "bob"]);
    let ada_entry = &peers["ok"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "ada")
        .unwrap()
        .clone();
    assert_eq!(ada_entry["connected"], true);

    let nothing_new = bob
        .request("restore_state", json!({ "since": id, "peersOnly": true }))
        .await;
    assert_eq!(nothing_new["ok"]["users"], json!([]));
    assert_eq!(nothing_new["ok"]["messages"], json!([]));

    // Without it (or with false), everyone, as before.
    let everyone = bob
        .request("restore_state", json!({ "since": id, "peersOnly": false }))
        .await;
    assert_eq!(names(&everyone), ["ada", "bob", "cat"]);
}

#[tokio::test]
async fn beyond_the_full_roster_threshold_users_lists_contacts_and_online_users_and_the_rest_is_paged(
) {
    let app = crate::helpers::spawn_app_with(|c| c.roster_full_max = 2).await;
    let ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    let cat = app.connect_as("cat").await;
    ada.send(&cat.user_id, "hi cat").await;
    bob.close().await;
    cat.close().await;
    app.until_room_is_empty(&bob.user_id).await;
    app.until_room_is_empty(&cat.user_id).await;

    let again = app.resume(&ada.session_id).await;
    let listed: Vec<&str> = again
        .users
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["ada", "cat"],
        "the viewer and a contact; offline strangers are not listed"
    );
    // A contact is a contact whether or not the roster carries its messages.
    let mut holding_all = app
        .connect(json!({ "sessionID": ada.session_id, "since": i64::MAX }))
        .await;
    holding_all.expect_session().await;
    let listed: Vec<&str> = holding_all
        .users
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["ada", "cat"]);
    assert!(holding_all.users.iter().all(|u| u["messages"] == json!([])));
    holding_all.close().await;

    let page = again
        .request("users_page", json!({ "offset": 0, "limit": 10 }))
        .await;
    assert_eq!(page["ok"]["total"], 3);
    assert_eq!(page["ok"]["users"].as_array().unwrap().len(), 3);
    let page = again
        .request("users_page", json!({ "offset": 2, "limit": 10 }))
        .await;
    assert_eq!(page["ok"]["users"][0]["username"], "cat");

    // Presence fan-out is bounded too: a contact hears of ada's new tab, a stranger does not.
    let mut cat = app.resume(&cat.session_id).await;
    let mut bob = app.resume(&bob.session_id).await;
    let _tab = app.resume(&ada.session_id).await;
    assert_eq!(
        cat.next("user connected").await["userID"],
        ada.user_id.as_str()
    );
    bob.sync().await;
    let heard: Vec<_> = bob
        .drain("user connected")
        .into_iter()
        .filter(|e| e["userID"] == ada.user_id.as_str())
        .collect();
    assert!(heard.is_empty(), "a stranger is not told: {heard:?}");
}

/// Whether `client` heard ada come or go: every `user connected` / `user disconnected` of hers
/// it received before a round trip.
async fn heard_of(client: &mut TestClient, user_id: &str) -> Vec<Value> {
    client.sync().await;
    let connected = client.drain("user connected");
    let disconnected = client.drain("user disconnected");
    connected
        .into_iter()
        .filter(|e| e["userID"] == user_id)
        .chain(disconnected.into_iter().filter(|id| id == user_id))
        .collect()
}

#[tokio::test]
async fn beyond_the_full_roster_going_offline_is_announced_to_contacts_only() {
    let app = crate::helpers::spawn_app_with(|c| c.roster_full_max = 2).await;
    let mut cat = app.connect_as("cat").await;
    let mut bob = app.connect_as("bob").await;
    let ada = app.connect_as("ada").await;
    // A contact made after connecting counts as one: who hears is decided when it is said.
    ada.send(&cat.user_id, "hi cat").await;
    assert!(heard_of(&mut bob, &ada.user_id).await.is_empty());

    ada.close().await;
    assert_eq!(cat.next("user disconnected").await, json!(ada.user_id));
    let heard = heard_of(&mut bob, &ada.user_id).await;
    assert!(heard.is_empty(), "a stranger is not told: {heard:?}");
}

#[tokio::test]
async fn beyond_the_full_roster_signing_out_everywhere_is_announced_to_contacts_only() {
    let app = crate::helpers::spawn_app_with(|c| c.roster_full_max = 2).await;
    let mut cat = app.connect_as("cat").await;
    let mut bob = app.connect_as("bob").await;
    let ada = app.connect_as("ada").await;
    let _tab2 = app.resume(&ada.session_id).await;
    ada.send(&cat.user_id, "hi cat").await;
    heard_of(&mut bob, &ada.user_id).await;

    let ack = ada.request("logout", json!({ "everywhere": true })).await;
    assert_eq!(ack["ok"], true);
    assert_eq!(cat.next("user disconnected").await, json!(ada.user_id));
    app.until_room_is_empty(&ada.user_id).await;
    let heard = heard_of(&mut bob, &ada.user_id).await;
    assert!(heard.is_empty(), "a stranger is not told: {heard:?}");
    cat.sync().await;
    assert!(
        cat.drain("user disconnected").is_empty(),
        "offline announced once"
    );
}
