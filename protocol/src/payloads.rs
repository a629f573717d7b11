//! Payload types. Field names follow the tutorial exactly (`sessionID`, `userID`); Part B fields
//! are optional and omitted when absent, so a tutorial client sees the shapes it expects.

use serde::{Deserialize, Serialize};

use crate::Json;

/// The handshake's `auth` (PROTOCOL.md, "Handshake"): resume the session `sessionID`, else sign
/// up as `username`. Every key is read leniently, as the server always has: a value of another
/// type is as good as absent, and unknown keys are ignored. Written with only the keys set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct HandshakeAuth {
    #[serde(
        rename = "sessionID",
        default,
        with = "crate::field::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub session_id: Option<String>,
    #[serde(
        default,
        with = "crate::field::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub username: Option<String>,
    /// Part B: the newest message id a resuming client holds; `users` then carries only newer
    /// messages. Only a positive value counts.
    #[serde(
        default,
        with = "crate::field::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<i64>,
    /// Part B: under the one-tab policy, end the session's other connections instead of being
    /// refused with `session already active`.
    #[serde(
        default,
        with = "crate::field::lenient",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub takeover: bool,
    /// Part B (issue #25, proof of possession): the signature, base64url of the 64-byte P-256
    /// ECDSA r‖s over `tether-pop-1:` followed by this connection's Engine.IO sid
    /// ([`crate::pop_challenge`]).
    #[serde(
        default,
        with = "crate::field::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub pop: Option<String>,
    /// Part B: the key `pop` was made with, base64url of its 65-byte uncompressed SEC1 point. An
    /// unbound session (or a sign-up) is bound to it when `pop` verifies; a bound session's own
    /// key is what counts, whatever this says.
    #[serde(
        rename = "popKey",
        default,
        with = "crate::field::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub pop_key: Option<String>,
}

/// The bytes a proof of possession signs for the connection whose Engine.IO sid is `sid`
/// (PROTOCOL.md, "Proof of possession").
pub fn pop_challenge(sid: &str) -> String {
    format!("{}{sid}", crate::events::POP_PREFIX)
}

impl HandshakeAuth {
    /// Resume this session.
    pub fn resume(session_id: impl Into<String>) -> Self {
        Self {
            session_id: Some(session_id.into()),
            ..Self::default()
        }
    }

    /// Sign up with this name.
    pub fn sign_up(username: impl Into<String>) -> Self {
        Self {
            username: Some(username.into()),
            ..Self::default()
        }
    }
}

/// `session` → the socket that connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct SessionInfo {
    #[serde(rename = "sessionID")]
    pub session_id: String,
    #[serde(rename = "userID")]
    pub user_id: String,
}

/// A stored direct message as the server sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct UserEntry {
    #[serde(rename = "userID")]
    pub user_id: String,
    pub username: String,
    pub connected: bool,
    /// The viewer's conversation with this user only.
    pub messages: Vec<Message>,
    /// The viewer's read cursor of that conversation (0: nothing read), in a connect's `users`
    /// for the people the viewer has a conversation with; absent elsewhere. Optional and
    /// additive: the tutorial's client ignores it.
    #[serde(rename = "readUpTo", default, skip_serializing_if = "Option::is_none")]
    pub read_up_to: Option<i64>,
    /// Part B: whether a passkey protects this user's name for this user (issue #25). In a
    /// connect's `users`, `Some(true)` or absent: absent is "not protected" there (everyone
    /// else, a "ghost" of the same name included). In `user connected` it is news: `Some(true)`
    /// when the user's roster says so or a passkey first protects the name, `Some(false)` when
    /// the last passkey goes, absent for "no news" (a client keeps what it knew). Optional and
    /// additive: the tutorial's client ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
}

impl UserEntry {
    /// Whether the entry says a passkey protects the name (absent: it does not, or no news).
    pub fn is_protected(&self) -> bool {
        self.protected == Some(true)
    }
}

/// `private message` as a client sends it. Unknown fields (a forged `from`, say) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct OutgoingMessage {
    pub content: String,
    pub to: String,
    #[serde(rename = "clientId", default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// The `ok` body of a `private message` ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct MessageReceipt {
    pub id: i64,
    pub ts: i64,
}

/// `restore_state` request: the last message id the client holds (0 or absent: none), and
/// whether `users` may be cut to the senders and recipients of the returned messages (a client
/// that has just received `users` on this connection already has everyone's presence).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct RestoreStateRequest {
    /// Absent or `null`: 0 (everything).
    #[serde(default, with = "crate::field::null_as_default")]
    pub since: i64,
    #[serde(
        default,
        rename = "peersOnly",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub peers_only: bool,
}

