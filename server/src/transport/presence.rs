//! Presence: who is online, and who hears about it. Every `user connected`, `user disconnected`
//! and `tabs` the server sends is sent from here, whatever caused it: a socket of this node
//! connecting or closing (a tab, a logout, an expiry, a takeover, a lost connection), or the
//! cluster heartbeat finding that another node died with the user's sockets, or that this node
//! had been presumed dead while it still held them.
//!
//! Who hears that a user came or went is decided by one rule, [`Audience::of`], with what the
//! store says when it is said.

use std::sync::Arc;

use protocol::events;
use protocol::payloads::{Tabs, UserEntry};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State};
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::DisconnectReason;
use socketioxide::SocketIo;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Limits, SocketState, Viewer};
use crate::domain::UserId;
use crate::store::{PresenceChange, Store, StoreError};

/// Who hears that a user came online or went offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Audience {
    Everyone,
    Rooms(Vec<String>),
}

impl Audience {
    /// The rule. Up to `--roster-full-max` users in the directory, everyone hears (the
    /// tutorial's contract). Beyond it, so that one user's coming and going costs a bounded
    /// fan-out, only the user's contacts (everyone they have a conversation with, as the
    /// roster names them) and the user's own other tabs.
    pub(super) fn of(
        user: &UserId,
        contacts: impl IntoIterator<Item = UserId>,
        directory_len: usize,
        full_max: usize,
    ) -> Audience {
        if directory_len <= full_max {
            return Audience::Everyone;
        }
        let mut rooms: Vec<String> = contacts
            .into_iter()
            .filter(|contact| contact != user)
            .map(|contact| contact.to_string())
            .collect();
        rooms.push(user.to_string());
        Audience::Rooms(rooms)
    }

    /// The rule applied now, for a directory of `directory_len` users (read here when not
    /// given): the user's contacts are read only when the rule needs them.
    async fn now(
        store: &dyn Store,
        limits: &Limits,
        user: &UserId,
        directory_len: Option<usize>,
    ) -> Result<Audience, StoreError> {
        let directory_len = match directory_len {
            Some(len) => len,
            None => store.list_users().await?.len(),
        };
        let contacts = if directory_len <= limits.roster_full_max {
            Vec::new()
        } else {
            // Peers only: no message is asked for.
            store.conversations(user, 0, 0, 0).await?.peers
        };
        Ok(Audience::of(
            user,
            contacts,
            directory_len,
            limits.roster_full_max,
        ))
    }
}

/// Who says it: a socket of the user on this node (which does not hear its own news), or this
/// node, for a user it holds no socket of or on behalf of all of them (the heartbeat's changes).
pub(super) enum Speaker<'a, A: Adapter> {
    Socket(&'a SocketRef<A>),
    Node(&'a SocketIo<A>),
}

impl<A: Adapter> Speaker<'_, A> {
    fn to(&self, audience: Audience) -> BroadcastOperators<A> {
        match (self, audience) {
            (Speaker::Socket(socket), Audience::Everyone) => socket.broadcast(),
            (Speaker::Socket(socket), Audience::Rooms(rooms)) => socket.to(rooms),
            (Speaker::Node(io), Audience::Everyone) => io.broadcast(),
            (Speaker::Node(io), Audience::Rooms(rooms)) => io.to(rooms),
        }
    }

    /// Every socket of the user (on every node).
    fn within_user(&self, user: &UserId) -> BroadcastOperators<A> {
        match self {
            Speaker::Socket(socket) => socket.within(user.to_string()),
            Speaker::Node(io) => io.within(user.to_string()),
        }
    }
}

/// `user connected`: a socket of the user connected (each tab says so, as the tutorial's server
/// does), or this node counts the user's sockets again after it was presumed dead. The
/// audience is the rule's, decided by the caller with what it read. `protected`: a passkey
/// protects the user's name, as far as the caller knows (the connect's roster says; the
/// heartbeat does not know, and says nothing: `protected` is then absent, "no news").
pub(super) async fn came_online<A: Adapter>(
    speaker: Speaker<'_, A>,
    audience: Audience,
    user: &UserId,
    username: &str,
    protected: bool,
) {
    let _ = speaker
        .to(audience)
        .emit(
            events::USER_CONNECTED,
            &online_entry(user, username, protected.then_some(true)),
        )
        .await;
}

