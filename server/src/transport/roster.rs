//! Every list of users the server sends, with presence: a connect's `users` (each entry with
//! the viewer's conversation with that user), `restore_state`'s `users` and a `users_page` of
//! the directory. Up to `--roster-full-max` users the first two list everyone; beyond, the
//! viewer, their contacts, then online users ([`members`]), and `users_page` reaches the rest.
//! What they cost is counted in bytes as `price` prices them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use protocol::payloads::{Message, Presence, UserEntry, UsersPage, UsersPageRequest};
use serde_json::Value;

use super::presence::Audience;
use super::{price, EventError, SocketState, Viewer};
use crate::domain::UserId;
use crate::store::{OnlineCount, StoreError, User};

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
    // Bounded in bytes whatever others send: the newest messages over every conversation
    // within `--roster-max-bytes`; older ones come from `history`.
    let (messages, _, _) =
        price::newest_within(conversations.messages, state.limits.roster_max_bytes);
    let mut by_peer = group_by_peer(viewer.user_id.as_str(), messages);
    let contacts: HashSet<UserId> = conversations.peers.into_iter().collect();
    let read: HashMap<UserId, i64> = conversations.read.into_iter().collect();
    let (listed, online) = members(state, state.limits.roster_full_max, &users, viewer, |u| {
        contacts.contains(&u.user_id)
    })
    .await?;
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
            // `users` is the whole truth: absent is "not protected".
            protected: user.protected.then_some(true),
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
    let directory = state.store.list_users().await?;
    let (listed, online) = if peers_only {
        let listed: Vec<&User> = directory
            .iter()
            .filter(|u| peers.contains(u.user_id.as_str()))
            .collect();
        let online = online_of(state, &listed).await?;
        (listed, online)
    } else {
        members(
            state,
            state.limits.roster_full_max,
            &directory,
            viewer,
            |u| peers.contains(u.user_id.as_str()),
        )
        .await?
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
    let start = usize::try_from(request.offset)
        .unwrap_or(usize::MAX)
        .min(users.len());
    let listed: Vec<&User> = users[start..].iter().take(limit).collect();
    let online = online_of(state, &listed).await?;
    let page = listed.into_iter().map(|u| presence(u, &online)).collect();
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

/// Which of `listed` are online, at the cost of the list (not of everyone online).
async fn online_of(
    reads: &impl OnlineReads,
    listed: &[&User],
) -> Result<HashSet<UserId>, StoreError> {
    let ids: Vec<UserId> = listed.iter().map(|u| u.user_id.clone()).collect();
    reads.among(&ids).await
}

/// The store's presence reads a roster chooses from (a trait so that the choice is tested
/// without a store).
pub(super) trait OnlineReads {
    /// Everyone online ([`crate::store::Store::online_users`]).
    async fn all(&self) -> Result<Arc<HashSet<UserId>>, StoreError>;
    /// [`crate::store::Store::online_among`].
    async fn among(&self, users: &[UserId]) -> Result<HashSet<UserId>, StoreError>;
    /// [`crate::store::Store::online_count`].
    async fn count(&self) -> Result<OnlineCount, StoreError>;
}

impl OnlineReads for SocketState {
    async fn all(&self) -> Result<Arc<HashSet<UserId>>, StoreError> {
        self.store.online_users().await
    }
    async fn among(&self, users: &[UserId]) -> Result<HashSet<UserId>, StoreError> {
        self.store.online_among(users).await
    }
    async fn count(&self) -> Result<OnlineCount, StoreError> {
        self.store.online_count().await
    }
}

/// Who a roster lists, in sign-up order, and which of them are online. Up to
/// `--roster-full-max` users: everyone (the tutorial's contract). Beyond that, so a connect
/// costs a bounded amount: the viewer and the people they have conversations with, then online
/// users, `--roster-full-max` entries at most; the rest of the directory is paged with
/// `users_page`. What is read of presence is bounded the same way: the listed users', and what
/// finding the online ones takes ([`first_online`]).
async fn members<'a>(
    reads: &impl OnlineReads,
    full_max: usize,
    users: &'a [User],
    viewer: &Viewer,
    is_contact: impl Fn(&User) -> bool,
) -> Result<(Vec<&'a User>, HashSet<UserId>), StoreError> {
    if users.len() <= full_max {
        let online = reads.all().await?;
        let listed: HashSet<UserId> = users
            .iter()
            .filter(|u| online.contains(&u.user_id))
            .map(|u| u.user_id.clone())
            .collect();
        return Ok((users.iter().collect(), listed));
    }
    let mut picked: Vec<usize> = users
        .iter()
        .enumerate()
        .filter(|(_, u)| u.user_id == viewer.user_id || is_contact(u))
        .map(|(i, _)| i)
        .take(full_max)
        .collect();
    let known: Vec<&User> = picked.iter().map(|&i| &users[i]).collect();
    let mut online = online_of(reads, &known).await?;
    let room = full_max.saturating_sub(picked.len());
    if room > 0 {
        let chosen: HashSet<usize> = picked.iter().copied().collect();
        let more = first_online(reads, users, &chosen, online.len(), room).await?;
        online.extend(more.iter().map(|&i| users[i].user_id.clone()));
        picked.extend(more);
    }
    picked.sort_unstable();
    Ok((picked.into_iter().map(|i| &users[i]).collect(), online))
}

