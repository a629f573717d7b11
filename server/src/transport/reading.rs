//! Where each conversation stands: `conversations` (the viewer's conversations by latest
//! activity, with unread counts and read cursors) and `read` (moving the viewer's read cursor,
//! told to every socket of the viewer as `read` and, while both share read receipts, to every
//! socket of the peer as `seen`). The cursors live in the store, so every tab, device and node
//! sees the same counts.

use protocol::events;
use protocol::payloads::{
    ConversationList, ConversationSummary, ConversationsRequest, ReadMark, ReadRequest, ReadState,
    Seen,
};
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::messages::priced;
use super::overflow::{emit_to_user, Ack};
use super::{handle, object, object_or_default, price, EventError, SocketState, Viewer};
use crate::domain::UserId;
use crate::store::{ConversationEntry, ReadCursor};

/// The most conversations one `conversations` answer lists.
pub(super) const CONVERSATIONS_MAX: u32 = 100;
/// How many a `conversations` request without a `limit` gets.
const CONVERSATIONS_DEFAULT: u32 = 50;

impl super::Limits {
    /// The most a `conversations` answer can cost before its rows: a page of summaries within
    /// `--max-answer-bytes`, and one more (a page always holds one).
    pub fn conversations_most(&self) -> usize {
        price::REQUEST_BASE + self.max_answer_bytes + price::summary_most(self.max_message_chars)
    }

    /// What a `conversations` page of `limit` reserves before anything is read: its answer at
    /// its largest and every row the store may read for it (each conversation listed, and the
    /// `--unread-count-max` messages its unread count may read), up to the largest read the
    /// buckets hold. What the read cost beyond that (the viewer's other conversations it
    /// considered) is paid after it.
    pub fn conversations_reserve(&self, limit: u32) -> usize {
        let rows =
            (limit as usize).saturating_mul((self.unread_count_max as usize).saturating_add(1));
        self.conversations_most()
            .saturating_add(rows.saturating_mul(price::STORE_ROW))
            .min(self.largest_read())
    }
}

/// A `conversations` payload, parsed: where the page starts and how many it lists.
#[derive(Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub before: Option<i64>,
    pub limit: u32,
}

/// The edge of `conversations`: none, `null` or an object with a `before` ≥ 0 and a `limit`
/// (clamped to 1..=[`CONVERSATIONS_MAX`]), else a typed error.
pub fn parse_conversations(payload: Option<Value>) -> Result<PageRequest, EventError> {
    let request: ConversationsRequest = object_or_default(payload)?;
    if request.before.is_some_and(|b| b < 0) {
        return Err(EventError::InvalidCursor);
    }
    Ok(PageRequest {
        before: request.before,
        limit: request
            .limit
            .unwrap_or(CONVERSATIONS_DEFAULT)
            .clamp(1, CONVERSATIONS_MAX),
    })
}

/// `conversations`: a page of the viewer's conversations, latest activity first. Priced by its
/// answer's bytes and by the rows the store read for it, the most it may cost for the page
/// asked reserved before the store is read.
pub async fn conversations<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    handle(
        &socket,
        &state,
        ack,
        events::CONVERSATIONS,
        async |viewer| {
            // The page size prices the read; a payload that cannot be read is priced as a page
            // of none (what any refused request costs).
            let request = parse_conversations(payload.ok());
            let limit = request.as_ref().map_or(0, |r| r.limit);
            priced(
                &socket,
                &state,
                viewer,
                state.limits.conversations_reserve(limit),
                |(list, scanned): &(ConversationList, u64)| {
                    let rows = usize::try_from(*scanned).unwrap_or(usize::MAX);
                    list.conversations
                        .iter()
                        .map(price::summary_bytes)
                        .sum::<usize>()
                        .saturating_add(rows.saturating_mul(price::STORE_ROW))
                },
                async { list(&state, viewer, request?).await },
            )
            .await
            .map(|(list, _)| list)
        },
    )
    .await;
}

