//! What the Redis store does beyond the store contract (`store_contract.rs`, which runs every
//! promise of the `Store` trait against Redis too): several nodes on one Redis, with presence
//! summed over nodes and a dead node's sockets swept once, sweeps shared between nodes, the
//! directory every node caches, and the conversion of a directory written before expiry.

use std::time::Duration;

use server::domain::{MessageContent, UserId, Username};
use server::store::redis::{NodeOptions, RedisStore};
use server::store::sqlite::SessionPolicy;
use server::store::{NewMessage, PresenceChange, Store};

use crate::helpers::RedisServer;

fn policy(idle: Duration, max_age: Duration) -> SessionPolicy {
    SessionPolicy { idle, max_age }
}

async fn store(redis: &RedisServer, policy: SessionPolicy, ttl: Duration) -> RedisStore {
    RedisStore::connect(&redis.url(), &redis.prefix, policy, NodeOptions::new(ttl))
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
        .create_session(&Username::parse(name).unwrap(), "", None)
        .await
        .unwrap()
        .into_session()
        .unwrap()
        .1
        .user_id
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

/// A sweep is claimed with a lease: one whose sweeper died (its lease lapsed) is taken over and
/// finished, each user reported once (a user the dead sweeper had uncounted is not reported
/// again); a live lease is left alone; and a node that was swept while alive puts its sockets
/// back only once the sweep of it is over (before, the sweep would undo it).
#[tokio::test]
async fn a_sweep_whose_sweeper_died_is_taken_over_and_a_swept_node_waits_for_it() {
    use redis::AsyncCommands;
    let redis = RedisServer::start().await;
    let ttl = Duration::from_millis(300);
    let sessions = policy(Duration::from_secs(3600), Duration::from_secs(7200));
    let node1 = store(&redis, sessions, ttl).await;
    let node2 = store(&redis, sessions, ttl).await;
    let (ada, bob) = (user(&node1, "ada").await, user(&node1, "bob").await);
    node1.socket_connected(&ada).await.unwrap();
    node1.socket_connected(&bob).await.unwrap();
    node2.socket_connected(&ada).await.unwrap();

    let p = &redis.prefix;
    let nodes = format!("{p}:{{{p}:g}}:nodes");
    let sweeping = format!("{p}:{{{p}:g}}:sweeping");
    let presence = |user: &UserId| format!("{p}:{{u:{}}}:presence", user.as_str());
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // node1 stops beating; another sweeper claims it, uncounts ada there, and dies.
    tokio::time::sleep(ttl * 2).await;
    let id1 = node1.node_id().to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let _: () = conn.srem(&nodes, &id1).await.unwrap();
    let _: () = conn.zadd(&sweeping, &id1, now + 60_000).await.unwrap();
    let _: () = conn.hdel(presence(&ada), &id1).await.unwrap();

    assert_eq!(
        node2.heartbeat().await.unwrap(),
        [],
        "a sweep under a live lease is its sweeper's"
    );
    assert_eq!(node2.socket_count(&bob).await.unwrap(), 1);

    let _: () = conn.zadd(&sweeping, &id1, now - 1).await.unwrap();
    assert_eq!(
        node2.heartbeat().await.unwrap(),
        [PresenceChange::Left {
            user: bob.clone(),
            sockets_left: 0
        }],
        "the lapsed sweep is finished, and ada, uncounted already, is not reported again"
    );
    assert!(node2.heartbeat().await.unwrap().is_empty(), "swept once");
    assert_eq!(node2.socket_count(&ada).await.unwrap(), 1);
    assert!(!node2.online_users().await.unwrap().contains(&bob));

    // node1 wakes up while a sweep of it is under way: it waits for the sweep to end.
    let _: () = conn.zadd(&sweeping, &id1, now + 60_000).await.unwrap();
    assert_eq!(node1.heartbeat().await.unwrap(), []);
    assert_eq!(node2.socket_count(&bob).await.unwrap(), 0);
    let _: () = conn.zrem(&sweeping, &id1).await.unwrap();
    let mut returned = node1.heartbeat().await.unwrap();
    returned.sort_by_key(|c| format!("{c:?}"));
    let mut expected = vec![
        PresenceChange::Returned { user: ada.clone() },
        PresenceChange::Returned { user: bob.clone() },
    ];
    expected.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(returned, expected);
    assert_eq!(node2.socket_count(&ada).await.unwrap(), 2);
    assert_eq!(node2.socket_count(&bob).await.unwrap(), 1);
    assert!(node2.online_users().await.unwrap().contains(&bob));
    assert!(node1.heartbeat().await.unwrap().is_empty(), "back once");
}

/// The presence keys from before hash tags (a `nodes` set, per-node `presence:` hashes and
/// `node:` heartbeats) are dropped at connect; no node of this layout counts them.
#[tokio::test]
async fn presence_keys_from_before_hash_tags_are_dropped_at_connect() {
    use redis::AsyncCommands;
    let redis = RedisServer::start().await;
    let key = |rest: &str| format!("{}:{rest}", redis.prefix);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = conn.sadd(key("nodes"), "old").await.unwrap();
    let _: () = conn.hset(key("presence:old"), "u-a", 2).await.unwrap();
    let _: () = conn.set(key("node:old"), "1").await.unwrap();

    let node = default_store(&redis).await;
    for gone in ["nodes", "presence:old", "node:old"] {
        let exists: bool = conn.exists(key(gone)).await.unwrap();
        assert!(!exists, "{gone} is dropped");
    }
    assert!(node.online_users().await.unwrap().is_empty());
}

fn names(users: &[server::store::User]) -> Vec<&str> {
    users.iter().map(|u| u.username.as_str()).collect()
}

#[tokio::test]
async fn two_nodes_sweep_each_session_once_and_both_forget_deleted_accounts() {
    let redis = RedisServer::start().await;
    let ages = policy(Duration::from_secs(3600), Duration::from_millis(300));
    let node1 = store(&redis, ages, Duration::from_secs(10)).await;
    let node2 = store(&redis, ages, Duration::from_secs(10)).await;
    let (quiet, _) = node1
        .create_session(&Username::parse("quiet").unwrap(), "", None)
        .await
        .unwrap()
        .into_session()
        .unwrap();
    let talker = user(&node1, "talker").await;
    let listener = user(&node2, "listener").await;
    let hello = NewMessage {
        from: talker,
        to: listener,
        content: MessageContent::parse("hi", 10).unwrap(),
        client_id: None,
    };
    node1.insert_message(hello).await.unwrap().unwrap();
    for node in [&node1, &node2] {
        let users = node.list_users().await.unwrap();
        assert_eq!(names(&users), ["quiet", "talker", "listener"]);
    }
    // Every session is past its maximum age: one node ends them all, the other finds none.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let ended = node2.expire_sessions(100).await.unwrap();
    assert_eq!(ended.len(), 3);
    assert!(ended.contains(&quiet.digest()));
    assert!(node1.expire_sessions(100).await.unwrap().is_empty());
    // The message-less account goes, and every node's cached directory forgets it.
    let swept = node1
        .expire_accounts(Duration::from_secs(3600), 100)
        .await
        .unwrap();
    assert_eq!(swept.users, 1);
    user(&node2, "after").await;
    for node in [&node1, &node2] {
        let users = node.list_users().await.unwrap();
        assert_eq!(names(&users), ["talker", "listener", "after"]);
    }
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

/// A Redis written before name keys (review h4, findings 2 and 3): the first connect of this
/// release gives every user its name key and re-keys the protected names by their owners' names,
/// the older account keeping a claim two now share; it runs once.
#[tokio::test]
async fn users_and_claims_from_before_name_keys_are_keyed_once_at_connect() {
    use redis::AsyncCommands;
    use server::store::{Created, Protect, StoredPasskey};
    let redis = RedisServer::start().await;
    let key = |rest: &str| format!("{}:{rest}", redis.prefix);
    let node = default_store(&redis).await;
    let ada = user(&node, "ada").await;
    let wide = user(&node, "\u{ff21}\u{ff24}\u{ff21}").await;
    drop(node);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // As the release before wrote it: no name keys, claims under trim + lower case (so the
    // fullwidth name had a claim of its own).
    for gone in ["name-keys", "name-keys:filled", "names:ada"] {
        let _: () = conn.del(key(gone)).await.unwrap();
    }
    let _: () = conn
        .hset(key("protected"), "\u{ff41}\u{ff44}\u{ff41}", wide.as_str())
        .await
        .unwrap();
    let _: () = conn
        .hset(key("protected"), "ada", ada.as_str())
        .await
        .unwrap();

    let node = default_store(&redis).await;
    let claims: Vec<(String, String)> = conn.hgetall(key("protected")).await.unwrap();
    assert_eq!(claims, [("ada".to_owned(), ada.as_str().to_owned())]);
    let keys: Vec<(String, String)> = conn.hgetall(key("name-keys")).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let refused = node
        .create_session(&Username::parse("\u{430}da").unwrap(), "", None)
        .await
        .unwrap();
    assert_eq!(refused, Created::NameProtected);
    let passkey = StoredPasskey {
        cred_id: "c9".into(),
        json: "{}".into(),
    };
    assert_eq!(
        node.protect(&wide, passkey, "Chrome on Linux")
            .await
            .unwrap(),
        Protect::NameTaken
    );
    // Once: a later connect leaves a claim made since alone.
    let _: () = conn
        .hset(key("protected"), "zz", ada.as_str())
        .await
        .unwrap();
    drop(default_store(&redis).await);
    let kept: Option<String> = conn.hget(key("protected"), "zz").await.unwrap();
    assert_eq!(kept.as_deref(), Some(ada.as_str()));
}
