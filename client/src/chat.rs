//! What a chat client knows, as plain data: the roster with presence, every conversation keyed
//! by message id (so nothing shows twice, whatever order copies arrive in), what the server said
//! about each conversation (its newest message, the viewer's read cursor and unread count, how
//! far the other party has read), who is typing, the viewer's settings, and the outbox of
//! messages not yet acknowledged.
//!
//! Unread counts: the server counts the other party's messages after the viewer's read cursor as
//! of the conversation's newest message then (`asOf`); this client adds the messages it holds
//! from that party newer than both `asOf` and its cursor, and takes off those it has read itself
//! since the server counted (PROTOCOL.md, "Read cursors").

use rustc_hash::FxHashMap;

use protocol::payloads::{
    ConversationSummary, History, Message, MessageReceipt, OutgoingMessage, Presence, ReadMark,
    ReadState, RestoreState, Seen, Settings, UserEntry,
};
use protocol::Json;
use protocol::{Ack, ErrorCode};

use crate::packet::{Arg, RawJson};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub user_id: String,
    pub username: String,
    pub connected: bool,
    /// A passkey protects this name for this user (a connect's `users`, `restore_state`,
    /// `users_page` and `users_search` say so; `user connected` changes it only when it carries
    /// `protected`, the news of a first or last passkey).
    pub protected: bool,
}

impl From<Presence> for Peer {
    fn from(p: Presence) -> Self {
        Peer {
            user_id: p.user_id,
            username: p.username,
            connected: p.connected,
            protected: p.protected,
        }
    }
}

/// Paging state of one conversation's older history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryCursor {
    /// The server said there is nothing older than what is loaded.
    pub complete: bool,
}

/// An unread count as the server gave it: `unread` of the other party's messages after
/// `cursor`, up to message `as_of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counted {
    unread: usize,
    as_of: i64,
    cursor: i64,
}

/// What is known of a conversation besides its messages: what the server said of it
/// (`conversations`, `read`, `seen`) and whether the other party is typing. One map of these
/// rather than one map per fact: each map type is code of its own in the wasm.
#[derive(Debug, Clone, Default, PartialEq)]
struct ServerView {
    /// The conversation's newest message, which this client may not hold.
    last: Option<Message>,
    /// The viewer's read cursor.
    cursor: i64,
    counted: Option<Counted>,
    /// How far the other party has read the viewer's messages.
    peer_read: Option<ReadMark>,
    /// Until when (the session's clock) "is typing" shows.
    typing_until: Option<u64>,
}

/// The newest message of a conversation, for a one-line preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub content: String,
    /// Milliseconds since the epoch (the server's time; a message not yet sent: when written).
    pub ts: i64,
    /// Written by the viewer.
    pub mine: bool,
    /// Written and not acknowledged yet (in the outbox).
    pub pending: bool,
    /// In the outbox, and the server refused it: it waits for Retry or Discard, it is not
    /// being sent.
    pub failed: bool,
}

/// One conversation of [`ChatState::conversation_list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationEntry {
    pub user_id: String,
    pub username: String,
    pub connected: bool,
    /// The conversation with oneself (notes).
    pub is_me: bool,
    pub last: Preview,
    /// See [`ChatState::unread`].
    pub unread: usize,
}

/// The answer to the last `users_search` asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchResults {
    /// The query as sent (trimmed).
    pub query: String,
    pub users: Vec<Peer>,
    /// The server refused the query (too long, say).
    pub failed: bool,
}

/// Where the viewer has read each conversation: peer id to the newest message id read.
pub type ReadMarkers = FxHashMap<String, i64>;

/// A conversation's messages held, by id, oldest first. A sorted list, not a `BTreeMap`: its
/// code in the wasm was more than a few lookups and inserts need (BENCHMARKS.md "Front-end",
/// session 14).
#[derive(Debug, Clone, Default, PartialEq)]
struct Thread(Vec<Message>);

