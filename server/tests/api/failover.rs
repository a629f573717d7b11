//! A Redis failover loses no acked message (issue 27, item 3). Redis copies writes to its
//! replicas after answering them, so a primary killed right after a write takes it along
//! when its replica is promoted. With `--redis-wait-replicas N` a message is acked only once N
//! replicas hold it (`WAIT`, pipelined with the write): what was acked is on the replica that
//! takes over. Each test runs a primary and a replica of its own, kills the primary with
//! SIGKILL, promotes the replica (`REPLICAOF NO ONE`, what Sentinel or an operator does) and
//! starts a node on it, as a load balancer would send the clients there. On a Redis Cluster
//! (a replica per primary) a message is stored in steps on two shards, and each party's copy
//! is waited for on its own shard; there the cluster promotes the replica itself and the same
//! node follows it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{ChildServer, RedisCluster, RedisServer, TestClient};

/// A node on `redis` that acks a message once `replicas` replicas hold it (0: at once).
async fn node_on(redis: &RedisServer, replicas: u32) -> (ChildServer, tempfile::TempDir) {
    node_with(redis.node_args(), replicas).await
}

/// A node on a Redis Cluster that acks a message once `replicas` replicas of each party's
/// shard hold that party's copy.
async fn node_on_cluster(
    cluster: &RedisCluster,
    replicas: u32,
) -> (ChildServer, tempfile::TempDir) {
    node_with(cluster.node_args(), replicas).await
}

async fn node_with(mut args: Vec<String>, replicas: u32) -> (ChildServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    args.extend(
        [
            "--redis-wait-replicas",
            &replicas.to_string(),
            "--redis-wait-timeout-ms",
            "300",
        ]
        .map(str::to_owned),
    );
    (ChildServer::start_with(dir.path(), &args).await, dir)
}

/// A primary with a replica of its own, a node on it that acks a message once the replica
/// holds it, and two users signed up there.
struct Replicated {
    primary: RedisServer,
    replica: RedisServer,
    node: ChildServer,
    dir: tempfile::TempDir,
    ada: TestClient,
    bob: TestClient,
}

async fn replicated() -> Replicated {
    let primary = RedisServer::start_own().await;
    let replica = primary.start_replica().await;
    let (node, dir) = node_on(&primary, 1).await;
    let ada = sign_up(&node, "ada").await;
    let bob = sign_up(&node, "bob").await;
    Replicated {
        primary,
        replica,
        node,
        dir,
        ada,
        bob,
    }
}

async fn sign_up(node: &ChildServer, name: &str) -> TestClient {
    let mut client = TestClient::connect(&node.url(), json!({ "username": name })).await;
    client.expect_session().await;
    client
}

async fn resume(node: &ChildServer, session_id: &str) -> TestClient {
    let mut client = TestClient::connect(&node.url(), json!({ "sessionID": session_id })).await;
    client.expect_session().await;
    client
}

/// Sends one message with its clientId; its id when acked.
async fn send(from: &TestClient, to: &str, content: &str, client_id: &str) -> Option<i64> {
    let ack = from
        .request(
            "private message",
            json!({ "to": to, "content": content, "clientId": client_id }),
        )
        .await;
    ack["ok"]["id"].as_i64()
}

/// Message `i`, sent with `client_id` and answered within 5 s: its id, or `None` when refused
/// or unanswered (a node whose store is gone may retry it a while), which a client counts as
/// not acked.
async fn send_within(from: &TestClient, to: &str, i: usize, client_id: &str) -> Option<i64> {
    let content = format!("m{i}");
    tokio::time::timeout(Duration::from_secs(5), send(from, to, &content, client_id))
        .await
        .ok()
        .flatten()
}

/// Sends message `i` with clientId `ids[i]`, in order, until all are sent or `stop` is set,
/// counting each answer in `answered`: the acked messages and the others, by index.
async fn send_in_order(
    from: &TestClient,
    to: &str,
    ids: &[String],
    answered: &AtomicUsize,
    stop: &AtomicBool,
) -> (Vec<usize>, Vec<usize>) {
    let (mut acked, mut unacked) = (Vec::new(), Vec::new());
    for (i, client_id) in ids.iter().enumerate() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match send_within(from, to, i, client_id).await {
            Some(_) => acked.push(i),
            None => unacked.push(i),
        }
        answered.fetch_add(1, Ordering::SeqCst);
    }
    (acked, unacked)
}