/// The page, and the rows the store read for it.
async fn list(
    state: &SocketState,
    viewer: &Viewer,
    request: PageRequest,
) -> Result<(ConversationList, u64), EventError> {
    let page = state
        .store
        .conversation_page(
            &viewer.user_id,
            request.before,
            request.limit,
            state.limits.unread_count_max,
        )
        .await?;
    let peers: Vec<UserId> = page.conversations.iter().map(|c| c.peer.clone()).collect();
    let online = state.store.online_among(&peers).await?;
    // Bounded in bytes as `history` is (each summary carries a whole message): the newest
    // activity first, within `--max-answer-bytes`, at least one; the rest comes on the next
    // page, from the last one's `last.id`.
    let mut used = 0;
    let mut conversations = Vec::with_capacity(page.conversations.len());
    let mut cut = false;
    for entry in page.conversations {
        let summary = summary(entry, &online);
        used += price::summary_bytes(&summary);
        if used > state.limits.max_answer_bytes && !conversations.is_empty() {
            cut = true;
            break;
        }
        conversations.push(summary);
    }
    Ok((
        ConversationList {
            conversations,
            has_more: page.has_more || cut,
        },
        page.scanned,
    ))
}

fn summary(
    entry: ConversationEntry,
    online: &std::collections::HashSet<UserId>,
) -> ConversationSummary {
    ConversationSummary {
        connected: online.contains(&entry.peer),
        user_id: entry.peer.to_string(),
        username: entry.username,
        last: entry.last,
        unread: entry.unread,
        read_up_to: entry.read.up_to,
        peer_read: entry.peer_read.map(mark),
    }
}

fn mark(cursor: ReadCursor) -> ReadMark {
    ReadMark {
        up_to: cursor.up_to,
        at: cursor.at,
    }
}

/// `read`: moves the viewer's read cursor of one conversation (never back), answers where it
/// stands, and, when it moved, tells every socket of the viewer (`read`) and, when it moved
/// while both share read receipts (the seen cursor moved with it), every socket of the peer
/// (`seen`).
pub async fn read<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    handle(&socket, &state, ack, events::READ, async |viewer| {
        mark_read(&socket, &state, viewer, payload.ok()).await
    })
    .await;
}

/// A `read` payload, parsed: the peer and the cursor asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadMarkRequest {
    pub peer: UserId,
    pub up_to: i64,
}

/// The edge of `read`: any JSON in, a peer and a cursor ≥ 0 out, or a typed error.
pub fn parse_read(payload: Option<Value>) -> Result<ReadMarkRequest, EventError> {
    let request: ReadRequest = object(payload)?;
    let peer = UserId::parse(&request.with).ok_or(EventError::UnknownRecipient)?;
    if request.up_to < 0 {
        return Err(EventError::InvalidCursor);
    }
    Ok(ReadMarkRequest {
        peer,
        up_to: request.up_to,
    })
}