fn online_entry(user: &UserId, username: &str, protected: Option<bool>) -> UserEntry {
    UserEntry {
        user_id: user.to_string(),
        username: username.to_owned(),
        connected: true,
        messages: Vec::new(),
        read_up_to: None,
        protected,
    }
}

/// `user connected` again, with `protected` as news, once a passkey first protects the viewer's
/// name or the last one goes (issue #25): the rule's audience and the viewer's own sockets, on
/// every node, show the mark or lose it at once rather than at their next connect. What is
/// sent is the store's state read here, last, not what the caller's own change left: of an
/// add and a removal racing in two tabs, whichever news goes out last says how it ended.
pub(super) async fn protection_changed<A: Adapter>(
    socket: &SocketRef<A>,
    state: &SocketState,
    viewer: &Viewer,
) -> Result<(), StoreError> {
    let audience =
        Audience::now(state.store.as_ref(), &state.limits, &viewer.user_id, None).await?;
    let protected = state.store.passkeys(&viewer.user_id).await?.protected;
    let entry = online_entry(&viewer.user_id, &viewer.username, Some(protected));
    let _ = Speaker::Socket(socket)
        .to(audience)
        .emit(events::USER_CONNECTED, &entry)
        .await;
    // The audience holds the user's other sockets (everyone, or the user's room) but not the
    // speaking one.
    super::overflow::emit(socket, events::USER_CONNECTED, &entry);
    Ok(())
}

/// `user disconnected`: the user's last socket is uncounted (closed here, or lost with a dead
/// node), told to the rule's audience as the store has it now (a directory of `directory_len`
/// users, read here when not given).
async fn went_offline<A: Adapter>(
    speaker: Speaker<'_, A>,
    state: &SocketState,
    user: &UserId,
    directory_len: Option<usize>,
) {
    metrics::gauge!("tether_users_online").decrement(1.0);
    match Audience::now(state.store.as_ref(), &state.limits, user, directory_len).await {
        Ok(audience) => {
            let _ = speaker
                .to(audience)
                .emit(events::USER_DISCONNECTED, user.as_str())
                .await;
        }
        Err(e) => {
            tracing::error!(user.id = %user, error = %format_args!("{e:#}"), "could not read who hears that the user went offline")
        }
    }
}

/// `tabs`: tells every socket of the user how many of them there are now (Tether's event).
async fn tabs<A: Adapter>(speaker: Speaker<'_, A>, user: &UserId, count: u32) {
    let _ = speaker
        .within_user(user)
        .emit(events::TABS, &Tabs { count })
        .await;
}

/// Where a socket is in its presence life: counted once connected, uncounted once closed. The
/// lock makes a disconnect that races the connect handler wait for it, so no count is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Counted,
    Closed,
}

#[derive(Clone)]
struct PresenceSlot(Arc<Mutex<Phase>>);

/// A socket's presence slot, held by its connect handler until it is counted (or refused).
pub(super) struct Held(OwnedMutexGuard<Phase>);

/// Gives a newly connected socket its presence slot, held, and the disconnect handler that
/// uncounts it. Call before the connect handler's first `.await`.
pub(super) fn hold<A: Adapter>(socket: &SocketRef<A>) -> Option<Held> {
    let slot = PresenceSlot(Arc::new(Mutex::new(Phase::Pending)));
    let held = slot.0.clone().try_lock_owned().ok()?;
    socket.extensions.insert(slot);
    socket.on_disconnect(socket_closed::<A>);
    metrics::gauge!("tether_sockets_connected").increment(1.0);
    Some(Held(held))
}

impl Held {
    /// The socket will not be counted (refused, or the store failed): its disconnect has
    /// nothing to uncount.
    pub(super) fn closed(mut self) {
        *self.0 = Phase::Closed;
    }

    /// The socket is counted, `count` of the user's now: the user's sockets hear the new count.
    /// (The user's coming online is announced once the connect has read the roster, which
    /// holds what the rule needs: [`came_online`].)
    pub(super) async fn counted<A: Adapter>(
        mut self,
        socket: &SocketRef<A>,
        viewer: &Viewer,
        count: u32,
    ) {
        *self.0 = Phase::Counted;
        if count == 1 {
            metrics::gauge!("tether_users_online").increment(1.0);
        }
        tabs(Speaker::Socket(socket), &viewer.user_id, count).await;
    }
}