/// The primary dies (SIGKILL, nothing flushed or handed over) and its replica takes over.
fn fail_over(primary: RedisServer, replica: &RedisServer) {
    primary.signal("KILL");
    drop(primary);
    assert_eq!(replica.cli(&["replicaof", "no", "one"]).trim(), "OK");
}

/// The clientIds of every message the recipient's copy holds (written last, before the ack),
/// read straight from the promoted replica.
fn stored_client_ids(redis: &RedisServer, recipient: &str) -> HashSet<String> {
    let key = format!("{}:{{u:{recipient}}}:msg", redis.prefix);
    redis
        .cli(&["--no-raw", "hvals", &key])
        .lines()
        .filter_map(|line| {
            // `1) "{\"ts\":…}"`: the quoted JSON after the index.
            let quoted = line.split_once(") ")?.1;
            let json: String = serde_json::from_str(quoted).ok()?;
            let message: Value = serde_json::from_str(&json).ok()?;
            Some(message["clientId"].as_str()?.to_owned())
        })
        .collect()
}

/// The deterministic case: the replica stops copying (it is cut off from its primary and
/// promoted, as in a partition that a failover ends) while a message is sent. With
/// replica acks the message is refused `store_unavailable` rather than acked, so nothing acked
/// is missing on the promoted replica. (Without them — `--redis-wait-replicas 0` — it was acked
/// and then gone after the failover: this test failed.)
#[tokio::test]
async fn a_message_the_replica_does_not_hold_is_never_acked() {
    let Replicated {
        primary,
        replica,
        node,
        dir: _dir,
        ada,
        bob,
    } = replicated().await;

    let mut acked = HashSet::new();
    let before = uuid::Uuid::new_v4().to_string();
    assert!(send(&ada, &bob.user_id, "before", &before).await.is_some());
    acked.insert(before);

    // (SIGSTOP would not do: the kernel keeps taking the replication stream into the stopped
    // replica's socket, and it applies it once continued.)
    assert_eq!(replica.cli(&["replicaof", "no", "one"]).trim(), "OK");
    let during = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let answer = ada
        .request(
            "private message",
            json!({ "to": bob.user_id, "content": "during", "clientId": during }),
        )
        .await;
    if answer["ok"]["id"].is_i64() {
        acked.insert(during.clone());
    } else {
        assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "refused after the wait's timeout, not held"
        );
    }
    fail_over(primary, &replica);
    drop(node);

    let stored = stored_client_ids(&replica, &bob.user_id);
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "acked, then lost in the failover: {lost:?}"
    );
    // The client sends what was refused again, to a node on the new primary: it is stored once.
    let (node, _dir2) = node_on(&replica, 0).await;
    let ada = resume(&node, &ada.session_id).await;
    assert!(send(&ada, &bob.user_id, "during", &during).await.is_some());
    assert!(stored_client_ids(&replica, &bob.user_id).contains(&during));
}

