//! The Socket.IO side of Tether: one file per event group.
//!
//! - [`handshake`]: the connect middleware that turns `auth` into a session (or refuses it);
//! - [`connection`]: what happens on every accepted connection;
//! - [`presence`]: who is online and who hears it (`user connected`, `user disconnected`,
//!   `tabs`), for local sockets and the cluster heartbeat alike;
//! - [`roster`]: every list of users sent (`users`, `restore_state`'s, `users_page`);
//! - [`messages`]: `private message`, `restore_state`, `history` and `users_page`;
//! - [`reading`]: `conversations` and `read` (read cursors, unread counts, `seen` receipts);
//! - [`typing`]: `typing`, relayed and throttled, never stored;
//! - [`search`]: `users_search` over the whole directory;
//! - [`settings`]: the viewer's settings (`settings`);
//! - [`logout`]: the `logout` event, and closing the sockets of ended sessions (expiry too);
//! - [`devices`]: `devices` and `revoke_device`, the viewer's sessions (issue #25);
//! - [`request_head`]: the HTTP head a socket keeps, copied off hyper's read buffer.

pub(crate) mod connection;
pub mod devices;
mod error;
mod handshake;
pub mod logout;
mod messages;
mod overflow;
pub mod passkeys;
pub(crate) mod presence;
pub mod price;
mod rate;
pub mod reading;
pub mod request_head;
mod roster;
pub mod rotation;
pub mod search;
pub mod settings;
pub mod signup;
pub mod typing;

use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
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
    /// The most unread messages a `conversations` page counts in one conversation.
    pub unread_count_max: u32,
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
    /// `read` requests and settings changes, per user (`--read-marks-per-sec`).
    pub marks: Arc<RateLimiter>,
    /// `typing`: the budget per user and the throttle per conversation.
    pub typing: Arc<typing::TypingGate>,
    /// The passkey ceremonies; `None` when passkeys are off (no domain to be the RP).
    pub passkeys: Option<Arc<crate::identity::passkeys::Passkeys>>,
    /// `passkey_options` per user (`--passkey-registrations-per-hour`).
    pub passkey_registrations: Arc<RateLimiter>,
    /// When session secrets rotate, and how long a rotated-out one is accepted (issue #25 §5).
    pub rotation: rotation::Rotation,
}

/// Who a socket belongs to, set by the handshake middleware before the socket joins.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The session's secret as this socket knows it: the one its handshake presented, or the
    /// one that handshake sent it (rotated). The session may have rotated since (`session`).
    pub session_id: SessionId,
    /// The session's family: the digest of its first secret, which keys it in the store (a
    /// device, issue #25) and names its sockets' room. Its secrets rotate; this never changes.
    pub family: String,
    pub user_id: UserId,
    pub username: String,
    /// This connection proved possession of the session's key at its handshake (issue #25):
    /// only such a connection may add a passkey.
    pub bound: bool,
    /// When the session's current secret was issued, as far as this node knows (ms since the
    /// Unix epoch): connected sockets whose secret is due rotate without reconnecting
    /// ([`rotation::rotate_connected`]).
    pub issued_at: i64,
}

impl Viewer {
    /// The viewer of a session just made with `session_id` (its first secret: the family is
    /// its digest).
    pub fn new(session_id: SessionId, user_id: UserId, username: String) -> Self {
        let family = session_id.digest();
        Self::of(session_id, family, user_id, username)
    }

    /// The viewer of the session `family`, on a socket that holds `session_id`.
    pub fn of(session_id: SessionId, family: String, user_id: UserId, username: String) -> Self {
        Self {
            family,
            session_id,
            user_id,
            username,
            bound: false,
            issued_at: crate::store::now_ms(),
        }
    }

    /// The same viewer, whose session's current secret was issued at `issued_at`.
    pub fn issued(self, issued_at: i64) -> Self {
        Self { issued_at, ..self }
    }

    /// The same viewer, on a connection that proved possession of the session's key.
    pub fn proven(self) -> Self {
        Self {
            bound: true,
            ..self
        }
    }

