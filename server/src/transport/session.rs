//! `logout`: the session ends server-side, then every socket of it is disconnected.

use protocol::events;
use protocol::Ack;
use socketioxide::extract::{AckSender, SocketRef, State};

use super::{EventError, SocketState, Viewer};

pub async fn logout(socket: SocketRef, State(state): State<SocketState>, ack: AckSender) {
    let Some(viewer) = socket.extensions.get::<Viewer>() else {
        return;
    };
    match state.store.delete_session(&viewer.session_id).await {
        Ok(_) => {
            let _ = ack.send(&Ack::Ok(true));
            tracing::info!(user.id = %viewer.user_id, "session ended by logout");
            // A session is one user: its room holds every socket of the session, on every tab.
            let _ = socket.within(viewer.user_id.to_string()).disconnect().await;
        }
        Err(e) => {
            let _ = ack.send(&EventError::from(e).into_ack::<bool>(events::LOGOUT));
        }
    }
}