/// `SCRIPT LOAD` calls a Redis node has answered (`INFO commandstats`).
fn script_loads(commandstats: &str) -> u64 {
    commandstats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_script|load:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Sends 20 messages, each acked, and counts the `SCRIPT LOAD`s `loads` saw meanwhile; then
/// empties every node's script cache (`flush`, as a restart or a promoted replica would find
/// it) and checks the next message is still acked, with its script loaded for it. Returns the
/// count and that message's clientId. The load seen after the flush may be another task's
/// (a heartbeat's script, say); what matters is that the message is acked.
async fn loads_per_twenty_acked(
    ada: &TestClient,
    bob: &TestClient,
    loads: impl Fn() -> u64,
    flush: impl Fn(),
) -> (u64, String) {
    let first = uuid::Uuid::new_v4().to_string();
    assert!(send(ada, &bob.user_id, "first", &first).await.is_some());
    let before = loads();
    for i in 0..20 {
        let client_id = uuid::Uuid::new_v4().to_string();
        let acked = send_within(ada, &bob.user_id, i, &client_id).await;
        assert!(acked.is_some(), "message {i} acked");
    }
    let during = loads() - before;

    flush();
    let before_flush = loads();
    let after = uuid::Uuid::new_v4().to_string();
    let acked = send_within(ada, &bob.user_id, 20, &after).await;
    assert!(acked.is_some(), "acked once the scripts are gone");
    assert!(loads() > before_flush, "the missing script was loaded");
    (during, after)
}

/// With replica acks the script that stores a message goes by its digest (`EVALSHA`, in the
/// pipeline with its `WAIT`). Before, each acked message loaded its script again (`SCRIPT
/// LOAD` with SEND_AT_ONCE's 2.4 KB body, which Redis hashed again): 20 loads for 20 messages,
/// and this test failed. A node that lost its scripts answers `NOSCRIPT`, and the message is
/// still acked, with the script loaded for it (by this send or another task's), and stored
/// once: the recipient's copy holds the 22 messages sent, no more.
#[tokio::test]
async fn an_acked_message_names_its_script_by_digest_and_loads_it_only_when_redis_lacks_it() {
    let Replicated {
        primary,
        replica: _replica,
        node: _node,
        dir: _dir,
        ada,
        bob,
    } = replicated().await;
    let (during, after) = loads_per_twenty_acked(
        &ada,
        &bob,
        || script_loads(&primary.cli(&["info", "commandstats"])),
        || assert_eq!(primary.cli(&["script", "flush"]).trim(), "OK"),
    )
    .await;
    // Another task of the node may load a script of its own the first time it runs.
    assert!(during < 5, "{during} SCRIPT LOADs for 20 acked messages");
    let stored = stored_client_ids(&primary, &bob.user_id);
    assert!(stored.contains(&after));
    let key = format!("{}:{{u:{}}}:msg", primary.prefix, bob.user_id);
    assert_eq!(
        primary.cli(&["hlen", &key]).trim(),
        "22",
        "each message stored once"
    );
}

/// The same on a Redis Cluster, where each party's copy is confirmed on its shard
/// (CONFIRM_COPY pipelined with `WAIT`) and every shard's scripts are flushed.
#[tokio::test]
async fn on_a_redis_cluster_an_acked_copy_loads_its_script_only_when_the_shard_lacks_it() {
    let cluster = RedisCluster::start_own_replicated().await;
    let (node, _dir) = node_on_cluster(&cluster, 1).await;
    let (ada, bob) = on_two_shards(&cluster, &node).await;
    let loads = || {
        cluster
            .cli_each(&["info", "commandstats"])
            .iter()
            .map(|stats| script_loads(stats))
            .sum::<u64>()
    };
    let flush = || {
        cluster.cli_each(&["script", "flush"]);
    };
    let (during, after) = loads_per_twenty_acked(&ada, &bob, loads, flush).await;
    assert!(during < 5, "{during} SCRIPT LOADs for 20 acked messages");
    for party in [&ada.user_id, &bob.user_id] {
        let copy = copy_on_cluster(&cluster, party).await;
        assert_eq!(
            copy.iter().filter(|id| **id == after).count(),
            1,
            "once in each copy"
        );
    }
}

/// The measurement the issue asks for: 1,000 messages, a failover in the middle, acked
/// messages lost = 0. The client sends one message at a time with its clientId; once half are
/// answered the primary is killed while the next is on its way. The client then moves to a node
/// on the new primary (as it would after reconnecting through a load balancer) and sends again
/// what was refused or unanswered, then the rest.
#[tokio::test]
async fn a_thousand_messages_with_a_failover_in_the_middle_lose_nothing_acked() {
    const MESSAGES: usize = 1000;
    let Replicated {
        primary,
        replica,
        node: first,
        dir: _dir,
        ada,
        bob,
    } = replicated().await;
    let session_id = ada.session_id.clone();
    let to = bob.user_id.clone();

    let ids: Vec<String> = (0..MESSAGES)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let answered = Arc::new(AtomicUsize::new(0));
    let failed_over = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let (ids, to) = (ids.clone(), to.clone());
        let (answered, failed_over) = (answered.clone(), failed_over.clone());
        async move { send_in_order(&ada, &to, &ids, &answered, &failed_over).await }
    });
    while answered.load(Ordering::SeqCst) < MESSAGES / 2 {
        assert!(
            !sender.is_finished(),
            "the sender stopped before the failover"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Killed while the next message is on its way; the client leaves once it is answered.
    fail_over(primary, &replica);
    failed_over.store(true, Ordering::SeqCst);
    let (acked, unacked) = sender.await.unwrap();
    drop(first);
    let sent = acked.len() + unacked.len();
    let mut acked: HashSet<String> = acked.into_iter().map(|i| ids[i].clone()).collect();
    let acked_on_first = acked.len();

    let (second, _dir2) = node_on(&replica, 0).await;
    let ada = resume(&second, &session_id).await;
    for i in unacked.iter().copied().chain(sent..MESSAGES) {
        let id = send(&ada, &to, &format!("m{i}"), &ids[i]).await;
        assert!(id.is_some(), "message {i} is acked on the new primary");
        acked.insert(ids[i].clone());
    }

    let stored = stored_client_ids(&replica, &to);
    let lost = acked.difference(&stored).count();
    eprintln!(
        "failover: {acked_on_first} acked on the first primary, {} unacked there and sent again, \
         {lost} acked messages lost",
        unacked.len()
    );
    assert_eq!(lost, 0, "acked messages lost in the failover");
    assert_eq!(stored.len(), MESSAGES, "each message stored once");
}

/// The clientIds of the messages in `user`'s copy on a Redis Cluster, one per message (a
/// message stored twice shows twice).
async fn copy_on_cluster(cluster: &RedisCluster, user: &str) -> Vec<String> {
    use redis::AsyncCommands;
    let key = format!("{}:{{u:{user}}}:msg", cluster.prefix);
    let mut conn = cluster.connection().await;
    let stored: Vec<String> = conn.hvals(&key).await.expect("the copy is readable");
    stored
        .iter()
        .map(|json| {
            let message: Value = serde_json::from_str(json).expect("a stored message");
            message["clientId"]
                .as_str()
                .expect("sent with one")
                .to_owned()
        })
        .collect()
}

/// Two users whose copies are on two different shards of `cluster` (sign-ups until one lands
/// elsewhere), so that what is done to one party's shard is not done to the other's.
async fn on_two_shards(cluster: &RedisCluster, node: &ChildServer) -> (TestClient, TestClient) {
    let shard = |user: &str| {
        let key = format!("{}:{{u:{user}}}:msg", cluster.prefix);
        cluster
            .shard_of(&key)
            .expect("a primary serves it")
            .0
            .port()
    };
    let ada = sign_up(node, "ada").await;
    for n in 0..30 {
        let bob = sign_up(node, &format!("bob{n}")).await;
        if shard(&bob.user_id) != shard(&ada.user_id) {
            return (ada, bob);
        }
    }
    panic!("30 users on one shard of three");
}

/// On a Redis Cluster with a replica per primary: a message is acked only once a replica of
/// each party's shard holds that party's copy. With the replicas of the sender's shard stopped,
/// then those of the recipient's (another shard), the message is refused `store_unavailable`;
/// sent again with its clientId once they run, it is acked, and stored once. (Without waiting
/// on a cluster, each was acked at once: this test failed.)
#[tokio::test]
async fn on_a_redis_cluster_a_copy_no_replica_holds_is_never_acked() {
    let cluster = RedisCluster::start_own_replicated().await;
    let (node, _dir) = node_on_cluster(&cluster, 1).await;
    let (ada, bob) = on_two_shards(&cluster, &node).await;

    let mut sent = Vec::new();
    for party in [&ada.user_id, &bob.user_id] {
        let key = format!("{}:{{u:{party}}}:msg", cluster.prefix);
        let (_, replicas) = cluster.shard_of(&key).expect("a primary serves it");
        assert!(!replicas.is_empty(), "a replica per primary");
        let client_id = uuid::Uuid::new_v4().to_string();
        for replica in &replicas {
            replica.signal("STOP");
        }
        let started = Instant::now();
        let answer = ada
            .request(
                "private message",
                json!({ "to": bob.user_id, "content": "held", "clientId": client_id }),
            )
            .await;
        for replica in &replicas {
            replica.signal("CONT");
        }
        assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "refused after the wait's timeout, not held"
        );
        // Once the replica has caught up, the same message is acked (what was written before
        // the wait is found by its clientId and finished).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if send(&ada, &bob.user_id, "held", &client_id).await.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "acked once the replica runs");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent.push(client_id);
    }
    sent.sort();
    for party in [&ada.user_id, &bob.user_id] {
        let mut copy = copy_on_cluster(&cluster, party).await;
        copy.sort();
        assert_eq!(copy, sent, "each message once in each copy");
    }
}