    /// The room of this session's sockets: named by its family (a digest), never the secret.
    pub fn session_room(&self) -> String {
        logout::session_room(&self.family)
    }
}

/// Whether an HTTP request path is Socket.IO's (socketioxide's default `/socket.io`): the
/// requests the origin check and the request-head copy apply to.
pub fn is_socket_path(path: &str) -> bool {
    path.starts_with("/socket.io")
}

/// The edge's first step for a payload that must be an object: it, read as a `T`, or
/// `invalid_payload` for anything else (serde would read a struct from an array too) and for an
/// object of the wrong shape.
pub(crate) fn object<T: serde::de::DeserializeOwned>(
    payload: Option<serde_json::Value>,
) -> Result<T, EventError> {
    payload
        .filter(serde_json::Value::is_object)
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or(EventError::InvalidPayload)
}

/// As [`object`], with no payload or `null` read as `T::default()`.
pub(crate) fn object_or_default<T: serde::de::DeserializeOwned + Default>(
    payload: Option<serde_json::Value>,
) -> Result<T, EventError> {
    match payload {
        None | Some(serde_json::Value::Null) => Ok(T::default()),
        payload => object(payload),
    }
}

/// Runs an event that is answered on its ack, for the socket's viewer: `run`'s answer or its
/// typed error goes on the ack, and a refusal (`rate_limited`) counts against the socket
/// ([`judge`]). A socket without a viewer (the handshake always sets one) gets nothing.
pub(crate) async fn handle<A: Adapter, T: serde::Serialize>(
    socket: &SocketRef<A>,
    state: &SocketState,
    ack: overflow::Ack<A>,
    event: &str,
    run: impl AsyncFnOnce(&Viewer) -> Result<T, EventError>,
) {
    let Some(viewer) = socket.extensions.get::<Viewer>() else {
        return;
    };
    let result = run(&viewer).await;
    let limited = matches!(result, Err(EventError::RateLimited));
    reply(ack, event, result);
    judge(socket, state, &viewer, limited);
}

/// Counts a refused request against its socket. A socket that keeps sending past its limits
/// is disconnected (after its answer), and its session may not connect again for the cooldown
/// (`rate::Penalties`).
pub(crate) fn judge<A: Adapter>(
    socket: &SocketRef<A>,
    state: &SocketState,
    viewer: &Viewer,
    limited: bool,
) {
    if !limited {
        return;
    }
    if state
        .penalties
        .refused(&messages::read_bucket(socket, state))
    {
        // The handshake's cooldown check sees only the digest of the secret presented: bar the
        // one this socket holds too (the family's own when it never rotated).
        state.penalties.bar(viewer.family.clone());
        state.penalties.bar(viewer.session_id.digest());
        metrics::counter!("tether_sockets_closed_total", "reason" => "flooding").increment(1);
        crate::refusals::refused(crate::refusals::Refusal::Flooding);
        let _ = socket.clone().disconnect();
    }
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

/// After the cluster's pub/sub connection came back ([`crate::pubsub`]): what other nodes
/// broadcast while it was down never reached this node's sockets, so each is sent `resync`
/// without `since` (its client restores from the newest message it holds and asks for
/// everyone's presence). Ends with the connection.
pub async fn resync_after_reconnects<A: Adapter>(
    io: SocketIo<A>,
    mut reconnected: tokio::sync::watch::Receiver<u64>,
) {
    while reconnected.changed().await.is_ok() {
        if let Err(e) = io
            .local()
            .emit(protocol::events::RESYNC, &serde_json::json!({}))
            .await
        {
            tracing::warn!(error = %e, "could not send resync to this node's sockets");
        }
    }
}

/// Registers the `/` namespace. With a remote adapter the result is a future that resolves once
/// the adapter listens for the other nodes.
pub fn register<A: Adapter + DefinedAdapter>(io: &SocketIo<A>) -> A::InitRes {
    io.ns(
        "/",
        connection::on_connect::<A>.with(handshake::authenticate::<A>),
    )
}
