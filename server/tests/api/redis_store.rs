//! What the Redis store does beyond the store contract (`store_contract.rs`, which runs every
//! promise of the `Store` trait against Redis too): several nodes on one Redis, with sweeps
//! shared between nodes, the directory every node caches, and the conversion of what older
//! releases wrote (presence itself is `redis_presence.rs`).

use std::time::Duration;

use server::domain::{MessageContent, UserId, Username};
use server::store::redis::{NodeOptions, RedisStore};
use server::store::sqlite::SessionPolicy;
use server::store::{NewMessage, Store};

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
    // What the store wrote before: a list of [userID, name], a session with an idle TTL (ids
    // shaped as the store makes them: the move to hash tags moves only those).
    let (ua, ub, uc) = (UserId::random(), UserId::random(), UserId::random());
    let (ua, ub, uc) = (ua.as_str(), ub.as_str(), uc.as_str());
    let da = "da".repeat(32);
    for (id, name) in [(ua, "ada"), (ub, "bob"), (uc, "cy")] {
        let _: () = conn.hset(key("usernames"), id, name).await.unwrap();
        let entry = serde_json::to_string(&(id, name)).unwrap();
        let _: () = conn.rpush(key("users"), entry).await.unwrap();
    }
    let session = key(&format!("session:{da}"));
    let _: () = conn
        .hset_multiple(&session, &[("user", ua), ("name", "ada"), ("created", "0")])
        .await
        .unwrap();
    let _: () = conn.pexpire(&session, 60_000).await.unwrap();
    let _: () = conn
        .sadd(key(&format!("user:{ua}:sessions")), &da)
        .await
        .unwrap();
    let _: () = conn.sadd(key(&format!("peers:{ub}")), uc).await.unwrap();
    let _: () = conn.sadd(key(&format!("peers:{uc}")), ub).await.unwrap();

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
    assert_eq!(node1.expire_sessions(10).await.unwrap(), [da]);
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
    // The directory's keys, in its slot.
    let key = |rest: &str| format!("{p}:{{{p}:d}}:{rest}", p = redis.prefix);
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

