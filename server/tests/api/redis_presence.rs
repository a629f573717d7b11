//! Presence over Redis, the same scenarios on a standalone Redis and on a Redis Cluster of three
//! primaries (where every script must stay in one slot): socket counts summed over nodes and
//! exact under concurrency, a dead node's sockets swept once, a sweep whose sweeper died taken
//! over, and a node swept while alive putting its sockets back once the sweep of it is over.

use std::collections::HashSet;
use std::time::Duration;

use redis::AsyncCommands;
use server::domain::UserId;
use server::store::redis::{RedisConn, RedisPresence};
use server::store::PresenceChange;

use crate::helpers::{RedisCluster, RedisServer};

enum Redis {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    async fn standalone() -> Redis {
        Redis::Standalone(RedisServer::start().await)
    }

    async fn cluster() -> Redis {
        Redis::Cluster(RedisCluster::start().await)
    }

    fn prefix(&self) -> &str {
        match self {
            Redis::Standalone(r) => &r.prefix,
            Redis::Cluster(c) => &c.prefix,
        }
    }

    async fn conn(&self) -> RedisConn {
        match self {
            Redis::Standalone(r) => {
                let client = redis::Client::open(r.url()).unwrap();
                RedisConn::Single(redis::aio::ConnectionManager::new(client).await.unwrap())
            }
            Redis::Cluster(c) => c.connection().await,
        }
    }

    async fn node(&self, ttl: Duration) -> RedisPresence {
        RedisPresence::join(self.conn().await, self.prefix(), ttl)
            .await
            .expect("joins")
    }

    /// Where a test writes what another node (or a sweeper that died) would have.
    fn nodes(&self) -> String {
        format!("{p}:{{{p}:g}}:nodes", p = self.prefix())
    }
    fn sweeping(&self) -> String {
        format!("{p}:{{{p}:g}}:sweeping", p = self.prefix())
    }
    fn presence(&self, user: &UserId) -> String {
        format!("{}:{{u:{}}}:presence", self.prefix(), user.as_str())
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Redis::standalone().await).await
            })*
        }
        mod cluster {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Redis::cluster().await).await
            })*
        }
    };
}

on_both!(
    counts_are_summed_over_nodes_and_a_dead_nodes_sockets_are_swept_once,
    concurrent_sockets_on_two_nodes_each_get_their_own_count,
    a_sweep_whose_sweeper_died_is_taken_over_and_a_swept_node_waits_for_it,
    a_socket_counted_after_its_nodes_sweep_is_swept_too,
);

/// The TTL of a node a test keeps alive without beating again.
const LONG: Duration = Duration::from_secs(60);

fn sorted(mut changes: Vec<PresenceChange>) -> Vec<PresenceChange> {
    changes.sort_by_key(|c| format!("{c:?}"));
    changes
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn counts_are_summed_over_nodes_and_a_dead_nodes_sockets_are_swept_once(redis: Redis) {
    // node1 is the one that stops beating; node2 outlives the test without beating.
    let ttl = Duration::from_millis(400);
    let node1 = redis.node(ttl).await;
    let node2 = redis.node(LONG).await;
    let (ada, bob) = (UserId::random(), UserId::random());

    assert_eq!(node1.socket_connected(&ada).await.unwrap(), 1);
    assert_eq!(node2.socket_connected(&ada).await.unwrap(), 2);
    assert_eq!(node1.socket_connected(&bob).await.unwrap(), 1);
    assert_eq!(node2.socket_count(&ada).await.unwrap(), 2);
    assert_eq!(node2.online_users().await.unwrap().len(), 2);
    // Bob's socket is on node 1 only: node 2 finds him by asking every node's set.
    let both = HashSet::from([ada.clone(), bob.clone()]);
    let asked = [bob.clone(), UserId::random(), ada.clone()];
    assert_eq!(node2.online_among(&asked).await.unwrap(), both);
    let count = node2.online_count().await.unwrap();
    assert_eq!(count.users, 3, "ada on both nodes counts twice");
    assert_eq!(count.check_cost, 2, "a check asks both nodes' sets");
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
    assert_eq!(
        sorted(changes),
        sorted(vec![
            PresenceChange::Left {
                user: ada.clone(),
                sockets_left: 1,
            },
            PresenceChange::Left {
                user: bob.clone(),
                sockets_left: 0,
            },
        ])
    );
    assert!(node2.heartbeat().await.unwrap().is_empty(), "swept once");
    assert_eq!(node2.socket_count(&ada).await.unwrap(), 1);
    assert!(!node2.online_users().await.unwrap().contains(&bob));
    assert_eq!(
        node2.online_among(&asked).await.unwrap(),
        HashSet::from([ada.clone()]),
        "the swept node's set is not asked"
    );

    // node1 wakes up: it notices it was swept and puts its sockets back.
    let returned = node1.heartbeat().await.unwrap();
    assert_eq!(
        sorted(returned),
        sorted(vec![
            PresenceChange::Returned { user: ada.clone() },
            PresenceChange::Returned { user: bob.clone() },
        ])
    );
    assert_eq!(node2.socket_count(&ada).await.unwrap(), 2);
    assert!(node2.online_users().await.unwrap().contains(&bob));
}

/// Ten tabs of one user opening on each of two nodes at once get the counts 1 to 20, one each;
/// closing them all at once, exactly one sees 0 (the one that reports "offline").
async fn concurrent_sockets_on_two_nodes_each_get_their_own_count(redis: Redis) {
    let nodes = [redis.node(LONG).await, redis.node(LONG).await];
    let ada = UserId::random();
    let opened =
        futures_util::future::join_all((0..20).map(|i| nodes[i % 2].socket_connected(&ada))).await;
    let mut counts: Vec<u32> = opened.into_iter().map(Result::unwrap).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=20).collect::<Vec<_>>());
    assert_eq!(nodes[0].socket_count(&ada).await.unwrap(), 20);

    let closed =
        futures_util::future::join_all((0..20).map(|i| nodes[i % 2].socket_disconnected(&ada)))
            .await;
    let mut left: Vec<u32> = closed.into_iter().map(|r| r.unwrap().unwrap()).collect();
    left.sort_unstable();
    assert_eq!(left, (0..20).collect::<Vec<_>>());
    assert!(nodes[1].online_users().await.unwrap().is_empty());
}