/// Presence of one user, as `restore_state`, `users_page` and `users_search` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct Presence {
    #[serde(rename = "userID")]
    pub user_id: String,
    pub username: String,
    pub connected: bool,
    /// Part B: a passkey protects this user's name for this user, as [`UserEntry::protected`];
    /// absent (false) otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
}

/// `restore_state` answer: the caller's messages after `since`, oldest first, and everyone's
/// presence. `hasMore` says the answer was cut at the server's limit: ask again with the last id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct RestoreState {
    pub messages: Vec<Message>,
    pub users: Vec<Presence>,
    #[serde(rename = "hasMore")]
    pub has_more: bool,
}

/// `history` request: messages with `with` older than `before` (absent: newest), at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct HistoryRequest {
    pub with: String,
    #[serde(default)]
    pub before: Option<i64>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `users_page` request: directory entries `offset..offset + limit` in sign-up order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct UsersPageRequest {
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `users_page` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct UsersPage {
    pub users: Vec<Presence>,
    pub total: u64,
}

/// `resync`: the server could not queue a message for this socket. `since` is the id just
/// before that message: restore from there (or from the newest message held, if that is
/// older). Absent (servers before it was added): from the newest message held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct Resync {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

/// `tabs`: how many sockets of the user are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct Tabs {
    pub count: u32,
}

/// `logout` request; absent or `{}` ends this session only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct LogoutRequest {
    #[serde(default)]
    pub everywhere: bool,
}

/// `history` answer, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct History {
    pub messages: Vec<Message>,
    #[serde(rename = "hasMore")]
    pub has_more: bool,
}

/// `conversations` request: the viewer's conversations whose last message is older than
/// `before` (a message id; absent: from the newest), at most `limit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct ConversationsRequest {
    #[serde(default)]
    pub before: Option<i64>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A read cursor: everything up to message `upTo` was read, the cursor last moving at `at`
/// (milliseconds since the Unix epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct ReadMark {
    #[serde(rename = "upTo")]
    pub up_to: i64,
    pub at: i64,
}

/// One conversation in the `conversations` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct ConversationSummary {
    /// The other party (the viewer, for notes to self).
    #[serde(rename = "userID")]
    pub user_id: String,
    pub username: String,
    pub connected: bool,
    /// The conversation's newest message; its id orders the list and pages it.
    pub last: Message,
    /// The other party's messages newer than the viewer's read cursor, counted as of `last`.
    pub unread: u32,
    /// The viewer's read cursor (0: nothing read).
    #[serde(rename = "readUpTo")]
    pub read_up_to: i64,
    /// How far the other party has read the viewer's messages; only while both share read
    /// receipts.
    #[serde(rename = "peerRead", default, skip_serializing_if = "Option::is_none")]
    pub peer_read: Option<ReadMark>,
}

/// `conversations` answer, latest activity first; `hasMore`: ask again with `before` set to
/// the last one's `last.id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct ConversationList {
    pub conversations: Vec<ConversationSummary>,
    #[serde(rename = "hasMore")]
    pub has_more: bool,
}

/// `read` request: the viewer has read the conversation `with` up to message `upTo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct ReadRequest {
    pub with: String,
    #[serde(rename = "upTo")]
    pub up_to: i64,
}

/// `read` answer and event: the viewer's read cursor of the conversation `with` is `upTo`, and
/// `unread` of the other party's messages up to `asOf` (the conversation's newest message when
/// counted) are newer than it; messages after `asOf` are not counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct ReadState {
    pub with: String,
    #[serde(rename = "upTo")]
    pub up_to: i64,
    pub unread: u32,
    #[serde(rename = "asOf")]
    pub as_of: i64,
}

/// `seen`: the user `by` has read the receiver's messages to them up to `upTo`, at `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct Seen {
    pub by: String,
    #[serde(rename = "upTo")]
    pub up_to: i64,
    pub at: i64,
}

/// `typing` from a client: the viewer is typing to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct TypingRequest {
    pub to: String,
}

/// `typing` to a client: `from` is typing to the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct Typing {
    pub from: String,
}

/// `users_search` request: users whose name contains `query` (ignoring case), at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct UsersSearchRequest {
    pub query: String,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `users_search` answer: names starting with the query first, then by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct UsersSearch {
    pub users: Vec<Presence>,
}

/// `settings`: as a request, the settings to change (absent: unchanged; `{}` reads them); as
/// the answer and the event, every setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct Settings {
    /// Send read receipts, and see other people's (off: neither, as in Signal). Default on.
    #[serde(
        rename = "readReceipts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub read_receipts: Option<bool>,
}

