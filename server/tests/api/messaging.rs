use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_message_reaches_the_recipient_and_the_senders_other_tab_but_not_the_sending_tab() {
    let app = spawn_app().await;
    let mut ada = app.connect_as("ada").await;
    let mut ada_tab2 = app.resume(&ada.session_id).await;
    let mut bob = app.connect_as("bob").await;

    let ack = ada.send(&bob.user_id, "hello bob").await;
    let id = ack["ok"]["id"].as_i64().expect("ack carries an id");
    assert!(ack["ok"]["ts"].as_i64().unwrap() > 0);

    let at_bob = bob.next("private message").await;
    assert_eq!(at_bob["content"], "hello bob");
    assert_eq!(at_bob["from"], ada.user_id.as_str());
    assert_eq!(at_bob["to"], bob.user_id.as_str());
    assert_eq!(at_bob["id"], id);
    let at_tab2 = ada_tab2.next("private message").await;
    assert_eq!(at_tab2, at_bob);

    // The ack was queued after any copy the sending socket could have been sent.
    assert!(ada.drain("private message").is_empty());
}

#[tokio::test]
async fn a_forged_from_is_ignored() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let mut bob = app.connect_as("bob").await;
    let eve = app.connect_as("eve").await;
    let ack = ada
        .request(
            "private message",
            json!({ "to": bob.user_id, "content": "hi", "from": eve.user_id }),
        )
        .await;
    assert!(ack["ok"].is_object(), "{ack}");
    let received = bob.next("private message").await;
    assert_eq!(received["from"], ada.user_id.as_str());
}

#[tokio::test]
async fn a_third_user_never_sees_other_peoples_conversations() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let mut bob = app.connect_as("bob").await;
    let mut cat = app.connect_as("cat").await;
    ada.send(&bob.user_id, "secret").await;
    bob.next("private message").await;
    bob.send(&ada.user_id, "reply").await;

    let restored = cat.sync().await;
    assert_eq!(restored["ok"]["messages"], json!([]));
    assert!(cat.drain("private message").is_empty());
    let later = app.connect_as("dan").await;
    for entry in &later.users {
        assert_eq!(entry["messages"], json!([]), "{entry}");
    }
    let cat_again = app.resume(&cat.session_id).await;
    for entry in &cat_again.users {
        assert_eq!(entry["messages"], json!([]), "{entry}");
    }
    let history = cat.request("history", json!({ "with": ada.user_id })).await;
    assert_eq!(history["ok"]["messages"], json!([]));
}

