//! Rotation and reuse detection of session secrets (issue #25 §5, slice 3): a due secret is
//! replaced at the handshake, a rotated-out one is accepted within the grace and replaced again,
//! and one presented after the grace ends its session on every node (unless the session is
//! bound, when only a valid proof of possession counts). All with short flags: rotation after a
//! second, a grace of a second.

use std::time::Duration;

use serde_json::{json, Value};
use server::Config;

use crate::helpers::{
    on_redis_and_cluster, spawn_app_with, BoundClient, ChildServer, SharedRedis, TestApp,
    TestClient, WAIT,
};

/// A secret is due a second after it was issued; a retired one is accepted for a second.
fn fast(config: &mut Config) {
    config.session_rotate_secs = 1;
    config.session_rotate_grace_secs = 1;
}

/// Long enough for a secret to be due, or a retired one to be past its grace.
const PAST: Duration = Duration::from_millis(1300);

/// A node on `redis` per data directory, each with `flags`.
async fn nodes_on(
    redis: &SharedRedis,
    dirs: &[tempfile::TempDir],
    flags: &[&str],
) -> Vec<ChildServer> {
    let mut args = redis.node_args();
    args.extend(flags.iter().map(|flag| (*flag).to_owned()));
    let mut nodes = Vec::new();
    for dir in dirs {
        nodes.push(ChildServer::start_with(dir.path(), &args).await);
    }
    nodes
}

async fn app() -> TestApp {
    spawn_app_with(fast).await
}