/// The fewest users of the directory checked for presence at once.
const CHECK_BATCH_MIN: usize = 256;

/// The first `room` online users of the directory (`users`, in sign-up order) not in
/// `chosen` (the listed, `known_online` of them online), found the cheaper of two ways:
/// reading every online user, or checking the directory from its start until `room` are
/// found: about `room × users / online` users, were online users spread evenly, each check
/// costing [`OnlineCount::check_cost`] rows. Spread evenly, the cost is the lower of the two,
/// at most about `√(room × users × check_cost)` rows whoever is online, in two batches at most. A
/// scan that finds too few (online users bunched at the directory's end) stops at twice its
/// expected cost and reads every online user instead: at most about three times the rows of
/// reading them all.
async fn first_online(
    reads: &impl OnlineReads,
    users: &[User],
    chosen: &HashSet<usize>,
    known_online: usize,
    room: usize,
) -> Result<Vec<usize>, StoreError> {
    let count = reads.count().await?;
    // The listed are not looked for (a user on two nodes counts twice: an estimate).
    let others = count.users.saturating_sub(known_online);
    if others == 0 {
        return Ok(Vec::new());
    }
    let expected = room.saturating_mul(users.len()) / others;
    let mut found = Vec::with_capacity(room);
    let mut start = 0;
    if expected.saturating_mul(count.check_cost) < count.users {
        let budget = expected.saturating_mul(2).max(CHECK_BATCH_MIN);
        // The expected scan and a quarter more, then the rest of the budget.
        let mut end = (expected + expected / 4).clamp(CHECK_BATCH_MIN, budget);
        while found.len() < room && start < budget.min(users.len()) {
            end = end.min(users.len());
            let candidates: Vec<&User> = (start..end)
                .filter(|i| !chosen.contains(i))
                .map(|i| &users[i])
                .collect();
            let online = online_of(reads, &candidates).await?;
            found.extend(
                (start..end)
                    .filter(|i| !chosen.contains(i) && online.contains(&users[*i].user_id))
                    .take(room - found.len()),
            );
            start = end;
            end = budget;
        }
        if found.len() == room || start == users.len() {
            return Ok(found);
        }
    }
    let online = reads.all().await?;
    found.extend(
        (start..users.len())
            .filter(|i| !chosen.contains(i) && online.contains(&users[*i].user_id))
            .take(room - found.len()),
    );
    Ok(found)
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

    /// Presence from a set, counting the rows each read costs: a check asks `nodes` sets.
    struct Reads {
        online: Arc<HashSet<UserId>>,
        nodes: usize,
        rows: std::sync::atomic::AtomicUsize,
    }

    impl Reads {
        fn of(online: impl IntoIterator<Item = UserId>) -> Self {
            Self::on(1, online)
        }
        fn on(nodes: usize, online: impl IntoIterator<Item = UserId>) -> Self {
            Reads {
                online: Arc::new(online.into_iter().collect()),
                nodes,
                rows: Default::default(),
            }
        }
        fn rows(&self) -> usize {
            self.rows.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    impl OnlineReads for Reads {
        async fn all(&self) -> Result<Arc<HashSet<UserId>>, StoreError> {
            self.rows
                .fetch_add(self.online.len(), std::sync::atomic::Ordering::Relaxed);
            Ok(self.online.clone())
        }
        async fn among(&self, users: &[UserId]) -> Result<HashSet<UserId>, StoreError> {
            self.rows.fetch_add(
                users.len() * self.nodes,
                std::sync::atomic::Ordering::Relaxed,
            );
            Ok(users
                .iter()
                .filter(|u| self.online.contains(*u))
                .cloned()
                .collect())
        }
        async fn count(&self) -> Result<OnlineCount, StoreError> {
            Ok(OnlineCount {
                users: self.online.len(),
                check_cost: self.nodes,
            })
        }
    }

    fn names<'a>(listed: &[&'a User]) -> Vec<&'a str> {
        listed.iter().map(|u| u.username.as_str()).collect()
    }

    #[tokio::test]
    async fn small_deployments_list_everyone() {
        let all = users(3);
        let reads = Reads::of([all[2].user_id.clone()]);
        let (listed, online) = members(&reads, 3, &all, &viewer_of(&all[0]), |_| false)
            .await
            .unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(online, HashSet::from([all[2].user_id.clone()]));
    }

    #[tokio::test]
    async fn large_deployments_list_viewer_contacts_then_online_up_to_the_cap() {
        let all = users(10);
        let viewer = viewer_of(&all[5]);
        let contact = all[9].user_id.clone();
        let reads = Reads::of([1, 2, 9].map(|i| all[i].user_id.clone()));
        let (listed, online) = members(&reads, 3, &all, &viewer, |u| u.user_id == contact)
            .await
            .unwrap();
        assert_eq!(
            names(&listed),
            ["u1", "u5", "u9"],
            "sign-up order; contacts before online users"
        );
        assert_eq!(
            online,
            HashSet::from([all[1].user_id.clone(), all[9].user_id.clone()]),
            "the contact's presence, and the online user found"
        );
    }

    /// Half the users online: the directory is checked from its start, and the first batch
    /// finds them; reading every online user would cost 5,000 rows.
    #[tokio::test]
    async fn with_many_users_online_the_directory_is_checked_instead_of_reading_them_all() {
        let all = users(10_000);
        let reads = Reads::of(all.iter().skip(1).step_by(2).map(|u| u.user_id.clone()));
        let (listed, _) = members(&reads, 100, &all, &viewer_of(&all[0]), |_| false)
            .await
            .unwrap();
        assert_eq!(listed.len(), 100);
        assert_eq!(names(&listed)[..3], ["u0", "u1", "u3"]);
        assert!(reads.rows() <= 257, "{} rows read", reads.rows());
    }

    /// A check asks every node's set: with ten nodes, looking for 99 of 1,000 online users
    /// in 10,000 would cost about 9,900 rows, reading them 1,000.
    #[tokio::test]
    async fn checks_are_priced_by_the_nodes_they_ask() {
        let all = users(10_000);
        let online = all.iter().skip(5).step_by(10).map(|u| u.user_id.clone());
        let reads = Reads::on(10, online);
        let (listed, _) = members(&reads, 100, &all, &viewer_of(&all[0]), |_| false)
            .await
            .unwrap();
        assert_eq!(names(&listed)[..3], ["u0", "u5", "u15"]);
        assert_eq!(listed.len(), 100);
        assert!(reads.rows() <= 1_010, "{} rows read", reads.rows());
    }

    /// Few users online: reading them is cheaper than looking for them in the directory.
    #[tokio::test]
    async fn with_few_users_online_they_are_read() {
        let all = users(10_000);
        let reads = Reads::of([7, 5_000, 9_999].map(|i| all[i].user_id.clone()));
        let (listed, _) = members(&reads, 100, &all, &viewer_of(&all[0]), |_| false)
            .await
            .unwrap();
        assert_eq!(names(&listed), ["u0", "u7", "u5000", "u9999"]);
        assert!(reads.rows() <= 4, "{} rows read", reads.rows());
    }

    /// Online users bunched at the end of the directory: the scan stops at twice its expected
    /// cost and reads them, instead of checking the whole directory.
    #[tokio::test]
    async fn a_scan_that_finds_too_few_stops_and_reads_the_online_users() {
        let all = users(100_000);
        let reads = Reads::of(all[90_000..].iter().map(|u| u.user_id.clone()));
        let (listed, _) = members(&reads, 100, &all, &viewer_of(&all[0]), |_| false)
            .await
            .unwrap();
        assert_eq!(names(&listed)[..2], ["u0", "u90000"]);
        assert_eq!(listed.len(), 100);
        // Expected scan: 99 × 100,000 / 10,000 = 990 rows; stopped at 2 × that, then 10,000
        // online users read.
        assert!(
            reads.rows() <= 1 + 1_980 + 10_000,
            "{} rows read",
            reads.rows()
        );
    }
}