impl Thread {
    /// The messages with `id <= up_to`.
    fn up_to(&self, up_to: i64) -> &[Message] {
        &self.0[..self.0.partition_point(|m| m.id <= up_to)]
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatState {
    pub me: Option<String>,
    /// By user id (`peers()` sorts for display, so lookups need no order). Fx hashing: the
    /// keys are ids the server issued, and SipHash was a tenth of a client's CPU in a storm.
    peers: FxHashMap<String, Peer>,
    /// People met outside the roster (a conversation summary, a search result): names and
    /// presence as last heard, for conversations with people the roster leaves out.
    directory: FxHashMap<String, Peer>,
    conversations: FxHashMap<String, Thread>,
    history: FxHashMap<String, HistoryCursor>,
    /// Highest message id this client holds: the `restore_state` cursor.
    pub last_id: i64,
    /// Per peer, the newest message id the viewer has seen here (the server's cursor may be
    /// ahead, from another tab or device; the larger counts).
    pub read_up_to: ReadMarkers,
    server: FxHashMap<String, ServerView>,
    settings: Option<Settings>,
    /// `before` for the next page of `conversations`, while the server has more.
    conversations_before: Option<i64>,
    search: Option<SearchResults>,
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
        let cmp = |a: &Peer, b: &Peer| {
            let a_me = Some(&a.user_id) == self.me.as_ref();
            let b_me = Some(&b.user_id) == self.me.as_ref();
            b_me.cmp(&a_me)
                .then_with(|| cmp_ignore_ascii_case(&a.username, &b.username))
                .then_with(|| a.user_id.cmp(&b.user_id))
        };
        // Placed one by one (the order is total: ids differ): a sort of its own would be more
        // code in the wasm (BENCHMARKS.md "Front-end", session 14).
        let mut order: Vec<&Peer> = Vec::with_capacity(self.peers.len());
        for peer in self.peers.values() {
            let at = order.partition_point(|p| cmp(p, peer).is_lt());
            order.insert(at, peer);
        }
        order.into_iter().cloned().collect()
    }

    /// The conversation with `peer`, oldest first.
    pub fn conversation(&self, peer: &str) -> Vec<Message> {
        self.conversations
            .get(peer)
            .map(|m| m.0.clone())
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
            .and_then(|m| m.0.first())
            .map(|m| m.id)
    }

    /// A person by id: from the roster, else as met in a conversation summary or a search.
    pub fn peer(&self, user_id: &str) -> Option<&Peer> {
        self.peers
            .get(user_id)
            .or_else(|| self.directory.get(user_id))
    }

    /// The viewer's read cursor of the conversation with `peer`: the larger of this client's
    /// and the server's.
    pub fn read_cursor(&self, peer: &str) -> i64 {
        let local = self.read_up_to.get(peer).copied().unwrap_or(0);
        let server = self.server.get(peer).map_or(0, |s| s.cursor);
        local.max(server)
    }

    /// The server's read cursor of the conversation with `peer` (0: none known).
    pub fn server_read_cursor(&self, peer: &str) -> i64 {
        self.server.get(peer).map_or(0, |s| s.cursor)
    }

    /// How many of `peer`'s messages the viewer has not read: what the server counted (less
    /// those read here since), plus the held ones newer than both that count and the cursor.
    /// A message of the viewer's own reads what came before it (a reply), as the server counts.
    /// Notes to self are never unread. The server caps its count at 1000.
    pub fn unread(&self, peer: &str) -> usize {
        if self.me.as_deref() == Some(peer) {
            return 0;
        }
        let cursor = self.read_cursor(peer).max(self.own_newest(peer, i64::MAX));
        let counted = self.server.get(peer).and_then(|s| s.counted);
        let (base, after) = match counted {
            Some(c) if cursor >= c.as_of => (0, cursor),
            Some(c) => {
                // The server counted after the viewer's newest message up to asOf too.
                let counted_after = c.cursor.max(self.own_newest(peer, c.as_of));
                let read_since = self.incoming_between(peer, counted_after, cursor.min(c.as_of));
                (c.unread.saturating_sub(read_since), c.as_of)
            }
            None => (0, cursor),
        };
        base.saturating_add(self.incoming_between(peer, after, i64::MAX))
    }

    /// Unread messages over every conversation (the document title's count).
    pub fn total_unread(&self) -> usize {
        self.conversation_peers()
            .iter()
            .fold(0, |total: usize, peer| {
                total.saturating_add(self.unread(peer))
            })
    }

    /// The newest message id up to `up_to` the viewer wrote to `peer` (held, or a summary's
    /// last message); 0 for none.
    fn own_newest(&self, peer: &str, up_to: i64) -> i64 {
        let mine = |m: &Message| Some(&m.from) == self.me.as_ref();
        let held = self
            .conversations
            .get(peer)
            .and_then(|m| m.up_to(up_to).iter().rev().find(|m| mine(m)))
            .map_or(0, |m| m.id);
        let named = self
            .server
            .get(peer)
            .and_then(|s| s.last.as_ref())
            .filter(|m| mine(m) && m.id <= up_to)
            .map_or(0, |m| m.id);
        held.max(named)
    }

    /// Held messages from `peer` (not the viewer's) with `after < id <= up_to`.
    fn incoming_between(&self, peer: &str, after: i64, up_to: i64) -> usize {
        if up_to <= after {
            return 0;
        }
        self.conversations
            .get(peer)
            .map(|m| {
                m.up_to(up_to)[m.up_to(after).len()..]
                    .iter()
                    .filter(|msg| Some(&msg.from) != self.me.as_ref())
                    .count()
            })
            .unwrap_or(0)
    }

    /// The newest message id held in the conversation with `peer`.
    pub fn newest_id(&self, peer: &str) -> Option<i64> {
        self.conversations
            .get(peer)
            .and_then(|m| m.0.last())
            .map(|m| m.id)
    }

    /// Marks everything held of the conversation read here. Returns whether the cursor moved.
    pub fn mark_read(&mut self, peer: &str) -> bool {
        let Some(newest) = self.newest_id(peer) else {
            return false;
        };
        let entry = self.read_up_to.entry(peer.to_owned()).or_insert(0);
        let moved = newest > *entry;
        *entry = (*entry).max(newest);
        moved
    }

    /// Whether the server should hear of a read: a message from `peer` is held that the
    /// server's cursor has not passed and this client's has.
    pub fn read_to_report(&self, peer: &str) -> Option<i64> {
        if self.me.as_deref() == Some(peer) {
            return None;
        }
        let local = self.read_up_to.get(peer).copied().unwrap_or(0);
        let server = self.server_read_cursor(peer);
        (local > server && self.incoming_between(peer, server, local) > 0).then_some(local)
    }

    /// A `read` answer or event: the viewer's cursor and unread count of one conversation.
    pub fn apply_read_state(&mut self, state: ReadState) {
        let view = self.server.entry(state.with).or_default();
        view.cursor = view.cursor.max(state.up_to);
        let counted = Counted {
            unread: state.unread as usize,
            as_of: state.as_of,
            cursor: state.up_to,
        };
        if view
            .counted
            .is_none_or(|c| (c.as_of, c.cursor) <= (counted.as_of, counted.cursor))
        {
            view.counted = Some(counted);
        }
    }

    /// A `conversations` page (latest activity first; `has_more`: the server has older ones).
    pub fn apply_conversations(&mut self, summaries: Vec<ConversationSummary>, has_more: bool) {
        let oldest = summaries.last().map(|s| s.last.id);
        for summary in summaries {
            let peer = summary.user_id.clone();
            if !self.peers.contains_key(&peer) {
                self.directory.insert(
                    peer.clone(),
                    Peer {
                        user_id: summary.user_id,
                        username: summary.username,
                        connected: summary.connected,
                        protected: false,
                    },
                );
            }
            let as_of = summary.last.id;
            let view = self.server.entry(peer.clone()).or_default();
            // Counted when the page was: a `seen` heard since may be further (the larger
            // counts); none means the two no longer share receipts.
            view.peer_read = match (summary.peer_read, view.peer_read) {
                (Some(page), Some(held)) if held.up_to > page.up_to => Some(held),
                (page, _) => page,
            };
            if view.last.as_ref().is_none_or(|m| m.id <= as_of) {
                view.last = Some(summary.last);
            }
            self.apply_read_state(ReadState {
                with: peer,
                up_to: summary.read_up_to,
                unread: summary.unread,
                as_of,
            });
        }
        self.conversations_before = if has_more { oldest } else { None };
    }

    /// The `before` of the next `conversations` page, while the server said it has more.
    pub fn conversations_before(&self) -> Option<i64> {
        self.conversations_before
    }

    /// `seen`: `by` has read the viewer's messages up to `upTo`.
    pub fn apply_seen(&mut self, seen: Seen) {
        let mark = ReadMark {
            up_to: seen.up_to,
            at: seen.at,
        };
        let view = self.server.entry(seen.by).or_default();
        if view.peer_read.is_none_or(|m| mark.up_to >= m.up_to) {
            view.peer_read = Some(mark);
        }
    }

    /// How far `peer` has read the viewer's messages, and when; `None` when unknown or when
    /// the viewer does not share read receipts (then nobody's are shown).
    pub fn seen(&self, peer: &str) -> Option<ReadMark> {
        if self.settings.and_then(|s| s.read_receipts) == Some(false) {
            return None;
        }
        self.server
            .get(peer)
            .and_then(|s| s.peer_read)
            .filter(|m| m.up_to > 0)
    }

    /// When `peer` read the viewer's message `id`, if it is the newest of the viewer's messages
    /// they have read (the one that says "Seen"); see [`ChatState::seen`].
    pub fn seen_at(&self, peer: &str, id: i64) -> Option<i64> {
        let mark = self.seen(peer)?;
        if id > mark.up_to {
            return None;
        }
        let newest_read = self
            .conversations
            .get(peer)?
            .up_to(mark.up_to)
            .iter()
            .rev()
            .find(|m| Some(&m.from) == self.me.as_ref())
            .map(|m| m.id)?;
        (newest_read == id).then_some(mark.at)
    }

    /// `typing` from `from`: shown until `until` (the session's clock).
    pub fn set_typing(&mut self, from: &str, until: u64) {
        if self.me.as_deref() != Some(from) {
            self.server.entry(from.to_owned()).or_default().typing_until = Some(until);
        }
    }

    /// Whether `peer` is typing to the viewer.
    pub fn typing(&self, peer: &str) -> bool {
        self.server
            .get(peer)
            .is_some_and(|s| s.typing_until.is_some())
    }

    /// `peer`'s message arrived: they are no longer typing it. Returns whether they were.
    pub fn stop_typing(&mut self, peer: &str) -> bool {
        self.server
            .get_mut(peer)
            .and_then(|s| s.typing_until.take())
            .is_some()
    }

    /// Forgets typing that ran out by `now`. Returns whether any did.
    pub fn expire_typing(&mut self, now: u64) -> bool {
        let mut expired = false;
        for view in self.server.values_mut() {
            if view.typing_until.is_some_and(|until| until <= now) {
                view.typing_until = None;
                expired = true;
            }
        }
        expired
    }

    /// When the next "is typing" runs out.
    pub fn next_typing_expiry(&self) -> Option<u64> {
        self.server.values().filter_map(|s| s.typing_until).min()
    }

    /// The viewer's settings, once the server said.
    pub fn settings(&self) -> Option<Settings> {
        self.settings
    }

    /// `settings` from the server (answer or event); fields it leaves out stay as they were.
    pub fn apply_settings(&mut self, settings: Settings) {
        let current = self.settings.get_or_insert_with(Settings::default);
        if settings.read_receipts.is_some() {
            current.read_receipts = settings.read_receipts;
        }
    }

    /// The answer to the last search, if any is shown.
    pub fn search(&self) -> Option<&SearchResults> {
        self.search.as_ref()
    }

    pub fn set_search(&mut self, results: Option<SearchResults>) {
        if let Some(results) = &results {
            for user in &results.users {
                if !self.peers.contains_key(&user.user_id) {
                    self.directory.insert(user.user_id.clone(), user.clone());
                }
            }
        }
        self.search = results;
    }

    /// Everyone the viewer has a conversation with (held messages or a server summary).
    fn conversation_peers(&self) -> Vec<&str> {
        let mut peers: Vec<&str> = self
            .conversations
            .iter()
            .filter(|(_, m)| !m.0.is_empty())
            .map(|(p, _)| p.as_str())
            .chain(
                self.server
                    .keys()
                    .filter(|p| self.server[*p].last.is_some())
                    .map(String::as_str),
            )
            .collect();
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// The viewer's conversations, latest activity first: the newest message held, the newest
    /// the server named, or a message still in `pending` (the outbox), whichever is newest.
    pub fn conversation_list(&self, pending: &[OutboxEntry]) -> Vec<ConversationEntry> {
        let mut peers = self.conversation_peers();
        peers.extend(pending.iter().map(|e| e.to.as_str()));
        peers.sort_unstable();
        peers.dedup();
        // Placed one by one (peers are in id order): a sort of its own would be more code in
        // the wasm than the few hundred conversations a page lists need.
        let mut list: Vec<((i64, i64), ConversationEntry)> = Vec::with_capacity(peers.len());
        for (key, entry) in peers
            .into_iter()
            .filter_map(|peer| self.entry_with_key(peer, pending))
        {
            let at = list.partition_point(|(k, _)| *k >= key);
            list.insert(at, (key, entry));
        }
        list.into_iter().map(|(_, entry)| entry).collect()
    }

    /// The rows of a messenger's main list, by user id: the conversations by latest activity,
    /// then the roster's people without one (the viewer first, then by name).
    pub fn list_order(&self, pending: &[OutboxEntry]) -> Vec<String> {
        let mut ids: Vec<String> = self
            .conversation_list(pending)
            .into_iter()
            .map(|c| c.user_id)
            .collect();
        let mut listed: Vec<&str> = ids.iter().map(String::as_str).collect();
        listed.sort_unstable();
        let others: Vec<String> = self
            .peers()
            .into_iter()
            .map(|p| p.user_id)
            .filter(|id| listed.binary_search(&id.as_str()).is_err())
            .collect();
        ids.extend(others);
        ids
    }

    /// One conversation as [`ChatState::conversation_list`] has it (`None`: no message yet).
    pub fn conversation_entry(
        &self,
        peer: &str,
        pending: &[OutboxEntry],
    ) -> Option<ConversationEntry> {
        self.entry_with_key(peer, pending).map(|(_, entry)| entry)
    }

    /// The entry, and its place in the list: the latest activity's time, then its id (a
    /// message not sent yet is newer than any stored at the same time).
    fn entry_with_key(
        &self,
        peer: &str,
        pending: &[OutboxEntry],
    ) -> Option<((i64, i64), ConversationEntry)> {
        let me = self.me.as_deref();
        let held = self.conversations.get(peer).and_then(|m| m.0.last());
        let named = self.server.get(peer).and_then(|s| s.last.as_ref());
        let stored = held
            .into_iter()
            .chain(named)
            .max_by_key(|m| (m.ts, m.id))
            .map(|m| {
                let preview = Preview {
                    content: m.content.clone(),
                    ts: m.ts,
                    mine: Some(m.from.as_str()) == me,
                    pending: false,
                    failed: false,
                };
                ((m.ts, m.id), preview)
            });
        let waiting = pending
            .iter()
            .filter(|e| e.to == peer)
            .max_by_key(|e| e.created_at)
            .map(|e| {
                let preview = Preview {
                    content: e.content.clone(),
                    ts: e.created_at,
                    mine: true,
                    pending: true,
                    failed: e.failed.is_some(),
                };
                ((e.created_at, i64::MAX), preview)
            });
        let (key, last) = stored.into_iter().chain(waiting).max_by_key(|(k, _)| *k)?;
        let known = self.peer(peer);
        let entry = ConversationEntry {
            user_id: peer.to_owned(),
            username: known.map(|p| p.username.clone()).unwrap_or_default(),
            connected: known.is_some_and(|p| p.connected),
            is_me: me == Some(peer),
            last,
            unread: self.unread(peer),
        };
        Some((key, entry))
    }

    /// `users`: the whole roster, each entry with the viewer's conversation with that user.
    pub fn apply_users(&mut self, entries: Vec<UserEntry>) {
        self.peers.clear();
        self.peers.reserve(entries.len());
        for mut entry in entries {
            for message in std::mem::take(&mut entry.messages) {
                self.insert(message);
            }
            // The viewer's read cursor of this conversation: the held messages after it are
            // unread, whether or not a `conversations` page named it.
            if let Some(up_to) = entry.read_up_to {
                let view = self.server.entry(entry.user_id.clone()).or_default();
                view.cursor = view.cursor.max(up_to);
            }
            self.peers.insert(
                entry.user_id.clone(),
                Peer {
                    protected: entry.is_protected(),
                    user_id: entry.user_id,
                    username: entry.username,
                    connected: entry.connected,
                },
            );
        }
    }

    /// Whether the roster last said a passkey protects this user's name.
    fn was_protected(&self, user_id: &str) -> bool {
        self.peers.get(user_id).is_some_and(|p| p.protected)
    }

    /// `user connected`: its `protected`, when present, is news (the mark given or taken away);
    /// absent, the mark stays as the roster left it.
    pub fn user_connected(&mut self, entry: UserEntry) {
        let protected = entry
            .protected
            .unwrap_or_else(|| self.was_protected(&entry.user_id));
        self.peers.insert(
            entry.user_id.clone(),
            Peer {
                user_id: entry.user_id,
                username: entry.username,
                connected: true,
                protected,
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
        let conversation = &mut self.conversations.entry(peer).or_default().0;
        match conversation.binary_search_by_key(&message.id, |m| m.id) {
            Ok(_) => false,
            Err(at) => {
                conversation.insert(at, message);
                true
            }
        }
    }

    /// `restore_state`'s answer: presence replaced, missed messages merged.
    pub fn apply_restore(&mut self, restored: RestoreState) {
        for presence in restored.users {
            let protected = presence.protected || self.was_protected(&presence.user_id);
            self.peers.insert(
                presence.user_id.clone(),
                Peer {
                    user_id: presence.user_id,
                    username: presence.username,
                    connected: presence.connected,
                    protected,
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
        s.insert(msg(2, "bob", "me"));
        s.insert(msg(3, "me", "me"));
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
            read_up_to: None,
            protected: None,
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

    fn summary(peer: &str, last: Message, unread: u32, read_up_to: i64) -> ConversationSummary {
        ConversationSummary {
            user_id: peer.into(),
            username: format!("{peer}-name"),
            connected: false,
            last,
            unread,
            read_up_to,
            peer_read: None,
        }
    }

    #[test]
    fn unread_is_the_servers_count_plus_the_held_messages_it_did_not_count() {
        let mut s = ChatState::new(Some("me".into()));
        // The server counted 3 of bob's messages after cursor 2, as of message 10; this client
        // holds only 9 and 10 of them (the rest is older history).
        s.insert(msg(9, "bob", "me"));
        s.insert(msg(10, "bob", "me"));
        s.apply_conversations(vec![summary("bob", msg(10, "bob", "me"), 3, 2)], false);
        assert_eq!(
            s.unread("bob"),
            3,
            "held messages up to asOf are in the count"
        );
        // Live messages after asOf add to it.
        s.insert(msg(11, "bob", "me"));
        s.insert(msg(12, "bob", "me"));
        assert_eq!(s.unread("bob"), 5);
        assert_eq!(s.total_unread(), 5);
        // Read here up to 12: nothing is left, whatever the server counted.
        assert!(s.mark_read("bob"));
        assert_eq!(s.unread("bob"), 0);
        assert!(!s.mark_read("bob"), "the cursor did not move");
        s.insert(msg(13, "bob", "me"));
        assert_eq!(s.unread("bob"), 1);
        // The server's cursor (another device read up to 13) counts as much as this one's.
        s.apply_read_state(ReadState {
            with: "bob".into(),
            up_to: 13,
            unread: 0,
            as_of: 13,
        });
        assert_eq!(s.unread("bob"), 0);
        // An older answer changes nothing: cursors only move forward.
        s.apply_read_state(ReadState {
            with: "bob".into(),
            up_to: 2,
            unread: 3,
            as_of: 10,
        });
        assert_eq!((s.unread("bob"), s.server_read_cursor("bob")), (0, 13));
    }

    #[test]
    fn messages_read_here_since_the_server_counted_come_off_its_count() {
        let mut s = ChatState::new(Some("me".into()));
        s.insert(msg(5, "bob", "me"));
        s.insert(msg(6, "bob", "me"));
        // Counted 4 (two of them older than anything held) after cursor 1, as of 8 (7 and 8 not
        // yet here).
        s.apply_conversations(vec![summary("bob", msg(8, "bob", "me"), 4, 1)], false);
        assert_eq!(s.unread("bob"), 4);
        s.mark_read("bob");
        assert_eq!(s.read_cursor("bob"), 6);
        assert_eq!(s.unread("bob"), 2, "5 and 6 were read here");
        assert_eq!(s.read_to_report("bob"), Some(6));
        s.insert(msg(7, "bob", "me"));
        s.insert(msg(8, "bob", "me"));
        s.insert(msg(9, "bob", "me"));
        assert_eq!(s.unread("bob"), 3, "7 and 8 were counted, 9 is new");
    }

    #[test]
    fn a_reply_reads_what_came_before_it() {
        let mut s = ChatState::new(Some("me".into()));
        s.insert(msg(1, "bob", "me"));
        s.insert(msg(2, "bob", "me"));
        assert_eq!(s.unread("bob"), 2);
        s.insert(msg(3, "me", "bob"));
        assert_eq!(s.unread("bob"), 0);
        s.insert(msg(4, "bob", "me"));
        assert_eq!(s.unread("bob"), 1);
        // The server counted after the viewer's message 8 too: 9 and 10 of 3..10.
        let mut s = ChatState::new(Some("me".into()));
        for id in [3, 5, 9, 10] {
            s.insert(msg(id, "bob", "me"));
        }
        s.insert(msg(8, "me", "bob"));
        s.apply_read_state(ReadState {
            with: "bob".into(),
            up_to: 2,
            unread: 2,
            as_of: 10,
        });
        assert_eq!(s.unread("bob"), 2);
        s.insert(msg(11, "bob", "me"));
        assert_eq!(s.unread("bob"), 3);
    }

    #[test]
    fn notes_to_self_are_never_unread_nor_reported() {
        let mut s = ChatState::new(Some("me".into()));
        s.insert(msg(1, "me", "me"));
        s.apply_conversations(vec![summary("me", msg(1, "me", "me"), 0, 0)], false);
        assert_eq!(s.unread("me"), 0);
        s.mark_read("me");
        assert_eq!(s.read_to_report("me"), None);
    }

    #[test]
    fn without_a_server_count_the_held_messages_after_the_cursor_are_unread() {
        let mut s = ChatState::new(Some("me".into()));
        s.insert(msg(1, "bob", "me"));
        s.insert(msg(2, "bob", "me"));
        assert_eq!(s.unread("bob"), 2);
        assert_eq!(s.read_to_report("bob"), None, "nothing read yet");
        s.mark_read("bob");
        assert_eq!(s.read_to_report("bob"), Some(2));
        // Only the viewer's own messages after the server's cursor: nothing to report.
        let mut s = ChatState::new(Some("me".into()));
        s.insert(msg(3, "me", "bob"));
        s.mark_read("bob");
        assert_eq!(s.read_to_report("bob"), None);
    }

    #[test]
    fn conversations_are_listed_by_latest_activity_and_a_new_message_moves_one_to_the_top() {
        let mut s = ChatState::new(Some("me".into()));
        s.apply_users(vec![UserEntry {
            user_id: "ann".into(),
            username: "Ann".into(),
            connected: true,
            messages: vec![msg(3, "ann", "me")],
            read_up_to: None,
            protected: None,
        }]);
        // Bob is outside the roster: the summary names him and his newest message.
        s.apply_conversations(
            vec![
                summary("bob", msg(5, "me", "bob"), 0, 0),
                summary("cid", msg(2, "cid", "me"), 1, 0),
            ],
            true,
        );
        assert_eq!(s.conversations_before(), Some(2));
        let order = |s: &ChatState, pending: &[OutboxEntry]| -> Vec<String> {
            s.conversation_list(pending)
                .into_iter()
                .map(|c| c.user_id)
                .collect()
        };
        assert_eq!(order(&s, &[]), ["bob", "ann", "cid"]);
        let bob = &s.conversation_list(&[])[0];
        assert_eq!(bob.username, "bob-name");
        assert_eq!(bob.last.content, "m5");
        assert!(bob.last.mine);
        assert_eq!(s.peer("bob").map(|p| p.username.as_str()), Some("bob-name"));
        let cid = &s.conversation_list(&[])[2];
        assert_eq!((cid.unread, cid.last.mine), (1, false));

        s.insert(msg(6, "cid", "me"));
        assert_eq!(order(&s, &[]), ["cid", "bob", "ann"]);
        let cid = &s.conversation_list(&[])[0];
        assert_eq!((cid.last.content.as_str(), cid.unread), ("m6", 2));

        // A message still in the outbox is the latest activity too.
        let mut pending = entry("x");
        pending.to = "ann".into();
        pending.created_at = 7;
        assert_eq!(order(&s, &[pending.clone()]), ["ann", "cid", "bob"]);
        let ann = &s.conversation_list(&[pending.clone()])[0];
        assert!(ann.last.pending && ann.last.mine && !ann.last.failed);
        // Refused, it says so (a row must not say "Sending" of what is not being sent).
        pending.failed = Some("No such person.".into());
        assert!(s.conversation_list(&[pending])[0].last.failed);
        // The roster's name wins over a summary's; the roster says who is online.
        assert_eq!((ann.username.as_str(), ann.connected), ("Ann", true));
        // The list: conversations first, then the roster's people without one.
        s.apply_users(vec![
            UserEntry {
                user_id: "zed".into(),
                username: "Zed".into(),
                connected: false,
                messages: vec![],
                read_up_to: None,
                protected: None,
            },
            UserEntry {
                user_id: "ann".into(),
                username: "Ann".into(),
                connected: true,
                messages: vec![],
                read_up_to: None,
                protected: None,
            },
            UserEntry {
                user_id: "me".into(),
                username: "Me".into(),
                connected: true,
                messages: vec![],
                read_up_to: None,
                protected: None,
            },
        ]);
        assert_eq!(s.list_order(&[]), ["cid", "bob", "ann", "me", "zed"]);
        // The last page: no more to load.
        s.apply_conversations(vec![], false);
        assert_eq!(s.conversations_before(), None);
    }

    #[test]
    fn the_list_is_ordered_by_the_newest_messages_time_with_its_id_to_break_ties() {
        let mut s = ChatState::new(Some("me".into()));
        let at = |id: i64, ts: i64, from: &str| Message {
            ts,
            ..msg(id, from, "me")
        };
        // Ids and times disagree (stored by nodes whose clocks differ): the time orders.
        s.insert(at(10, 1_000, "ann"));
        s.insert(at(9, 2_000, "bob"));
        // The same time: the larger id first.
        s.insert(at(7, 500, "cid"));
        s.insert(at(8, 500, "dan"));
        // A summary's newest message counts the same way.
        s.apply_conversations(vec![summary("eve", at(6, 1_500, "eve"), 1, 0)], false);
        let order = |s: &ChatState, pending: &[OutboxEntry]| -> Vec<String> {
            s.conversation_list(pending)
                .into_iter()
                .map(|c| c.user_id)
                .collect()
        };
        assert_eq!(order(&s, &[]), ["bob", "eve", "ann", "dan", "cid"]);
        assert_eq!(s.list_order(&[]), ["bob", "eve", "ann", "dan", "cid"]);
        // A message not sent yet, by when it was written.
        let mut waiting = entry("x");
        waiting.to = "cid".into();
        waiting.created_at = 1_200;
        assert_eq!(order(&s, &[waiting]), ["bob", "eve", "cid", "ann", "dan"]);
    }

    #[test]
    fn seen_marks_only_move_forward_and_are_hidden_while_the_viewer_shares_none() {
        let mut s = ChatState::new(Some("me".into()));
        assert_eq!(s.seen("bob"), None);
        let mut with_mark = summary("bob", msg(4, "me", "bob"), 0, 0);
        with_mark.peer_read = Some(ReadMark { up_to: 3, at: 30 });
        s.apply_conversations(vec![with_mark], false);
        assert_eq!(s.seen("bob"), Some(ReadMark { up_to: 3, at: 30 }));
        s.apply_seen(Seen {
            by: "bob".into(),
            up_to: 4,
            at: 40,
        });
        s.apply_seen(Seen {
            by: "bob".into(),
            up_to: 2,
            at: 50,
        });
        assert_eq!(s.seen("bob"), Some(ReadMark { up_to: 4, at: 40 }));
        // "Seen" goes on the newest of the viewer's messages up to the mark.
        s.insert(msg(2, "me", "bob"));
        s.insert(msg(3, "bob", "me"));
        s.insert(msg(4, "me", "bob"));
        s.insert(msg(5, "me", "bob"));
        assert_eq!(s.seen_at("bob", 4), Some(40));
        assert_eq!((s.seen_at("bob", 2), s.seen_at("bob", 5)), (None, None));
        // The viewer stops sharing receipts: nobody's show.
        s.apply_settings(Settings {
            read_receipts: Some(false),
        });
        assert_eq!(s.seen("bob"), None);
        s.apply_settings(Settings {
            read_receipts: Some(true),
        });
        assert!(s.seen("bob").is_some());
        // A summary without one (either side stopped sharing) clears it.
        s.apply_conversations(vec![summary("bob", msg(4, "me", "bob"), 0, 0)], false);
        assert_eq!(s.seen("bob"), None);
    }

    #[test]
    fn a_page_counted_before_a_seen_does_not_move_seen_back() {
        let mut s = ChatState::new(Some("me".into()));
        s.insert(msg(2, "me", "bob"));
        s.insert(msg(4, "me", "bob"));
        s.apply_seen(Seen {
            by: "bob".into(),
            up_to: 4,
            at: 40,
        });
        // A conversations page the server counted before bob read message 4 (asked before the
        // `seen`, answered after it).
        let mut older = summary("bob", msg(4, "me", "bob"), 0, 0);
        older.peer_read = Some(ReadMark { up_to: 2, at: 20 });
        s.apply_conversations(vec![older], false);
        assert_eq!(s.seen("bob"), Some(ReadMark { up_to: 4, at: 40 }));
        assert_eq!((s.seen_at("bob", 4), s.seen_at("bob", 2)), (Some(40), None));
        // A newer one moves it on.
        let mut newer = summary("bob", msg(4, "me", "bob"), 0, 0);
        newer.peer_read = Some(ReadMark { up_to: 4, at: 45 });
        s.apply_conversations(vec![newer], false);
        assert_eq!(s.seen("bob"), Some(ReadMark { up_to: 4, at: 45 }));
        // The read cursor never goes back either.
        s.apply_conversations(vec![summary("bob", msg(4, "me", "bob"), 0, 3)], false);
        s.apply_conversations(vec![summary("bob", msg(4, "me", "bob"), 0, 1)], false);
        assert_eq!(s.read_cursor("bob"), 3);
    }

    #[test]
    fn typing_shows_until_it_runs_out_or_their_message_comes() {
        let mut s = ChatState::new(Some("me".into()));
        s.set_typing("bob", 6_000);
        s.set_typing("me", 6_000);
        assert!(s.typing("bob"));
        assert!(!s.typing("me"), "one's own tabs are not someone typing");
        assert_eq!(s.next_typing_expiry(), Some(6_000));
        assert!(!s.expire_typing(5_999));
        assert!(s.expire_typing(6_000));
        assert!(!s.typing("bob"));
        s.set_typing("bob", 9_000);
        assert!(s.stop_typing("bob"));
        assert_eq!(s.next_typing_expiry(), None);
    }

    /// The roster's passkey mark stays through later presence (`user connected`, a restore)
    /// that carries no news of it, is never lent to another account of the same name, and goes
    /// when `user connected` says the last passkey went.
    #[test]
    fn the_passkey_mark_of_the_roster_survives_presence_updates() {
        let mut s = ChatState::new(Some("me".into()));
        let entry = |id: &str, protected: Option<bool>| UserEntry {
            user_id: id.into(),
            username: "ada".into(),
            connected: false,
            messages: vec![],
            read_up_to: None,
            protected,
        };
        s.apply_users(vec![entry("a1", Some(true)), entry("a2", None)]);
        let marked = |s: &ChatState, id: &str| s.peer(id).is_some_and(|p| p.protected);
        assert!(marked(&s, "a1") && !marked(&s, "a2"));
        s.user_connected(entry("a1", None));
        s.user_connected(entry("a2", None));
        assert!(marked(&s, "a1") && !marked(&s, "a2"));
        s.apply_restore(RestoreState {
            users: vec![
                Presence {
                    user_id: "a1".into(),
                    username: "ada".into(),
                    connected: true,
                    protected: false,
                },
                Presence {
                    user_id: "a2".into(),
                    username: "ada".into(),
                    connected: true,
                    protected: true,
                },
            ],
            messages: vec![],
            has_more: false,
        });
        assert!(marked(&s, "a1"), "kept through a restore");
        assert!(marked(&s, "a2"), "a restore's mark is taken");
        s.apply_users(vec![entry("a1", None)]);
        assert!(!marked(&s, "a1"), "a new roster says it is gone");
        s.user_connected(entry("a1", Some(true)));
        assert!(marked(&s, "a1"), "news: a passkey protects the name now");
        s.user_connected(entry("a1", Some(false)));
        assert!(!marked(&s, "a1"), "news: the last passkey went");
        s.user_connected(entry("a1", None));
        assert!(!marked(&s, "a1"), "no news keeps it gone");
    }

    #[test]
    fn search_results_name_people_outside_the_roster() {
        let mut s = ChatState::new(Some("me".into()));
        s.set_search(Some(SearchResults {
            query: "zo".into(),
            users: vec![Peer {
                user_id: "z".into(),
                username: "Zoe".into(),
                connected: true,
                protected: false,
            }],
            failed: false,
        }));
        assert_eq!(s.peer("z").map(|p| p.username.as_str()), Some("Zoe"));
        s.set_search(None);
        assert!(s.search().is_none());
        assert!(
            s.peer("z").is_some(),
            "still known, for the conversation opened from it"
        );
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