async fn mark_read<A: Adapter>(
    socket: &SocketRef<A>,
    state: &SocketState,
    viewer: &Viewer,
    payload: Option<Value>,
) -> Result<ReadState, EventError> {
    // Every `read`, valid or not, takes a token: each may be a write.
    if !state.marks.try_take(&viewer.user_id) {
        return Err(EventError::RateLimited);
    }
    let ReadMarkRequest { peer, up_to } = parse_read(payload)?;
    let marked = state
        .store
        .mark_read(&viewer.user_id, &peer, up_to)
        .await?
        .ok_or(EventError::UnknownRecipient)?;
    let status = marked.status;
    let answer = ReadState {
        with: peer.to_string(),
        up_to: status.cursor.up_to,
        unread: status.unread,
        as_of: status.as_of,
    };
    if marked.moved {
        // Every socket of the viewer, this one included.
        emit_to_user(socket, &viewer.user_id, events::READ, &answer).await;
        // Only a move of the seen cursor (a read made while both share receipts) is told:
        // what was read with receipts off is never reported.
        if let Some(seen) = marked.seen {
            let seen = Seen {
                by: viewer.user_id.to_string(),
                up_to: seen.up_to,
                at: seen.at,
            };
            emit_to_user(socket, &peer, events::SEEN, &seen).await;
        }
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits(unread_count_max: u32) -> super::super::Limits {
        super::super::Limits {
            max_message_chars: 4000,
            roster_messages_per_peer: 200,
            restore_page: 500,
            history_page_max: 200,
            max_answer_bytes: 256 * 1024,
            roster_max_bytes: 256 * 1024,
            unread_count_max,
            max_sockets_per_user: 64,
            roster_full_max: 1000,
            tab_policy: crate::config::TabPolicy::Share,
        }
    }

    #[test]
    fn a_conversations_page_reserves_every_row_it_may_read_up_to_the_largest_read() {
        let few = limits(10);
        let rows = |limit: usize| limit * (1 + 10) * price::STORE_ROW;
        assert_eq!(
            few.conversations_reserve(10),
            few.conversations_most() + rows(10)
        );
        assert_eq!(
            few.conversations_reserve(20),
            few.conversations_most() + rows(20)
        );
        // A payload that cannot be read reserves what an answer may cost, no rows.
        assert_eq!(few.conversations_reserve(0), few.conversations_most());
        // The default cap: a page's worst case is more than any bucket must hold; it reserves
        // the largest read (and pays the rest after, if it read more).
        let default = limits(crate::store::UNREAD_MAX);
        assert!(
            default.conversations_most() + 50 * 1001 * price::STORE_ROW > default.largest_read()
        );
        assert_eq!(default.conversations_reserve(50), default.largest_read());
        assert_eq!(
            limits(u32::MAX).conversations_reserve(CONVERSATIONS_MAX),
            default.largest_read()
        );
    }

    #[test]
    fn a_conversations_payload_is_checked_at_the_edge() {
        for (payload, before, limit) in [
            (None, None, CONVERSATIONS_DEFAULT),
            (Some(json!(null)), None, CONVERSATIONS_DEFAULT),
            (Some(json!({})), None, CONVERSATIONS_DEFAULT),
            (Some(json!({ "before": 7, "limit": 0 })), Some(7), 1),
            (
                Some(json!({ "limit": 4_294_967_295u32 })),
                None,
                CONVERSATIONS_MAX,
            ),
        ] {
            assert_eq!(
                parse_conversations(payload.clone()).unwrap(),
                PageRequest { before, limit },
                "{payload:?}"
            );
        }
        for (payload, code) in [
            (json!(1), protocol::ErrorCode::InvalidPayload),
            (json!([]), protocol::ErrorCode::InvalidPayload),
            (json!({ "limit": -1 }), protocol::ErrorCode::InvalidPayload),
            (
                json!({ "limit": 1e20 }),
                protocol::ErrorCode::InvalidPayload,
            ),
            (
                json!({ "before": "1" }),
                protocol::ErrorCode::InvalidPayload,
            ),
            (json!({ "before": -1 }), protocol::ErrorCode::InvalidCursor),
        ] {
            let error = parse_conversations(Some(payload.clone())).expect_err("refused");
            assert_eq!(error.code(), code, "{payload}");
        }
    }

    #[test]
    fn a_read_payload_is_checked_at_the_edge() {
        let peer = UserId::random();
        let ok = parse_read(Some(json!({ "with": peer.as_str(), "upTo": 7 }))).unwrap();
        assert_eq!(ok, ReadMarkRequest { peer, up_to: 7 });
        for (payload, code) in [
            (None, protocol::ErrorCode::InvalidPayload),
            (Some(json!(42)), protocol::ErrorCode::InvalidPayload),
            (
                Some(json!([UserId::random().as_str(), 1])),
                protocol::ErrorCode::InvalidPayload,
            ),
            (
                Some(json!({ "with": "x" })),
                protocol::ErrorCode::InvalidPayload,
            ),
            (
                Some(json!({ "with": "x", "upTo": 1.5 })),
                protocol::ErrorCode::InvalidPayload,
            ),
            (
                Some(json!({ "with": "x", "upTo": 1e300 })),
                protocol::ErrorCode::InvalidPayload,
            ),
            (
                Some(json!({ "with": "not-a-user", "upTo": 1 })),
                protocol::ErrorCode::UnknownRecipient,
            ),
            (
                Some(json!({ "with": UserId::random().as_str(), "upTo": -1 })),
                protocol::ErrorCode::InvalidCursor,
            ),
        ] {
            let error = parse_read(payload.clone()).expect_err("refused");
            assert_eq!(error.code(), code, "{payload:?}");
        }
        let most = parse_read(Some(
            json!({ "with": UserId::random().as_str(), "upTo": i64::MAX }),
        ));
        assert_eq!(most.unwrap().up_to, i64::MAX);
    }
}