/// A Redis written by the release before hash tags (every key named `<prefix>:<name>`): the
/// first connect of this release moves it into hash-tagged slots once, and everything in it
/// reads the same: the session by its secret (with its device and deadline), the account's
/// passkeys and protected name, its settings, its conversation; a second connect moves nothing.
#[tokio::test]
async fn a_redis_from_before_hash_tags_is_moved_once_and_reads_the_same() {
    use redis::AsyncCommands;
    use server::domain::SessionId;
    use server::store::Created;
    let redis = RedisServer::start().await;
    let key = |rest: &str| format!("{}:{rest}", redis.prefix);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (ada, bob) = (UserId::random(), UserId::random());
    let (a, b) = (ada.as_str(), bob.as_str());
    let secret = SessionId::random();
    let family = secret.digest();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // As the release before wrote it.
    let _: () = conn
        .hset_multiple(key("usernames"), &[(a, "ada"), (b, "bob")])
        .await
        .unwrap();
    let _: () = conn
        .zadd_multiple(key("directory"), &[(1, a), (2, b)])
        .await
        .unwrap();
    let _: () = conn.set(key("users:seq"), 2).await.unwrap();
    let _: () = conn
        .hset_multiple(key("name-keys"), &[(a, "ada"), (b, "bob")])
        .await
        .unwrap();
    let _: () = conn.zadd(key("names:ada"), a, 1).await.unwrap();
    let _: () = conn.zadd(key("names:bob"), b, 2).await.unwrap();
    let _: () = conn.set(key("name-keys:filled"), 1).await.unwrap();
    let _: () = conn.hset(key("protected"), "ada", a).await.unwrap();
    let _: () = conn.hset(key("creds"), "c1", a).await.unwrap();
    let _: () = conn
        .hset(key(&format!("user:{a}:passkeys")), "c1", "{}")
        .await
        .unwrap();
    let _: () = conn
        .hset(
            key(&format!("user:{a}:passkey-info")),
            "c1",
            format!("{now}|{now}|Chrome on Linux"),
        )
        .await
        .unwrap();
    let session = key(&format!("session:{family}"));
    let _: () = conn
        .hset_multiple(
            &session,
            &[
                ("user", a),
                ("name", "ada"),
                ("created", &now.to_string()),
                ("seen", &now.to_string()),
                ("device", "Firefox on Linux"),
                ("key", ""),
            ],
        )
        .await
        .unwrap();
    let _: () = conn.pexpire(&session, 3_600_000).await.unwrap();
    let _: () = conn
        .sadd(key(&format!("user:{a}:sessions")), &family)
        .await
        .unwrap();
    let _: () = conn
        .zadd(
            key("session-deadlines"),
            format!("{family}:{a}"),
            now + 3_600_000,
        )
        .await
        .unwrap();
    let _: () = conn
        .hset(key(&format!("settings:{a}")), "readReceipts", "0")
        .await
        .unwrap();
    let message = format!(r#"{{"id":1,"ts":{now},"content":"hi","from":"{b}","to":"{a}"}}"#);
    let _: () = conn.hset(key("messages"), 1, &message).await.unwrap();
    let _: () = conn.set(key("msg:seq"), 1).await.unwrap();
    for set in [
        format!("inbox:{a}"),
        format!("inbox:{b}"),
        format!("conv:{}|{}", a.min(b), a.max(b)),
    ] {
        let _: () = conn.zadd(key(&set), 1, 1).await.unwrap();
    }
    let _: () = conn.sadd(key(&format!("peers:{a}")), b).await.unwrap();
    let _: () = conn.sadd(key(&format!("peers:{b}")), a).await.unwrap();

    let node = default_store(&redis).await;
    let found = node
        .find_session(&secret)
        .await
        .unwrap()
        .expect("the session moved");
    assert_eq!(
        (found.user_id.as_str(), found.username.as_str()),
        (a, "ada")
    );
    let devices = node.devices(&ada).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].label, "Firefox on Linux");
    let passkeys = node.passkeys(&ada).await.unwrap();
    assert!(passkeys.protected);
    assert_eq!(passkeys.passkeys.len(), 1);
    assert!(!node.settings(&ada).await.unwrap().read_receipts);
    let on = server::store::SettingsChange {
        read_receipts: Some(true),
    };
    let changed = node.change_settings(&ada, on).await.unwrap();
    assert!(changed.expect("ada is known in her own slot").changed);
    assert_eq!(names(&node.list_users().await.unwrap()), ["ada", "bob"]);
    assert_eq!(
        node.create_session(&Username::parse("ada").unwrap(), "", None)
            .await
            .unwrap(),
        Created::NameProtected
    );
    let conversations = node.conversations(&ada, 10, 0, 10).await.unwrap();
    assert_eq!(conversations.peers, std::slice::from_ref(&bob));
    assert_eq!(conversations.messages.len(), 1);
    // Both parties' copies: bob's restore and his history with ada hold it too.
    assert_eq!(
        node.messages_since(&bob, 0, 10)
            .await
            .unwrap()
            .messages
            .len(),
        1
    );
    let history = node.history(&bob, &ada, None, 10).await.unwrap();
    assert_eq!(history.messages[0].content, "hi");
    let old: bool = conn.exists(&session).await.unwrap();
    assert!(!old, "the old names are gone");
    let layout: i64 = conn.get(key("layout")).await.unwrap();
    assert_eq!(layout, 3);
    drop(node);
    let again = default_store(&redis).await;
    assert!(
        again.find_session(&secret).await.unwrap().is_some(),
        "moved once"
    );
}

