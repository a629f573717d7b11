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
}

/// `conversations`: a page of the viewer's conversations, latest activity first. Priced by its
/// answer's bytes and by the rows the store read for it.
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
            priced(
                &socket,
                &state,
                viewer,
                state.limits.conversations_most(),
                |(list, scanned): &(ConversationList, u64)| {
                    let rows = usize::try_from(*scanned).unwrap_or(usize::MAX);
                    list.conversations
                        .iter()
                        .map(price::summary_bytes)
                        .sum::<usize>()
                        .saturating_add(rows.saturating_mul(price::STORE_ROW))
                },
                list(&state, viewer, payload.ok()),
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
    payload: Option<Value>,
) -> Result<(ConversationList, u64), EventError> {
    let request: ConversationsRequest = object_or_default(payload)?;
    if request.before.is_some_and(|b| b < 0) {
        return Err(EventError::InvalidCursor);
    }
    let limit = request
        .limit
        .unwrap_or(CONVERSATIONS_DEFAULT)
        .clamp(1, CONVERSATIONS_MAX);
    let page = state
        .store
        .conversation_page(&viewer.user_id, request.before, limit)
        .await?;
    let online = state.store.online_users().await?;
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
