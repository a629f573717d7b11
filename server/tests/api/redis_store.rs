//! The Redis store on its own, against a real Redis: sessions (TTL refreshed on use, maximum
//! age), ids, de-duplication, paging, and presence across two nodes with a dead-node sweep.

use std::time::Duration;

use server::domain::{ClientMsgId, MessageContent, UserId, Username};
use server::store::redis::{NodeOptions, RedisStore};
use server::store::sqlite::SessionPolicy;
use server::store::{NewMessage, PresenceChange, Store, Stored};

use crate::helpers::RedisServer;

fn policy(idle: Duration, max_age: Duration) -> SessionPolicy {
    SessionPolicy { idle, max_age }
}

async fn store(redis: &RedisServer, policy: SessionPolicy, ttl: Duration) -> RedisStore {
    RedisStore::connect(
        &redis.url(),
        &redis.prefix,
        policy,
        NodeOptions { heartbeat_ttl: ttl },
    )
    .await
    .expect("connects to redis")
}

async fn default_store(redis: &RedisServer) -> RedisStore {
    store(
        redis,
        policy(Duration::from_secs(3600), Duration::from_secs(7200)),
        Duration::from_secs(10),
    )
    .await
}

async fn user(store: &RedisStore, name: &str) -> UserId {
    store
        .create_session(&Username::parse(name).unwrap())
        .await
        .unwrap()
        .1
        .user_id
}

fn msg(from: &UserId, to: &UserId, text: &str, client_id: Option<&str>) -> NewMessage {
    NewMessage {
        from: from.clone(),
        to: to.clone(),
        content: MessageContent::parse(text, 4000).unwrap(),
        client_id: client_id.map(|c| ClientMsgId::parse(c).unwrap()),
    }
}

