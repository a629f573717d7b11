//! Every list of users the server sends, with presence: a connect's `users` (each entry with
//! the viewer's conversation with that user), `restore_state`'s `users` and a `users_page` of
//! the directory. Up to `--roster-full-max` users the first two list everyone; beyond, the
//! viewer, their contacts, then online users ([`members`]), and `users_page` reaches the rest.
//! What they cost is counted in bytes as `price` prices them.

use std::collections::{HashMap, HashSet};

use protocol::payloads::{Message, Presence, UserEntry, UsersPage, UsersPageRequest};
use serde_json::Value;

use super::presence::Audience;
use super::{price, EventError, SocketState, Viewer};
use crate::domain::UserId;
use crate::store::{StoreError, User};

/// The most a user entry of a presence list can cost (a 32-character name, 4 bytes each).
pub(super) const PRESENCE_MOST: usize =
    price::USER_FIXED + 4 * protocol::domain::USERNAME_MAX_CHARS;

/// The most entries one `users_page` answer holds.
pub(super) const USERS_PAGE_MAX: u32 = 500;

/// A connect's `users`, and who hears that the viewer came online (read together: the rule
/// needs the viewer's contacts and the directory's size, which the roster reads anyway).
pub(super) struct Roster {
    pub entries: Vec<UserEntry>,
    pub audience: Audience,
}

/// One entry per user listed, the viewer included, each with the viewer's conversation with
/// that user only: of it, the messages after `held_through` (what a resuming client already
/// holds; 0 for the whole conversation, as the tutorial sends it), and for the people the
/// viewer has a conversation with, the viewer's read cursor of it (`readUpTo`).
pub(super) async fn connect_roster(
    state: &SocketState,
    viewer: &Viewer,
    held_through: i64,
) -> Result<Roster, StoreError> {
    let conversations = state
        .store
        .conversations(
            &viewer.user_id,
            state.limits.roster_messages_per_peer,
            held_through,
            price::most_messages_within(state.limits.roster_max_bytes),
        )
        .await?;
    // Taken after the slow read, and dropped at the end of this function: a snapshot still
    // held when someone comes or goes would have to be copied.
    let users = state.store.list_users().await?;
    let online = state.store.online_users().await?;
    // Bounded in bytes whatever others send: the newest messages over every conversation
    // within `--roster-max-bytes`; older ones come from `history`.
    let (messages, _, _) =
        price::newest_within(conversations.messages, state.limits.roster_max_bytes);
    let mut by_peer = group_by_peer(viewer.user_id.as_str(), messages);
    let contacts: HashSet<UserId> = conversations.peers.into_iter().collect();
    let read: HashMap<UserId, i64> = conversations.read.into_iter().collect();
    let listed = members(
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
            // So a client counts unread in every conversation listed, not only in those of
            // the `conversations` pages it asked for (notes to self are never unread).
            read_up_to: (user.user_id != viewer.user_id && contacts.contains(&user.user_id))
                .then(|| read.get(&user.user_id).copied().unwrap_or(0)),
            user_id: user.user_id.to_string(),
            username: user.username.clone(),
            protected: user.protected,
        })
        .collect();
    let audience = Audience::of(
        &viewer.user_id,
        contacts,
        users.len(),
        state.limits.roster_full_max,
    );
    Ok(Roster { entries, audience })
}

/// `restore_state`'s `users`: with `peers_only`, the people in its messages (`peers`); else
/// the roster's members, with those people in place of the viewer's contacts.
pub(super) async fn restore_presence(
    state: &SocketState,
    viewer: &Viewer,
    peers: &HashSet<&str>,
    peers_only: bool,
) -> Result<Vec<Presence>, StoreError> {
    if peers_only && peers.is_empty() {
        // Presence came with this connection's `users`; nobody new to name.
        return Ok(Vec::new());
    }
    let online = state.store.online_users().await?;
    let directory = state.store.list_users().await?;
    let listed: Vec<&User> = if peers_only {
        directory
            .iter()
            .filter(|u| peers.contains(u.user_id.as_str()))
            .collect()
    } else {
        members(
            &directory,
            viewer,
            |u| peers.contains(u.user_id.as_str()),
            |u| online.contains(&u.user_id),
            state.limits.roster_full_max,
        )
    };
    Ok(listed.into_iter().map(|u| presence(u, &online)).collect())
}

/// A page of the user directory, with presence (how clients reach everyone beyond the roster).
pub(super) async fn directory_page(
    state: &SocketState,
    payload: Option<Value>,
) -> Result<UsersPage, EventError> {
    let request: UsersPageRequest = match payload {
        None | Some(Value::Null) => UsersPageRequest::default(),
        Some(v) => serde_json::from_value(v).map_err(|_| EventError::InvalidPayload)?,
    };
    let limit = request.limit.unwrap_or(100).clamp(1, USERS_PAGE_MAX) as usize;
    let users = state.store.list_users().await?;
    let online = state.store.online_users().await?;
    let start = usize::try_from(request.offset)
        .unwrap_or(usize::MAX)
        .min(users.len());
    let page = users[start..]
        .iter()
        .take(limit)
        .map(|u| presence(u, &online))
        .collect();
    Ok(UsersPage {
        users: page,
        total: users.len() as u64,
    })
}

/// A user's presence as every answer but a connect's `users` gives it: connected when in
/// `online`, and the passkey mark.
pub(super) fn presence(user: &User, online: &HashSet<UserId>) -> Presence {
    Presence {
        connected: online.contains(&user.user_id),
        user_id: user.user_id.to_string(),
        username: user.username.clone(),
        protected: user.protected,
    }
}

/// Who a roster lists, in sign-up order. Up to `full_max` users: everyone (the tutorial's
/// contract). Beyond that, so a connect costs a bounded amount: the viewer and the people they
/// have conversations with, then online users, `full_max` entries at most; the rest of the
/// directory is paged with `users_page`.
fn members<'a>(
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
    let chosen: HashSet<usize> = picked.iter().copied().collect();
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
    use crate::domain::{SessionId, UserId};

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

    fn users(n: usize) -> Vec<User> {
        (0..n)
            .map(|i| User {
                user_id: UserId::random(),
                username: format!("u{i}"),
                protected: false,
            })
            .collect()
    }

    fn viewer_of(user: &User) -> Viewer {
        Viewer::new(
            SessionId::random(),
            user.user_id.clone(),
            user.username.clone(),
        )
    }

    #[test]
    fn small_deployments_list_everyone() {
        let all = users(3);
        let listed = members(&all, &viewer_of(&all[0]), |_| false, |_| false, 3);
        assert_eq!(listed.len(), 3);
    }

    #[test]
    fn large_deployments_list_viewer_contacts_then_online_up_to_the_cap() {
        let all = users(10);
        let viewer = viewer_of(&all[5]);
        let contact = all[9].user_id.clone();
        let online: Vec<UserId> = vec![all[1].user_id.clone(), all[2].user_id.clone()];
        let listed = members(
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