/// What a stopped or failed step leaves behind is finished by the next call, not left for good:
/// an account sweep that claimed a user and stopped (the user out of the names, not deleted) is
/// redone once its claim lapses; a credential reserved by a protect that stopped before adding
/// its passkey is the user's to add, also after a removal that stopped before freeing it.
#[tokio::test]
async fn steps_left_half_done_are_finished_by_the_next_call() {
    use redis::AsyncCommands;
    use server::store::{Protect, RemovedPasskey, StoredPasskey};
    let redis = RedisServer::start().await;
    let dir = |rest: &str| format!("{p}:{{{p}:d}}:{rest}", p = redis.prefix);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let node = default_store(&redis).await;
    let (ada, cy) = (user(&node, "ada").await, user(&node, "cy").await);
    node.delete_user_sessions(&ada).await.unwrap();

    // A sweep claimed ada and stopped: her claim lapsed.
    let _: () = conn.hdel(dir("usernames"), ada.as_str()).await.unwrap();
    let _: () = conn.zrem(dir("quiet-users"), ada.as_str()).await.unwrap();
    let _: () = conn
        .zadd(dir("claimed-users"), ada.as_str(), 1)
        .await
        .unwrap();
    let _: () = conn
        .hset(dir("claimed-names"), ada.as_str(), "ada")
        .await
        .unwrap();
    assert_eq!(names(&node.list_users().await.unwrap()), ["cy"]);
    let swept = node
        .expire_accounts(Duration::from_secs(3600), 10)
        .await
        .unwrap();
    assert_eq!(swept.users, 1, "the stopped sweep is finished");
    let claimed: i64 = conn.zcard(dir("claimed-users")).await.unwrap();
    assert_eq!(claimed, 0);
    // ada's name is free again: a new ada is the oldest with it, and may protect it.
    let ada2 = user(&node, "ada").await;
    let passkey = |id: &str| StoredPasskey {
        cred_id: id.into(),
        json: "{}".into(),
    };

    // A protect reserved c1 for ada2 and stopped before adding the passkey.
    let _: () = conn.hset(dir("creds"), "c1", ada2.as_str()).await.unwrap();
    assert_eq!(
        node.protect(&ada2, passkey("c1"), "Firefox").await.unwrap(),
        Protect::Protected
    );
    assert_eq!(
        node.protect(&ada2, passkey("c1"), "Firefox").await.unwrap(),
        Protect::CredentialTaken,
        "once added, it is taken"
    );
    assert_eq!(
        node.protect(&cy, passkey("c1"), "Firefox").await.unwrap(),
        Protect::CredentialTaken
    );

    // A removal took c1 off ada2's passkeys and stopped before freeing it: the credential stays
    // reserved to ada2, who may add it again.
    let passkeys = format!("{}:{{u:{}}}:passkeys", redis.prefix, ada2.as_str());
    let _: () = conn.hdel(&passkeys, "c1").await.unwrap();
    assert_eq!(
        node.remove_passkey(&ada2, "c1").await.unwrap(),
        RemovedPasskey::Unknown
    );
    assert_eq!(
        node.protect(&ada2, passkey("c1"), "Firefox").await.unwrap(),
        Protect::Added
    );
}

/// Not a check: measures what the README's sizing note says (`cargo test -p server --test api
/// -- --ignored redis_memory_per_message --nocapture`, on a Redis of its own).
#[tokio::test]
#[ignore]
async fn redis_memory_per_message() {
    let redis = RedisServer::start_own().await;
    let used = |redis: &RedisServer| -> i64 {
        let info = redis.cli(&["info", "memory"]);
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory")
    };
    let node = default_store(&redis).await;
    let mut users = Vec::new();
    for i in 0..20 {
        users.push(user(&node, &format!("user{i}")).await);
    }
    let before = used(&redis);
    let content = "x".repeat(100);
    const MESSAGES: usize = 20_000;
    for i in 0..MESSAGES {
        let (from, to) = (&users[i % 20], &users[(i * 7 + 3) % 20]);
        node.insert_message(NewMessage {
            from: from.clone(),
            to: to.clone(),
            content: MessageContent::parse(&content, 1000).unwrap(),
            client_id: Some(
                server::domain::ClientMsgId::parse(&uuid::Uuid::new_v4().to_string()).unwrap(),
            ),
        })
        .await
        .unwrap();
    }
    let after = used(&redis);
    eprintln!(
        "{} bytes per message ({MESSAGES} messages of 100 characters among 20 users)",
        (after - before) / MESSAGES as i64
    );
}

