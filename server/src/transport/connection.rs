//! Every accepted connection, in Part A's order: `session`, join the user's room, `users`,
//! `user connected` (with `tabs` between). What follows a disconnect is presence's
//! ([`super::presence`]).

use protocol::events;
use protocol::payloads::SessionInfo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State};

use super::handshake::HeldThrough;
use super::presence::{self, Speaker};
use super::{
    devices, logout, messages, passkeys, reading, roster, search, settings, typing, SocketState,
    Viewer,
};

/// The socket's event handlers (registered by the handshake middleware, before the client
/// can send anything).
pub(super) fn register_event_handlers<A: Adapter>(socket: &SocketRef<A>) {
    socket.on(events::PRIVATE_MESSAGE, messages::private_message::<A>);
    socket.on(events::RESTORE_STATE, messages::restore_state::<A>);
    socket.on(events::HISTORY, messages::history::<A>);
    socket.on(events::USERS_PAGE, messages::users_page::<A>);
    socket.on(events::LOGOUT, logout::logout::<A>);
    socket.on(events::CONVERSATIONS, reading::conversations::<A>);
    socket.on(events::READ, reading::read::<A>);
    socket.on(events::TYPING, typing::typing::<A>);
    socket.on(events::USERS_SEARCH, search::users_search::<A>);
    socket.on(events::SETTINGS, settings::settings::<A>);
    socket.on(events::DEVICES, devices::devices::<A>);
    socket.on(events::REVOKE_DEVICE, devices::revoke_device::<A>);
    socket.on(events::PASSKEY_OPTIONS, passkeys::passkey_options::<A>);
    socket.on(events::PASSKEY_ADD, passkeys::passkey_add::<A>);
    socket.on(events::PASSKEYS, passkeys::passkeys::<A>);
    socket.on(events::PASSKEY_REMOVE, passkeys::passkey_remove::<A>);
}

pub async fn on_connect<A: Adapter>(socket: SocketRef<A>, State(state): State<SocketState>) {
    let Some(viewer) = socket.extensions.get::<Viewer>() else {
        // The middleware always sets a viewer; without one nothing may happen on this socket.
        let _ = socket.disconnect();
        return;
    };
    // Hold the presence slot before the first `.await`. (Event handlers are already registered:
    // see `register_event_handlers`.)
    let Some(held) = presence::hold(&socket) else {
        return;
    };

    // Counted first, atomically in the store (and across nodes): the handshake's check of
    // the count could not stop handshakes racing each other, this can. A socket that finds
    // the user over the limit takes its count back and is closed before it gets anything.
    let counted = state.store.socket_connected(&viewer.user_id).await;
    if let Ok(tabs) = counted {
        if tabs > state.limits.max_sockets_per_user {
            if let Err(e) = state.store.socket_disconnected(&viewer.user_id).await {
                tracing::error!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, error = %format_args!("{e:#}"), "presence update failed");
            }
            held.closed();
            metrics::counter!("tether_sockets_refused_total", "reason" => "per_user_limit")
                .increment(1);
            crate::refusals::refused(crate::refusals::Refusal::TooManySockets);
            let _ = socket.disconnect();
            return;
        }
    }
    // Over its send budget a socket is closed instead (its client reconnects and gets both).
    super::overflow::emit(
        &socket,
        events::SESSION,
        &SessionInfo {
            session_id: viewer.session_id.expose_secret().to_owned(),
            user_id: viewer.user_id.to_string(),
        },
    );
    if socket
        .extensions
        .remove::<super::rotation::Rotated>()
        .is_some()
    {
        // Its handshake rotated the session's secret: every socket of the session ends on
        // the newest (this one's `session` above carried the one it rotated to).
        let newest =
            super::rotation::converge(&state.rotation, state.store.as_ref(), &socket, &viewer)
                .await;
        if newest != viewer.session_id {
            let mut updated = viewer.clone();
            updated.session_id = newest;
            socket.extensions.insert(updated);
        }
    }
    socket.join(viewer.user_id.to_string());

    match counted {
        Ok(tabs) => held.counted(&socket, &viewer, tabs).await,
        Err(e) => {
            held.closed();
            tracing::error!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, error = %format_args!("{e:#}"), "presence update failed")
        }
    }

    let held_through = socket
        .extensions
        .remove::<HeldThrough>()
        .map_or(0, |held| held.0);
    let (audience, protected) = match roster::connect_roster(&state, &viewer, held_through).await {
        Ok(roster) => {
            // Whether a passkey protects the viewer's name: its own entry says (it is always listed).
            let protected = roster
                .entries
                .iter()
                .any(|e| e.is_protected() && e.user_id == viewer.user_id.as_str());
            // Never refused (the client needs it), but paid for: what it cost is owed by the
            // user's next reads.
            let bytes = roster.entries.iter().map(super::price::entry_bytes).sum();
            if let Some(bucket) = socket.extensions.get::<super::rate::SocketReadBucket>() {
                state.reads.charge(&viewer.user_id, &bucket, bytes);
            }
            // Part A order: `users` only after `session` (queued above, so sent before).
            super::overflow::emit(&socket, events::USERS, &roster.entries);
            // Marked as the roster read it, checked again just before the news goes out: a
            // last passkey removed meanwhile sent `false`, which a stale `true` after it would
            // undo. (Only a protected account pays this read.)
            let protected = protected
                && match state.store.passkeys(&viewer.user_id).await {
                    Ok(list) => list.protected,
                    Err(_) => protected,
                };
            (roster.audience, protected)
        }
        Err(e) => {
            tracing::error!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, error = %format_args!("{e:#}"), "could not build the roster; closing the socket so the client retries");
            let _ = socket.clone().disconnect();
            return;
        }
    };
    presence::came_online(
        Speaker::Socket(&socket),
        audience,
        &viewer.user_id,
        &viewer.username,
        protected,
    )
    .await;
    tracing::info!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, "socket connected");
}