fn message_of(refusal: &Value) -> String {
    refusal.as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_tutorial_client_follows_a_rotated_session_id() {
    let app = app().await;
    let first = app.connect_as("ada").await;
    tokio::time::sleep(PAST).await;
    // The tutorial's client reconnects with the sessionID it saved last.
    let mut second = app.connect(json!({ "sessionID": first.session_id })).await;
    second.expect_session().await;
    assert_ne!(second.session_id, first.session_id, "a new secret");
    assert_eq!(second.user_id, first.user_id, "the same user");
    // The session's other socket is sent the new one too.
    let mut first = first;
    let told = first.next("session").await;
    assert_eq!(told["sessionID"], second.session_id.as_str());
    assert_eq!(told["userID"], first.user_id.as_str());
    // Following it (saving every `session`), the next connect keeps it: not due yet.
    let third = app.resume(&second.session_id).await;
    assert_eq!(third.session_id, second.session_id);
    assert_eq!(third.user_id, first.user_id);
}

#[tokio::test]
async fn an_old_secret_within_grace_is_accepted_and_reissued() {
    let app = spawn_app_with(|c| {
        fast(c);
        c.session_rotate_grace_secs = 30;
    })
    .await;
    let ada = app.connect_as("ada").await;
    tokio::time::sleep(PAST).await;
    let mut newer = app.resume(&ada.session_id).await;
    assert_ne!(newer.session_id, ada.session_id);
    // A tab that never saw the new secret reconnects with the old one, within the grace.
    let late = app.resume(&ada.session_id).await;
    assert_eq!(late.user_id, ada.user_id);
    assert_ne!(
        late.session_id, ada.session_id,
        "never the rotated-out one again"
    );
    assert_ne!(
        late.session_id, newer.session_id,
        "the server cannot re-send it: a new one"
    );
    // Every socket of the session converges on the newest.
    let told = newer.next("session").await;
    assert_eq!(told["sessionID"], late.session_id.as_str());
    let newest = app.resume(&late.session_id).await;
    assert_eq!(newest.session_id, late.session_id);
}

#[tokio::test]
async fn an_old_secret_after_grace_ends_the_session() {
    let app = app().await;
    let ada = app.connect_as("ada").await;
    let bob = app.connect_as("bob").await;
    tokio::time::sleep(PAST).await;
    let mut owner = app.resume(&ada.session_id).await;
    assert_ne!(owner.session_id, ada.session_id);
    tokio::time::sleep(PAST).await;
    // A copy of the rotated-out secret, after the grace: the session ends, every socket of it.
    let refusal = app.refusal(json!({ "sessionID": ada.session_id })).await;
    assert!(refusal.contains("session reused"), "{refusal}");
    owner.next("close").await;
    let refusal = app.refusal(json!({ "sessionID": owner.session_id })).await;
    assert!(
        refusal.contains("invalid username"),
        "the newest secret is gone too: {refusal}"
    );
    // Another user's session is untouched.
    let bob_again = app.resume(&bob.session_id).await;
    assert_eq!(bob_again.user_id, bob.user_id);
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains("tether_session_reuse_total 1"),
        "counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("reuse"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

async fn an_old_secret_after_grace_ends_the_session_on_every_node(redis: SharedRedis) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let flags = [
        "--session-rotate-secs",
        "1",
        "--session-rotate-grace-secs",
        "1",
    ];
    let nodes = nodes_on(&redis, &dirs, &flags).await;
    let url = |i: usize| nodes[i].url();
    let mut ada = TestClient::connect(&url(0), json!({ "username": "ada" })).await;
    ada.expect_session().await;
    tokio::time::sleep(PAST).await;
    // Rotated on node 1; node 0's socket of the session is told the new secret.
    let mut owner = TestClient::connect(&url(1), json!({ "sessionID": ada.session_id })).await;
    owner.expect_session().await;
    assert_ne!(owner.session_id, ada.session_id);
    assert_eq!(owner.user_id, ada.user_id);
    let told = ada.next("session").await;
    assert_eq!(told["sessionID"], owner.session_id.as_str());
    tokio::time::sleep(PAST).await;
    // The stale copy, on node 0: both sockets close, on both nodes, within a second.
    let mut thief = TestClient::connect(&url(0), json!({ "sessionID": ada.session_id })).await;
    let refusal = message_of(&thief.next("error").await);
    assert!(refusal.contains("session reused"), "{refusal}");
    tokio::time::timeout(Duration::from_secs(1), owner.next("close"))
        .await
        .expect("node 1's socket closed within a second");
    tokio::time::timeout(Duration::from_secs(1), ada.next("close"))
        .await
        .expect("node 0's socket closed within a second");
    let mut after = TestClient::connect(&url(1), json!({ "sessionID": owner.session_id })).await;
    let refusal = message_of(&after.next("error").await);
    assert!(refusal.contains("invalid username"), "{refusal}");
}

/// A secret is due four seconds after it was issued, and connected sessions are refreshed
/// (their due secrets rotated) every second: a session idles out after three.
fn live(config: &mut Config) {
    config.session_rotate_secs = 4;
    config.session_rotate_grace_secs = 1;
    config.session_idle_secs = 3;
}

/// Long enough for a connected session's secret to be due and its next refresh to rotate it.
const DUE_WHILE_CONNECTED: Duration = Duration::from_secs(8);

#[tokio::test]
async fn a_connected_bound_session_is_sent_a_new_secret_when_due_without_reconnecting() {
    let app = spawn_app_with(live).await;
    let ada = app.connect_bound("ada").await;
    let tab = app.resume_bound(&ada).await;
    assert_eq!(tab.session_id, ada.session_id, "not due yet");
    let new = ada
        .next_session(DUE_WHILE_CONNECTED)
        .await
        .expect("rotated while connected");
    assert_ne!(new, ada.session_id, "a new secret");
    assert_eq!(
        tab.next_session(WAIT).await.as_deref(),
        Some(new.as_str()),
        "every socket of the session is sent the same one"
    );
    assert_eq!(
        ada.next_session(Duration::from_millis(1500)).await,
        None,
        "once per period, not once per socket or per refresh"
    );
    // The client keeps the new one: it is the session's current secret.
    let again =
        BoundClient::connect(&app.url(), json!({ "sessionID": new }), ada.key.clone()).await;
    assert_eq!(again.session_id, new);
    assert_eq!(again.user_id, ada.user_id);
}

/// An unbound session (the tutorial's client) is not rotated while connected: a `session` sent
/// into a connection that died silently would be lost, and the only copy left would be taken
/// for reuse at the next connect. Its handshakes rotate it.
#[tokio::test]
async fn an_unbound_session_rotates_at_its_handshakes_only() {
    let app = spawn_app_with(live).await;
    let mut ada = app.connect_as("ada").await;
    tokio::time::sleep(DUE_WHILE_CONNECTED).await;
    ada.sync().await;
    assert!(
        ada.drain("session").is_empty(),
        "not rotated while connected"
    );
    let next = app.resume(&ada.session_id).await;
    assert_ne!(next.session_id, ada.session_id, "rotated at the handshake");
    assert_eq!(next.user_id, ada.user_id);
}

async fn a_session_connected_to_two_nodes_rotates_once_and_both_sockets_are_sent_it(
    redis: SharedRedis,
) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let flags = [
        "--session-rotate-secs",
        "4",
        "--session-rotate-grace-secs",
        "1",
        "--session-idle-secs",
        "3",
    ];
    let nodes = nodes_on(&redis, &dirs, &flags).await;
    let key = client::native::NativeKey::generate();
    let ada =
        BoundClient::connect(&nodes[0].url(), json!({ "username": "ada" }), key.clone()).await;
    let tab = BoundClient::connect(
        &nodes[1].url(),
        json!({ "sessionID": ada.session_id }),
        key.clone(),
    )
    .await;
    assert_eq!(tab.session_id, ada.session_id, "not due yet");
    // Both nodes find it due; one rotates, the other finds it rotated and leaves it.
    let on_0 = ada
        .next_session(DUE_WHILE_CONNECTED)
        .await
        .expect("rotated while connected");
    let on_1 = tab.next_session(WAIT).await;
    assert_ne!(on_0, ada.session_id);
    assert_eq!(
        on_1.as_deref(),
        Some(on_0.as_str()),
        "one rotation, sent to both"
    );
    for socket in [&ada, &tab] {
        assert_eq!(
            socket.next_session(Duration::from_millis(1500)).await,
            None,
            "once per period"
        );
    }
    let again = BoundClient::connect(&nodes[1].url(), json!({ "sessionID": on_0 }), key).await;
    assert_eq!(again.session_id, on_0, "current");
    assert_eq!(again.user_id, ada.user_id);
}

