//! The messenger's events (issue 24) over the wire: `conversations`, `read` and `seen`,
//! `typing`, `users_search` and `settings`, with two and three users, several sockets of one
//! user, and a browser that signs in later. Across nodes: `cluster.rs`; floods and odd input:
//! `abuse::messenger`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp, TestClient};

fn ok(answer: Value) -> Value {
    answer
        .get("ok")
        .cloned()
        .unwrap_or_else(|| panic!("an ok answer: {answer}"))
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error answer: {answer}"))
}

/// Sends and returns the stored message's id.
async fn sent(from: &TestClient, to: &str, text: &str) -> i64 {
    ok(from.send(to, text).await)["id"].as_i64().unwrap()
}

async fn conversations(client: &TestClient, request: Value) -> Value {
    ok(client.request("conversations", request).await)
}

/// The (userID, unread) of each listed conversation, in order.
fn listed(list: &Value) -> Vec<(String, u64)> {
    list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["userID"].as_str().unwrap().to_owned(),
                c["unread"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn entry<'a>(list: &'a Value, user: &str) -> &'a Value {
    list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["userID"] == user)
        .unwrap_or_else(|| panic!("{user} listed in {list}"))
}

async fn read(client: &TestClient, with: &str, up_to: i64) -> Value {
    client
        .request("read", json!({ "with": with, "upTo": up_to }))
        .await
}

/// Nothing of `event` arrived before a round trip that started after what could have sent it.
async fn none_of(client: &mut TestClient, event: &str) {
    client.sync().await;
    assert_eq!(client.drain(event), Vec::<Value>::new(), "no `{event}`");
}

#[tokio::test]
async fn conversations_come_latest_activity_first_with_unread_counts_for_three_users() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    let cy = app.connect_as("cy").await;
    sent(&bob, &ada.user_id, "hi ada").await;
    sent(&cy, &ada.user_id, "hey").await;
    let last = sent(&bob, &ada.user_id, "still there?").await;
    sent(&cy, &bob.user_id, "not ada's business").await;
    sent(&ada, &ada.user_id, "note to self").await;

    let list = conversations(&ada, json!({})).await;
    assert_eq!(
        listed(&list),
        [
            (ada.user_id.clone(), 0),
            (bob.user_id.clone(), 2),
            (cy.user_id.clone(), 1)
        ]
    );
    assert_eq!(list["hasMore"], false);
    let with_bob = entry(&list, &bob.user_id);
    assert_eq!(with_bob["username"], "bob");
    assert_eq!(with_bob["connected"], true);
    assert_eq!(with_bob["last"]["id"], last);
    assert_eq!(with_bob["last"]["content"], "still there?");
    assert_eq!(with_bob["readUpTo"], 0);
    assert!(with_bob.get("peerRead").is_some(), "both share receipts");
    // cy sees her own two conversations only; never ada and bob's.
    let of_cy = conversations(&cy, Value::Null).await;
    let peers: Vec<String> = listed(&of_cy).into_iter().map(|(u, _)| u).collect();
    assert_eq!(peers, [bob.user_id.clone(), ada.user_id.clone()]);
    assert!(!of_cy.to_string().contains("still there?"));

    // Reading moves the count; a reply reads too.
    let state = ok(read(&ada, &bob.user_id, last).await);
    assert_eq!(
        state,
        json!({ "with": bob.user_id, "upTo": last, "unread": 0, "asOf": last })
    );
    sent(&ada, &cy.user_id, "on my way").await;
    let list = conversations(&ada, json!({ "limit": 2 })).await;
    assert_eq!(
        listed(&list),
        [(cy.user_id.clone(), 0), (ada.user_id.clone(), 0)]
    );
    assert_eq!(list["hasMore"], true);
}

