//! Payload types. Field names follow the tutorial exactly (`sessionID`, `userID`); Part B fields
//! are optional and omitted when absent, so a tutorial client sees the shapes it expects.

use serde::{Deserialize, Serialize};

use crate::json::{self, required, ToJson};

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
    /// Absent or `null`: 0 (everything).
    #[serde(default, deserialize_with = "null_as_zero")]
    pub since: i64,
    #[serde(
        default,
        rename = "peersOnly",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub peers_only: bool,
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.unwrap_or_default())
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

// The client's codec (`crate::json`), field for field as the serde attributes above say; the
// test `client_codec_agrees_with_serde` holds the two together.

crate::from_json_fields!(SessionInfo { "sessionID" => session_id, "userID" => user_id } => SessionInfo {
    session_id: required(session_id, "sessionID")?,
    user_id: required(user_id, "userID")?,
});

impl ToJson for SessionInfo {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("sessionID", &self.session_id)
                .field("userID", &self.user_id);
        });
    }
}

crate::from_json_fields!(Message {
    "id" => id, "ts" => ts, "content" => content, "from" => from, "to" => to, "clientId" => client_id,
} => Message {
    id: required(id, "id")?,
    ts: required(ts, "ts")?,
    content: required(content, "content")?,
    from: required(from, "from")?,
    to: required(to, "to")?,
    client_id: client_id.flatten(),
});

impl ToJson for Message {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("id", &self.id)
                .field("ts", &self.ts)
                .field("content", &self.content)
                .field("from", &self.from)
                .field("to", &self.to)
                .some("clientId", &self.client_id);
        });
    }
}

crate::from_json_fields!(UserEntry {
    "userID" => user_id, "username" => username, "connected" => connected, "messages" => messages,
} => UserEntry {
    user_id: required(user_id, "userID")?,
    username: required(username, "username")?,
    connected: required(connected, "connected")?,
    messages: required(messages, "messages")?,
});

impl ToJson for UserEntry {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("userID", &self.user_id)
                .field("username", &self.username)
                .field("connected", &self.connected)
                .field("messages", &self.messages);
        });
    }
}

crate::from_json_fields!(OutgoingMessage {
    "content" => content, "to" => to, "clientId" => client_id,
} => OutgoingMessage {
    content: required(content, "content")?,
    to: required(to, "to")?,
    client_id: client_id.flatten(),
});

impl ToJson for OutgoingMessage {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("content", &self.content)
                .field("to", &self.to)
                .some("clientId", &self.client_id);
        });
    }
}

crate::from_json_fields!(MessageReceipt { "id" => id, "ts" => ts } => MessageReceipt {
    id: required(id, "id")?,
    ts: required(ts, "ts")?,
});

impl ToJson for MessageReceipt {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("id", &self.id).field("ts", &self.ts);
        });
    }
}

crate::from_json_fields!(RestoreStateRequest { "since" => since, "peersOnly" => peers_only } => RestoreStateRequest {
    since: since.flatten().unwrap_or_default(),
    peers_only: peers_only.unwrap_or_default(),
});

impl ToJson for RestoreStateRequest {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("since", &self.since);
            if self.peers_only {
                o.field("peersOnly", &true);
            }
        });
    }
}

crate::from_json_fields!(Presence {
    "userID" => user_id, "username" => username, "connected" => connected,
} => Presence {
    user_id: required(user_id, "userID")?,
    username: required(username, "username")?,
    connected: required(connected, "connected")?,
});

impl ToJson for Presence {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("userID", &self.user_id)
                .field("username", &self.username)
                .field("connected", &self.connected);
        });
    }
}

crate::from_json_fields!(RestoreState {
    "messages" => messages, "users" => users, "hasMore" => has_more,
} => RestoreState {
    messages: required(messages, "messages")?,
    users: required(users, "users")?,
    has_more: required(has_more, "hasMore")?,
});

impl ToJson for RestoreState {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("messages", &self.messages)
                .field("users", &self.users)
                .field("hasMore", &self.has_more);
        });
    }
}

crate::from_json_fields!(HistoryRequest { "with" => with, "before" => before, "limit" => limit } => HistoryRequest {
    with: required(with, "with")?,
    before: before.flatten(),
    limit: limit.flatten(),
});

impl ToJson for HistoryRequest {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("with", &self.with)
                .field("before", &self.before)
                .field("limit", &self.limit);
        });
    }
}

crate::from_json_fields!(UsersPageRequest { "offset" => offset, "limit" => limit } => UsersPageRequest {
    offset: offset.unwrap_or_default(),
    limit: limit.flatten(),
});

impl ToJson for UsersPageRequest {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("offset", &self.offset).field("limit", &self.limit);
        });
    }
}

crate::from_json_fields!(UsersPage { "users" => users, "total" => total } => UsersPage {
    users: required(users, "users")?,
    total: required(total, "total")?,
});

impl ToJson for UsersPage {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("users", &self.users).field("total", &self.total);
        });
    }
}

crate::from_json_fields!(Resync { "since" => since } => Resync { since: since.flatten() });

impl ToJson for Resync {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.some("since", &self.since);
        });
    }
}

crate::from_json_fields!(Tabs { "count" => count } => Tabs { count: required(count, "count")? });

