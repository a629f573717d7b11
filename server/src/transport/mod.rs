//! The Socket.IO side of Tether: one file per event group.
//!
//! - [`handshake`]: the connect middleware that turns `auth` into a session (or refuses it);
//! - [`connection`]: what happens on every accepted connection, and presence on disconnect;
//! - [`messages`]: `private message`, `restore_state` and `history`;
//! - [`session`]: the `logout` event;
//! - [`request_head`]: the HTTP head a socket keeps, copied off hyper's read buffer.

pub(crate) mod connection;
mod error;
mod handshake;
mod messages;
mod overflow;
pub mod price;
mod rate;
pub mod request_head;
mod session;
pub mod signup;

use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::handler::ConnectHandler;
use socketioxide::SocketIo;
use socketioxide_core::adapter::DefinedAdapter;

use crate::domain::{SessionId, UserId};
use crate::store::Store;

pub use error::EventError;
pub use rate::{Penalties, Rate, RateLimiter, ReadLimits};

/// Limits the transport enforces; all come from [`crate::config::Config`].
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_chars: usize,
    pub roster_messages_per_peer: u32,
    pub restore_page: u32,
    pub history_page_max: u32,
    /// The most a `restore_state` or `history` answer carries, in bytes (its messages); past
    /// it the answer is cut and says `hasMore`.
    pub max_answer_bytes: usize,
    /// The most the messages of a connect's `users` carry, in bytes; older ones come from
    /// `history`.
    pub roster_max_bytes: usize,
    pub max_sockets_per_user: u32,
    /// Up to this many users, `users` lists everyone; beyond, contacts and online users only.
    pub roster_full_max: usize,
    pub tab_policy: crate::config::TabPolicy,
}

/// State shared by every socket handler.
#[derive(Clone)]
pub struct SocketState {
    pub store: Arc<dyn Store>,
    pub limits: Arc<Limits>,
    pub rate: Arc<RateLimiter>,
    /// What reads cost, per user and per socket.
    pub reads: Arc<ReadLimits>,
    /// Sockets that keep sending past their limits are closed, their sessions barred a while.
    pub penalties: Arc<Penalties>,
    /// Sign-ups per client address and overall.
    pub signups: Arc<signup::SignupLimiter>,
}

/// Who a socket belongs to, set by the handshake middleware before the socket joins.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub username: String,
}

impl Viewer {
    /// The room of this session's sockets: named by the secret's digest, never the secret.
    pub fn session_room(&self) -> String {
        format!("session:{}", self.session_id.digest())
    }
}

/// Whether an HTTP request path is Socket.IO's (socketioxide's default `/socket.io`): the
/// requests the origin check and the request-head copy apply to.
pub fn is_socket_path(path: &str) -> bool {
    path.starts_with("/socket.io")
}

/// Answers an event's ack with `{ ok }` or the error's typed `{ error }`.
pub(crate) fn reply<A: Adapter, T: serde::Serialize>(
    ack: overflow::Ack<A>,
    event: &str,
    result: Result<T, EventError>,
) {
    let answer = match result {
        Ok(value) => protocol::Ack::Ok(value),
        Err(e) => e.into_ack(event),
    };
    // The socket may be gone already, or closing (over its send budget): nobody to answer.
    ack.send(&answer);
}

/// Registers the `/` namespace. With a remote adapter the result is a future that resolves once
/// the adapter listens for the other nodes.
pub fn register<A: Adapter + DefinedAdapter>(io: &SocketIo<A>) -> A::InitRes {
    io.ns(
        "/",
        connection::on_connect::<A>.with(handshake::authenticate::<A>),
    )
}

/// Tells everyone about presence changes the store's heartbeat found (another node died, or
/// this one had been presumed dead), as a disconnect or connect on this node would have.
pub async fn announce_presence_changes<A: Adapter>(
    io: &SocketIo<A>,
    store: &dyn Store,
    changes: Vec<crate::store::PresenceChange>,
) {
    use crate::store::PresenceChange;
    // Read once, and only when some user came back (they need their names).
    let returned = changes
        .iter()
        .any(|c| matches!(c, PresenceChange::Returned { .. }));
    let directory = if returned {
        store.list_users().await.ok()
    } else {
        None
    };
    for change in changes {
        match change {
            PresenceChange::Left {
                user,
                sockets_left: 0,
            } => {
                tracing::info!(user.id = %user, "user went offline with a dead node");
                metrics::gauge!("tether_users_online").decrement(1.0);
                let _ = io
                    .broadcast()
                    .emit(protocol::events::USER_DISCONNECTED, user.as_str())
                    .await;
            }
            PresenceChange::Left { user, sockets_left } => {
                let _ = io
                    .within(user.to_string())
                    .emit(
                        protocol::events::TABS,
                        &protocol::payloads::Tabs {
                            count: sockets_left,
                        },
                    )
                    .await;
            }
            PresenceChange::Returned { user } => {
                let Some(found) = directory
                    .as_ref()
                    .and_then(|users| users.iter().find(|u| u.user_id == user))
                else {
                    continue;
                };
                let entry = protocol::payloads::UserEntry {
                    user_id: user.to_string(),
                    username: found.username.clone(),
                    connected: true,
                    messages: Vec::new(),
                };
                let _ = io
                    .broadcast()
                    .emit(protocol::events::USER_CONNECTED, &entry)
                    .await;
            }
        }
    }
}