#[tokio::test]
async fn a_read_reaches_every_socket_of_the_reader_and_the_sender_sees_it() {
    let app = spawn_app().await;
    let mut ada = app.connect_as("ada").await;
    let mut ada_tab2 = app.resume(&ada.session_id).await;
    let mut bob = app.connect_as("bob").await;
    let first = sent(&bob, &ada.user_id, "one").await;
    let second = sent(&bob, &ada.user_id, "two").await;

    let answer = ok(read(&ada, &bob.user_id, first).await);
    let expected = json!({ "with": bob.user_id, "upTo": first, "unread": 1, "asOf": second });
    assert_eq!(answer, expected);
    assert_eq!(ada_tab2.next("read").await, expected, "the other tab");
    assert_eq!(ada.next("read").await, expected, "the reading tab too");
    let seen = bob.next("seen").await;
    assert_eq!(
        (&seen["by"], &seen["upTo"]),
        (&json!(ada.user_id), &json!(first))
    );
    assert!(seen["at"].as_i64().unwrap() > 0);

    // Nothing moves: no event for anyone.
    let again = ok(read(&ada_tab2, &bob.user_id, first).await);
    assert_eq!(again, expected);
    none_of(&mut ada, "read").await;
    none_of(&mut bob, "seen").await;

    // A browser signed in later sees the same counts; bob sees how far ada read.
    let mut later = app.resume(&ada.session_id).await;
    let list = conversations(&later, json!({})).await;
    let with_bob = entry(&list, &bob.user_id);
    assert_eq!(
        (&with_bob["readUpTo"], &with_bob["unread"]),
        (&json!(first), &json!(1))
    );
    let of_bob = conversations(&bob, json!({})).await;
    assert_eq!(entry(&of_bob, &ada.user_id)["peerRead"]["upTo"], first);

    // Past the newest: stops at it.
    let answer = ok(read(&later, &bob.user_id, i64::MAX).await);
    assert_eq!(
        (&answer["upTo"], &answer["unread"]),
        (&json!(second), &json!(0))
    );
    for tab in [&mut ada, &mut ada_tab2, &mut later] {
        assert_eq!(tab.next("read").await["upTo"], second);
    }
    assert_eq!(bob.next("seen").await["upTo"], second);
}

#[tokio::test]
async fn with_receipts_off_on_either_side_nobody_sees_them() {
    let app = spawn_app().await;
    let mut ada = app.connect_as("ada").await;
    let mut bob = app.connect_as("bob").await;
    for (off, other) in [(0, 1), (1, 0)] {
        let pair = [&mut ada, &mut bob];
        let answer = pair[off]
            .request("settings", json!({ "readReceipts": false }))
            .await;
        assert_eq!(ok(answer), json!({ "readReceipts": false }));
        pair[off].next("settings").await;
        let other_id = pair[other].user_id.clone();
        let off_id = pair[off].user_id.clone();
        // The one with receipts off reads: the other hears nothing.
        let m = sent(pair[other], &off_id, "read me").await;
        ok(read(pair[off], &other_id, m).await);
        none_of(pair[other], "seen").await;
        // The other reads: the one with them off hears nothing either.
        let m = sent(pair[off], &other_id, "and me").await;
        ok(read(pair[other], &off_id, m).await);
        none_of(pair[off], "seen").await;
        for (viewer, peer) in [(off, other), (other, off)] {
            let peer_id = pair[peer].user_id.clone();
            let list = conversations(pair[viewer], json!({})).await;
            let listed = entry(&list, &peer_id);
            assert!(listed.get("peerRead").is_none(), "{listed}");
            assert!(listed["readUpTo"].as_i64().unwrap() > 0);
        }
        let back = pair[off]
            .request("settings", json!({ "readReceipts": true }))
            .await;
        assert_eq!(ok(back), json!({ "readReceipts": true }));
    }
    // Both on again: receipts flow.
    let m = sent(&bob, &ada.user_id, "now?").await;
    ok(read(&ada, &bob.user_id, m).await);
    assert_eq!(bob.next("seen").await["upTo"], m);
}

