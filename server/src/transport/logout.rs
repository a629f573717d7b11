//! `logout`: the session ends server-side, then every socket of it is disconnected. With
//! `{ everywhere: true }` every session of the user ends.

use protocol::events;
use protocol::payloads::LogoutRequest;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::overflow::Ack;

use super::{reply, EventError, SocketState, Viewer};

pub async fn logout<A: Adapter>(
    socket: SocketRef<A>,
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
        state
            .store
            .delete_session(&viewer.session_id)
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
    // The user's room holds every socket of every session of the user; the session's room,
    // every tab of this session.
    let room = if request.everywhere {
        viewer.user_id.to_string()
    } else {
        viewer.session_room()
    };
    let _ = socket.within(room).disconnect().await;
}
