//! The cluster adapter's pub/sub driver on a Redis Cluster (issue #27 item 1): channels are
//! sharded (`SSUBSCRIBE`, `SPUBLISH`, `PUBSUB SHARDNUMSUB`), so a message goes to the shard
//! that owns its channel's slot only; the driver finds each channel's shard, counts the nodes
//! subscribed across shards, and subscribes again after the cluster dropped its connections.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use redis::cluster::ClusterClientBuilder;
use server::pubsub::PubSub;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};

use crate::helpers::RedisCluster;

async fn driver(cluster: &RedisCluster) -> PubSub {
    PubSub::connect_cluster(ClusterClientBuilder::new(cluster.urls.clone()))
        .await
        .expect("connects to the cluster")
}

async fn next(stream: &mut MessageStream<ChanItem>) -> ChanItem {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a message within 5 s")
        .expect("the stream is open")
}

/// The shards (slot ranges) that own `channels`' slots.
async fn shards_of(cluster: &RedisCluster, channels: &[String]) -> usize {
    let mut conn = cluster.connection().await;
    // Three primaries without replicas: each entry is [first slot, last slot, primary].
    let ranges: Vec<(u16, u16, redis::Value)> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut owners = HashSet::new();
    for chan in channels {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(chan)
            .query_async(&mut conn)
            .await
            .unwrap();
        let owner = ranges
            .iter()
            .position(|(first, last, _)| (*first..=*last).contains(&slot));
        owners.insert(owner.expect("every slot is served"));
    }
    owners.len()
}

#[tokio::test]
async fn nodes_reach_each_other_over_sharded_channels_on_every_shard() {
    let cluster = RedisCluster::start().await;
    let (a, b) = (driver(&cluster).await, driver(&cluster).await);
    let channels: Vec<String> = (0..12)
        .map(|i| format!("{}:sio-test#{i}", cluster.prefix))
        .collect();
    assert_eq!(
        shards_of(&cluster, &channels).await,
        3,
        "the channels span every shard"
    );

    let mut streams = Vec::new();
    for chan in &channels {
        streams.push(b.subscribe(chan.clone(), 16).await.unwrap());
    }
    for (chan, stream) in channels.iter().zip(&mut streams) {
        a.publish(chan.clone(), chan.as_bytes().to_vec())
            .await
            .unwrap();
        assert_eq!(next(stream).await, (chan.clone(), chan.as_bytes().to_vec()));
        assert_eq!(a.num_serv(chan).await.unwrap(), 1, "{chan}: b only");
    }

    // Both ways, and the count follows subscriptions on either node.
    let first = channels[0].clone();
    let mut back = a.subscribe(first.clone(), 16).await.unwrap();
    assert_eq!(b.num_serv(&first).await.unwrap(), 2);
    b.publish(first.clone(), b"back".to_vec()).await.unwrap();
    assert_eq!(next(&mut back).await.1, b"back");
    assert_eq!(next(&mut streams[0]).await.1, b"back");
    a.unsubscribe(first.clone()).await.unwrap();
    assert_eq!(b.num_serv(&first).await.unwrap(), 1);
    assert_eq!(a.num_serv("nobody-listens-here").await.unwrap(), 0);
}

/// What the cluster's restart, failover or a network cut does to a node's pub/sub connections:
/// every node of the cluster drops them. The driver reconnects, subscribes again, ticks
/// `reconnected` (the server then tells its sockets to `resync`), and messages flow again.
#[tokio::test]
async fn a_node_subscribes_again_after_the_cluster_drops_its_connections() {
    let cluster = RedisCluster::start_own().await;
    let (a, b) = (driver(&cluster).await, driver(&cluster).await);
    let channels: Vec<String> = (0..12)
        .map(|i| format!("{}:sio-test#{i}", cluster.prefix))
        .collect();
    let mut reconnected = b.reconnected();
    let mut streams = Vec::new();
    for chan in &channels {
        streams.push(b.subscribe(chan.clone(), 16).await.unwrap());
    }
    a.publish(channels[0].clone(), b"before".to_vec())
        .await
        .unwrap();
    assert_eq!(next(&mut streams[0]).await.1, b"before");

    let killed: u32 = cluster
        .cli_each(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .iter()
        .map(|n| n.trim().parse::<u32>().unwrap_or(0))
        .sum();
    assert!(
        killed >= 3,
        "b's subscriptions on each shard were cut: {killed}"
    );
    tokio::time::timeout(Duration::from_secs(10), reconnected.changed())
        .await
        .expect("subscribed again within 10 s")
        .unwrap();
    for (chan, stream) in channels.iter().zip(&mut streams) {
        a.publish(chan.clone(), b"after".to_vec()).await.unwrap();
        assert_eq!(next(stream).await.1, b"after", "{chan}");
        assert_eq!(a.num_serv(chan).await.unwrap(), 1, "{chan}: b, once");
    }
}