/// The texts of `viewer`'s copy of their conversation with `peer` (its newest 50), sorted.
async fn texts_between(node: &RedisStore, viewer: &UserId, peer: &UserId) -> Vec<String> {
    let page = node.history(viewer, peer, None, 50).await.unwrap();
    let mut texts: Vec<String> = page.messages.into_iter().map(|m| m.content).collect();
    texts.sort();
    texts
}

/// A node of the store on the test cluster, sessions living an hour.
async fn cluster_node(cluster: &crate::helpers::RedisCluster) -> RedisStore {
    let sessions = policy(Duration::from_secs(3600), Duration::from_secs(7200));
    RedisStore::connect_cluster(
        &cluster.urls,
        &cluster.prefix,
        sessions,
        NodeOptions::new(Duration::from_secs(10)),
    )
    .await
    .expect("connects to the cluster")
}

/// On a cluster a message is stored in steps: one whose send stopped after the sender's copy
/// (marked pending, the recipient's not written) is finished by the sender's next send, so
/// the recipient's copy comes (their history and restore hold it), and a pending message whose
/// recipient is gone is taken back.
#[tokio::test]
async fn a_send_that_stopped_midway_on_a_cluster_is_finished_by_the_next() {
    use crate::helpers::RedisCluster;
    use redis::AsyncCommands;
    let cluster = RedisCluster::start().await;
    let node = cluster_node(&cluster).await;
    let (ada, bob) = (user(&node, "ada").await, user(&node, "bob").await);
    let (a, b) = (ada.as_str(), bob.as_str());
    let key = |user: &str, name: &str| format!("{}:{{u:{user}}}:{name}", cluster.prefix);
    let mut conn = cluster.connection().await;
    // What a send that stopped after its first step leaves: ada's copy, marked pending long ago
    // (its id taken from the counter).
    let seq = format!("{0}:{{{0}:seq}}:msg:seq", cluster.prefix);
    let _: () = conn.set(&seq, 900).await.unwrap();
    let json = format!(r#"{{"id":900,"ts":1,"content":"stopped","from":"{a}","to":"{b}"}}"#);
    let _: () = conn.hset(key(a, "msg"), 900, &json).await.unwrap();
    let _: () = conn.zadd(key(a, "inbox"), 900, 900).await.unwrap();
    let _: () = conn
        .zadd(key(a, &format!("conv:{b}")), 900, 900)
        .await
        .unwrap();
    let _: () = conn.sadd(key(a, "peers"), b).await.unwrap();
    let _: () = conn.zadd(key(a, "pending"), 900, 1).await.unwrap();
    assert!(node
        .history(&bob, &ada, None, 10)
        .await
        .unwrap()
        .messages
        .is_empty());

    let next = NewMessage {
        from: ada.clone(),
        to: bob.clone(),
        content: MessageContent::parse("next", 10).unwrap(),
        client_id: None,
    };
    node.insert_message(next).await.unwrap().unwrap();
    assert_eq!(texts_between(&node, &bob, &ada).await, ["next", "stopped"]);
    let pending: i64 = conn.zcard(key(a, "pending")).await.unwrap();
    assert_eq!(pending, 0);
}

/// On a cluster a message takes its id before its copies are written, so another message
/// (with a higher id) can reach a copy in between. A copy takes only ids above the highest it
/// ever held: a message whose id the recipient's copy has passed moves to a new id (the
/// sender's copy in one step), so `since` and read cursors (ids) still mean "arrived after".
/// Here ada's send stopped after her copy (id n, pending); cyd's message to bob took n + 1 and
/// reached bob; ada's next send finishes hers under a new id, which bob's restore from n + 1
/// (the newest he holds) returns, and her client id follows it. A sender's copy that passed a
/// new id likewise makes the send take another; so does a live send; and one that finds no id
/// in order within its tries fails, its message kept pending for the resend.
#[tokio::test]
async fn a_copy_takes_only_ids_above_those_it_held() {
    use crate::helpers::RedisCluster;
    use redis::AsyncCommands;
    let cluster = RedisCluster::start().await;
    let node = cluster_node(&cluster).await;
    let (ada, bob, cyd) = (
        user(&node, "ada").await,
        user(&node, "bob").await,
        user(&node, "cyd").await,
    );
    let (a, b) = (ada.as_str(), bob.as_str());
    let key = |user: &str, name: &str| format!("{}:{{u:{user}}}:{name}", cluster.prefix);
    let seq = format!("{0}:{{{0}:seq}}:msg:seq", cluster.prefix);
    let mut conn = cluster.connection().await;
    let (c1, c2, c3) = (
        "00000000-0000-7000-8000-000000000001",
        "00000000-0000-7000-8000-000000000002",
        "00000000-0000-7000-8000-000000000003",
    );
    let send = |from: &UserId, to: &UserId, text: &str, client_id: Option<&str>| NewMessage {
        from: from.clone(),
        to: to.clone(),
        content: MessageContent::parse(text, 100).unwrap(),
        client_id: client_id.map(|c| server::domain::ClientMsgId::parse(c).unwrap()),
    };

    // Ada's send took id n and stopped after her copy.
    let n: i64 = conn.incr(&seq, 1).await.unwrap();
    let json = format!(
        r#"{{"id":{n},"ts":1,"content":"stopped","from":"{a}","to":"{b}","clientId":"{c1}"}}"#
    );
    let _: () = conn.hset(key(a, "msg"), n, &json).await.unwrap();
    let _: () = conn.hset(key(a, "dedupe"), c1, n).await.unwrap();
    let _: () = conn.zadd(key(a, "inbox"), n, n).await.unwrap();
    let _: () = conn.zadd(key(a, &format!("conv:{b}")), n, n).await.unwrap();
    let _: () = conn.sadd(key(a, "peers"), b).await.unwrap();
    let _: () = conn.set(key(a, "top"), n).await.unwrap();
    let _: () = conn.zadd(key(a, "pending"), n, 1).await.unwrap();
    // Cyd's message takes n + 1 and reaches bob: the newest he holds.
    let held = node
        .insert_message(send(&cyd, &bob, "from cyd", None))
        .await
        .unwrap()
        .unwrap()
        .message()
        .id;
    assert_eq!(held, n + 1);

    node.insert_message(send(&ada, &bob, "next", None))
        .await
        .unwrap()
        .unwrap();
    let restored = node.messages_since(&bob, held, 10).await.unwrap().messages;
    let contents: Vec<&str> = restored.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["stopped", "next"], "bob's restore from {held}");
    let stopped = &restored[0];
    assert!(stopped.id > held);
    // Ada's copy holds it under the new id only, no longer pending, and her client id names it.
    let old: Option<String> = conn.hget(key(a, "msg"), n).await.unwrap();
    assert_eq!(old, None);
    let pending: i64 = conn.zcard(key(a, "pending")).await.unwrap();
    assert_eq!(pending, 0);
    let again = node
        .insert_message(send(&ada, &bob, "stopped", Some(c1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.message().id, stopped.id);
    let history = node.history(&ada, &bob, None, 10).await.unwrap().messages;
    let ids: Vec<i64> = history.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&stopped.id) && !ids.contains(&n), "{ids:?}");

    // The sender's side: ada's copy held a higher id than the next one taken.
    let next: i64 = conn.get(&seq).await.unwrap();
    let _: () = conn.set(key(a, "top"), next + 2).await.unwrap();
    let sent = node
        .insert_message(send(&ada, &bob, "later", None))
        .await
        .unwrap()
        .unwrap();
    assert!(
        sent.message().id > next + 2,
        "{} after {}",
        sent.message().id,
        next + 2
    );
    let restored = node
        .messages_since(&ada, next + 2, 10)
        .await
        .unwrap()
        .messages;
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].content, "later");

    // A live send whose id bob's copy has passed moves to a new id (ada's copy in one step) and
    // is acked under it; ada's copy holds it under that id only, no longer pending.
    let next: i64 = conn.get(&seq).await.unwrap();
    let _: () = conn.set(key(b, "top"), next + 5).await.unwrap();
    let live = node
        .insert_message(send(&ada, &bob, "live", Some(c2)))
        .await
        .unwrap()
        .unwrap();
    let live_id = live.message().id;
    assert!(live_id > next + 5, "{live_id} after {}", next + 5);
    let restored = node
        .messages_since(&bob, next + 5, 10)
        .await
        .unwrap()
        .messages;
    assert_eq!(restored.iter().map(|m| m.id).collect::<Vec<_>>(), [live_id]);
    let ada_ids: Vec<i64> = conn.zrange(key(a, "inbox"), 0, -1).await.unwrap();
    assert!(
        ada_ids.iter().all(|id| *id <= next || *id == live_id),
        "{ada_ids:?}"
    );
    let named: i64 = conn.hget(key(a, "dedupe"), c2).await.unwrap();
    assert_eq!(named, live_id);
    let pending: i64 = conn.zcard(key(a, "pending")).await.unwrap();
    assert_eq!(pending, 0);

    // No id in order within the tries: the send fails as unavailable, and the message stays in
    // ada's copy, pending under its client id, until a resend finishes it: nothing is lost.
    let next: i64 = conn.get(&seq).await.unwrap();
    let _: () = conn.set(key(b, "top"), next + 1000).await.unwrap();
    let error = node
        .insert_message(send(&ada, &bob, "stuck", Some(c3)))
        .await
        .unwrap_err();
    assert!(
        matches!(error, server::store::StoreError::Unavailable(_)),
        "{error:?}"
    );
    let held: i64 = conn.hget(key(a, "dedupe"), c3).await.unwrap();
    let pending: Vec<i64> = conn.zrange(key(a, "pending"), 0, -1).await.unwrap();
    assert_eq!(pending, [held]);
    let _: () = conn.del(key(b, "top")).await.unwrap();
    let resent = node
        .insert_message(send(&ada, &bob, "stuck", Some(c3)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resent.message().id, held);
    // Bob's copy holds each message once, under the id it ended with.
    assert_eq!(
        texts_between(&node, &bob, &ada).await,
        ["later", "live", "next", "stopped", "stuck"]
    );
    let stuck = node
        .messages_since(&bob, live_id, 10)
        .await
        .unwrap()
        .messages;
    assert_eq!(
        stuck
            .iter()
            .map(|m| (m.id, m.content.as_str()))
            .collect::<Vec<_>>(),
        [(held, "stuck")]
    );
}

