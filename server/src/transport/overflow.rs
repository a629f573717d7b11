//! When a client reads more slowly than events arrive, its socket's send buffer
//! (`--socket-buffer` packets) fills and the server cannot queue more for it: an event is lost
//! for that socket. Nothing stored is lost (messages are in the store), but the client must
//! learn it missed something:
//!
//! - events a client cannot do without (`session`, `users`) are queued again as soon as the
//!   buffer has room;
//! - when a message could not be queued for some socket of its rooms, every socket of those
//!   rooms on this node gets `resync` (once it has room), and restores from its last id.
//!
//! A socket that stays full is closed by the heartbeat (the ping cannot be queued either), and
//! its client restores after reconnecting.

use std::time::Duration;

use serde::Serialize;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::{BroadcastError, SendError, SocketError};

/// How long to keep trying to queue an event for a full socket.
const RETRY_FOR: Duration = Duration::from_secs(30);
const RETRY_EVERY: Duration = Duration::from_millis(20);

/// Emits to this socket; if its buffer is full, keeps trying in the background and returns
/// that task (await it before emitting what must come after).
pub(crate) fn emit_or_retry<A: Adapter, T: Serialize + Send + Sync + 'static>(
    socket: &SocketRef<A>,
    event: &'static str,
    data: T,
) -> Option<tokio::task::JoinHandle<()>> {
    match socket.emit(event, &data) {
        Err(SendError::Socket(SocketError::InternalChannelFull)) => {
            metrics::counter!("tether_emits_delayed_total", "event" => event).increment(1);
            tracing::debug!(socket.id = %socket.id, event, "send buffer full; retrying");
            let socket = socket.clone();
            Some(tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + RETRY_FOR;
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(RETRY_EVERY).await;
                    match socket.emit(event, &data) {
                        Err(SendError::Socket(SocketError::InternalChannelFull)) => continue,
                        _ => return,
                    }
                }
            }))
        }
        Ok(()) | Err(_) => None,
    }
}

/// Whether a room emit left some socket without the event because its buffer was full.
pub(crate) fn some_socket_was_full(result: &Result<(), BroadcastError>) -> bool {
    matches!(result, Err(BroadcastError::Socket(errors))
        if errors.iter().any(|e| matches!(e, SocketError::InternalChannelFull)))
}

/// Tells every socket of `rooms` on this node to restore what it may have missed.
pub(crate) fn resync_rooms<A: Adapter>(socket: &SocketRef<A>, rooms: Vec<String>) {
    metrics::counter!("tether_resyncs_total").increment(1);
    for target in socket.within(rooms).sockets() {
        let _ = emit_or_retry(&target, protocol::events::RESYNC, ());
    }
}