#[tokio::test]
async fn what_was_read_with_receipts_off_is_not_seen_once_they_are_on_again() {
    let app = spawn_app().await;
    let mut ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    let receipts = async |on: bool| {
        let answer = bob.request("settings", json!({ "readReceipts": on })).await;
        assert_eq!(ok(answer), json!({ "readReceipts": on }));
    };
    let first = sent(&ada, &bob.user_id, "one").await;
    ok(read(&bob, &ada.user_id, first).await);
    let seen_first = ada.next("seen").await;
    assert_eq!(seen_first["upTo"], first);

    // Bob reads with receipts off, then turns them on and opens the conversation again.
    receipts(false).await;
    let private = sent(&ada, &bob.user_id, "read in private").await;
    assert_eq!(ok(read(&bob, &ada.user_id, private).await)["upTo"], private);
    receipts(true).await;
    assert_eq!(ok(read(&bob, &ada.user_id, private).await)["upTo"], private);
    none_of(&mut ada, "seen").await;
    let list = conversations(&ada, json!({})).await;
    let expected = json!({ "upTo": first, "at": seen_first["at"] });
    assert_eq!(entry(&list, &bob.user_id)["peerRead"], expected, "{list}");

    // The next read with both on is seen, and listed.
    let next = sent(&ada, &bob.user_id, "and now?").await;
    ok(read(&bob, &ada.user_id, next).await);
    let seen = ada.next("seen").await;
    assert_eq!(seen["upTo"], next);
    let list = conversations(&ada, json!({})).await;
    let expected = json!({ "upTo": next, "at": seen["at"] });
    assert_eq!(entry(&list, &bob.user_id)["peerRead"], expected, "{list}");
}

#[tokio::test]
async fn settings_are_read_changed_and_told_to_every_socket_of_the_user() {
    let app = spawn_app().await;
    let mut ada = app.connect_as("ada").await;
    let mut ada_tab2 = app.resume(&ada.session_id).await;
    let mut bob = app.connect_as("bob").await;
    for read in [json!({}), Value::Null, json!({ "readReceipts": null })] {
        assert_eq!(
            ok(ada.request("settings", read).await),
            json!({ "readReceipts": true })
        );
    }
    let off = ada
        .request("settings", json!({ "readReceipts": false }))
        .await;
    assert_eq!(ok(off), json!({ "readReceipts": false }));
    for tab in [&mut ada, &mut ada_tab2] {
        assert_eq!(tab.next("settings").await, json!({ "readReceipts": false }));
    }
    // The same again changes nothing, and tells nobody.
    let again = ada
        .request("settings", json!({ "readReceipts": false }))
        .await;
    assert_eq!(ok(again), json!({ "readReceipts": false }));
    none_of(&mut ada_tab2, "settings").await;
    none_of(&mut bob, "settings").await;
    let later = app.resume(&ada.session_id).await;
    assert_eq!(
        ok(later.request("settings", json!({})).await),
        json!({ "readReceipts": false })
    );
    for bad in [json!({ "readReceipts": "no" }), json!([true]), json!(7)] {
        assert_eq!(
            code(&ada.request("settings", bad.clone()).await),
            "invalid_payload",
            "{bad}"
        );
    }
}

#[tokio::test]
async fn typing_is_relayed_once_per_interval_and_never_replayed() {
    // An interval no run of this test outlasts (its waits give up long before), so every
    // `typing` after the first is within it, however slow the machine.
    let app = spawn_app_with(|c| c.typing_every_ms = 600_000).await;
    let ada = app.connect_as("ada").await;
    let mut bob = app.connect_as("bob").await;
    let mut bob_tab2 = app.resume(&bob.session_id).await;
    let mut cy = app.connect_as("cy").await;
    let typing = json!({ "to": bob.user_id });
    for _ in 0..3 {
        ada.client.emit("typing", typing.clone()).await.unwrap();
    }
    let first = bob.next("typing").await;
    assert_eq!(first, json!({ "from": ada.user_id }));
    assert_eq!(bob_tab2.next("typing").await, first, "every socket of `to`");
    // Once more within the interval, after the first arrived: dropped. The server starts
    // handling a socket's events in the order they came (the test's runtime runs one task at a
    // time, first spawned first) and decides a `typing` before its first await, so the message
    // ada sends next is handled after it: were it relayed, it would reach bob's sockets before
    // the message does.
    ada.client.emit("typing", typing.clone()).await.unwrap();
    let after = sent(&ada, &bob.user_id, "after typing").await;
    for tab in [&mut bob, &mut bob_tab2] {
        assert_eq!(tab.next("private message").await["id"], after);
        assert_eq!(tab.drain("typing"), Vec::<Value>::new(), "throttled");
    }
    none_of(&mut cy, "typing").await;
    // A socket that connects afterwards gets nothing of what was typed before.
    let mut bob_later = app.resume(&bob.session_id).await;
    none_of(&mut bob_later, "typing").await;
    // Malformed, to oneself, to nobody: dropped without an answer.
    for odd in [
        json!({ "to": ada.user_id }),
        json!({ "to": "not-a-user" }),
        json!({ "to": uuid::Uuid::new_v4().to_string() }),
        json!(42),
    ] {
        ada.client.emit("typing", odd).await.unwrap();
    }
    assert!(ok(ada.sync().await)["messages"].is_array(), "still served");
}