/// One device (session) of the viewer in the `devices` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct DeviceEntry {
    /// The device's public id (derived from the session; never its secret).
    #[serde(rename = "deviceID")]
    pub device_id: String,
    /// "Firefox on Linux", from the browser it signed up in; empty when not known.
    pub browser: String,
    /// When the session was created, and last used (ms since the Unix epoch; at most about a
    /// minute old while it is connected).
    #[serde(rename = "firstSeen")]
    pub first_seen: i64,
    #[serde(rename = "lastSeen")]
    pub last_seen: i64,
    /// The session that asked.
    pub current: bool,
}

/// `devices` answer: every live session of the viewer, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct DeviceList {
    pub devices: Vec<DeviceEntry>,
}

/// `revoke_device` request: end the session with this `deviceID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct RevokeDeviceRequest {
    #[serde(rename = "deviceID")]
    pub device_id: String,
}

/// One passkey of the viewer's account in the `passkeys` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct PasskeyEntry {
    /// The passkey's public id (derived from its credential id).
    #[serde(rename = "passkeyID")]
    pub passkey_id: String,
    /// "Firefox on Linux": the browser it was added in; empty when not known.
    #[serde(rename = "addedIn")]
    pub added_in: String,
    /// When it was added, and last used to sign in (ms since the Unix epoch; `added` when never
    /// used; 0 for a passkey added before these were kept).
    pub added: i64,
    #[serde(rename = "lastUsed")]
    pub last_used: i64,
}

/// `passkeys` answer: the viewer's passkeys, oldest first, and whether they protect its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct PasskeyList {
    pub protected: bool,
    pub passkeys: Vec<PasskeyEntry>,
}

/// `passkey_remove` request: remove the passkey with this `passkeyID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct RemovePasskeyRequest {
    #[serde(rename = "passkeyID")]
    pub passkey_id: String,
}

