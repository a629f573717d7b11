//! `private message`, `restore_state` and `history`.

use protocol::events;
use protocol::payloads::{
    History, HistoryRequest, MessageReceipt, OutgoingMessage, Presence, RestoreState,
    RestoreStateRequest, UsersPage, UsersPageRequest,
};
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::overflow::Ack;

use super::{reply, EventError, SocketState, Viewer};
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
    let Some(viewer) = socket.extensions.get::<Viewer>() else {
        return;
    };
    reply(
        ack,
        events::PRIVATE_MESSAGE,
        send(&socket, &state, &viewer, payload.ok()).await,
    );
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
            .to(rooms.clone())
            .emit(events::PRIVATE_MESSAGE, message)
            .await;
        if delivered.is_ok() {
            metrics::counter!("tether_messages_delivered_total").increment(1);
        } else if super::overflow::some_socket_was_full(&delivered) {
            // From just before this message: a later one may still reach a socket that missed
            // it, and a restore from that socket's newest id would skip this one.
            super::overflow::resync_rooms(socket, rooms, message.id - 1);
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
    let Some(viewer) = socket.extensions.get::<Viewer>() else {
        return;
    };
    reply(
        ack,
        events::RESTORE_STATE,
        restore(&state, &viewer, payload.ok()).await,
    );
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
    let peers: std::collections::HashSet<&str> = page
        .messages
        .iter()
        .flat_map(|m| [m.from.as_str(), m.to.as_str()])
        .collect();
    let users = if request.peers_only && peers.is_empty() {
        // Presence came with this connection's `users`; nobody new to name.
        Vec::new()
    } else {
        let online = state.store.online_users().await?;
        let directory = state.store.list_users().await?;
        if request.peers_only {
            directory
                .iter()
                .filter(|u| peers.contains(u.user_id.as_str()))
                .map(|u| presence(u, &online))
                .collect()
        } else {
            super::connection::roster_members(
                &directory,
                viewer,
                |u| peers.contains(u.user_id.as_str()),
                |u| online.contains(&u.user_id),
                state.limits.roster_full_max,
            )
            .into_iter()
            .map(|u| presence(u, &online))
            .collect()
        }
    };
    Ok(RestoreState {
        messages: page.messages,
        users,
        has_more: page.has_more,
    })
}

fn presence(user: &crate::store::User, online: &std::collections::HashSet<UserId>) -> Presence {
    Presence {
        connected: online.contains(&user.user_id),
        user_id: user.user_id.to_string(),
        username: user.username.clone(),
    }
}

/// A page of the user directory, with presence (how clients reach everyone beyond the roster).
pub async fn users_page<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    if socket.extensions.get::<Viewer>().is_none() {
        return;
    }
    reply(
        ack,
        events::USERS_PAGE,
        directory_page(&state, payload.ok()).await,
    );
}

async fn directory_page(
    state: &SocketState,
    payload: Option<Value>,
) -> Result<UsersPage, EventError> {
    let request: UsersPageRequest = match payload {
        None | Some(Value::Null) => UsersPageRequest::default(),
        Some(v) => serde_json::from_value(v).map_err(|_| EventError::InvalidPayload)?,
    };
    let limit = request.limit.unwrap_or(100).clamp(1, 500) as usize;
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

/// Older messages of one of the caller's conversations.
pub async fn history<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
    ack: Ack<A>,
) {
    let Some(viewer) = socket.extensions.get::<Viewer>() else {
        return;
    };
    reply(
        ack,
        events::HISTORY,
        older(&state, &viewer, payload.ok()).await,
    );
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
    Ok(History {
        messages: page.messages,
        has_more: page.has_more,
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