#[tokio::test]
async fn two_tabs_reconnecting_with_the_same_due_secret_both_stay_signed_in() {
    let app = spawn_app_with(|c| {
        fast(c);
        c.session_rotate_grace_secs = 30;
    })
    .await;
    for name in ["ada", "bob", "cyd"] {
        let ada = app.connect_as(name).await;
        let due = ada.session_id.clone();
        ada.close().await;
        tokio::time::sleep(PAST).await;
        // Tabs wake up together with the same due secret (two, then a third as well).
        let (mut a, mut b, mut c) = tokio::join!(
            app.connect(json!({ "sessionID": due })),
            app.connect(json!({ "sessionID": due })),
            app.connect(json!({ "sessionID": due }))
        );
        let mut newest = Vec::new();
        for tab in [&mut a, &mut b, &mut c] {
            let session = tab.next("session").await;
            assert_eq!(session["userID"], ada.user_id.as_str(), "{session}");
            newest.push(session["sessionID"].as_str().unwrap().to_owned());
        }
        // Each ends on the newest secret: the last `session` it was sent (its own, or another
        // tab's rotation through the room) is the session's current one.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            for (tab, last) in [&mut a, &mut b, &mut c].into_iter().zip(newest.iter_mut()) {
                tab.sync().await;
                if let Some(told) = tab.drain("session").last() {
                    *last = told["sessionID"].as_str().unwrap().to_owned();
                }
            }
            if newest.iter().all(|s| *s == newest[0]) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the tabs never converged: {newest:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let again = app.resume(&newest[0]).await;
        assert_eq!(again.session_id, newest[0], "current, not rotated again");
        for tab in [a, b, c, again] {
            tab.close().await;
        }
    }
}