impl ToJson for Tabs {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("count", &self.count);
        });
    }
}

crate::from_json_fields!(LogoutRequest { "everywhere" => everywhere } => LogoutRequest {
    everywhere: everywhere.unwrap_or_default(),
});

impl ToJson for LogoutRequest {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("everywhere", &self.everywhere);
        });
    }
}

crate::from_json_fields!(History { "messages" => messages, "hasMore" => has_more } => History {
    messages: required(messages, "messages")?,
    has_more: required(has_more, "hasMore")?,
});

impl ToJson for History {
    fn write_json(&self, out: &mut String) {
        json::write_object(out, |o| {
            o.field("messages", &self.messages)
                .field("hasMore", &self.has_more);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::FromJson;
    use serde_json::json;

    fn agree<T>(value: T)
    where
        T: Serialize
            + serde::de::DeserializeOwned
            + FromJson
            + ToJson
            + PartialEq
            + std::fmt::Debug,
    {
        let serde_text = serde_json::to_string(&value).unwrap();
        assert_eq!(json::to_string(&value), serde_text);
        assert_eq!(json::from_str::<T>(&serde_text).unwrap(), value);
    }

    /// Both codecs read `text` alike: the same value, or both refuse it.
    fn read_alike<T>(text: &str)
    where
        T: serde::de::DeserializeOwned + FromJson + PartialEq + std::fmt::Debug,
    {
        let ours = json::from_str::<T>(text).ok();
        let theirs = serde_json::from_str::<T>(text).ok();
        assert_eq!(ours, theirs, "{text}");
    }

    #[test]
    fn client_codec_agrees_with_serde() {
        let message = |client_id: Option<&str>| Message {
            id: 9_007_199_254_740_993,
            ts: -1,
            content: "line\n\"quoted\" é 😀".into(),
            from: "a".into(),
            to: "b".into(),
            client_id: client_id.map(Into::into),
        };
        let presence = Presence {
            user_id: "u".into(),
            username: "ada".into(),
            connected: true,
        };
        agree(SessionInfo {
            session_id: "s".into(),
            user_id: "u".into(),
        });
        agree(message(None));
        agree(message(Some("c")));
        agree(UserEntry {
            user_id: "u".into(),
            username: "ada".into(),
            connected: false,
            messages: vec![message(None), message(Some("c"))],
        });
        agree(OutgoingMessage {
            content: "hi".into(),
            to: "b".into(),
            client_id: Some("c".into()),
        });
        agree(OutgoingMessage {
            content: "hi".into(),
            to: "b".into(),
            client_id: None,
        });
        agree(MessageReceipt { id: 1, ts: 2 });
        agree(RestoreStateRequest {
            since: 3,
            peers_only: true,
        });
        agree(RestoreStateRequest::default());
        agree(RestoreState {
            messages: vec![message(None)],
            users: vec![presence.clone()],
            has_more: true,
        });
        agree(HistoryRequest {
            with: "b".into(),
            before: Some(4),
            limit: None,
        });
        agree(UsersPageRequest {
            offset: 5,
            limit: Some(6),
        });
        agree(UsersPage {
            users: vec![presence],
            total: u64::MAX,
        });
        agree(Resync { since: Some(7) });
        agree(Resync { since: None });
        agree(Tabs { count: 8 });
        agree(LogoutRequest { everywhere: true });
        agree(History {
            messages: vec![],
            has_more: false,
        });
        agree(crate::Ack::Ok(MessageReceipt { id: 1, ts: 2 }));
        for code in crate::ErrorCode::ALL {
            agree(crate::Ack::<MessageReceipt>::error(code, "why"));
        }
    }

    #[test]
    fn client_codec_reads_partial_and_odd_payloads_as_serde_does() {
        read_alike::<OutgoingMessage>(r#"{"content":"hi","to":"b","from":"mallory","x":[{}]}"#);
        read_alike::<OutgoingMessage>(r#"{"content":"hi","to":"b","clientId":null}"#);
        read_alike::<OutgoingMessage>(r#"{"content":"hi"}"#);
        read_alike::<OutgoingMessage>(r#"{"content":1,"to":"b"}"#);
        read_alike::<RestoreStateRequest>("{}");
        read_alike::<RestoreStateRequest>(r#"{"since":null}"#);
        read_alike::<RestoreStateRequest>(r#"{"since":1.5}"#);
        read_alike::<HistoryRequest>(r#"{"with":"b","limit":-1}"#);
        read_alike::<HistoryRequest>(r#"{"with":"b","limit":null}"#);
        read_alike::<Tabs>(r#"{"count":4294967296}"#);
        read_alike::<Message>(
            r#"{"id":1,"ts":2,"content":"c","from":"a","to":"b","clientId":"x"}"#,
        );
        // serde also reads a struct from an array of its fields; no Tether peer sends one.
        assert!(json::from_str::<SessionInfo>(r#"["s","u"]"#).is_err());
        read_alike::<crate::Ack<Tabs>>(r#"{"ok":{"count":1},"error":{}}"#);
        read_alike::<crate::Ack<Tabs>>(r#"{"nope":1}"#);
        read_alike::<crate::Ack<Tabs>>(r#"{"error":{"code":"teapot","message":"m"}}"#);
    }

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
