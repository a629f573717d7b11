//! When a client does not read what it is sent. Each socket's send queue is bounded by a byte
//! budget (`--socket-buffer-bytes`, the engine's `max_buffer_size`: every queued packet counts
//! its bytes plus a fixed overhead, and so do packets written to the connection but not
//! flushed yet). The engine closes a socket whose queue would exceed its budget, and one whose
//! connection takes nothing for a heartbeat (ping interval + ping timeout), whatever pongs it
//! sends (vendor/engineioxide/TETHER-PATCH.md, 5).
//!
//! So an event or ack that cannot be queued is dropped, never held: its socket is being
//! closed. The client reconnects, sends its outbox again (the client id de-duplicates) and
//! restores what it missed with `restore_state`. Nothing stored is lost, and nothing for such
//! a socket waits outside its budget. `/metrics` counts the drops
//! (`tether_emits_dropped_total{event}`).

use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::FromMessageParts;
use socketioxide::socket::Socket;
use socketioxide::{BroadcastError, SendError, SocketError};
use socketioxide_core::Value as RawPayload;

use crate::domain::UserId;

/// Emits to this socket. Over its budget the event is dropped (and the socket closed).
pub(crate) fn emit<A: Adapter, T: Serialize + ?Sized>(
    socket: &SocketRef<A>,
    event: &'static str,
    data: &T,
) {
    if over_budget(&socket.emit(event, data)) {
        dropped(event, 1);
    }
}

fn over_budget(sent: &Result<(), SendError>) -> bool {
    matches!(
        sent,
        Err(SendError::Socket(SocketError::InternalChannelFull))
    )
}

fn dropped(event: &'static str, sockets: usize) {
    metrics::counter!("tether_emits_dropped_total", "event" => event).increment(sockets as u64);
    tracing::debug!(
        event,
        sockets,
        "send budget spent; dropped (the socket is closed)"
    );
}

/// Emits to every socket of `user`, on every node (`socket` too, if it is one of them), and
/// counts those over their budget (each is being closed).
pub(crate) async fn emit_to_user<A: Adapter, T: Serialize + ?Sized>(
    socket: &SocketRef<A>,
    user: &UserId,
    event: &'static str,
    data: &T,
) {
    let sent = socket.within(user.to_string()).emit(event, data).await;
    count_dropped(event, &sent);
}

/// Counts the sockets of a room emit that were over their budget (each is being closed).
pub(crate) fn count_dropped(event: &'static str, result: &Result<(), BroadcastError>) {
    if let Err(BroadcastError::Socket(errors)) = result {
        let full = errors
            .iter()
            .filter(|e| matches!(e, SocketError::InternalChannelFull))
            .count();
        if full > 0 {
            dropped(event, full);
        }
    }
}

/// The ack of the event being handled: socketioxide's `AckSender`, with an answer that does
/// not fit the socket's budget counted as dropped.
pub struct Ack<A: Adapter>(AckSender<A>);

impl<A: Adapter> FromMessageParts<A> for Ack<A> {
    type Error = Infallible;

    fn from_message_parts(
        socket: &Arc<Socket<A>>,
        payload: &mut RawPayload,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        AckSender::from_message_parts(socket, payload, ack_id).map(Self)
    }
}

impl<A: Adapter> Ack<A> {
    /// Queues the answer (if the client asked for one). A socket gone or over its budget gets
    /// none: it is closing; its client reconnects, sends what is still in its outbox again
    /// and restores.
    pub fn send<T: Serialize + ?Sized>(self, data: &T) {
        if over_budget(&self.0.send(data)) {
            dropped("ack", 1);
        }
    }
}
