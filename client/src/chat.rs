//! What a chat client knows, as plain data: the roster with presence, every conversation keyed
//! by message id (so nothing shows twice, whatever order copies arrive in), read markers for
//! unread counts, and the outbox of messages not yet acknowledged.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use protocol::payloads::{
    History, Message, MessageReceipt, OutgoingMessage, RestoreState, UserEntry,
};
use protocol::Json;
use protocol::{Ack, ErrorCode};

use crate::packet::{Arg, RawJson};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub user_id: String,
    pub username: String,
    pub connected: bool,
}

/// Paging state of one conversation's older history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryCursor {
    /// The server said there is nothing older than what is loaded.
    pub complete: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatState {
    pub me: Option<String>,
    /// By user id (`peers()` sorts for display, so lookups need no order). Fx hashing: the
    /// keys are ids the server issued, and SipHash was a tenth of a client's CPU in a storm.
    peers: FxHashMap<String, Peer>,
    conversations: FxHashMap<String, BTreeMap<i64, Message>>,
    history: FxHashMap<String, HistoryCursor>,
    /// Highest message id this client holds: the `restore_state` cursor.
    pub last_id: i64,
    /// Per peer, the newest message id the viewer has seen.
    pub read_up_to: BTreeMap<String, i64>,
}

impl ChatState {
    pub fn new(me: Option<String>) -> Self {
        Self {
            me,
            ..Self::default()
        }
    }

