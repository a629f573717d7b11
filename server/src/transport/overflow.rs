//! When a client reads more slowly than events arrive, its socket's send buffer
//! (`--socket-buffer` packets) fills and the server cannot queue more for it: an event is lost
//! for that socket. Nothing stored is lost (messages are in the store), but the client must
//! learn it missed something:
//!
//! - events a client cannot do without (`session`, `users`) and acks ([`Ack`]) are queued
//!   again as soon as the buffer has room (a lost ack left the client waiting out its ack
//!   timeout — measured: 8 s stalls right after a connect storm);
//! - when a message could not be queued for some socket of its rooms, every socket of those
//!   rooms on this node gets `resync { since }` (once it has room), `since` being the id just
//!   before that message, and restores from there. A socket owes at most one resync at a time:
//!   further misses before it goes out only lower its `since` ([`OwedResync`]), so a client
//!   that missed a thousand messages restores once, not a thousand times.
//!
//! A socket that stays full is closed by the heartbeat (the ping cannot be queued either), and
//! its client restores after reconnecting.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::FromMessageParts;
use socketioxide::socket::Socket;
use socketioxide::{BroadcastError, SendError, SocketError};
use socketioxide_core::{Str, Value as RawPayload};

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
    let socket = socket.clone();
    retry_while_full(event, move || was_full(socket.emit(event, &data)), || ())
}

fn was_full(sent: Result<(), SendError>) -> bool {
    matches!(
        sent,
        Err(SendError::Socket(SocketError::InternalChannelFull))
    )
}

/// Runs `attempt` (which says whether the buffer was full); while it was, runs it again every
/// `RETRY_EVERY` in the background for up to `RETRY_FOR` (then `give_up`), and returns that
/// task.
fn retry_while_full(
    what: &'static str,
    mut attempt: impl FnMut() -> bool + Send + 'static,
    give_up: impl FnOnce() + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    if !attempt() {
        return None;
    }
    metrics::counter!("tether_emits_delayed_total", "event" => what).increment(1);
    tracing::debug!(event = what, "send buffer full; retrying");
    Some(tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(RETRY_EVERY).await;
            if !attempt() {
                return;
            }
        }
        give_up();
    }))
}

/// The ack of the event being handled: like socketioxide's `AckSender`, but when the socket's
/// buffer is full the answer is queued again in the background instead of being dropped.
pub struct Ack<A: Adapter> {
    socket: Arc<Socket<A>>,
    id: Option<i64>,
}

impl<A: Adapter> FromMessageParts<A> for Ack<A> {
    type Error = Infallible;

    fn from_message_parts(
        socket: &Arc<Socket<A>>,
        _: &mut RawPayload,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(Self {
            socket: socket.clone(),
            id: *ack_id,
        })
    }
}

impl<A: Adapter> Ack<A> {
    /// Queues the answer; if the buffer is full, keeps trying in the background and returns
    /// that task (await it before doing what must come after the answer).
    pub fn send<T: Serialize + Send + Sync + 'static>(
        self,
        data: T,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.id?;
        retry_while_full("ack", move || self.try_send(&data), || ())
    }

    /// Whether the buffer was full (any other outcome is final: sent, or the socket is gone).
    fn try_send<T: Serialize>(&self, data: &T) -> bool {
        let mut unused = RawPayload::Str(Str::from(""), None);
        let Ok(sender) = AckSender::from_message_parts(&self.socket, &mut unused, &self.id);
        was_full(sender.send(data))
    }
}

/// Whether a room emit left some socket without the event because its buffer was full.
pub(crate) fn some_socket_was_full(result: &Result<(), BroadcastError>) -> bool {
    matches!(result, Err(BroadcastError::Socket(errors))
        if errors.iter().any(|e| matches!(e, SocketError::InternalChannelFull)))
}

/// Tells every socket of `rooms` on this node to restore what it may have missed: everything
/// after `since`.
pub(crate) fn resync_rooms<A: Adapter>(socket: &SocketRef<A>, rooms: Vec<String>, since: i64) {
    metrics::counter!("tether_resyncs_total").increment(1);
    for target in socket.within(rooms).sockets() {
        owe_resync(&target, since);
    }
}

/// The resync a socket is owed and has not been sent yet (a socket extension, added at its
/// first miss). While one is owed, a background task tries to send it.
#[derive(Clone, Default)]
struct OwedResync(Arc<Mutex<Option<i64>>>);

impl OwedResync {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<i64>> {
        // Every critical section is one read or write of the slot: a panic cannot tear it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `target` missed the message after `since`: it gets `resync { since }`, or, if it already
/// owes one, that one's `since` drops to this if lower.
fn owe_resync<A: Adapter>(target: &SocketRef<A>, since: i64) {
    let owed = target.extensions.get::<OwedResync>().unwrap_or_else(|| {
        // Two first misses at once may each add one: then two resyncs go out, both correct.
        let owed = OwedResync::default();
        target.extensions.insert(owed.clone());
        owed
    });
    {
        let mut slot = owed.slot();
        if let Some(owed_since) = *slot {
            *slot = Some(owed_since.min(since)); // its task sends the lowest
            return;
        }
        *slot = Some(since);
    }
    let socket = target.clone();
    let sender = owed.clone();
    let _ = retry_while_full(
        protocol::events::RESYNC,
        move || {
            // Held while emitting, so a miss meanwhile waits and then owes a new resync.
            let mut slot = sender.slot();
            let Some(since) = *slot else {
                return false;
            };
            let resync = protocol::payloads::Resync { since: Some(since) };
            let full = was_full(socket.emit(protocol::events::RESYNC, &resync));
            if !full {
                *slot = None;
            }
            full
        },
        // The socket stayed full: it will be closed by the heartbeat and restore on its return;
        // a later miss starts over.
        move || *owed.slot() = None,
    );
}