#[tokio::test]
async fn users_holds_each_conversation_under_the_peer() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let mut bob = app.connect_as("bob").await;
    ada.send(&bob.user_id, "one").await;
    bob.next("private message").await;
    bob.send(&ada.user_id, "two").await;
    ada.send(&ada.user_id, "note to self").await;

    let again = app.resume(&ada.session_id).await;
    let entry = |id: &str| {
        again
            .users
            .iter()
            .find(|u| u["userID"] == id)
            .unwrap()
            .clone()
    };
    let with_bob = entry(&bob.user_id);
    let texts: Vec<_> = with_bob["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["one", "two"]);
    assert_eq!(entry(&ada.user_id)["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_resuming_client_that_names_the_newest_id_it_holds_gets_only_newer_messages_in_users() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let mut bob = app.connect_as("bob").await;
    let one = ada.send(&bob.user_id, "one").await["ok"]["id"]
        .as_i64()
        .unwrap();
    bob.next("private message").await;
    let two = bob.send(&ada.user_id, "two").await["ok"]["id"]
        .as_i64()
        .unwrap();
    let resume = |since: serde_json::Value| {
        let auth = json!({ "sessionID": ada.session_id, "since": since });
        let app = &app;
        async move {
            let mut tab = app.connect(auth).await;
            tab.expect_session().await;
            tab
        }
    };
    let with_bob = |tab: &crate::helpers::TestClient| -> Vec<String> {
        let entry = tab
            .users
            .iter()
            .find(|u| u["userID"] == bob.user_id.as_str());
        entry.unwrap()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    };

    let tab = resume(json!(one)).await;
    assert_eq!(with_bob(&tab), ["two"]);
    assert_eq!(tab.users.len(), 2, "everyone is still listed");
    let tab = resume(json!(two)).await;
    assert!(with_bob(&tab).is_empty());
    // Anything but a positive integer is no position: the tutorial's whole conversation.
    for unusable in [json!(0), json!(-1), json!("7"), json!(1.5), json!(null)] {
        let tab = resume(unusable.clone()).await;
        assert_eq!(with_bob(&tab), ["one", "two"], "since: {unusable}");
    }
}

#[tokio::test]
async fn a_message_to_yourself_is_stored_once_and_reaches_your_other_tabs() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let mut tab2 = app.resume(&ada.session_id).await;
    let ack = ada.send(&ada.user_id, "memo").await;
    assert!(ack["ok"].is_object());
    let received = tab2.next("private message").await;
    assert_eq!(received["content"], "memo");
    let restored = ada.sync().await;
    assert_eq!(restored["ok"]["messages"].as_array().unwrap().len(), 1);
    tab2.sync().await;
    assert!(tab2.drain("private message").is_empty(), "delivered once");
}

#[tokio::test]
async fn the_same_client_id_sent_twice_is_stored_once_and_acked_with_the_same_id() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let mut bob = app.connect_as("bob").await;
    let payload = json!({
        "to": bob.user_id,
        "content": "once",
        "clientId": "6f1c2a8e-4b7d-4c39-9a51-2f0e8d7c6b5a",
    });
    let first = ada.request("private message", payload.clone()).await;
    let second = ada.request("private message", payload).await;
    assert_eq!(first["ok"]["id"], second["ok"]["id"]);
    let delivered = bob.next("private message").await;
    assert_eq!(
        delivered["clientId"],
        "6f1c2a8e-4b7d-4c39-9a51-2f0e8d7c6b5a"
    );
    bob.sync().await;
    assert!(bob.drain("private message").is_empty(), "delivered once");
    let restored = bob.sync().await;
    assert_eq!(restored["ok"]["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_messages_get_typed_errors_and_change_nothing() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    let cases = [
        (
            json!({ "to": bob.user_id, "content": "" }),
            "invalid_content",
        ),
        (
            json!({ "to": bob.user_id, "content": "  " }),
            "invalid_content",
        ),
        (
            json!({ "to": bob.user_id, "content": "x".repeat(4001) }),
            "invalid_content",
        ),
        (
            json!({ "to": "nobody", "content": "hi" }),
            "unknown_recipient",
        ),
        (
            json!({ "to": "00000000-0000-4000-8000-000000000000", "content": "hi" }),
            "unknown_recipient",
        ),
        (
            json!({ "to": bob.user_id, "content": 42 }),
            "invalid_payload",
        ),
        (json!({ "content": "hi" }), "invalid_payload"),
        (json!("just a string"), "invalid_payload"),
        (
            json!({ "to": bob.user_id, "content": "hi", "clientId": "not-a-uuid" }),
            "invalid_client_id",
        ),
    ];
    for (payload, code) in cases {
        let ack = ada.request("private message", payload.clone()).await;
        assert_eq!(ack["error"]["code"], code, "{payload}: {ack}");
        assert!(ack["error"]["message"].is_string());
    }
    let restored = ada.sync().await;
    assert_eq!(restored["ok"]["messages"], json!([]));
    // The connection is still fine after all that.
    assert!(ada.send(&bob.user_id, "still here").await["ok"].is_object());
}

#[tokio::test]
async fn history_pages_through_a_conversation_and_restore_rejects_bad_cursors() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    for i in 0..5 {
        ada.send(&bob.user_id, &format!("m{i}")).await;
    }
    let page = bob
        .request("history", json!({ "with": ada.user_id, "limit": 2 }))
        .await;
    let texts: Vec<_> = page["ok"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["m3", "m4"]);
    assert_eq!(page["ok"]["hasMore"], true);

    let bad = bob.request("restore_state", json!({ "since": -1 })).await;
    assert_eq!(bad["error"]["code"], "invalid_cursor");
    let bad = bob.request("restore_state", json!({ "since": "x" })).await;
    assert_eq!(bad["error"]["code"], "invalid_cursor");
    let first_id = page["ok"]["messages"][0]["id"].as_i64().unwrap();
    let since = bob
        .request("restore_state", json!({ "since": first_id }))
        .await;
    assert_eq!(since["ok"]["messages"].as_array().unwrap().len(), 1);
}