#[tokio::test]
async fn a_bound_session_is_never_ended_by_a_stale_secret_without_proof() {
    let app = app().await;
    let owner = app.connect_bound("ada").await;
    let stale = owner.session_id.clone();
    tokio::time::sleep(PAST).await;
    // The key holder's reconnect rotates it.
    let fresh = app.resume_bound(&owner).await;
    assert_ne!(fresh.session_id, stale);
    tokio::time::sleep(PAST).await;
    // A copy of the stale secret without the key: refused, and nothing ends.
    for _ in 0..2 {
        let refusal = app.refusal(json!({ "sessionID": stale })).await;
        assert!(refusal.contains("proof required"), "{refusal}");
    }
    let check = BoundClient::connect(
        &app.url(),
        json!({ "sessionID": fresh.session_id }),
        owner.key.clone(),
    )
    .await;
    assert_eq!(check.user_id, owner.user_id, "the session lives");
    // The key holder with the stale secret (a tab that slept through it): a new secret, no reuse.
    let woke = app.resume_bound(&owner).await;
    assert_eq!(woke.user_id, owner.user_id);
    assert_ne!(woke.session_id, stale);
}

/// A retired secret replayed within the grace is re-issued at most `--session-rotate-reissues`
/// times per grace window, then refused `too many requests`; the session is not ended.
#[tokio::test]
async fn rotations_in_a_grace_window_are_capped() {
    let app = spawn_app_with(|c| {
        fast(c);
        c.session_rotate_grace_secs = 60;
    })
    .await;
    let ada = app.connect_as("ada").await;
    tokio::time::sleep(PAST).await;
    let mut newest = app.resume(&ada.session_id).await.session_id;
    let mut accepted = 0;
    let refusal = loop {
        let mut replay = app.connect(json!({ "sessionID": ada.session_id })).await;
        match replay.next_any().await {
            (event, value) if event == "error" => break message_of(&value),
            (event, value) if event == "session" => {
                newest = value["sessionID"].as_str().unwrap().to_owned();
                accepted += 1;
                replay.close().await;
            }
            other => panic!("a session or a refusal, not {other:?}"),
        }
        assert!(accepted <= 16, "never capped");
    };
    assert!(refusal.contains("too many requests"), "{refusal}");
    // The first rotation (the due one) and 15 re-issues: 16 in the window.
    assert_eq!(accepted, 15);
    // Not ended: the newest secret still works, and is kept (the cap holds it, never refuses it).
    let again = app.resume(&newest).await;
    assert_eq!(again.user_id, ada.user_id);
}

#[tokio::test]
async fn rotation_off_keeps_the_secret() {
    let app = spawn_app_with(|c| c.session_rotate_secs = 0).await;
    let ada = app.connect_as("ada").await;
    tokio::time::sleep(PAST).await;
    let again = app.resume(&ada.session_id).await;
    assert_eq!(again.session_id, ada.session_id);
}

/// A handshake refused after the session was found (here: the user's socket limit) rotates
/// nothing: its client was never sent a successor, so the secret it holds must stay current.
#[tokio::test]
async fn a_refused_handshake_does_not_rotate_the_secret() {
    let app = spawn_app_with(|c| {
        fast(c);
        c.max_sockets_per_user = 1;
    })
    .await;
    let ada = app.connect_as("ada").await;
    tokio::time::sleep(PAST).await;
    let refusal = app.refusal(json!({ "sessionID": ada.session_id })).await;
    assert!(refusal.contains("too many connections"), "{refusal}");
    // Past what would have been its grace: had it rotated, this would be reuse.
    tokio::time::sleep(PAST).await;
    ada.close().await;
    app.until_room_is_empty(&ada.user_id).await;
    // (Its socket is uncounted just after it left the room.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let again = loop {
        let mut again = app.connect(json!({ "sessionID": ada.session_id })).await;
        match again.next_any().await {
            (event, value) if event == "session" => break value,
            (_, value) if message_of(&value).contains("too many connections") => {
                assert!(tokio::time::Instant::now() < deadline, "never uncounted");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("accepted, not {other:?}"),
        }
    };
    assert_eq!(again["userID"], ada.user_id.as_str());
    assert_ne!(
        again["sessionID"],
        ada.session_id.as_str(),
        "rotated now, at an admitted handshake"
    );
}

on_redis_and_cluster!(
    an_old_secret_after_grace_ends_the_session_on_every_node,
    a_session_connected_to_two_nodes_rotates_once_and_both_sockets_are_sent_it,
);
