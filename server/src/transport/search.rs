//! `users_search`: users whose name contains a query, across the whole directory (not only the
//! roster a connect sends). The directory is the store's shared list (`Store::list_users`),
//! compared in memory; a search is priced by its answer and by every entry it compared, reserved
//! before the directory is read.

use std::cmp::Ordering;

use protocol::events;
use protocol::payloads::{UsersSearch, UsersSearchRequest};
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::messages::priced;
use super::overflow::Ack;
use super::roster::presence;
use super::{handle, object, price, EventError, SocketState, Viewer};
use crate::store::User;

/// The longest query, in characters (after trimming).
pub const QUERY_MAX_CHARS: usize = 64;
/// The most users one answer lists.
pub const SEARCH_MAX: u32 = 50;
/// How many a request without a `limit` gets.
const SEARCH_DEFAULT: u32 = 20;

/// A `users_search` payload, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct Search {
    /// The query, trimmed and lower-cased (Unicode).
    pub folded: String,
    pub limit: usize,
}

/// The edge of `users_search`: any JSON in, a query of 1 to [`QUERY_MAX_CHARS`] characters
/// (trimmed) and a limit in 1..=[`SEARCH_MAX`] out, or `invalid_payload`.
pub fn parse_search(payload: Option<Value>) -> Result<Search, EventError> {
    let request: UsersSearchRequest = object(payload)?;
    let query = request.query.trim();
    let chars = query.chars().count();
    if chars == 0 || chars > QUERY_MAX_CHARS {
        return Err(EventError::InvalidPayload);
    }
    Ok(Search {
        folded: query.to_lowercase(),
        limit: request.limit.unwrap_or(SEARCH_DEFAULT).clamp(1, SEARCH_MAX) as usize,
    })
}

pub async fn users_search<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    handle(&socket, &state, ack, events::USERS_SEARCH, async |viewer| {
        search(&socket, &state, viewer, payload.ok()).await
    })
    .await;
}

async fn search<A: Adapter>(
    socket: &SocketRef<A>,
    state: &SocketState,
    viewer: &Viewer,
    payload: Option<Value>,
) -> Result<UsersSearch, EventError> {
    let request = parse_search(payload)?;
    // Reserved before anything is read, the directory included: every entry compared costs
    // `DIRECTORY_ROW`, and how many there are is known only once it is read (on Redis, a round
    // trip that brings this node's copy up to date), so a search reserves the most it may be
    // charged up front, the largest read the buckets hold. What it did not cost is given back
    // once the directory is known; beyond it (a directory larger than that pays for) it is owed
    // by the next reads.
    priced(
        socket,
        state,
        viewer,
        state.limits.largest_read(),
        |(answer, scan): &(UsersSearch, usize)| {
            answer
                .users
                .iter()
                .map(price::presence_bytes)
                .sum::<usize>()
                + scan
        },
        async {
            // The store's shared snapshot (no copy).
            let directory = state.store.list_users().await?;
            let scan = directory.len().saturating_mul(price::DIRECTORY_ROW);
            let found = matching(&directory, &request.folded, request.limit);
            let ids: Vec<crate::domain::UserId> = found.iter().map(|u| u.user_id.clone()).collect();
            let online = state.store.online_among(&ids).await?;
            let users = found
                .into_iter()
                .map(|user| presence(user, &online))
                .collect();
            Ok((UsersSearch { users }, scan))
        },
    )
    .await
    .map(|(answer, _)| answer)
}

/// Where `folded` (lower-cased) occurs in `name` ignoring case, as a byte offset of the
/// lower-cased name: `Some(0)` for a name that starts with it. ASCII names (most) are compared
/// without a copy.
fn find_folded(name: &str, folded: &str) -> Option<usize> {
    if name.is_ascii() {
        // An ASCII name lower-cases to ASCII: a query that does not cannot occur in it.
        if !folded.is_ascii() {
            return None;
        }
        let (hay, needle) = (name.as_bytes(), folded.as_bytes());
        if needle.len() > hay.len() {
            return None;
        }
        return hay
            .windows(needle.len())
            .position(|w| w.eq_ignore_ascii_case(needle));
    }
    name.to_lowercase().find(folded)
}

