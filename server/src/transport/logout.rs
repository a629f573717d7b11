//! Sessions ending: the `logout` event (this session, or with `{ everywhere: true }` every
//! session of the user), and the one way the sockets of ended sessions close, on every node,
//! whether a logout or the expiry task ([`crate::expiry`]) ended them. Each closing socket
//! goes through its disconnect handler, which uncounts it and announces a user's going offline
//! ([`super::presence`]).

use protocol::events;
use protocol::payloads::LogoutRequest;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::SocketIo;

use super::overflow::Ack;
use super::{reply, EventError, SocketState, Viewer};
use crate::domain::UserId;

/// Whose sockets close because their sessions ended.
pub enum Ended<'a> {
    /// These sessions, by family (digest): a logout's own, a revoked device, or those an
    /// expiry sweep ended.
    Sessions(Vec<String>),
    /// Every session of the user: a logout everywhere.
    User(&'a UserId),
}

impl Ended<'_> {
    /// The rooms holding those sockets: each session's ([`session_room`]), or the user's.
    fn rooms(self) -> Vec<String> {
        match self {
            Ended::Sessions(digests) => digests.iter().map(|d| session_room(d)).collect(),
            Ended::User(user) => vec![user.to_string()],
        }
    }
}

/// The room of a session's sockets, by the digest of its secret (never the secret).
pub fn session_room(digest: &str) -> String {
    format!("session:{digest}")
}

/// Disconnects every socket of what ended, on every node (one broadcast for them all).
pub async fn close_sockets<A: Adapter>(io: &SocketIo<A>, ended: Ended<'_>) {
    let rooms = ended.rooms();
    if rooms.is_empty() {
        return;
    }
    if let Err(e) = io.within(rooms).disconnect().await {
        tracing::warn!(error = %e, "could not close every socket of the ended sessions");
    }
}

pub async fn logout<A: Adapter>(
    socket: SocketRef<A>,
    io: SocketIo<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    let Some(viewer) = socket.extensions.get::<Viewer>() else {
        return;
    };
    let request: LogoutRequest = payload
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let ended = if request.everywhere {
        state
            .store
            .delete_user_sessions(&viewer.user_id)
            .await
            .map(|_| ())
    } else {
        // By family: the socket's secret may have been rotated since its handshake.
        state
            .store
            .end_family(&viewer.user_id, &viewer.family)
            .await
            .map(|_| ())
    };
    let ended = ended.map(|()| true).map_err(EventError::from);
    let ok = ended.is_ok();
    // Queued before the disconnect, so it goes out first.
    reply(ack, events::LOGOUT, ended);
    if !ok {
        return;
    }
    tracing::info!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, everywhere = request.everywhere, "signed out");
    let ended = if request.everywhere {
        Ended::User(&viewer.user_id)
    } else {
        Ended::Sessions(vec![viewer.family.clone()])
    };
    close_sockets(&io, ended).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SessionId;

    #[test]
    fn the_room_closed_is_the_room_the_sessions_sockets_joined() {
        let viewer = Viewer::new(SessionId::random(), UserId::random(), "ada".into());
        assert_eq!(
            Ended::Sessions(vec![viewer.session_id.digest()]).rooms(),
            [viewer.session_room()]
        );
        assert_eq!(
            Ended::User(&viewer.user_id).rooms(),
            [viewer.user_id.to_string()]
        );
    }
}