/// The measurement of the issue on a Redis Cluster: 1,000 messages, and once half are
/// answered the primary of one party's shard is killed (-9) while the next is on its way; the
/// cluster promotes its replica and the node follows. The promoted replica has no replica of
/// its own until the killed primary is started again (after the promotion: a primary without
/// persistence restarted before it would come back empty), which rejoins as its replica;
/// meanwhile messages to that shard are refused (`WAIT` 1 cannot be met), never acked. The
/// client sends one message at a time with its clientId and goes on through the failover, then
/// sends again what was refused or unanswered. Acked messages lost: 0, in either party's copy;
/// each message stored once. (On one machine a replica copies within microseconds, so this
/// measurement also passes without the waits; the test that fails without them is
/// `on_a_redis_cluster_a_copy_no_replica_holds_is_never_acked`.)
async fn a_thousand_messages_with_a_shard_failed_over(kill_the_senders: bool) {
    const MESSAGES: usize = 1000;
    let mut cluster = RedisCluster::start_own_replicated().await;
    let (node, _dir) = node_on_cluster(&cluster, 1).await;
    let (ada, bob) = on_two_shards(&cluster, &node).await;
    let victim = if kill_the_senders { &ada } else { &bob };
    let key = format!("{}:{{u:{}}}:msg", cluster.prefix, victim.user_id);
    let old_primary = cluster
        .shard_of(&key)
        .expect("a primary serves it")
        .0
        .port();
    let (ada_id, bob_id) = (ada.user_id.clone(), bob.user_id.clone());

    let ids: Vec<String> = (0..MESSAGES)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let answered = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn({
        let (ids, to, answered) = (ids.clone(), bob_id.clone(), answered.clone());
        async move {
            let never = AtomicBool::new(false);
            let (acked, unacked) = send_in_order(&ada, &to, &ids, &answered, &never).await;
            (ada, acked, unacked)
        }
    });
    while answered.load(Ordering::SeqCst) < MESSAGES / 2 {
        assert!(!sender.is_finished(), "the sender stopped before the kill");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Killed while the next message is on its way.
    let killed = Instant::now();
    cluster
        .shard_of(&key)
        .expect("a primary serves it")
        .0
        .signal("KILL");
    loop {
        let promoted = cluster
            .shard_of(&key)
            .is_some_and(|(primary, _)| primary.port() != old_primary);
        if promoted {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the replica is promoted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promoted_after = killed.elapsed();
    cluster.restart(old_primary).await;
    let (ada, acked, mut unacked) = sender.await.unwrap();
    let mut acked: HashSet<String> = acked.into_iter().map(|i| ids[i].clone()).collect();
    let refused = unacked.len();

    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(&i) = unacked.first() {
        assert!(
            Instant::now() < deadline,
            "message {i} is acked after the failover"
        );
        if send_within(&ada, &bob_id, i, &ids[i]).await.is_some() {
            acked.insert(ids[i].clone());
            unacked.remove(0);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let whose = if kill_the_senders {
        "sender's"
    } else {
        "recipient's"
    };
    for party in [&ada_id, &bob_id] {
        let copy = copy_on_cluster(&cluster, party).await;
        let held: HashSet<String> = copy.iter().cloned().collect();
        let lost = acked.difference(&held).count();
        eprintln!(
            "cluster failover of the {whose} shard (replica promoted {promoted_after:?} after \
             the kill): {refused} of {MESSAGES} refused or unanswered and sent again, {lost} \
             acked messages lost from {party}'s copy, {} stored",
            copy.len()
        );
        assert_eq!(lost, 0, "acked messages lost in the failover");
        assert_eq!(copy.len(), MESSAGES, "each message stored once");
        assert_eq!(held.len(), MESSAGES, "each message stored once");
    }
}

#[tokio::test]
async fn a_thousand_messages_with_the_recipients_redis_cluster_shard_failed_over_lose_nothing() {
    a_thousand_messages_with_a_shard_failed_over(false).await;
}

#[tokio::test]
async fn a_thousand_messages_with_the_senders_redis_cluster_shard_failed_over_lose_nothing() {
    a_thousand_messages_with_a_shard_failed_over(true).await;
}