/// Names compared as people read a list: byte by byte, ASCII letters without case.
fn by_name(a: &str, b: &str) -> Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// The users whose name contains `folded`, names starting with it first, then by name (ASCII
/// letters without case), then by user id; at most `limit`.
pub fn matching<'a>(users: &'a [User], folded: &str, limit: usize) -> Vec<&'a User> {
    let mut hits: Vec<(bool, &User)> = users
        .iter()
        .filter_map(|u| find_folded(&u.username, folded).map(|at| (at != 0, u)))
        .collect();
    let order = |a: &(bool, &User), b: &(bool, &User)| {
        a.0.cmp(&b.0)
            .then_with(|| by_name(&a.1.username, &b.1.username))
            .then_with(|| a.1.user_id.as_str().cmp(b.1.user_id.as_str()))
    };
    if hits.len() > limit {
        hits.select_nth_unstable_by(limit, order);
        hits.truncate(limit);
    }
    hits.sort_unstable_by(order);
    hits.into_iter().map(|(_, u)| u).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;
    use serde_json::json;

    fn user(name: &str) -> User {
        User {
            user_id: UserId::random(),
            username: name.to_owned(),
            protected: false,
        }
    }

    fn names(found: &[&User]) -> Vec<String> {
        found.iter().map(|u| u.username.clone()).collect()
    }

    #[test]
    fn names_starting_with_the_query_come_first_then_by_name() {
        let users: Vec<User> = ["Zed Ada", "bob", "ada", "Adam", "bAda", "ADA", "Élodie"]
            .into_iter()
            .map(user)
            .collect();
        let found = matching(&users, "ada", 10);
        assert_eq!(
            names(&found)[..3]
                .iter()
                .map(|n| n.to_lowercase())
                .collect::<Vec<_>>(),
            ["ada", "ada", "adam"]
        );
        assert_eq!(names(&found)[3..], ["bAda", "Zed Ada"]);
        assert_eq!(names(&matching(&users, "a", 2)).len(), 2);
        assert_eq!(names(&matching(&users, "élo", 5)), ["Élodie"]);
        assert_eq!(
            names(&matching(&users, "ÉLO".to_lowercase().as_str(), 5)),
            ["Élodie"]
        );
        assert!(matching(&users, "zzz", 5).is_empty());
        // The limit keeps the first in order, not the first found.
        let many: Vec<User> = (0..100).rev().map(|i| user(&format!("u{i:03}"))).collect();
        assert_eq!(names(&matching(&many, "u", 3)), ["u000", "u001", "u002"]);
    }

    #[test]
    fn equal_names_are_ordered_by_user_id() {
        let users: Vec<User> = (0..20).map(|_| user("same")).collect();
        let found = matching(&users, "same", 20);
        let ids: Vec<&str> = found.iter().map(|u| u.user_id.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn a_query_is_trimmed_and_bounded() {
        let ok = parse_search(Some(json!({ "query": "  Ada ", "limit": 500 }))).unwrap();
        assert_eq!(
            ok,
            Search {
                folded: "ada".into(),
                limit: 50
            }
        );
        assert_eq!(
            parse_search(Some(json!({ "query": "a", "limit": 0 })))
                .unwrap()
                .limit,
            1
        );
        assert_eq!(
            parse_search(Some(json!({ "query": "a" }))).unwrap().limit,
            20
        );
        assert!(parse_search(Some(json!({ "query": "é".repeat(64) }))).is_ok());
        for payload in [
            None,
            Some(json!({})),
            Some(json!({ "query": "" })),
            Some(json!({ "query": "   " })),
            Some(json!({ "query": "é".repeat(65) })),
            Some(json!({ "query": 5 })),
            Some(json!({ "query": "a", "limit": -1 })),
            Some(json!(["a"])),
        ] {
            let error = parse_search(payload.clone()).expect_err("refused");
            assert_eq!(
                error.code(),
                protocol::ErrorCode::InvalidPayload,
                "{payload:?}"
            );
        }
    }

    #[test]
    fn case_is_ignored_the_unicode_way() {
        assert_eq!(find_folded("ADA", "ada"), Some(0));
        assert_eq!(find_folded("xAdA", "ada"), Some(1));
        assert_eq!(find_folded("ada", "adam"), None);
        // The Kelvin sign lower-cases to an ASCII k.
        assert_eq!(find_folded("\u{212a}im", "kim"), Some(0));
        assert_eq!(find_folded("kim", &"\u{212a}".to_lowercase()), Some(0));
        assert_eq!(find_folded("Straße", "straße"), Some(0));
    }
}
