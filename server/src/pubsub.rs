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

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::{mpsc, watch, Notify};

/// How often the connection is pinged: a lost connection is found within this, even when the
/// node publishes nothing.
pub const KEEPALIVE: Duration = Duration::from_secs(1);

type Handlers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// The adapter's driver: clones share the connection and the channel handlers.
#[derive(Clone)]
pub struct PubSub {
    conn: ConnectionManager,
    handlers: Handlers,
    reconnected: watch::Receiver<u64>,
    /// Held by every clone: the keepalive ends once the last is dropped.
    _alive: Arc<()>,
}

/// An error of the pub/sub connection.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PubSubError(#[from] redis::RedisError);

/// Where pushes go: messages to their channel's handler; a disconnection opens a gap that the
/// next subscription confirmation (the resubscription after the reconnect) closes.
struct Pushes {
    handlers: Handlers,
    gap: AtomicBool,
    /// Told when the gap closes; [`keepalive`] confirms with a `PING` and ticks `reconnected`.
    resubscribing: Arc<Notify>,
}

impl Pushes {
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
            }
            PushKind::Subscribe | PushKind::SSubscribe
                if self.gap.swap(false, Ordering::AcqRel) =>
            {
                self.resubscribing.notify_one();
            }
            _ => {}
        }
    }
}

impl PubSub {
    /// Connects (RESP3: `client` must be made for it) and starts the keepalive.
    pub async fn connect(client: redis::Client) -> redis::RedisResult<PubSub> {
        let handlers: Handlers = Arc::default();
        let (tx, reconnected) = watch::channel(0);
        let resubscribing = Arc::new(Notify::new());
        let pushes = Arc::new(Pushes {
            handlers: handlers.clone(),
            gap: AtomicBool::new(false),
            resubscribing: resubscribing.clone(),
        });
        let config = ConnectionManagerConfig::new()
            .set_push_sender(move |push: PushInfo| {
                pushes.dispatch(push);
                Ok::<(), Infallible>(())
            })
            .set_automatic_resubscription()
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            // Reconnect attempts back off up to a second apart: a Redis that comes back is
            // found again within about a second.
            .set_max_delay(KEEPALIVE);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let alive = Arc::new(());
        tokio::spawn(keepalive(
            conn.clone(),
            Arc::downgrade(&alive),
            resubscribing,
            tx,
        ));
        Ok(PubSub {
            conn,
            handlers,
            reconnected,
            _alive: alive,
        })
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
/// Ends once every clone of the driver is gone.
async fn keepalive(
    mut conn: ConnectionManager,
    alive: Weak<()>,
    resubscribing: Arc<Notify>,
    reconnected: watch::Sender<u64>,
) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unconfirmed = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = resubscribing.notified() => unconfirmed = true,
        }
        if alive.strong_count() == 0 {
            return;
        }
        let ping: redis::RedisResult<redis::Value> =
            redis::cmd("PING").query_async(&mut conn).await;
        if unconfirmed && ping.is_ok() {
            unconfirmed = false;
            metrics::counter!("tether_pubsub_reconnects_total").increment(1);
            tracing::warn!("the cluster's pub/sub connection is back and subscribed again");
            reconnected.send_modify(|n| *n += 1);
        }
    }
}

impl Driver for PubSub {
    type Error = PubSubError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        redis::cmd("PUBLISH")
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
        if let Err(e) = self.conn.clone().subscribe(chan.as_str()).await {
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
        self.conn.clone().unsubscribe(chan).await?;
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let (_, count): (String, u16) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(count)
    }
}
