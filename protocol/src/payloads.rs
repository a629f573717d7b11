//! Payload types. Field names follow the tutorial exactly (`sessionID`, `userID`); Part B fields
//! are optional and omitted when absent, so a tutorial client sees the shapes it expects.

use serde::{Deserialize, Serialize};

/// `session` → the socket that connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    #[serde(rename = "sessionID")]
    pub session_id: String,
    #[serde(rename = "userID")]
    pub user_id: String,
}

/// A stored direct message as the server sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Server-assigned, strictly increasing across the whole store; usable as a cursor.
    pub id: i64,
    /// Milliseconds since the Unix epoch, when the server stored it.
    pub ts: i64,
    pub content: String,
    pub from: String,
    pub to: String,
    #[serde(rename = "clientId", default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// One roster entry in `users` and `user connected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    #[serde(rename = "userID")]
    pub user_id: String,
    pub username: String,
    pub connected: bool,
    /// The viewer's conversation with this user only.
    pub messages: Vec<Message>,
}

/// `private message` as a client sends it. Unknown fields (a forged `from`, say) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingMessage {
    pub content: String,
    pub to: String,
    #[serde(rename = "clientId", default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// The `ok` body of a `private message` ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageReceipt {
    pub id: i64,
    pub ts: i64,
}

/// `restore_state` request: the last message id the client holds (0 or absent: none), and
/// whether `users` may be cut to the senders and recipients of the returned messages (a client
/// that has just received `users` on this connection already has everyone's presence).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreStateRequest {
    #[serde(default)]
    pub since: i64,
    #[serde(
        default,
        rename = "peersOnly",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub peers_only: bool,
}

/// Presence of one user, as `restore_state` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    #[serde(rename = "userID")]
    pub user_id: String,
    pub username: String,
    pub connected: bool,
}

/// `restore_state` answer: the caller's messages after `since`, oldest first, and everyone's
/// presence. `hasMore` says the answer was cut at the server's limit: ask again with the last id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreState {
    pub messages: Vec<Message>,
    pub users: Vec<Presence>,
    #[serde(rename = "hasMore")]
    pub has_more: bool,
}

/// `history` request: messages with `with` older than `before` (absent: newest), at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    pub with: String,
    #[serde(default)]
    pub before: Option<i64>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `users_page` request: directory entries `offset..offset + limit` in sign-up order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersPageRequest {
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `users_page` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersPage {
    pub users: Vec<Presence>,
    pub total: u64,
}

/// `resync`: the server could not queue a message for this socket. `since` is the id just
/// before that message: restore from there (or from the newest message held, if that is
/// older). Absent (servers before it was added): from the newest message held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resync {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

/// `tabs`: how many sockets of the user are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tabs {
    pub count: u32,
}

/// `logout` request; absent or `{}` ends this session only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogoutRequest {
    #[serde(default)]
    pub everywhere: bool,
}

/// `history` answer, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub messages: Vec<Message>,
    #[serde(rename = "hasMore")]
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_uses_the_tutorial_field_names() {
        let s = SessionInfo {
            session_id: "s".into(),
            user_id: "u".into(),
        };
        assert_eq!(
            serde_json::to_value(s).unwrap(),
            json!({ "sessionID": "s", "userID": "u" })
        );
    }

    #[test]
    fn a_forged_from_field_is_ignored_when_parsing_an_outgoing_message() {
        let m: OutgoingMessage =
            serde_json::from_value(json!({ "content": "hi", "to": "b", "from": "mallory" }))
                .unwrap();
        assert_eq!(m.to, "b");
        assert_eq!(m.client_id, None);
    }

    #[test]
    fn message_without_client_id_omits_the_field() {
        let m = Message {
            id: 1,
            ts: 2,
            content: "c".into(),
            from: "a".into(),
            to: "b".into(),
            client_id: None,
        };
        let v = serde_json::to_value(m).unwrap();
        assert!(v.get("clientId").is_none());
    }
}