/// `passkey_remove` answer: whether the name is still protected (false once the last passkey
/// is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Json)]
pub struct PasskeyRemoved {
    pub protected: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agreement::{read_alike, Agreement};
    use crate::json;
    use serde_json::json;

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
            protected: false,
        };
        let mut forms = Agreement::new();
        forms.check(SessionInfo {
            session_id: "s".into(),
            user_id: "u".into(),
        });
        forms.check(message(None));
        forms.check(message(Some("c")));
        forms.check(UserEntry {
            user_id: "u".into(),
            username: "ada".into(),
            connected: false,
            messages: vec![message(None), message(Some("c"))],
            read_up_to: None,
            protected: None,
        });
        forms.check(UserEntry {
            user_id: "u".into(),
            username: "ada".into(),
            connected: true,
            messages: vec![],
            read_up_to: None,
            protected: Some(false),
        });
        forms.check(UserEntry {
            user_id: "u".into(),
            username: "ada".into(),
            connected: true,
            messages: vec![message(None)],
            read_up_to: Some(9_007_199_254_740_993),
            protected: Some(true),
        });
        forms.check(OutgoingMessage {
            content: "hi".into(),
            to: "b".into(),
            client_id: Some("c".into()),
        });
        forms.check(OutgoingMessage {
            content: "hi".into(),
            to: "b".into(),
            client_id: None,
        });
        forms.check(MessageReceipt { id: 1, ts: 2 });
        forms.check(RestoreStateRequest {
            since: 3,
            peers_only: true,
        });
        forms.check(RestoreStateRequest::default());
        forms.check(RestoreState {
            messages: vec![message(None)],
            users: vec![presence.clone()],
            has_more: true,
        });
        forms.check(HistoryRequest {
            with: "b".into(),
            before: Some(4),
            limit: None,
        });
        forms.check(UsersPageRequest {
            offset: 5,
            limit: Some(6),
        });
        forms.check(UsersPage {
            users: vec![presence.clone()],
            total: u64::MAX,
        });
        forms.check(Resync { since: Some(7) });
        forms.check(Resync { since: None });
        forms.check(Tabs { count: 8 });
        forms.check(LogoutRequest { everywhere: true });
        forms.check(History {
            messages: vec![],
            has_more: false,
        });
        forms.check(ConversationsRequest {
            before: Some(9),
            limit: Some(10),
        });
        forms.check(ConversationsRequest::default());
        forms.check(ConversationList {
            conversations: vec![
                ConversationSummary {
                    user_id: "u".into(),
                    username: "ada".into(),
                    connected: true,
                    last: message(Some("c")),
                    unread: 3,
                    read_up_to: 4,
                    peer_read: Some(ReadMark { up_to: 5, at: 6 }),
                },
                ConversationSummary {
                    user_id: "u".into(),
                    username: "ada".into(),
                    connected: false,
                    last: message(None),
                    unread: 0,
                    read_up_to: 0,
                    peer_read: None,
                },
            ],
            has_more: true,
        });
        forms.check(ReadMark { up_to: 1, at: 2 });
        forms.check(ConversationSummary {
            user_id: "me".into(),
            username: "me".into(),
            connected: true,
            last: message(None),
            unread: 0,
            read_up_to: 9,
            peer_read: None,
        });
        forms.check(ReadRequest {
            with: "u".into(),
            up_to: 11,
        });
        forms.check(ReadState {
            with: "u".into(),
            up_to: 11,
            unread: 2,
            as_of: 13,
        });
        forms.check(Seen {
            by: "u".into(),
            up_to: 11,
            at: 12,
        });
        forms.check(TypingRequest { to: "u".into() });
        forms.check(Typing { from: "u".into() });
        forms.check(UsersSearchRequest {
            query: "Ad é".into(),
            limit: Some(20),
        });
        forms.check(UsersSearch {
            users: vec![presence.clone()],
        });
        forms.check(Settings {
            read_receipts: Some(false),
        });
        forms.check(Settings::default());
        forms.check(DeviceList {
            devices: vec![DeviceEntry {
                device_id: "0123456789abcdef".into(),
                browser: "Firefox on Linux".into(),
                first_seen: 1_764_790_000_000,
                last_seen: 1_764_797_000_000,
                current: true,
            }],
        });
        forms.check(DeviceEntry {
            device_id: "0123456789abcdef".into(),
            browser: "Other browser".into(),
            first_seen: 1,
            last_seen: 2,
            current: false,
        });
        forms.check(RevokeDeviceRequest {
            device_id: "0123456789abcdef".into(),
        });
        forms.check(PasskeyList {
            protected: true,
            passkeys: vec![PasskeyEntry {
                passkey_id: "0123456789abcdef".into(),
                added_in: "Chrome on Linux".into(),
                added: 1_764_790_000_000,
                last_used: 1_764_797_000_000,
            }],
        });
        forms.check(PasskeyList {
            protected: false,
            passkeys: vec![],
        });
        forms.check(PasskeyEntry {
            passkey_id: "0123456789abcdef".into(),
            added_in: String::new(),
            added: 0,
            last_used: 0,
        });
        forms.check(RemovePasskeyRequest {
            passkey_id: "0123456789abcdef".into(),
        });
        forms.check(PasskeyRemoved { protected: false });
        forms.check(crate::Ack::Ok(MessageReceipt { id: 1, ts: 2 }));
        for code in crate::ErrorCode::ALL {
            forms.check(crate::Ack::<MessageReceipt>::error(code, "why"));
        }
        forms.check(Presence {
            protected: true,
            ..presence.clone()
        });
        forms.check(presence);
        forms.check(crate::ErrorCode::RateLimited);
        forms.check(crate::AckError {
            code: crate::ErrorCode::InvalidCursor,
            message: "m".into(),
        });
        forms.check(HandshakeAuth::resume("s"));
        forms.check(HandshakeAuth::sign_up("ada"));
        forms.check(HandshakeAuth {
            session_id: Some("s".into()),
            username: Some("ada".into()),
            since: Some(41),
            takeover: true,
            pop: Some("p".into()),
            pop_key: Some("k".into()),
        });
        forms.check(HandshakeAuth::default());
        forms.covers(&[include_str!("payloads.rs"), include_str!("ack.rs")]);
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
        read_alike::<ReadRequest>(r#"{"with":"u","upTo":1.5}"#);
        read_alike::<ReadRequest>(r#"{"with":"u"}"#);
        read_alike::<Settings>(r#"{"readReceipts":"no"}"#);
        read_alike::<HandshakeAuth>(r#"{"sessionID":"s","pop":5,"popKey":["k"]}"#);
        read_alike::<HandshakeAuth>(r#"{"pop":"p","popKey":"k"}"#);
        read_alike::<Settings>(r#"{"readReceipts":null}"#);
        read_alike::<ConversationsRequest>(r#"{"before":null,"limit":3}"#);
        read_alike::<UsersSearchRequest>(r#"{"limit":3}"#);
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
    fn handshake_auth_keys_are_read_leniently_in_both_forms() {
        let read = |text: &str| {
            read_alike::<HandshakeAuth>(text);
            json::from_str::<HandshakeAuth>(text).unwrap()
        };
        assert_eq!(
            read(r#"{"sessionID":5,"username":"ada","since":"42","takeover":"yes","x":[]}"#),
            HandshakeAuth::sign_up("ada")
        );
        assert_eq!(
            read(r#"{"sessionID":"s","since":4.5,"takeover":true}"#),
            HandshakeAuth {
                takeover: true,
                ..HandshakeAuth::resume("s")
            }
        );
        assert_eq!(read(r#"{"since":18446744073709551615}"#).since, None);
        assert_eq!(read(r#"{"since":-3}"#).since, Some(-3));
        assert_eq!(read("{}"), HandshakeAuth::default());
        assert_eq!(
            json::to_string(&HandshakeAuth {
                since: Some(41),
                ..HandshakeAuth::resume("s")
            }),
            r#"{"sessionID":"s","since":41}"#
        );
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