/// A sweep is claimed with a lease: one whose sweeper died (its lease lapsed) is taken over and
/// finished, and every user the dead node still lists is reported (ada, whom the dead sweeper
/// had uncounted but not unlisted, is reported again: a repeated "offline" is harmless, a
/// missing one is not); a live lease is left alone; and a node that was swept while alive
/// puts its sockets back only once the sweep of it is over (before, the sweep would undo it).
async fn a_sweep_whose_sweeper_died_is_taken_over_and_a_swept_node_waits_for_it(redis: Redis) {
    let ttl = Duration::from_millis(300);
    let node1 = redis.node(ttl).await;
    let node2 = redis.node(LONG).await;
    let (ada, bob) = (UserId::random(), UserId::random());
    node1.socket_connected(&ada).await.unwrap();
    node1.socket_connected(&bob).await.unwrap();
    node2.socket_connected(&ada).await.unwrap();

    let mut conn = redis.conn().await;
    // node1 stops beating; another sweeper claims it, uncounts ada there, and dies.
    tokio::time::sleep(ttl * 2).await;
    let id1 = node1.node_id().to_owned();
    let now = now_ms();
    let _: () = conn.srem(redis.nodes(), &id1).await.unwrap();
    let _: () = conn
        .zadd(redis.sweeping(), &id1, now + 60_000)
        .await
        .unwrap();
    let _: () = conn.hdel(redis.presence(&ada), &id1).await.unwrap();

    assert_eq!(
        node2.heartbeat().await.unwrap(),
        [],
        "a sweep under a live lease is its sweeper's"
    );
    assert_eq!(node2.socket_count(&bob).await.unwrap(), 1);

    let _: () = conn.zadd(redis.sweeping(), &id1, now - 1).await.unwrap();
    assert_eq!(
        sorted(node2.heartbeat().await.unwrap()),
        sorted(vec![
            PresenceChange::Left {
                user: ada.clone(),
                sockets_left: 1
            },
            PresenceChange::Left {
                user: bob.clone(),
                sockets_left: 0
            },
        ]),
        "the lapsed sweep is finished"
    );
    assert!(node2.heartbeat().await.unwrap().is_empty(), "swept once");
    assert_eq!(node2.socket_count(&ada).await.unwrap(), 1);
    assert!(!node2.online_users().await.unwrap().contains(&bob));

    // node1 wakes up while a sweep of it is under way: it waits for the sweep to end.
    let _: () = conn
        .zadd(redis.sweeping(), &id1, now + 60_000)
        .await
        .unwrap();
    assert_eq!(node1.heartbeat().await.unwrap(), []);
    assert_eq!(node2.socket_count(&bob).await.unwrap(), 0);
    let _: () = conn.zrem(redis.sweeping(), &id1).await.unwrap();
    assert_eq!(
        sorted(node1.heartbeat().await.unwrap()),
        sorted(vec![
            PresenceChange::Returned { user: ada.clone() },
            PresenceChange::Returned { user: bob.clone() },
        ])
    );
    assert_eq!(node2.socket_count(&ada).await.unwrap(), 2);
    assert_eq!(node2.socket_count(&bob).await.unwrap(), 1);
    assert!(node2.online_users().await.unwrap().contains(&bob));
    assert!(node1.heartbeat().await.unwrap().is_empty(), "back once");
}

/// A node swept while it was only paused may count a socket before its next heartbeat (which
/// would register it again) and then die: the node is swept once more two TTLs after its
/// sweep, so that socket does not keep its user online for good.
async fn a_socket_counted_after_its_nodes_sweep_is_swept_too(redis: Redis) {
    // Both with the TTL nodes share (the second sweep waits two of the sweeper's TTLs); only
    // node2 beats, so node1 cannot take node2 for dead.
    let ttl = Duration::from_millis(300);
    let node1 = redis.node(ttl).await;
    let node2 = redis.node(ttl).await;
    let (ada, cy) = (UserId::random(), UserId::random());
    node1.socket_connected(&ada).await.unwrap();
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(
        node2.heartbeat().await.unwrap(),
        [PresenceChange::Left {
            user: ada.clone(),
            sockets_left: 0
        }]
    );
    // node1 wakes up, counts cy's socket without beating, and dies.
    assert_eq!(node1.socket_connected(&cy).await.unwrap(), 1);
    drop(node1);
    assert!(node2.heartbeat().await.unwrap().is_empty(), "not yet");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let changes = loop {
        let changes = node2.heartbeat().await.unwrap();
        if !changes.is_empty() {
            break changes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node1 never swept again"
        );
        tokio::time::sleep(ttl / 3).await;
    };
    assert_eq!(
        changes,
        [PresenceChange::Left {
            user: cy.clone(),
            sockets_left: 0
        }]
    );
    assert_eq!(node2.socket_count(&cy).await.unwrap(), 0);
    assert!(node2.online_users().await.unwrap().is_empty());
    tokio::time::sleep(ttl * 3).await;
    assert!(node2.heartbeat().await.unwrap().is_empty(), "and no more");
}