#[tokio::test]
async fn typing_is_relayed_again_once_its_interval_is_over() {
    const EVERY: Duration = Duration::from_millis(300);
    let app = spawn_app_with(|c| c.typing_every_ms = EVERY.as_millis() as u64).await;
    let ada = app.connect_as("ada").await;
    let mut bob = app.connect_as("bob").await;
    let typing = json!({ "to": bob.user_id });
    ada.client.emit("typing", typing.clone()).await.unwrap();
    let first = bob.next("typing").await;
    // The server relayed it before bob got it: an interval from now, the next one is due.
    let relayed_before = Instant::now();
    tokio::time::sleep_until((relayed_before + EVERY + Duration::from_millis(20)).into()).await;
    ada.client.emit("typing", typing.clone()).await.unwrap();
    assert_eq!(bob.next("typing").await, first, "the next interval");
}

#[tokio::test]
async fn search_finds_anyone_in_the_directory_beyond_the_roster() {
    let app = spawn_app_with(|c| c.roster_full_max = 2).await;
    let mut everyone = Vec::new();
    for name in ["Zoe", "zed", "Ana", "Bozena", "bob"] {
        everyone.push(app.connect_as(name).await);
    }
    let newcomer = app.connect_as("newcomer").await;
    let rostered: Vec<&str> = newcomer
        .users
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert!(!rostered.contains(&"zed"), "{rostered:?}");

    let found = ok(newcomer
        .request("users_search", json!({ "query": " Z " }))
        .await);
    let names: Vec<&str> = found["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["zed", "Zoe", "Bozena"],
        "prefix first, then by name"
    );
    let zed = &found["users"][0];
    assert_eq!(zed["userID"], everyone[1].user_id.as_str());
    assert_eq!(zed["connected"], true);
    let one = ok(newcomer
        .request("users_search", json!({ "query": "o", "limit": 1 }))
        .await);
    assert_eq!(one["users"].as_array().unwrap().len(), 1);
    let none = ok(newcomer
        .request("users_search", json!({ "query": "nobody" }))
        .await);
    assert_eq!(none["users"], json!([]));
    everyone[1].close().await;
    app.until_room_is_empty(&everyone[1].user_id).await;
    let deadline = Instant::now() + crate::helpers::WAIT;
    loop {
        let found = ok(newcomer
            .request("users_search", json!({ "query": "zed" }))
            .await);
        if found["users"][0]["connected"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "zed is still online: {found}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn conversations_page_by_the_last_ones_message_id() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let mut others = Vec::new();
    for i in 0..5 {
        let other = app.connect_as(&format!("p{i}")).await;
        sent(&other, &ada.user_id, &format!("from p{i}")).await;
        others.push(other);
    }
    let newest_first: Vec<String> = others.iter().rev().map(|o| o.user_id.clone()).collect();
    let mut paged = Vec::new();
    let mut request = json!({ "limit": 2 });
    loop {
        let page = conversations(&ada, request.clone()).await;
        let entries = page["conversations"].as_array().unwrap();
        assert!(entries.len() <= 2);
        paged.extend(
            entries
                .iter()
                .map(|c| c["userID"].as_str().unwrap().to_owned()),
        );
        if page["hasMore"] == false {
            break;
        }
        let before = entries.last().unwrap()["last"]["id"].clone();
        request = json!({ "limit": 2, "before": before });
    }
    assert_eq!(paged, newest_first);
    for (request, expected) in [
        (json!({ "before": -1 }), "invalid_cursor"),
        (json!({ "before": "soon" }), "invalid_payload"),
        (json!({ "limit": -1 }), "invalid_payload"),
        (json!([1]), "invalid_payload"),
    ] {
        let answer = ada.request("conversations", request.clone()).await;
        assert_eq!(code(&answer), expected, "{request}");
    }
    // `limit` is clamped, `null` is absent.
    let all = conversations(&ada, json!({ "limit": 0, "before": null })).await;
    assert_eq!(all["conversations"].as_array().unwrap().len(), 1);
}

/// A connect's `users` carries the caller's read cursor of each conversation it lists
/// (`readUpTo`), so a client counts unread beyond the `conversations` pages it asked for.
#[tokio::test]
async fn the_roster_carries_the_callers_read_cursor_of_every_conversation() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    let cy = app.connect_as("cy").await;
    let dan = app.connect_as("dan").await;
    let first = sent(&bob, &ada.user_id, "one").await;
    let second = sent(&bob, &ada.user_id, "two").await;
    ok(read(&ada, &bob.user_id, first).await);
    sent(&cy, &ada.user_id, "hey").await;
    sent(&ada, &ada.user_id, "note to self").await;
    // Only the note's and cy's conversation is on the first page of one.
    let page = conversations(&ada, json!({ "limit": 2 })).await;
    assert_eq!(
        listed(&page),
        [(ada.user_id.clone(), 0), (cy.user_id.clone(), 1)]
    );

    let later = app.resume(&ada.session_id).await;
    let of = |user: &str| {
        later
            .users
            .iter()
            .find(|u| u["userID"] == user)
            .unwrap_or_else(|| panic!("{user} in {:?}", later.users))
            .clone()
    };
    let with_bob = of(&bob.user_id);
    assert_eq!(with_bob["readUpTo"], first);
    let ids: Vec<i64> = with_bob["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [first, second], "one unread after the cursor");
    assert_eq!(of(&cy.user_id)["readUpTo"], 0, "never read");
    // No conversation, or notes to self: no cursor (the entry is the tutorial's).
    assert!(of(&dan.user_id).get("readUpTo").is_none());
    assert!(of(&ada.user_id).get("readUpTo").is_none());
    // Others hear of the caller as before.
    let mut dan = dan;
    let connected = dan.next("user connected").await;
    assert!(connected.get("readUpTo").is_none());
}

#[tokio::test]
async fn a_read_refuses_bad_input_and_changes_nothing() {
    let app: TestApp = spawn_app().await;
    let ada = app.connect_as("ada").await;
    let mut bob = app.connect_as("bob").await;
    let cy = app.connect_as("cy").await;
    let m = sent(&bob, &ada.user_id, "hi").await;
    for (request, expected) in [
        (json!({ "with": bob.user_id, "upTo": -1 }), "invalid_cursor"),
        (json!({ "with": "bob", "upTo": 1 }), "unknown_recipient"),
        (
            json!({ "with": uuid::Uuid::new_v4().to_string(), "upTo": 1 }),
            "unknown_recipient",
        ),
        (
            json!({ "with": bob.user_id, "upTo": 1.5 }),
            "invalid_payload",
        ),
        (json!({ "with": bob.user_id }), "invalid_payload"),
        (json!("read"), "invalid_payload"),
    ] {
        let answer = ada.request("read", request.clone()).await;
        assert_eq!(code(&answer), expected, "{request}");
    }
    none_of(&mut bob, "seen").await;
    // No conversation yet: all zero, nothing written.
    let none = ok(read(&ada, &cy.user_id, 99).await);
    assert_eq!(
        none,
        json!({ "with": cy.user_id, "upTo": 0, "unread": 0, "asOf": 0 })
    );
    let list = conversations(&ada, json!({})).await;
    assert_eq!(listed(&list), [(bob.user_id.clone(), 1)]);
    assert_eq!(entry(&list, &bob.user_id)["last"]["id"], m);
}
