//! `private message`, and the reads: `restore_state`, `history` and `users_page`, each priced
//! by its answer (the lists of users they carry are [`super::roster`]'s).

use protocol::events;
use protocol::payloads::{
    History, HistoryRequest, MessageReceipt, OutgoingMessage, RestoreState, RestoreStateRequest,
    UsersPage,
};
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::overflow::Ack;
use super::price;
use super::price::PRESENCE_MOST;
use super::rate::SocketReadBucket;
use super::roster::{self, USERS_PAGE_MAX};

use super::{handle, EventError, SocketState, Viewer};
use crate::domain::{ClientMsgId, MessageContent, UserId};
use crate::store::{NewMessage, Stored};

/// Stores the message, then sends it to the recipient's room and the sender's other sockets
/// (never back to the sending socket), then acks `{ ok: { id, ts } }`.
pub async fn private_message<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    handle(
        &socket,
        &state,
        ack,
        events::PRIVATE_MESSAGE,
        async |viewer| send(&socket, &state, viewer, payload.ok()).await,
    )
    .await;
}

async fn send<A: Adapter>(
    socket: &SocketRef<A>,
    state: &SocketState,
    viewer: &Viewer,
    payload: Option<Value>,
) -> Result<MessageReceipt, EventError> {
    if !state.rate.try_take(&viewer.user_id) {
        return Err(EventError::RateLimited);
    }
    let Outgoing {
        content,
        to,
        client_id,
    } = parse_outgoing(payload, state.limits.max_message_chars)?;
    let stored = state
        .store
        .insert_message(NewMessage {
            from: viewer.user_id.clone(),
            to: to.clone(),
            content,
            client_id,
        })
        .await?
        .ok_or(EventError::UnknownRecipient)?;
    let message = stored.message();
    if let Stored::New(message) = &stored {
        metrics::counter!("tether_messages_stored_total").increment(1);
        // `to` on a socket excludes that socket; the two rooms cover the recipient's tabs and
        // the sender's other tabs (one room for a note to self).
        // Counted once per message handed to the rooms (not per socket: counting sockets
        // would walk the rooms a second time on the hot path).
        let rooms = vec![to.to_string(), viewer.user_id.to_string()];
        let delivered = socket
            .to(rooms)
            .emit(events::PRIVATE_MESSAGE, message)
            .await;
        if delivered.is_ok() {
            metrics::counter!("tether_messages_delivered_total").increment(1);
        } else {
            // A socket over its send budget is being closed; its client restores on return.
            super::overflow::count_dropped(events::PRIVATE_MESSAGE, &delivered);
        }
    }
    Ok(MessageReceipt {
        id: message.id,
        ts: message.ts,
    })
}

/// A `private message` payload, parsed: what the handler may act on.
#[derive(Debug)]
pub struct Outgoing {
    pub content: MessageContent,
    pub to: UserId,
    pub client_id: Option<ClientMsgId>,
}

/// The edge of `private message`: any JSON in, a valid message or a typed error out.
pub fn parse_outgoing(payload: Option<Value>, max_chars: usize) -> Result<Outgoing, EventError> {
    let payload: OutgoingMessage = payload
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or(EventError::InvalidPayload)?;
    let content =
        MessageContent::parse(&payload.content, max_chars).map_err(EventError::InvalidContent)?;
    let to = UserId::parse(&payload.to).ok_or(EventError::UnknownRecipient)?;
    let client_id = payload
        .client_id
        .as_deref()
        .map(ClientMsgId::parse)
        .transpose()
        .map_err(EventError::InvalidClientId)?;
    Ok(Outgoing {
        content,
        to,
        client_id,
    })
}

/// The caller's messages after `since` (own conversations only, whatever the cursor) and
/// everyone's presence.
pub async fn restore_state<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    handle(
        &socket,
        &state,
        ack,
        events::RESTORE_STATE,
        async |viewer| {
            let read = restore(&state, viewer, payload.ok());
            priced(
                &socket,
                &state,
                viewer,
                restore_most(&state),
                restore_bytes,
                read,
            )
            .await
        },
    )
    .await;
}

/// The socket's read bucket (added by the handshake; a fresh one if it is somehow missing).
pub(super) fn read_bucket<A: Adapter>(
    socket: &SocketRef<A>,
    state: &SocketState,
) -> SocketReadBucket {
    socket
        .extensions
        .get::<SocketReadBucket>()
        .unwrap_or_else(|| state.reads.socket_bucket())
}

/// Runs a read priced by its answer: reserves `most` bytes from the viewer's and the socket's
/// read buckets (or answers `rate_limited` without reading anything), reads, then keeps what
/// the answer cost and gives the rest back.
pub(super) async fn priced<A: Adapter, T>(
    socket: &SocketRef<A>,
    state: &SocketState,
    viewer: &Viewer,
    most: usize,
    cost: impl FnOnce(&T) -> usize,
    read: impl std::future::Future<Output = Result<T, EventError>>,
) -> Result<T, EventError> {
    let bucket = &read_bucket(socket, state);
    let reservation = match state.reads.reserve(&viewer.user_id, bucket, most) {
        Some(reservation) => reservation,
        None => {
            // One read per socket may wait (a little) for its tokens: a client paging through a
            // long catch-up is slowed to the refill rate, not refused halfway.
            let turn = state
                .reads
                .wait_turn(&viewer.user_id, bucket, most, READ_WAIT_MAX);
            let reserved = match turn {
                Some((wait, _turn)) => {
                    tokio::time::sleep(wait).await;
                    state.reads.reserve(&viewer.user_id, bucket, most)
                }
                None => None,
            };
            let Some(reservation) = reserved else {
                metrics::counter!("tether_reads_rate_limited_total").increment(1);
                return Err(EventError::RateLimited);
            };
            reservation
        }
    };
    let answer = read.await;
    let spent = match &answer {
        Ok(answer) => price::REQUEST_BASE + cost(answer),
        Err(_) => price::REQUEST_BASE,
    };
    state.reads.settle(reservation, spent);
    answer
}

