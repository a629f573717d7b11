//! The Redis store on its own, against a real Redis: sessions (TTL refreshed on use, maximum
//! age), ids, de-duplication, paging, presence across two nodes with a dead-node sweep, and
//! expiry (session and account sweeps, refreshes, the directory every node caches, and the
//! conversion of a directory written before expiry).

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

    let roster = store.conversations(&a, 2, 0, u32::MAX).await.unwrap();
    assert_eq!(texts(&roster.messages), ["ab5", "ca5", "ab6", "ca6"]);
    assert_eq!(roster.peers.len(), 2);
    // A client holding everything up to ca5 gets only what is newer, still per conversation,
    // and every conversation is still named.
    let newer = store
        .conversations(&a, 2, roster.messages[1].id, u32::MAX)
        .await
        .unwrap();
    assert_eq!(texts(&newer.messages), ["ab6", "ca6"]);
    let newest = store
        .conversations(&a, 2, roster.messages[3].id, u32::MAX)
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

fn names(users: &[server::store::User]) -> Vec<&str> {
    users.iter().map(|u| u.username.as_str()).collect()
}

#[tokio::test]
async fn sessions_past_their_deadline_are_swept_once_by_digest_and_take_quiet_accounts() {
    let redis = RedisServer::start().await;
    let ages = policy(Duration::from_secs(3600), Duration::from_millis(300));
    let node1 = store(&redis, ages, Duration::from_secs(10)).await;
    let node2 = store(&redis, ages, Duration::from_secs(10)).await;
    let (old, _) = node1
        .create_session(&Username::parse("old").unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (fresh, _) = node1
        .create_session(&Username::parse("fresh").unwrap())
        .await
        .unwrap();
    // Each expired session goes to one node only; the other finds nothing left to do.
    assert_eq!(node2.expire_sessions(100).await.unwrap(), [old.digest()]);
    assert!(node1.expire_sessions(100).await.unwrap().is_empty());
    assert_eq!(node1.find_session(&old).await.unwrap(), None);
    assert!(node1.find_session(&fresh).await.unwrap().is_some());
    // Its account never sent or got a message and has no session left: the next account sweep
    // deletes it, however recently it was used.
    let swept = node1
        .expire_accounts(Duration::from_secs(3600), 100)
        .await
        .unwrap();
    assert_eq!(swept.users, 1);
    assert_eq!(names(&node2.list_users().await.unwrap()), ["fresh"]);
}

#[tokio::test]
async fn idle_sessions_expire_in_batches() {
    let redis = RedisServer::start().await;
    let idle = policy(Duration::from_millis(200), Duration::from_secs(3600));
    let store = store(&redis, idle, Duration::from_secs(10)).await;
    for n in 0..5 {
        user(&store, &format!("u{n}")).await;
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(store.expire_sessions(3).await.unwrap().len(), 3);
    assert_eq!(store.expire_sessions(3).await.unwrap().len(), 2);
    assert!(store.expire_sessions(3).await.unwrap().is_empty());
}

#[tokio::test]
async fn accounts_without_messages_go_when_idle_or_signed_out_and_every_node_forgets_them() {
    let redis = RedisServer::start().await;
    let node1 = default_store(&redis).await;
    let node2 = default_store(&redis).await;
    let (quiet_sid, quiet) = node1
        .create_session(&Username::parse("quiet").unwrap())
        .await
        .unwrap();
    let talker = user(&node1, "talker").await;
    let listener = user(&node2, "listener").await;
    let (leaver_sid, _) = node2
        .create_session(&Username::parse("leaver").unwrap())
        .await
        .unwrap();
    node1
        .insert_message(msg(&talker, &listener, "hi", None))
        .await
        .unwrap();
    // Both nodes cache the directory.
    assert_eq!(node2.list_users().await.unwrap().len(), 4);
    assert_eq!(node1.list_users().await.unwrap().len(), 4);

    assert!(node2.delete_session(&leaver_sid).await.unwrap());
    let swept = node1
        .expire_accounts(Duration::from_secs(3600), 100)
        .await
        .unwrap();
    assert_eq!(swept.users, 1, "the one who signed out without a message");
    for node in [&node1, &node2] {
        assert_eq!(
            names(&node.list_users().await.unwrap()),
            ["quiet", "talker", "listener"]
        );
    }

    // Idle past the limit: the quiet account goes with its session; the two who talked stay,
    // signed out everywhere or not.
    node1.delete_user_sessions(&talker).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let swept = node2
        .expire_accounts(Duration::from_millis(10), 100)
        .await
        .unwrap();
    assert_eq!(swept.users, 1);
    assert_eq!(swept.sessions, [quiet_sid.digest()]);
    let after = user(&node2, "after").await;
    for node in [&node1, &node2] {
        assert_eq!(
            names(&node.list_users().await.unwrap()),
            ["talker", "listener", "after"]
        );
    }
    assert_eq!(node1.find_session(&quiet_sid).await.unwrap(), None);
    assert_eq!(
        node1
            .insert_message(msg(&talker, &quiet.user_id, "anyone?", None))
            .await
            .unwrap(),
        None,
        "a deleted account is an unknown recipient"
    );
    let _ = after;
}

#[tokio::test]
async fn a_connected_session_touched_in_time_outlives_its_idle_time_and_keeps_its_account() {
    let redis = RedisServer::start().await;
    let idle = policy(Duration::from_millis(300), Duration::from_secs(3600));
    let store = store(&redis, idle, Duration::from_secs(10)).await;
    let (sid, _) = store
        .create_session(&Username::parse("ada").unwrap())
        .await
        .unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(store
            .touch_sessions(vec![sid.digest()])
            .await
            .unwrap()
            .is_empty());
        assert!(store.expire_sessions(10).await.unwrap().is_empty());
        let swept = store
            .expire_accounts(Duration::from_millis(300), 10)
            .await
            .unwrap();
        assert_eq!(swept.users, 0);
    }
    assert!(store.find_session(&sid).await.unwrap().is_some());
    let unknown = server::domain::SessionId::random().digest();
    assert_eq!(
        store.touch_sessions(vec![unknown.clone()]).await.unwrap(),
        [unknown]
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        store.touch_sessions(vec![sid.digest()]).await.unwrap(),
        [sid.digest()],
        "a late touch does not revive it"
    );
}

#[tokio::test]
async fn a_directory_from_before_expiry_is_converted_once_in_order() {
    use redis::AsyncCommands;
    let redis = RedisServer::start().await;
    let key = |rest: &str| format!("{}:{rest}", redis.prefix);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // What the store wrote before: a list of [userID, name], a session with an idle TTL.
    for (id, name) in [("u-a", "ada"), ("u-b", "bob"), ("u-c", "cy")] {
        let _: () = conn.hset(key("usernames"), id, name).await.unwrap();
        let entry = serde_json::to_string(&(id, name)).unwrap();
        let _: () = conn.rpush(key("users"), entry).await.unwrap();
    }
    let _: () = conn
        .hset_multiple(
            key("session:d-a"),
            &[("user", "u-a"), ("name", "ada"), ("created", "0")],
        )
        .await
        .unwrap();
    let _: () = conn.pexpire(key("session:d-a"), 60_000).await.unwrap();
    let _: () = conn.sadd(key("user:u-a:sessions"), "d-a").await.unwrap();
    let _: () = conn.sadd(key("peers:u-b"), "u-c").await.unwrap();
    let _: () = conn.sadd(key("peers:u-c"), "u-b").await.unwrap();

    let node1 = default_store(&redis).await;
    let node2 = default_store(&redis).await;
    for node in [&node1, &node2] {
        assert_eq!(
            names(&node.list_users().await.unwrap()),
            ["ada", "bob", "cy"]
        );
    }
    let legacy: bool = conn.exists(key("users")).await.unwrap();
    assert!(!legacy, "the old list is gone once converted");
    // Ada's session was created at 0: past its maximum age, it is swept like any other.
    assert_eq!(node1.expire_sessions(10).await.unwrap(), ["d-a"]);
    // Ada had no message: left without a session, she goes; bob and cy talked, and stay.
    let swept = node1
        .expire_accounts(Duration::from_secs(3600), 10)
        .await
        .unwrap();
    assert_eq!(swept.users, 1);
    assert_eq!(names(&node2.list_users().await.unwrap()), ["bob", "cy"]);
}
