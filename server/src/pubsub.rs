//! The cluster adapter's Redis pub/sub connection: socketioxide-redis's [`Driver`] over a
//! [`ConnectionManager`] that reconnects and subscribes again by itself.
//!
//! socketioxide-redis's own driver holds one multiplexed connection that never reconnects: after
//! Redis restarted, failed over or dropped the connection, broadcasts between nodes stopped for
//! good (messages were still stored and acked, but reached sockets on other nodes only at their
//! next connect). Here the connection is a `ConnectionManager` (RESP3, pushes to
//! [`PubSub::dispatch`]) with automatic resubscription, kept awake by a `PING` every
//! [`KEEPALIVE`] so that an idle node notices a lost connection too.
//!
//! What was published while the connection was down is lost to this node (pub/sub keeps
//! nothing), so once it is subscribed again (the first confirmation, then a `PING` answered
//! behind every resubscription sent before it) [`PubSub::reconnected`] ticks, and the server sends
//! `resync` to this node's sockets: their clients restore from the newest message they hold and
//! ask for everyone's presence (docs/PROTOCOL.md, "`resync`").
//!
//! On a Redis Cluster ([`PubSub::connect_cluster`]) the channels are sharded (`SSUBSCRIBE`,
//! `SPUBLISH`, `PUBSUB SHARDNUMSUB`): a message goes to the shard that owns its channel's slot
//! only, instead of to every node of the cluster. Its pushes come to the same
//! [`Pushes::dispatch`]; the cluster connection does not subscribe again by itself after a
//! node dropped it, nor after Redis unsubscribed a channel whose slot moved to another shard
//! (resharding, a failover), so the keepalive subscribes every channel again then (each goes
//! to the shard that owns it now), once a `PING` reached every primary.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{FromRedisValue, ProtocolVersion, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::{mpsc, watch, Notify};

use crate::store::redis::RedisConn;

/// How often the connection is pinged: a lost connection is found within this, even when the
/// node publishes nothing.
pub const KEEPALIVE: Duration = Duration::from_secs(1);

/// How long a command or a connection attempt may take before it fails.
const TIMEOUT: Duration = Duration::from_secs(5);

type Handlers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// The adapter's driver: clones share the connection and the channel handlers.
#[derive(Clone)]
pub struct PubSub {
    /// A standalone Redis's connection (plain channels) or a cluster's (sharded channels).
    conn: RedisConn,
    handlers: Handlers,
    reconnected: watch::Receiver<u64>,
    /// Held by every clone: the keepalive ends once the last is dropped.
    _alive: Arc<()>,
}

/// An error of the pub/sub connection.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PubSubError(#[from] redis::RedisError);

/// Where pushes go: messages to their channel's handler; a disconnection opens a gap. A
/// standalone connection subscribes again by itself, and its next subscription confirmation
/// closes the gap; a cluster connection does not (redis 1.8 subscribes a node's channels again
/// only when it reconnects through its own repair, not after the node dropped the connection),
/// so the gap tells [`keepalive`] to subscribe every channel again.
struct Pushes {
    handlers: Handlers,
    gap: AtomicBool,
    /// Whether the connection subscribes again by itself after a reconnect.
    resubscribes: bool,
    /// Told when the gap closes (standalone) or opens (cluster); [`keepalive`] subscribes
    /// again if it must, confirms with a `PING` and ticks `reconnected`.
    resubscribing: Notify,
}

impl Pushes {
    fn new(resubscribes: bool) -> Arc<Pushes> {
        Arc::new(Pushes {
            handlers: Handlers::default(),
            gap: AtomicBool::new(false),
            resubscribes,
            resubscribing: Notify::new(),
        })
    }

    /// Whether a push's channel (its first item) is one this node subscribed to.
    fn still_wanted(&self, data: &[redis::Value]) -> bool {
        let Some(Ok(chan)) = data.first().map(String::from_redis_value_ref) else {
            return false;
        };
        let handlers = self.handlers.read().unwrap_or_else(|e| e.into_inner());
        handlers.contains_key(&chan)
    }

    /// The channels subscribed to.
    fn channels(&self) -> Vec<String> {
        let handlers = self.handlers.read().unwrap_or_else(|e| e.into_inner());
        handlers.keys().cloned().collect()
    }