/// The longest a socket's one waiting read waits for its tokens before it is refused.
const READ_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// The most a `restore_state` answer can cost: a full page and a full presence list.
fn restore_most(state: &SocketState) -> usize {
    state.limits.largest_read()
}

impl super::Limits {
    /// The most any read can return (a `restore_state`): what the read buckets must hold.
    pub fn largest_read(&self) -> usize {
        let restore = price::REQUEST_BASE
            + self.max_answer_bytes
            + price::message_most(self.max_message_chars)
            + self.roster_full_max * PRESENCE_MOST;
        let page = price::REQUEST_BASE + USERS_PAGE_MAX as usize * PRESENCE_MOST;
        restore.max(page).max(self.conversations_most())
    }
}

fn restore_bytes(answer: &RestoreState) -> usize {
    answer
        .messages
        .iter()
        .map(price::message_bytes)
        .sum::<usize>()
        + answer
            .users
            .iter()
            .map(price::presence_bytes)
            .sum::<usize>()
}

async fn restore(
    state: &SocketState,
    viewer: &Viewer,
    payload: Option<Value>,
) -> Result<RestoreState, EventError> {
    let request: RestoreStateRequest = match payload {
        None | Some(Value::Null) => RestoreStateRequest::default(),
        Some(v) => serde_json::from_value(v).map_err(|_| EventError::InvalidCursor)?,
    };
    if request.since < 0 {
        return Err(EventError::InvalidCursor);
    }
    let page = state
        .store
        .messages_since(&viewer.user_id, request.since, state.limits.restore_page)
        .await?;
    // Bounded in bytes too: 500 messages of 4,000 four-byte characters would be 8 MB.
    let (messages, _, cut) = price::oldest_within(page.messages, state.limits.max_answer_bytes);
    let page = crate::store::Page {
        messages,
        has_more: page.has_more || cut,
    };
    let peers: std::collections::HashSet<&str> = page
        .messages
        .iter()
        .flat_map(|m| [m.from.as_str(), m.to.as_str()])
        .collect();
    let users = roster::restore_presence(state, viewer, &peers, request.peers_only).await?;
    Ok(RestoreState {
        messages: page.messages,
        users,
        has_more: page.has_more,
    })
}

/// A page of the user directory, with presence (how clients reach everyone beyond the roster).
pub async fn users_page<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    handle(&socket, &state, ack, events::USERS_PAGE, async |viewer| {
        priced(
            &socket,
            &state,
            viewer,
            price::REQUEST_BASE + USERS_PAGE_MAX as usize * PRESENCE_MOST,
            |page: &UsersPage| page.users.iter().map(price::presence_bytes).sum(),
            roster::directory_page(&state, payload.ok()),
        )
        .await
    })
    .await;
}

/// Older messages of one of the caller's conversations.
pub async fn history<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    handle(&socket, &state, ack, events::HISTORY, async |viewer| {
        priced(
            &socket,
            &state,
            viewer,
            price::REQUEST_BASE
                + state.limits.max_answer_bytes
                + price::message_most(state.limits.max_message_chars),
            |page: &History| page.messages.iter().map(price::message_bytes).sum(),
            older(&state, viewer, payload.ok()),
        )
        .await
    })
    .await;
}

async fn older(
    state: &SocketState,
    viewer: &Viewer,
    payload: Option<Value>,
) -> Result<History, EventError> {
    let request: HistoryRequest = payload
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or(EventError::InvalidPayload)?;
    let peer = UserId::parse(&request.with).ok_or(EventError::UnknownRecipient)?;
    if request.before.is_some_and(|b| b < 0) {
        return Err(EventError::InvalidCursor);
    }
    let limit = request
        .limit
        .unwrap_or(50)
        .clamp(1, state.limits.history_page_max);
    let page = state
        .store
        .history(&viewer.user_id, &peer, request.before, limit)
        .await?;
    // The newest of the page, closest to `before`, within the byte bound.
    let (messages, _, cut) = price::newest_within(page.messages, state.limits.max_answer_bytes);
    Ok(History {
        messages,
        has_more: page.has_more || cut,
    })
}

#[cfg(test)]
mod fuzz {
    //! Property tests over arbitrary JSON: the payload edge never panics, and whatever it
    //! accepts is valid. `PROPTEST_CASES=100000 cargo test -p server fuzz_` runs it longer.
    use super::*;
    use proptest::prelude::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            ".{0,64}".prop_map(Value::String),
            Just(Value::String(UserId::random().to_string())),
            Just(Value::String("0f8fad5b-d9cb-469f-a165-70867728950e".into())),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("to".to_owned()),
                            Just("content".to_owned()),
                            Just("clientId".to_owned()),
                            Just("from".to_owned()),
                            ".{0,8}"
                        ],
                        inner
                    ),
                    0..6
                )
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn fuzz_private_message_payloads_never_panic_and_accept_only_valid_input(payload in json()) {
            if let Ok(ok) = parse_outgoing(Some(payload), 4000) {
                prop_assert!(!ok.content.as_str().trim().is_empty());
                prop_assert!(ok.content.as_str().chars().count() <= 4000);
                prop_assert!(UserId::parse(ok.to.as_str()).is_some());
            }
        }
    }
}
