//! Every accepted connection, in Part A's order: `session`, join the user's room, `users`,
//! `user connected`. Presence on disconnect: `user disconnected` only for a user's last socket.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use protocol::events;
use protocol::payloads::{Message, SessionInfo, UserEntry};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State};
use socketioxide::socket::DisconnectReason;
use tokio::sync::Mutex;

use super::handshake::HeldThrough;
use super::{messages, session, SocketState, Viewer};
use crate::domain::UserId;
use crate::store::{StoreError, User};

/// Where a socket is in its presence life: counted once connected, uncounted once closed. The
/// lock makes a disconnect that races the connect handler wait for it, so no count is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Pending,
    Counted,
    Closed,
}

#[derive(Clone)]
struct PresenceSlot(Arc<Mutex<Presence>>);

/// The socket's event handlers (registered by the handshake middleware, before the client
/// can send anything).
pub(super) fn register_event_handlers<A: Adapter>(socket: &SocketRef<A>) {
    socket.on(events::PRIVATE_MESSAGE, messages::private_message::<A>);
    socket.on(events::RESTORE_STATE, messages::restore_state::<A>);
    socket.on(events::HISTORY, messages::history::<A>);
    socket.on(events::USERS_PAGE, messages::users_page::<A>);
    socket.on(events::LOGOUT, session::logout::<A>);
}

pub async fn on_connect<A: Adapter>(socket: SocketRef<A>, State(state): State<SocketState>) {
    let Some(viewer) = socket.extensions.get::<Viewer>() else {
        // The middleware always sets a viewer; without one nothing may happen on this socket.
        let _ = socket.disconnect();
        return;
    };
    // Hold the presence slot before the first `.await`. (Event handlers are already registered:
    // see `register_event_handlers`.)
    let slot = PresenceSlot(Arc::new(Mutex::new(Presence::Pending)));
    let Ok(mut presence) = slot.0.clone().try_lock_owned() else {
        return;
    };
    socket.extensions.insert(slot);
    socket.on_disconnect(on_disconnect::<A>);

    metrics::gauge!("tether_sockets_connected").increment(1.0);
    // Counted first, atomically in the store (and across nodes): the handshake's check of
    // the count could not stop handshakes racing each other, this can. A socket that finds
    // the user over the limit takes its count back and is closed before it gets anything.
    let counted = state.store.socket_connected(&viewer.user_id).await;
    if let Ok(tabs) = counted {
        if tabs > state.limits.max_sockets_per_user {
            if let Err(e) = state.store.socket_disconnected(&viewer.user_id).await {
                tracing::error!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, error = %e, "presence update failed");
            }
            *presence = Presence::Closed;
            drop(presence);
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
    socket.join(viewer.user_id.to_string());

    match counted {
        Ok(tabs) => {
            *presence = Presence::Counted;
            if tabs == 1 {
                metrics::gauge!("tether_users_online").increment(1.0);
            }
            announce_tabs(&socket, &viewer, tabs).await;
        }
        Err(e) => {
            tracing::error!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, error = %e, "presence update failed")
        }
    }
    drop(presence);

    let held_through = socket
        .extensions
        .remove::<HeldThrough>()
        .map_or(0, |held| held.0);
    match roster(&state, &viewer, held_through).await {
        Ok((users, audience)) => {
            // Never refused (the client needs it), but paid for: what it cost is owed by the
            // user's next reads.
            let bytes = users.iter().map(super::price::entry_bytes).sum();
            if let Some(bucket) = socket.extensions.get::<super::rate::SocketReadBucket>() {
                state.reads.charge(&viewer.user_id, &bucket, bytes);
            }
            // Part A order: `users` only after `session` (queued above, so sent before).
            super::overflow::emit(&socket, events::USERS, &users);
            socket.extensions.insert(audience);
        }
        Err(e) => {
            tracing::error!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, error = %e, "could not build the roster; closing the socket so the client retries");
            let _ = socket.clone().disconnect();
            return;
        }
    }
    let entry = UserEntry {
        user_id: viewer.user_id.to_string(),
        username: viewer.username.clone(),
        connected: true,
        messages: Vec::new(),
    };
    announce(&socket, events::USER_CONNECTED, &entry).await;
    tracing::info!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, "socket connected");
}

