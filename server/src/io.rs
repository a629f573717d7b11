//! The Socket.IO handle the server holds: one node on its own, or one node of a Redis cluster
//! (rooms and broadcasts shared through Redis pub/sub).

use socketioxide::SocketIo;

/// The Socket.IO adapter of a cluster: rooms and broadcasts shared through Redis pub/sub.
/// Its driver is Tether's own ([`crate::pubsub::PubSub`]): it reconnects and subscribes again.
pub type ClusterAdapter =
    socketioxide_redis::CustomRedisAdapter<socketioxide::adapter::Emitter, crate::pubsub::PubSub>;

/// The Socket.IO handle: one node on its own, or one node of a Redis cluster.
#[derive(Clone)]
pub enum Io {
    Local(SocketIo),
    Cluster(SocketIo<ClusterAdapter>),
}

impl Io {
    /// Disconnects every socket of this node (on shutdown).
    pub async fn close(&self) {
        match self {
            Io::Local(io) => io.close().await,
            Io::Cluster(io) => io.close().await,
        }
    }

    /// The handle of a single-node server (tests inspect its rooms).
    pub fn local(&self) -> Option<&SocketIo> {
        match self {
            Io::Local(io) => Some(io),
            Io::Cluster(_) => None,
        }
    }
}