    fn dispatch(&self, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                let (Some(chan), Some(payload)) = (data.next(), data.next()) else {
                    return;
                };
                let (Ok(chan), Ok(payload)) = (
                    String::from_redis_value(chan),
                    Vec::<u8>::from_redis_value(payload),
                ) else {
                    tracing::warn!("an unreadable pub/sub message was dropped");
                    return;
                };
                let handlers = self.handlers.read().unwrap_or_else(|e| e.into_inner());
                if let Some(tx) = handlers.get(&chan) {
                    if tx.try_send((chan, payload)).is_err() {
                        metrics::counter!("tether_pubsub_dropped_total").increment(1);
                        tracing::warn!(
                            "a pub/sub message was dropped: its channel's queue is full"
                        );
                    }
                }
            }
            PushKind::Disconnection if !self.gap.swap(true, Ordering::AcqRel) => {
                tracing::warn!("the cluster's pub/sub connection to Redis was lost; reconnecting");
                if !self.resubscribes {
                    self.resubscribing.notify_one();
                }
            }
            PushKind::Subscribe | PushKind::SSubscribe
                if self.resubscribes && self.gap.swap(false, Ordering::AcqRel) =>
            {
                self.resubscribing.notify_one();
            }
            // Redis unsubscribed a channel this node still wants (its slot moved to another
            // shard): a gap, closed by subscribing again where the slot is now. The
            // confirmation of the driver's own unsubscribe names a channel it already dropped.
            PushKind::SUnsubscribe
                if !self.resubscribes
                    && self.still_wanted(&push.data)
                    && !self.gap.swap(true, Ordering::AcqRel) =>
            {
                tracing::warn!(
                    "Redis unsubscribed a channel of the cluster's pub/sub (its slot moved); \
                     subscribing again"
                );
                self.resubscribing.notify_one();
            }
            _ => {}
        }
    }
}

impl PubSub {
    /// Connects to a standalone Redis (RESP3: `client` must be made for it) and starts the
    /// keepalive.
    pub async fn connect(client: redis::Client) -> redis::RedisResult<PubSub> {
        let pushes = Pushes::new(true);
        let dispatch = pushes.clone();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(move |push: PushInfo| {
                dispatch.dispatch(push);
                Ok::<(), Infallible>(())
            })
            .set_automatic_resubscription()
            .set_response_timeout(Some(TIMEOUT))
            .set_connection_timeout(Some(TIMEOUT))
            // Reconnect attempts back off up to a second apart: a Redis that comes back is
            // found again within about a second.
            .set_max_delay(KEEPALIVE);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self::start(RedisConn::Single(conn), pushes))
    }

    /// Connects to a Redis Cluster through `nodes` (any of its nodes; what the builder sets,
    /// credentials and TLS, is kept), with sharded channels, and starts the keepalive.
    pub async fn connect_cluster(nodes: ClusterClientBuilder) -> redis::RedisResult<PubSub> {
        let pushes = Pushes::new(false);
        let dispatch = pushes.clone();
        let client = nodes
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(move |push: PushInfo| {
                dispatch.dispatch(push);
                Ok::<(), Infallible>(())
            })
            .response_timeout(TIMEOUT)
            .connection_timeout(TIMEOUT)
            .max_retry_wait(KEEPALIVE.as_millis() as u64)
            .build()?;
        let conn = client.get_async_connection().await?;
        Ok(Self::start(RedisConn::Cluster(conn), pushes))
    }

    fn start(conn: RedisConn, pushes: Arc<Pushes>) -> PubSub {
        let (tx, reconnected) = watch::channel(0);
        let alive = Arc::new(());
        let handlers = pushes.handlers.clone();
        tokio::spawn(keepalive(conn.clone(), Arc::downgrade(&alive), pushes, tx));
        PubSub {
            conn,
            handlers,
            reconnected,
            _alive: alive,
        }
    }

    /// Ticks each time the connection came back and subscribed again after a loss.
    pub fn reconnected(&self) -> watch::Receiver<u64> {
        self.reconnected.clone()
    }
}

/// Pings the connection so a lost one is reconnected even while nothing is published, and
/// confirms a resubscription: the first channel's confirmation only says the new connection
/// began subscribing again, while a `PING` answered on it comes after every `SUBSCRIBE` sent
/// before it, so only then is `reconnected` ticked (a ping that fails is retried each tick).
/// On a cluster it subscribes every channel again itself once a `PING` reached every primary
/// (a channel still subscribed only confirms again). Ends once every clone of the driver is
/// gone.
async fn keepalive(
    mut conn: RedisConn,
    alive: Weak<()>,
    pushes: Arc<Pushes>,
    reconnected: watch::Sender<u64>,
) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unconfirmed = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = pushes.resubscribing.notified() => unconfirmed = true,
        }
        if alive.strong_count() == 0 {
            return;
        }
        let ping: redis::RedisResult<redis::Value> =
            redis::cmd("PING").query_async(&mut conn).await;
        if unconfirmed && ping.is_ok() && !pushes.resubscribes {
            // Closed before subscribing: a disconnection meanwhile opens it again, and tells
            // this loop to subscribe again once more.
            pushes.gap.store(false, Ordering::Release);
            if let Err(error) = subscribe_again(&mut conn, pushes.channels()).await {
                tracing::warn!(%error, "subscribing again failed; retrying");
                pushes.gap.store(true, Ordering::Release);
                continue;
            }
        }
        if unconfirmed && ping.is_ok() {
            unconfirmed = false;
            metrics::counter!("tether_pubsub_reconnects_total").increment(1);
            tracing::warn!("the cluster's pub/sub connection is back and subscribed again");
            reconnected.send_modify(|n| *n += 1);
        }
    }
}