async fn on_disconnect<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    reason: DisconnectReason,
) {
    let (Some(viewer), Some(slot)) = (
        socket.extensions.get::<Viewer>(),
        socket.extensions.get::<PresenceSlot>(),
    ) else {
        return;
    };
    let mut presence = slot.0.lock().await;
    let was = std::mem::replace(&mut *presence, Presence::Closed);
    metrics::gauge!("tether_sockets_connected").decrement(1.0);
    tracing::info!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, ?reason, "socket disconnected");
    if was != Presence::Counted {
        return;
    }
    match state.store.socket_disconnected(&viewer.user_id).await {
        Ok(Some(0)) => {
            metrics::gauge!("tether_users_online").decrement(1.0);
            announce(&socket, events::USER_DISCONNECTED, viewer.user_id.as_str()).await;
            tracing::info!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, "user went offline");
        }
        Ok(Some(tabs)) => announce_tabs(&socket, &viewer, tabs).await,
        Ok(None) => {}
        Err(e) => {
            tracing::error!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, error = %e, "presence update failed")
        }
    }
}

/// Who hears about this user's presence: everyone (the tutorial's contract), or, beyond
/// `--roster-full-max` users, only the rooms of the people the user has conversations with
/// (and the user's own other tabs), so a connect's fan-out stays bounded.
#[derive(Debug, Clone)]
enum Audience {
    Everyone,
    Rooms(Vec<String>),
}

async fn announce<A: Adapter, T: serde::Serialize + ?Sized>(
    socket: &SocketRef<A>,
    event: &str,
    data: &T,
) {
    let audience = socket
        .extensions
        .get::<Audience>()
        .unwrap_or(Audience::Everyone);
    let _ = match audience {
        Audience::Everyone => socket.broadcast().emit(event, data).await,
        Audience::Rooms(rooms) => socket.to(rooms).emit(event, data).await,
    };
}

/// Tells every socket of the user how many of them there are now (Tether's `tabs` event).
async fn announce_tabs<A: Adapter>(socket: &SocketRef<A>, viewer: &Viewer, tabs: u32) {
    let _ = socket
        .within(viewer.user_id.to_string())
        .emit(events::TABS, &protocol::payloads::Tabs { count: tabs })
        .await;
}

/// One entry per user, the viewer included, each with the viewer's conversation with that user
/// only: of it, the messages after `held_through` (what a resuming client already holds; 0 for
/// the whole conversation, as the tutorial sends it).
async fn roster(
    state: &SocketState,
    viewer: &Viewer,
    held_through: i64,
) -> Result<(Vec<UserEntry>, Audience), StoreError> {
    let conversations = state
        .store
        .conversations(
            &viewer.user_id,
            state.limits.roster_messages_per_peer,
            held_through,
            super::price::most_messages_within(state.limits.roster_max_bytes),
        )
        .await?;
    // Taken after the slow read, and dropped at the end of this function: a snapshot still
    // held when someone comes or goes would have to be copied.
    let users = state.store.list_users().await?;
    let online = state.store.online_users().await?;
    // Bounded in bytes whatever others send: the newest messages over every conversation
    // within `--roster-max-bytes`; older ones come from `history`.
    let (messages, _, _) =
        super::price::newest_within(conversations.messages, state.limits.roster_max_bytes);
    let mut by_peer = group_by_peer(viewer.user_id.as_str(), messages);
    let contacts: HashSet<UserId> = conversations.peers.into_iter().collect();
    let audience = if users.len() <= state.limits.roster_full_max {
        Audience::Everyone
    } else {
        let mut rooms: Vec<String> = contacts.iter().map(UserId::to_string).collect();
        rooms.push(viewer.user_id.to_string());
        Audience::Rooms(rooms)
    };
    let listed = roster_members(
        &users,
        viewer,
        |u| contacts.contains(&u.user_id),
        |u| online.contains(&u.user_id),
        state.limits.roster_full_max,
    );
    let entries = listed
        .into_iter()
        .map(|user| UserEntry {
            connected: online.contains(&user.user_id),
            messages: by_peer.remove(user.user_id.as_str()).unwrap_or_default(),
            user_id: user.user_id.to_string(),
            username: user.username.clone(),
        })
        .collect();
    Ok((entries, audience))
}