    /// The other party of a message, from the viewer's side (the viewer for notes to self).
    pub fn peer_of<'a>(&self, message: &'a Message) -> &'a str {
        match &self.me {
            Some(me) if message.from == *me => &message.to,
            _ => &message.from,
        }
    }

    /// Everyone, the viewer first, then by name, ignoring the case of ASCII letters (other
    /// letters compare as they are: full Unicode case mapping would put its tables in the wasm;
    /// with sign-in's upper-casing they were 13.9 KiB gzip, BENCHMARKS.md "Front-end").
    pub fn peers(&self) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self.peers.values().cloned().collect();
        peers.sort_by(|a, b| {
            let a_me = Some(&a.user_id) == self.me.as_ref();
            let b_me = Some(&b.user_id) == self.me.as_ref();
            b_me.cmp(&a_me)
                .then_with(|| cmp_ignore_ascii_case(&a.username, &b.username))
                .then_with(|| a.user_id.cmp(&b.user_id))
        });
        peers
    }

    pub fn peer(&self, user_id: &str) -> Option<&Peer> {
        self.peers.get(user_id)
    }

    /// The conversation with `peer`, oldest first.
    pub fn conversation(&self, peer: &str) -> Vec<Message> {
        self.conversations
            .get(peer)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// `None` until the first `history` answer for this conversation.
    pub fn history_cursor(&self, peer: &str) -> Option<HistoryCursor> {
        self.history.get(peer).copied()
    }

    /// The oldest loaded id of a conversation (the `before` of the next `history` request).
    pub fn oldest_id(&self, peer: &str) -> Option<i64> {
        self.conversations
            .get(peer)
            .and_then(|m| m.keys().next().copied())
    }

    pub fn unread(&self, peer: &str) -> usize {
        let read = self.read_up_to.get(peer).copied().unwrap_or(0);
        self.conversations
            .get(peer)
            .map(|m| {
                m.range(read + 1..)
                    .filter(|(_, msg)| Some(&msg.from) != self.me.as_ref())
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn mark_read(&mut self, peer: &str) {
        if let Some(newest) = self
            .conversations
            .get(peer)
            .and_then(|m| m.keys().next_back())
        {
            let entry = self.read_up_to.entry(peer.to_owned()).or_insert(0);
            *entry = (*entry).max(*newest);
        }
    }

    /// `users`: the whole roster, each entry with the viewer's conversation with that user.
    pub fn apply_users(&mut self, entries: Vec<UserEntry>) {
        self.peers.clear();
        self.peers.reserve(entries.len());
        for entry in entries {
            for message in entry.messages {
                self.insert(message);
            }
            self.peers.insert(
                entry.user_id.clone(),
                Peer {
                    user_id: entry.user_id,
                    username: entry.username,
                    connected: entry.connected,
                },
            );
        }
    }

    /// `user connected`.
    pub fn user_connected(&mut self, entry: UserEntry) {
        self.peers.insert(
            entry.user_id.clone(),
            Peer {
                user_id: entry.user_id,
                username: entry.username,
                connected: true,
            },
        );
    }

    /// `user disconnected`.
    pub fn user_disconnected(&mut self, user_id: &str) {
        if let Some(peer) = self.peers.get_mut(user_id) {
            peer.connected = false;
        }
    }

    /// A message from anywhere (live, ack, restore, history). Returns whether it was new.
    pub fn insert(&mut self, message: Message) -> bool {
        let peer = self.peer_of(&message).to_owned();
        self.last_id = self.last_id.max(message.id);
        let conversation = self.conversations.entry(peer).or_default();
        if conversation.contains_key(&message.id) {
            return false;
        }
        conversation.insert(message.id, message);
        true
    }

    /// `restore_state`'s answer: presence replaced, missed messages merged.
    pub fn apply_restore(&mut self, restored: RestoreState) {
        for presence in restored.users {
            self.peers.insert(
                presence.user_id.clone(),
                Peer {
                    user_id: presence.user_id,
                    username: presence.username,
                    connected: presence.connected,
                },
            );
        }
        for message in restored.messages {
            self.insert(message);
        }
    }

    /// A `history` page for `peer`.
    pub fn apply_history(&mut self, peer: &str, page: History) {
        self.history.insert(
            peer.to_owned(),
            HistoryCursor {
                complete: !page.has_more,
            },
        );
        for message in page.messages {
            self.insert(message);
        }
    }
}

/// Orders two names as if their ASCII letters were lower-case, without allocating.
fn cmp_ignore_ascii_case(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// A message written by the viewer that the server has not acknowledged yet. Kept in the
/// browser's storage as `{"clientId", "to", "content", "createdAt", "failed"}`.
#[derive(Debug, Clone, PartialEq, Eq, Json)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub struct OutboxEntry {
    #[serde(rename = "clientId")]
    pub client_id: String,
    pub to: String,
    pub content: String,
    /// When it was written (ms since the epoch), for display.
    #[serde(rename = "createdAt")]
    pub created_at: i64,
    /// Set when the server refused it for good; cleared by a retry.
    pub failed: Option<String>,
}

/// What an ack meant for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub enum AckOutcome {
    /// Stored: the entry left the outbox and is now this message.
    Sent(Message),
    /// Refused for good: the entry stays, marked failed, until retried or discarded.
    Failed,
    /// Not stored this time (rate limit, store down, timeout, lost connection): sent again later.
    Retry,
    /// Not an ack the outbox was waiting for.
    NotOurs,
}

/// Messages waiting for their ack, in the order they were written. They are sent one at a time,
/// so the server stores them in that order; an entry leaves only when acknowledged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outbox {
    entries: Vec<OutboxEntry>,
    in_flight: Option<(u64, String)>,
    paused_until: u64,
}

impl Outbox {
    pub fn from_entries(entries: Vec<OutboxEntry>) -> Self {
        Self {
            entries,
            ..Self::default()
        }
    }

    pub fn entries(&self) -> &[OutboxEntry] {
        &self.entries
    }

    pub fn push(&mut self, entry: OutboxEntry) {
        if !self.entries.iter().any(|e| e.client_id == entry.client_id) {
            self.entries.push(entry);
        }
    }

    /// The ack id of the entry being sent, if any.
    /// Forgets the send in flight (its answer can no longer come); the entry stays queued and
    /// is sent again with the same client id, which the server de-duplicates.
    pub fn forget_in_flight(&mut self) {
        self.in_flight = None;
    }

    pub fn in_flight_id(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|(id, _)| *id)
    }

    pub fn is_in_flight(&self, client_id: &str) -> bool {
        self.in_flight.as_ref().is_some_and(|(_, c)| c == client_id)
    }

    /// Sends the next entry if the connection is up and nothing is in flight. Returns the
    /// time before which nothing will be sent (after a retryable refusal), if any.
    pub fn pump(
        &mut self,
        core: &mut impl crate::link::Emitter,
        now: u64,
        timeout_ms: u64,
    ) -> Option<u64> {
        if self.in_flight.is_some() {
            return None;
        }
        if now < self.paused_until {
            return Some(self.paused_until);
        }
        let entry = self.entries.iter().find(|e| e.failed.is_none())?;
        let payload = OutgoingMessage {
            content: entry.content.clone(),
            to: entry.to.clone(),
            client_id: Some(entry.client_id.clone()),
        };
        let payload = RawJson::of(&payload);
        if let Ok(id) =
            core.emit_with_ack(protocol::events::PRIVATE_MESSAGE, &payload, timeout_ms, now)
        {
            self.in_flight = Some((id, entry.client_id.clone()));
        }
        None
    }

    /// The ack (or its absence) for `ack_id`; `args` is `None` when it failed or timed out.
    pub fn on_ack(&mut self, ack_id: u64, args: Option<&[Arg]>, me: &str, now: u64) -> AckOutcome {
        let Some((id, client_id)) = self.in_flight.clone() else {
            return AckOutcome::NotOurs;
        };
        if id != ack_id {
            return AckOutcome::NotOurs;
        }
        self.in_flight = None;
        let ack = args
            .and_then(|a| a.first())
            .and_then(|v| v.parse::<Ack<MessageReceipt>>());
        let Some(index) = self.entries.iter().position(|e| e.client_id == client_id) else {
            return AckOutcome::NotOurs;
        };
        match ack {
            Some(Ack::Ok(receipt)) => {
                let entry = self.entries.remove(index);
                AckOutcome::Sent(Message {
                    id: receipt.id,
                    ts: receipt.ts,
                    content: entry.content,
                    from: me.to_owned(),
                    to: entry.to,
                    client_id: Some(entry.client_id),
                })
            }
            Some(Ack::Error(error))
                if matches!(
                    error.code,
                    ErrorCode::RateLimited | ErrorCode::StoreUnavailable
                ) =>
            {
                self.paused_until = now + 1_000;
                AckOutcome::Retry
            }
            Some(Ack::Error(error)) => {
                self.entries[index].failed = Some(error.message);
                AckOutcome::Failed
            }
            None => AckOutcome::Retry,
        }
    }

    /// A copy of one of our messages came back some other way (restore, another tab): it is
    /// stored, so its entry is done.
    pub fn settle(&mut self, message: &Message) -> bool {
        let Some(client_id) = &message.client_id else {
            return false;
        };
        let before = self.entries.len();
        self.entries.retain(|e| &e.client_id != client_id);
        before != self.entries.len()
    }

    pub fn retry(&mut self, client_id: &str) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.client_id == client_id) {
            entry.failed = None;
        }
        self.paused_until = 0;
    }

    pub fn discard(&mut self, client_id: &str) {
        self.entries.retain(|e| e.client_id != client_id);
    }
}