/// Subscribes `channels` again, one at a time (each may be on another shard).
async fn subscribe_again(conn: &mut RedisConn, channels: Vec<String>) -> redis::RedisResult<()> {
    for chan in channels {
        subscribe(conn, &chan).await?;
    }
    Ok(())
}

/// Subscribes `chan`: a plain channel on a standalone Redis, a sharded one on a cluster.
async fn subscribe(conn: &mut RedisConn, chan: &str) -> redis::RedisResult<()> {
    match conn {
        RedisConn::Single(conn) => conn.subscribe(chan).await,
        RedisConn::Cluster(conn) => conn.ssubscribe(chan).await,
    }
}

impl Driver for PubSub {
    type Error = PubSubError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        let command = match self.conn {
            RedisConn::Single(_) => "PUBLISH",
            RedisConn::Cluster(_) => "SPUBLISH",
        };
        redis::cmd(command)
            .arg(chan)
            .arg(val)
            .query_async::<redis::Value>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        let (tx, rx) = mpsc::channel(size);
        // The handler first: a message may arrive right after the confirmation.
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(chan.clone(), tx);
        if let Err(e) = subscribe(&mut self.conn.clone(), &chan).await {
            self.handlers
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&chan);
            return Err(e.into());
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&chan);
        match self.conn.clone() {
            RedisConn::Single(mut conn) => conn.unsubscribe(chan).await?,
            RedisConn::Cluster(mut conn) => conn.sunsubscribe(chan).await?,
        }
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let mut conn = self.conn.clone();
        let count = match conn {
            RedisConn::Single(_) => {
                let (_, count): (String, u16) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(chan)
                    .query_async(&mut conn)
                    .await?;
                count
            }
            RedisConn::Cluster(_) => {
                // Asked of every node and summed per channel (a subscriber is on one of them).
                let counts: HashMap<String, u16> = redis::cmd("PUBSUB")
                    .arg("SHARDNUMSUB")
                    .arg(chan)
                    .query_async(&mut conn)
                    .await?;
                counts.get(chan).copied().unwrap_or(0)
            }
        };
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(kind: PushKind, chan: &str) -> PushInfo {
        PushInfo {
            kind,
            data: vec![redis::Value::BulkString(chan.as_bytes().to_vec())],
        }
    }

    async fn told(pushes: &Pushes) -> bool {
        tokio::time::timeout(Duration::from_millis(50), pushes.resubscribing.notified())
            .await
            .is_ok()
    }

    /// On a cluster, Redis unsubscribing a channel the node still wants (its slot moved) opens
    /// a gap and tells the keepalive to subscribe again; the confirmation of the node's own
    /// unsubscribe (a channel it dropped) does not.
    #[tokio::test]
    async fn a_channel_the_cluster_unsubscribed_is_subscribed_again() {
        let pushes = Pushes::new(false);
        let (tx, _rx) = mpsc::channel(1);
        pushes
            .handlers
            .write()
            .unwrap()
            .insert("wanted".to_owned(), tx);

        pushes.dispatch(push(PushKind::SUnsubscribe, "dropped"));
        assert!(!pushes.gap.load(Ordering::Acquire));
        assert!(!told(&pushes).await);

        pushes.dispatch(push(PushKind::SUnsubscribe, "wanted"));
        assert!(pushes.gap.load(Ordering::Acquire));
        assert!(told(&pushes).await);

        // A standalone connection subscribes again by itself: only its confirmation counts.
        let standalone = Pushes::new(true);
        let (tx, _rx) = mpsc::channel(1);
        standalone
            .handlers
            .write()
            .unwrap()
            .insert("wanted".to_owned(), tx);
        standalone.dispatch(push(PushKind::SUnsubscribe, "wanted"));
        assert!(!standalone.gap.load(Ordering::Acquire));
    }
}