/// On a standalone Redis a message takes its id inside the script that writes both copies; a
/// counter behind what a copy holds (keys restored from an older backup, say) moves up past it
/// there, so a send never takes an id a copy already passed.
#[tokio::test]
async fn a_counter_behind_the_stored_messages_moves_past_them() {
    use redis::AsyncCommands;
    let redis = RedisServer::start().await;
    let node = default_store(&redis).await;
    let (ada, bob) = (user(&node, "ada").await, user(&node, "bob").await);
    let send = |text: &str| NewMessage {
        from: ada.clone(),
        to: bob.clone(),
        content: MessageContent::parse(text, 100).unwrap(),
        client_id: None,
    };
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let seq = format!("{0}:{{{0}:seq}}:msg:seq", redis.prefix);
    let mut last = 0;
    for text in ["one", "two"] {
        last = node
            .insert_message(send(text))
            .await
            .unwrap()
            .unwrap()
            .message()
            .id;
    }
    let _: () = conn.set(&seq, 0).await.unwrap();
    let third = node
        .insert_message(send("three"))
        .await
        .unwrap()
        .unwrap()
        .message()
        .id;
    assert!(third > last, "{third} after {last}");
    let after = node.messages_since(&bob, last, 10).await.unwrap().messages;
    assert_eq!(
        after.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["three"]
    );
    let counter: i64 = conn.get(&seq).await.unwrap();
    assert_eq!(counter, third);
}