/// A socket closed, for whatever reason: uncounted; the user's last socket takes the user
/// offline, any other tells the remaining tabs their count.
async fn socket_closed<A: Adapter>(
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
    let mut phase = slot.0.lock().await;
    let was = std::mem::replace(&mut *phase, Phase::Closed);
    metrics::gauge!("tether_sockets_connected").decrement(1.0);
    tracing::info!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, ?reason, "socket disconnected");
    if was != Phase::Counted {
        return;
    }
    match state.store.socket_disconnected(&viewer.user_id).await {
        Ok(Some(0)) => {
            went_offline(Speaker::Socket(&socket), &state, &viewer.user_id, None).await;
            tracing::info!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, "user went offline");
        }
        Ok(Some(count)) => tabs(Speaker::Socket(&socket), &viewer.user_id, count).await,
        Ok(None) => {}
        Err(e) => {
            tracing::error!(conn = %crate::telemetry::conn(&socket.id), user.id = %viewer.user_id, error = %format_args!("{e:#}"), "presence update failed")
        }
    }
}

/// Announces the presence changes the store's heartbeat found (another node died, or this
/// one had been presumed dead) as a disconnect or connect on this node would have, to the
/// same audience.
pub async fn announce_changes<A: Adapter>(
    io: &SocketIo<A>,
    state: &SocketState,
    changes: Vec<PresenceChange>,
) {
    if changes.is_empty() {
        return;
    }
    // Read once for them all: the rule needs its size, a user who came back their name.
    let directory = match state.store.list_users().await {
        Ok(directory) => directory,
        Err(e) => {
            tracing::error!(error = %format_args!("{e:#}"), changes = changes.len(), "could not read the directory; presence changes not announced");
            return;
        }
    };
    for change in changes {
        match change {
            PresenceChange::Left {
                user,
                sockets_left: 0,
            } => {
                tracing::info!(user.id = %user, "user went offline with a dead node");
                went_offline(Speaker::Node(io), state, &user, Some(directory.len())).await;
            }
            PresenceChange::Left { user, sockets_left } => {
                tabs(Speaker::Node(io), &user, sockets_left).await;
            }
            PresenceChange::Returned { user } => {
                let Some(found) = directory.iter().find(|u| u.user_id == user) else {
                    continue;
                };
                match Audience::now(
                    state.store.as_ref(),
                    &state.limits,
                    &user,
                    Some(directory.len()),
                )
                .await
                {
                    Ok(audience) => {
                        came_online(Speaker::Node(io), audience, &user, &found.username, false)
                            .await
                    }
                    Err(e) => {
                        tracing::error!(user.id = %user, error = %format_args!("{e:#}"), "could not read who hears that the user is back")
                    }
                }
            }
        }
    }
}

/// Keeps this node alive in the cluster's presence and announces what dead nodes took away
/// (runs until aborted; a store of one node has no heartbeat and it returns at once).
pub async fn heartbeat_loop<A: Adapter>(io: SocketIo<A>, state: SocketState) {
    let Some(every) = state.store.heartbeat_every() else {
        return;
    };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match state.store.heartbeat().await {
            Ok(changes) => announce_changes(&io, &state, changes).await,
            Err(e) => {
                tracing::warn!(error = %format_args!("{e:#}"), "cluster heartbeat failed; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_to_the_full_roster_everyone_hears_and_beyond_it_contacts_and_own_tabs() {
        let (ada, bob, cat) = (UserId::random(), UserId::random(), UserId::random());
        assert_eq!(
            Audience::of(&ada, vec![bob.clone()], 3, 3),
            Audience::Everyone
        );
        // A note to self makes the user their own contact: their room once.
        assert_eq!(
            Audience::of(&ada, vec![bob.clone(), ada.clone(), cat.clone()], 4, 3),
            Audience::Rooms(vec![bob.to_string(), cat.to_string(), ada.to_string()])
        );
        assert_eq!(
            Audience::of(&ada, Vec::new(), 4, 3),
            Audience::Rooms(vec![ada.to_string()])
        );
    }
}