/// A fresh random id (a UUID v4 from the platform's CSPRNG), for ids that need no order.
pub fn random_id() -> String {
    let mut bytes = random_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    hyphenated(bytes)
}

/// A fresh client message id: a UUID v7 (RFC 9562), the wall clock's milliseconds followed by
/// 74 random bits. Ids that grow with time land next to each other in the server's
/// `(clientId, from)` index, so a batch of messages dirties one index page there instead of
/// one random page each. Uniqueness per sender rests on the random bits, not on the clock.
pub fn new_client_id(wall_ms: i64) -> String {
    let mut bytes = random_bytes();
    let ms = u64::try_from(wall_ms).unwrap_or(0).to_be_bytes();
    bytes[..6].copy_from_slice(&ms[2..]);
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    hyphenated(bytes)
}

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No CSPRNG: ids need only be unique per sender, so mix the clock in instead.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = nanos.to_le_bytes();
    }
    bytes
}

/// The RFC 9562 variant bits and the hyphenated lower-case form.
fn hyphenated(mut bytes: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut id = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Core, CoreConfig, Output};
    use crate::testing::{auth, raw};
    use protocol::json;
    use serde_json::json;

    fn msg(id: i64, from: &str, to: &str) -> Message {
        Message {
            id,
            ts: id,
            content: format!("m{id}"),
            from: from.into(),
            to: to.into(),
            client_id: None,
        }
    }

    #[test]
    fn the_same_message_from_several_sources_shows_once() {
        let mut s = ChatState::new(Some("me".into()));
        assert!(s.insert(msg(1, "bob", "me")));
        assert!(!s.insert(msg(1, "bob", "me")));
        s.apply_restore(RestoreState {
            messages: vec![msg(1, "bob", "me"), msg(2, "me", "bob")],
            users: vec![],
            has_more: false,
        });
        assert_eq!(s.conversation("bob").len(), 2);
        assert_eq!(s.last_id, 2);
    }

    #[test]
    fn unread_counts_only_the_peers_messages_after_the_read_marker() {
        let mut s = ChatState::new(Some("me".into()));
        s.insert(msg(1, "bob", "me"));
        s.insert(msg(2, "me", "bob"));
        s.insert(msg(3, "bob", "me"));
        assert_eq!(s.unread("bob"), 2);
        s.mark_read("bob");
        assert_eq!(s.unread("bob"), 0);
        s.insert(msg(4, "bob", "me"));
        assert_eq!(s.unread("bob"), 1);
    }

    #[test]
    fn the_viewer_is_listed_first_then_everyone_by_name() {
        let mut s = ChatState::new(Some("u2".into()));
        let entry = |id: &str, name: &str| UserEntry {
            user_id: id.into(),
            username: name.into(),
            connected: true,
            messages: vec![],
        };
        s.apply_users(vec![
            entry("u1", "zoe"),
            entry("u2", "me"),
            entry("u3", "Ann"),
            entry("u4", "bob"),
            entry("u5", "Zed"),
        ]);
        let names: Vec<_> = s.peers().into_iter().map(|p| p.username).collect();
        assert_eq!(names, ["me", "Ann", "bob", "Zed", "zoe"]);
        s.user_disconnected("u1");
        assert!(!s.peer("u1").unwrap().connected);
    }

    fn online_core() -> Core {
        let mut core = Core::new(CoreConfig::default(), || auth(json!({})), || 0.0);
        core.connect(0);
        core.handle_frame(
            r#"0{"sid":"e","upgrades":[],"pingInterval":300,"pingTimeout":200}"#,
            0,
        );
        core.handle_frame(r#"40{"sid":"x"}"#, 0);
        while core.poll_output().is_some() {}
        core
    }

    fn entry(client_id: &str) -> OutboxEntry {
        OutboxEntry {
            client_id: client_id.into(),
            to: "bob".into(),
            content: format!("text {client_id}"),
            created_at: 0,
            failed: None,
        }
    }

    /// Outboxes stored before the client left serde still read, and are written back the same.
    #[test]
    fn a_stored_outbox_entry_reads_and_writes_as_serde_stored_it() {
        for text in [
            r#"{"clientId":"c","to":"bob","content":"text c","createdAt":0,"failed":null}"#,
            r#"{"clientId":"c","to":"bob","content":"text c","createdAt":0,"failed":"no such user"}"#,
        ] {
            let stored: OutboxEntry = json::from_str(text).unwrap();
            assert_eq!(stored.client_id, "c");
            assert_eq!(json::to_string(&stored), text);
        }
        assert_eq!(
            json::from_str::<OutboxEntry>(
                r#"{"clientId":"c","to":"bob","content":"text c","createdAt":0}"#
            ),
            Ok(entry("c")),
            "`failed` may be missing"
        );
    }

    fn sent_frames(core: &mut Core) -> Vec<String> {
        std::iter::from_fn(|| core.poll_output())
            .filter_map(|o| match o {
                Output::Send(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_outbox_sends_one_at_a_time_in_order_and_drops_an_entry_only_when_acked() {
        let mut core = online_core();
        let mut outbox = Outbox::default();
        outbox.push(entry("a"));
        outbox.push(entry("b"));
        outbox.pump(&mut core, 0, 1000);
        outbox.pump(&mut core, 0, 1000);
        let frames = sent_frames(&mut core);
        assert_eq!(frames.len(), 1, "one in flight");
        assert!(frames[0].contains(r#""clientId":"a""#));

        let ok = json!({ "ok": { "id": 7, "ts": 9 } });
        let outcome = outbox.on_ack(0, Some(&[raw(ok)]), "me", 0);
        let AckOutcome::Sent(message) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!((message.id, message.from.as_str()), (7, "me"));
        assert_eq!(outbox.entries().len(), 1);

        outbox.pump(&mut core, 0, 1000);
        assert!(sent_frames(&mut core)[0].contains(r#""clientId":"b""#));
        // The connection drops before the ack: the entry stays for the next connection.
        assert_eq!(outbox.on_ack(1, None, "me", 0), AckOutcome::Retry);
        assert_eq!(outbox.entries().len(), 1);
    }

    #[test]
    fn a_permanent_refusal_marks_the_entry_failed_until_retried() {
        let mut core = online_core();
        let mut outbox = Outbox::default();
        outbox.push(entry("a"));
        outbox.pump(&mut core, 0, 1000);
        assert_eq!(sent_frames(&mut core).len(), 1);
        let refusal =
            json!({ "error": { "code": "unknown_recipient", "message": "no such user" } });
        assert_eq!(
            outbox.on_ack(0, Some(&[raw(refusal)]), "me", 0),
            AckOutcome::Failed
        );
        assert_eq!(outbox.entries()[0].failed.as_deref(), Some("no such user"));
        outbox.pump(&mut core, 0, 1000);
        assert!(sent_frames(&mut core).is_empty(), "failed entries wait");
        outbox.retry("a");
        outbox.pump(&mut core, 0, 1000);
        assert_eq!(sent_frames(&mut core).len(), 1);
    }

    #[test]
    fn a_message_that_came_back_another_way_settles_its_entry() {
        let mut outbox = Outbox::from_entries(vec![entry("a")]);
        let mut m = msg(3, "me", "bob");
        m.client_id = Some("a".into());
        assert!(outbox.settle(&m));
        assert!(outbox.entries().is_empty());
    }

    #[test]
    fn ids_are_written_in_the_hyphenated_lower_case_form_with_the_variant_bits() {
        let bytes = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
            0x32, 0x10,
        ];
        assert_eq!(hyphenated(bytes), "01234567-89ab-cdef-bedc-ba9876543210");
    }

    #[test]
    fn random_ids_are_uuid_v4() {
        let id = random_id();
        assert!(protocol::ClientMsgId::parse(&id).is_ok(), "{id}");
        assert_eq!(&id[14..15], "4");
        assert_eq!(&id[19..20].trim_matches(['8', '9', 'a', 'b']), &"");
        assert_ne!(id, random_id());
    }

    #[test]
    fn client_ids_are_uuid_v7_and_sort_by_their_clock() {
        let wall_ms = 1_795_000_000_000; // 2026-11
        let id = new_client_id(wall_ms);
        assert!(protocol::ClientMsgId::parse(&id).is_ok(), "{id}");
        assert_eq!(&id[14..15], "7");
        assert_eq!(&id[19..20].trim_matches(['8', '9', 'a', 'b']), &"");
        let millis = u64::from_str_radix(&id[..13].replace('-', ""), 16).unwrap();
        assert_eq!(millis, wall_ms as u64);
        assert_ne!(id, new_client_id(wall_ms));
        assert!(new_client_id(wall_ms + 1) > new_client_id(wall_ms));
    }
}