/// Who the roster lists, in sign-up order. Up to `full_max` users: everyone (the tutorial's
/// contract). Beyond that, so a connect costs a bounded amount: the viewer and the people they
/// have conversations with, then online users, `full_max` entries at most; the rest of the
/// directory is paged with `users_page`.
pub(super) fn roster_members<'a>(
    users: &'a [User],
    viewer: &Viewer,
    is_contact: impl Fn(&User) -> bool,
    is_online: impl Fn(&User) -> bool,
    full_max: usize,
) -> Vec<&'a User> {
    if users.len() <= full_max {
        return users.iter().collect();
    }
    let mut picked: Vec<usize> = users
        .iter()
        .enumerate()
        .filter(|(_, u)| u.user_id == viewer.user_id || is_contact(u))
        .map(|(i, _)| i)
        .take(full_max)
        .collect();
    let room = full_max.saturating_sub(picked.len());
    let chosen: std::collections::HashSet<usize> = picked.iter().copied().collect();
    picked.extend(
        users
            .iter()
            .enumerate()
            .filter(|(i, u)| !chosen.contains(i) && is_online(u))
            .map(|(i, _)| i)
            .take(room),
    );
    picked.sort_unstable();
    picked.into_iter().map(|i| &users[i]).collect()
}

/// Splits the viewer's messages by the other party (the viewer itself for notes to self).
fn group_by_peer(viewer: &str, messages: Vec<Message>) -> HashMap<String, Vec<Message>> {
    let mut by_peer: HashMap<String, Vec<Message>> = HashMap::new();
    for message in messages {
        let peer = if message.from == viewer {
            message.to.clone()
        } else {
            message.from.clone()
        };
        by_peer.entry(peer).or_default().push(message);
    }
    by_peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: i64, from: &str, to: &str) -> Message {
        Message {
            id,
            ts: 0,
            content: String::new(),
            from: from.into(),
            to: to.into(),
            client_id: None,
        }
    }

    #[test]
    fn messages_are_grouped_by_the_other_party_and_notes_to_self_by_the_viewer() {
        let grouped = group_by_peer(
            "me",
            vec![
                m(1, "me", "bob"),
                m(2, "bob", "me"),
                m(3, "me", "me"),
                m(4, "eve", "me"),
            ],
        );
        assert_eq!(grouped["bob"].len(), 2);
        assert_eq!(grouped["me"].len(), 1);
        assert_eq!(grouped["eve"][0].id, 4);
    }
}

#[cfg(test)]
mod roster_tests {
    use super::*;
    use crate::domain::{SessionId, UserId};

    fn users(n: usize) -> Vec<User> {
        (0..n)
            .map(|i| User {
                user_id: UserId::random(),
                username: format!("u{i}"),
            })
            .collect()
    }

    fn viewer_of(user: &User) -> Viewer {
        Viewer {
            session_id: SessionId::random(),
            user_id: user.user_id.clone(),
            username: user.username.clone(),
        }
    }

    #[test]
    fn small_deployments_list_everyone() {
        let all = users(3);
        let listed = roster_members(&all, &viewer_of(&all[0]), |_| false, |_| false, 3);
        assert_eq!(listed.len(), 3);
    }

    #[test]
    fn large_deployments_list_viewer_contacts_then_online_up_to_the_cap() {
        let all = users(10);
        let viewer = viewer_of(&all[5]);
        let contact = all[9].user_id.clone();
        let online: Vec<UserId> = vec![all[1].user_id.clone(), all[2].user_id.clone()];
        let listed = roster_members(
            &all,
            &viewer,
            |u| u.user_id == contact,
            |u| online.contains(&u.user_id),
            3,
        );
        let names: Vec<&str> = listed.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(
            names,
            ["u1", "u5", "u9"],
            "sign-up order; contacts before online users"
        );
    }
}