#[tokio::test]
async fn sessions_are_found_by_secret_refreshed_on_use_and_ended_by_sign_out() {
    let redis = RedisServer::start().await;
    let store = store(
        &redis,
        policy(Duration::from_millis(600), Duration::from_secs(3600)),
        Duration::from_secs(10),
    )
    .await;
    let (sid, session) = store
        .create_session(&Username::parse("ada").unwrap())
        .await
        .unwrap();
    // Used every 300 ms, the session outlives its 600 ms idle TTL several times over.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            store.find_session(&sid).await.unwrap(),
            Some(session.clone())
        );
    }
    // Left alone past the idle TTL, Redis expires it.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(store.find_session(&sid).await.unwrap(), None);

    let (sid, session) = store
        .create_session(&Username::parse("bob").unwrap())
        .await
        .unwrap();
    assert!(store.delete_session(&sid).await.unwrap());
    assert_eq!(store.find_session(&sid).await.unwrap(), None);
    assert_eq!(
        store.delete_user_sessions(&session.user_id).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn a_session_past_its_maximum_age_expires_even_if_used() {
    let redis = RedisServer::start().await;
    let store = store(
        &redis,
        policy(Duration::from_secs(3600), Duration::from_millis(300)),
        Duration::from_secs(10),
    )
    .await;
    let (sid, _) = store
        .create_session(&Username::parse("ada").unwrap())
        .await
        .unwrap();
    assert!(store.find_session(&sid).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.find_session(&sid).await.unwrap(), None);
}

#[tokio::test]
async fn ids_increase_resends_are_stored_once_and_unknown_recipients_nothing() {
    let redis = RedisServer::start().await;
    let store = default_store(&redis).await;
    let (a, b) = (user(&store, "ada").await, user(&store, "bob").await);
    let first = store
        .insert_message(msg(
            &a,
            &b,
            "one",
            Some("0b7e5f2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"),
        ))
        .await
        .unwrap()
        .unwrap();
    let Stored::New(first) = first else {
        panic!("first copy is new")
    };
    let again = store
        .insert_message(msg(
            &a,
            &b,
            "one",
            Some("0b7e5f2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, Stored::Duplicate(first.clone()));
    let second = store
        .insert_message(msg(&b, &a, "two", None))
        .await
        .unwrap()
        .unwrap();
    assert!(second.message().id > first.id);
    let stranger = UserId::random();
    assert_eq!(
        store
            .insert_message(msg(&a, &stranger, "lost?", None))
            .await
            .unwrap(),
        None
    );
    let since = store.messages_since(&b, 0, 10).await.unwrap();
    assert_eq!(since.messages.len(), 2, "one copy of the resend");
    assert_eq!(store.list_users().await.unwrap().len(), 2);
}

#[tokio::test]
async fn history_and_restore_page_through_one_conversation() {
    let redis = RedisServer::start().await;
    let store = default_store(&redis).await;
    let (a, b, c) = (
        user(&store, "ada").await,
        user(&store, "bob").await,
        user(&store, "cy").await,
    );
    for n in 0..7 {
        store
            .insert_message(msg(&a, &b, &format!("ab{n}"), None))
            .await
            .unwrap();
        store
            .insert_message(msg(&c, &a, &format!("ca{n}"), None))
            .await
            .unwrap();
    }
    let newest = store.history(&a, &b, None, 3).await.unwrap();
    let texts =
        |p: &[protocol::payloads::Message]| p.iter().map(|m| m.content.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&newest.messages), ["ab4", "ab5", "ab6"]);
    assert!(newest.has_more);
    let older = store
        .history(&a, &b, Some(newest.messages[0].id), 10)
        .await
        .unwrap();
    assert_eq!(texts(&older.messages), ["ab0", "ab1", "ab2", "ab3"]);
    assert!(!older.has_more);

    let page = store.messages_since(&b, 0, 5).await.unwrap();
    assert_eq!(texts(&page.messages), ["ab0", "ab1", "ab2", "ab3", "ab4"]);
    assert!(page.has_more, "bob sees only his own conversation");
    let rest = store
        .messages_since(&b, page.messages[4].id, 5)
        .await
        .unwrap();
    assert_eq!(texts(&rest.messages), ["ab5", "ab6"]);

    let roster = store.conversations(&a, 2, 0).await.unwrap();
    assert_eq!(texts(&roster.messages), ["ab5", "ca5", "ab6", "ca6"]);
    assert_eq!(roster.peers.len(), 2);
    // A client holding everything up to ca5 gets only what is newer, still per conversation,
    // and every conversation is still named.
    let newer = store
        .conversations(&a, 2, roster.messages[1].id)
        .await
        .unwrap();
    assert_eq!(texts(&newer.messages), ["ab6", "ca6"]);
    let newest = store
        .conversations(&a, 2, roster.messages[3].id)
        .await
        .unwrap();
    assert!(newest.messages.is_empty());
    assert_eq!(newest.peers.len(), 2);
}

#[tokio::test]
async fn presence_sums_nodes_and_a_dead_nodes_sockets_are_swept_once() {
    let redis = RedisServer::start().await;
    let ttl = Duration::from_millis(400);
    let sessions = policy(Duration::from_secs(3600), Duration::from_secs(7200));
    let node1 = store(&redis, sessions, ttl).await;
    let node2 = store(&redis, sessions, ttl).await;
    let (ada, bob) = (user(&node1, "ada").await, user(&node1, "bob").await);

    assert_eq!(node1.socket_connected(&ada).await.unwrap(), 1);
    assert_eq!(node2.socket_connected(&ada).await.unwrap(), 2);
    assert_eq!(node1.socket_connected(&bob).await.unwrap(), 1);
    assert_eq!(node2.socket_count(&ada).await.unwrap(), 2);
    assert_eq!(node2.online_users().await.unwrap().len(), 2);
    assert_eq!(
        node2.socket_disconnected(&bob).await.unwrap(),
        None,
        "not counted on node 2"
    );

    // node1 stops beating; node2 keeps beating and, once node1's heartbeat expired, sweeps it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let changes = loop {
        let changes = node2.heartbeat().await.unwrap();
        if !changes.is_empty() {
            break changes;
        }
        assert!(tokio::time::Instant::now() < deadline, "node1 never swept");
        tokio::time::sleep(ttl / 3).await;
    };
    let mut changes = changes;
    changes.sort_by_key(|c| format!("{c:?}"));
    let mut expected = vec![
        PresenceChange::Left {
            user: ada.clone(),
            sockets_left: 1,
        },
        PresenceChange::Left {
            user: bob.clone(),
            sockets_left: 0,
        },
    ];
    expected.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(changes, expected);
    assert!(node2.heartbeat().await.unwrap().is_empty(), "swept once");
    assert_eq!(node2.socket_count(&ada).await.unwrap(), 1);
    assert!(!node2.online_users().await.unwrap().contains(&bob));

    // node1 wakes up: it notices it was swept and puts its sockets back.
    let returned = node1.heartbeat().await.unwrap();
    assert_eq!(returned.len(), 2);
    assert_eq!(node2.socket_count(&ada).await.unwrap(), 2);
    assert!(node2.online_users().await.unwrap().contains(&bob));
}
