//! The chat session on top of [`Core`]: what a Tether client does with the connection, written
//! once for every adapter (browser tab, native tool).
//!
//! It keeps [`ChatState`] and the [`Outbox`] up to date from the server's events; after every
//! (re)connect it asks `restore_state` for what it missed since the last id it holds (holding
//! nothing, since the newest one in the connection's `users`) and then flushes the outbox in
//! order. After every (re)connect it also asks for the first page of `conversations` (summaries,
//! read cursors and unread counts) and the viewer's `settings`. Reading a conversation reports
//! its read cursor (`read`, debounced, one at a time), typing is sent at most every
//! [`TYPING_EVERY_MS`] per person, and a directory search (`users_search`) is debounced with at
//! most one in flight. The account's devices (`devices`, `revoke_device`) are asked for on
//! request, one request at a time. Like [`Core`] it does no I/O: adapters feed it everything that happens as an [`Input`]
//! to [`Session::step`], its one way in, and act on the [`SessionOutput`]s it queues. Its state
//! is private: adapters read it through accessors and change it only by stepping.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use protocol::json::FromJson;
use protocol::payloads::{
    ConversationList, ConversationsRequest, DeviceEntry, DeviceList, History, HistoryRequest,
    LogoutRequest, Message, ReadRequest, ReadState, RestoreState, RestoreStateRequest,
    RevokeDeviceRequest, Seen, SessionInfo, Settings, Typing, TypingRequest, UserEntry,
    UsersSearch, UsersSearchRequest,
};
use protocol::{events, Ack, ErrorCode};

use crate::chat::{new_client_id, AckOutcome, ChatState, Outbox, OutboxEntry, SearchResults};
use crate::core::{AckFailure, ConnState, Core, CoreEvent, Output, Proof, StopReason};
use crate::link::{Emitter, HubToTab, Link, SharedLink, TabToHub};
use crate::one_at_a_time::OneAtATime;
use crate::packet::{Arg, RawJson};

/// What a device request that got no answer says.
const NO_ANSWER: &str = "No answer from the server; try again.";
/// What a device request made while disconnected says.
const NOT_CONNECTED: &str = "Not connected; try again once online.";

/// How long a request may wait for its ack.
pub const ACK_TIMEOUT_MS: u64 = 10_000;

/// A read is reported this long after it happened, so that a burst of arrivals in an open
/// conversation is one `read`.
pub const READ_DEBOUNCE_MS: u64 = 300;
/// And at most this often per conversation while messages keep arriving (PROTOCOL.md, `read`:
/// the server's budget is `--read-marks-per-sec` per user).
pub const READ_EVERY_MS: u64 = 1_000;
/// `typing` is sent at most this often per person while the composer has input (the server
/// relays at most one per `--typing-every-ms`, 3 s by default).
pub const TYPING_EVERY_MS: u64 = 3_000;
/// "… is typing" shows this long after the last `typing`, unless a message from them comes.
pub const TYPING_SHOWN_MS: u64 = 6_000;
/// A search is asked this long after the last change to its query.
pub const SEARCH_DEBOUNCE_MS: u64 = 200;
/// Results asked of one search.
pub const SEARCH_LIMIT: u32 = 20;
/// The longest query the server takes, in characters; a longer one is cut.
pub const SEARCH_MAX_CHARS: usize = 64;
/// A request the server refused for now (`rate_limited`, `store_unavailable`) is asked again
/// after this long.
const REFUSED_RETRY_MS: u64 = 1_000;
/// A `conversations` page refused or unanswered again and again is asked after twice as long
/// each time (1, 2, 4 … s), at most this long: a slow server is not sent a page a client every
/// few seconds while the unanswered ones still run.
const CONVERSATIONS_RETRY_MAX_MS: u64 = 30_000;

/// How long to wait before asking again for a page that failed `failures` times in a row.
fn conversations_retry_ms(failures: u32) -> u64 {
    let doubled = REFUSED_RETRY_MS.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(CONVERSATIONS_RETRY_MAX_MS)
}

/// Everything that can happen to a session: what its transport, its hub and its clock report,
/// and what its user asks for. [`Session::step`] takes one at a time.
///
/// Inputs that need the connection ([`Input::LoadHistory`], [`Input::Logout`],
/// [`Input::Emit`]) do nothing while it is down, as before; a [`Input::Request`] is always
/// answered by one [`SessionEvent::Reply`] (at once, with `AckFailure::Disconnected`, when it
/// could not be sent).
pub enum Input<'a> {
    /// A text frame from the session's own transport.
    Frame(&'a str),
    /// The transport closed, or could not be opened or written to.
    TransportClosed,
    /// The key's answer to [`SessionOutput::Prove`] for this challenge (`None`: it cannot sign).
    Proof {
        challenge: &'a str,
        proof: Option<Proof>,
    },
    /// The time [`Session::next_deadline`] named has come (an early one does nothing).
    Timer,
    /// A message from the hub (a session on the shared connection).
    Hub(HubToTab),
    /// Connect, or connect again after a stop.
    Connect,
    Disconnect,
    /// The hub is unavailable: leave the shared connection for this own one, keeping the chat
    /// state and the outbox, and connect it.
    UseOwnConnection(Core),
    /// Disconnect and forget everything held (chat, outbox, the session it came on): someone
    /// else signs in next.
    Reset,
    /// Write a message: it goes to the outbox (persist it on [`SessionEvent::OutboxChanged`])
    /// with a fresh client id made from `wall_ms`, and is sent as soon as the connection allows.
    Send {
        to: &'a str,
        content: &'a str,
        wall_ms: i64,
    },
    /// Send a failed outbox entry again.
    Retry {
        client_id: &'a str,
    },
    /// Drop an outbox entry.
    Discard {
        client_id: &'a str,
    },
    /// Ask for the page of `peer`'s conversation before the oldest message held.
    LoadHistory {
        peer: &'a str,
    },
    /// Everything held of `peer`'s conversation has been seen (the conversation is open and
    /// visible): the read cursor moves here at once, and the server hears of it shortly.
    MarkRead {
        peer: &'a str,
    },
    /// The composer for `to` has input: `typing` is sent, at most every [`TYPING_EVERY_MS`].
    Typing {
        to: &'a str,
    },
    /// The search box says `query`: search the directory once it has rested a moment (an empty
    /// query clears the results).
    Search {
        query: &'a str,
    },
    /// Ask for the next page of conversations (older activity), if the server has more.
    LoadConversations,
    /// Share read receipts, or stop (then nobody's are shown either).
    SetReadReceipts {
        on: bool,
    },
    /// Ask for the account's devices (every session of it); the answer is in
    /// [`Session::devices`].
    LoadDevices,
    /// End another device's session (its sockets close on every node). This device's own is
    /// [`Input::Logout`].
    RevokeDevice {
        device_id: &'a str,
    },
    /// End the session on the server (every tab of it is disconnected); with `everywhere`,
    /// every session of the user.
    Logout {
        everywhere: bool,
    },
    /// Any event, without an ack.
    Emit {
        event: &'a str,
        data: &'a RawJson,
    },
    /// Any event with an ack: answered by [`SessionEvent::Reply`] with the same `tag` (the
    /// caller's own number, to tell its requests apart).
    Request {
        tag: u64,
        event: &'a str,
        data: &'a RawJson,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The connection state changed.
    State(ConnState),
    /// The server confirmed a session: store it (it is the auth of every later connect).
    Session(SessionInfo),
    /// The stored session was refused: forget it and sign in again.
    SignedOut,
    /// Another tab took this session over (tab policy `reject`); offer to take it back.
    Moved,
    /// Roster, presence or conversations changed.
    ChatChanged,
    /// A message someone else wrote arrived live (for notifications and announcements).
    Arrived(Message),
    /// The outbox changed (persist it).
    OutboxChanged,
    /// The read markers changed (persist them).
    ReadChanged,
    /// `restore_state` was answered after a (re)connect: the view is up to date.
    Restored,
    /// A server event this layer does not handle itself (first argument only).
    ServerEvent { event: String, data: RawJson },
    /// Answer to an [`Input::Request`] with this `tag`.
    Reply {
        tag: u64,
        result: Result<RawJson, AckFailure>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionOutput {
    OpenTransport,
    Send(String),
    CloseTransport,
    /// Sign this challenge (the connection's sid) with the browser's key and step
    /// [`Input::Proof`] with the result ([`crate::core::Output::Prove`]).
    Prove {
        challenge: String,
    },
    Event(SessionEvent),
}

/// A restore waiting for the connection's `users`: which kind, and when to ask without it (a
/// server outside the contract never sends it), so that the outbox still flushes.
#[derive(Debug, Clone, Copy)]
struct AfterUsers {
    peers_only: bool,
    at_latest: u64,
}

/// A restore the server refused for now (`rate_limited`, `store_unavailable`): asked again
/// from the same point once `at` has come.
#[derive(Debug, Clone, Copy)]
struct RetryRestore {
    peers_only: bool,
    since: i64,
    at: u64,
}

/// When a `read` was last sent to one person, and when `typing` was.
#[derive(Debug, Clone, Copy, Default)]
struct PeerTimes {
    read_sent: Option<u64>,
    typing_sent: Option<u64>,
}

/// The account's devices as the server last listed them, and the request in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    /// `None` until the first answer; oldest first, this one marked `current`.
    pub list: Option<Vec<DeviceEntry>>,
    /// A list or a revoke is in flight.
    pub busy: bool,
    /// Why the last request failed (the server's words), until the next one is answered.
    pub error: Option<String>,
}

/// A change of the viewer's settings asked of the server: it applies once the server accepts
/// it (its answer, or its `settings` event), never before, so a refused or lost request leaves
/// the settings as the server has them and says why here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    /// The change on its way (`None`: none).
    pub wanted: Option<Settings>,
    /// Why the last change was not made (the server's words, or no answer), until the next
    /// one is asked.
    pub error: Option<String>,
}

/// How long a refused restore waits before it is asked again.
const RESTORE_RETRY_MS: u64 = 1_000;

enum Pending {
    /// `peers_only`: presence comes from this connection's `users`, so the answer lists only
    /// the people in its messages. `since`: where it restores from.
    Restore {
        peers_only: bool,
        since: i64,
    },
    History {
        peer: String,
    },
    Outbox,
    Logout,
    Caller {
        tag: u64,
    },
    Conversations {
        before: Option<i64>,
    },
    /// `change`: a change asked for (`None`: the settings read after a connect).
    Settings {
        change: Option<Settings>,
    },
    Devices,
    Revoke {
        device_id: String,
    },
}

pub struct Session {
    core: Link,
    chat: ChatState,
    outbox: Outbox,
    pending: HashMap<u64, Pending>,
    outputs: std::collections::VecDeque<SessionOutput>,
    restored: bool,
    /// A `resync` came while a restore was running: once it is done, restore again from here
    /// (the running one may have started after the point this one needs).
    resync_from: Option<i64>,
    tabs: Option<u32>,
    moved: bool,
    /// The session `chat` was received on (from its `session` event).
    chat_session: Option<String>,
    /// Connected holding nothing: restore once this connection's `users` is here.
    restore_after_users: Option<AfterUsers>,
    /// A restore refused for now, to ask again.
    retry_restore: Option<RetryRestore>,
    /// The outbox sends nothing before this (the server refused its last send for now).
    outbox_paused_until: Option<u64>,
    /// Per person: when `read` and `typing` were last sent.
    times: FxHashMap<String, PeerTimes>,
    /// The `read`s to report (by person), one at a time.
    reads: OneAtATime<String>,
    /// A `conversations` page refused for now, to ask again at this time.
    conversations_due: Option<(Option<i64>, u64)>,
    /// `conversations` pages refused or unanswered in a row (the retry's backoff).
    conversations_failures: u32,
    /// The query the search box holds.
    search_wanted: Option<String>,
    /// When to ask for it (keyed by it), one search at a time.
    searches: OneAtATime<String>,
    /// The account's devices, once asked for.
    devices: Devices,
    /// A settings change on its way, or why the last one failed.
    settings_change: SettingsChange,
}

impl Session {
    /// A session on its own connection, starting from what the adapter kept (`chat`'s `me` and
    /// read markers, the outbox).
    pub fn new(core: Core, chat: ChatState, outbox: Outbox) -> Self {
        Self::with_link(Link::Own(core), chat, outbox)
    }

    /// A session on the browser's shared connection (a hub in a SharedWorker).
    pub fn shared(link: SharedLink, chat: ChatState, outbox: Outbox) -> Self {
        Self::with_link(Link::Shared(link), chat, outbox)
    }

    fn with_link(core: Link, chat: ChatState, outbox: Outbox) -> Self {
        Self {
            core,
            chat,
            outbox,
            pending: HashMap::new(),
            outputs: Default::default(),
            restored: false,
            resync_from: None,
            tabs: None,
            moved: false,
            chat_session: None,
            restore_after_users: None,
            retry_restore: None,
            outbox_paused_until: None,
            times: FxHashMap::default(),
            reads: OneAtATime::default(),
            conversations_due: None,
            conversations_failures: 0,
            search_wanted: None,
            searches: OneAtATime::default(),
            devices: Devices::default(),
            settings_change: SettingsChange::default(),
        }
    }

    /// A settings change on its way, or why the last one was not made
    /// ([`Input::SetReadReceipts`]).
    pub fn settings_change(&self) -> &SettingsChange {
        &self.settings_change
    }

    /// The account's devices, as last listed ([`Input::LoadDevices`]).
    pub fn devices(&self) -> &Devices {
        &self.devices
    }

    /// Roster, presence, conversations and read markers.
    pub fn chat(&self) -> &ChatState {
        &self.chat
    }

    /// Messages written and not yet acknowledged.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn state(&self) -> ConnState {
        self.core.state()
    }

    pub fn reconnects(&self) -> u32 {
        self.core.reconnects()
    }

    /// Whether the last disconnect was another tab taking the session over.
    pub fn moved(&self) -> bool {
        self.moved
    }

    /// How many sockets (tabs) of this user the server counts, once it said so.
    pub fn tabs(&self) -> Option<u32> {
        self.tabs
    }

    /// Whether this session runs on the shared connection.
    pub fn is_shared(&self) -> bool {
        matches!(self.core, Link::Shared(_))
    }

    /// Whether the hub has ever answered (a shared session only).
    pub fn heard_from_hub(&self) -> bool {
        match &self.core {
            Link::Shared(link) => link.heard_from_hub(),
            Link::Own(_) => true,
        }
    }

    /// When to step [`Input::Timer`] next.
    pub fn next_deadline(&self) -> Option<u64> {
        let restore = self.restore_after_users.map(|after| after.at_latest);
        let retry = self.retry_restore.map(|retry| retry.at);
        // Requests wait only while they could be sent: offline, or with one of their kind in
        // flight, a time passed would wake the adapter over and over.
        let online = matches!(self.core.state(), ConnState::Online { .. });
        let read = self.reads.deadline(online);
        let search = self.searches.deadline(online);
        let conversations = self.conversations_due.filter(|_| online).map(|(_, at)| at);
        self.core
            .next_deadline()
            .into_iter()
            .chain(restore)
            .chain(retry)
            .chain(self.outbox_paused_until)
            .chain(read)
            .chain(search)
            .chain(conversations)
            .chain(self.chat.next_typing_expiry())
            .min()
    }

    fn in_flight(&self, kind: impl Fn(&Pending) -> bool) -> bool {
        self.pending.values().any(kind)
    }

    /// The next thing for the adapter to do (its own transport, events).
    pub fn poll_output(&mut self) -> Option<SessionOutput> {
        self.outputs.pop_front()
    }

    /// The next message for the hub (shared sessions).
    pub fn poll_hub_message(&mut self) -> Option<TabToHub> {
        match &mut self.core {
            Link::Shared(link) => link.poll_message(),
            Link::Own(_) => None,
        }
    }

    /// Takes one input, and ends every one the same way: what the connection reported is acted
    /// on, then the outbox sends what it now may, then what that sent is queued. This is the
    /// only place that happens, so no input can forget it.
    pub fn step(&mut self, input: Input<'_>, now: u64) {
        self.apply(input, now);
        self.drain(now);
        self.pump(now);
        self.drain(now);
    }

    fn apply(&mut self, input: Input<'_>, now: u64) {
        match input {
            Input::Frame(text) => {
                // A connect frame answers the transport's open frame: it names what is held.
                if let Some(session_id) = &self.chat_session {
                    self.core.set_held(session_id, self.chat.last_id);
                }
                self.core.handle_frame(text, now);
            }
            Input::TransportClosed => self.core.handle_transport_closed(now),
            Input::Proof { challenge, proof } => {
                if let Link::Own(core) = &mut self.core {
                    core.handle_proof(challenge, proof);
                }
            }
            Input::Timer => self.on_timer(now),
            Input::Hub(message) => {
                if let Link::Shared(link) = &mut self.core {
                    link.handle_hub(message, now);
                }
            }
            Input::Connect => self.core.connect(now),
            Input::Disconnect => self.core.disconnect(),
            Input::UseOwnConnection(core) => {
                self.core = Link::Own(core);
                self.restored = false;
                // Requests in flight through the hub will never be answered.
                self.pending.clear();
                if self.settings_change.wanted.take().is_some() {
                    self.settings_change.error = Some(NO_ANSWER.into());
                }
                self.reads.forget_on_its_way();
                self.searches.forget_on_its_way();
                self.outbox.forget_in_flight();
                self.core.connect(now);
            }
            Input::Reset => {
                self.core.disconnect();
                self.chat = ChatState::new(None);
                self.outbox = Outbox::default();
                self.chat_session = None;
                self.tabs = None;
                self.moved = false;
                self.resync_from = None;
                self.retry_restore = None;
                self.restore_after_users = None;
                self.times.clear();
                self.reads.clear_wanted();
                self.conversations_due = None;
                self.conversations_failures = 0;
                self.search_wanted = None;
                self.searches.clear_wanted();
                self.devices = Devices::default();
                self.settings_change = SettingsChange::default();
                self.event(SessionEvent::OutboxChanged);
                self.event(SessionEvent::ChatChanged);
            }
            Input::Send {
                to,
                content,
                wall_ms,
            } => {
                self.outbox.push(OutboxEntry {
                    client_id: new_client_id(wall_ms),
                    to: to.to_owned(),
                    content: content.to_owned(),
                    created_at: wall_ms,
                    failed: None,
                });
                self.event(SessionEvent::OutboxChanged);
            }
            Input::Retry { client_id } => {
                self.outbox.retry(client_id);
                self.event(SessionEvent::OutboxChanged);
            }
            Input::Discard { client_id } => {
                self.outbox.discard(client_id);
                self.event(SessionEvent::OutboxChanged);
            }
            Input::LoadHistory { peer } => self.load_history(peer, now),
            Input::MarkRead { peer } => {
                if self.chat.mark_read(peer) {
                    self.event(SessionEvent::ReadChanged);
                }
                self.report_read_later(peer, now + READ_DEBOUNCE_MS);
            }
            Input::Typing { to } => self.send_typing(to, now),
            Input::Search { query } => self.search(query, now),
            Input::LoadConversations => {
                if let Some(before) = self.chat.conversations_before() {
                    self.request_conversations(Some(before), now);
                }
            }
            Input::SetReadReceipts { on } => {
                // Applied once the server accepts it (see `SettingsChange`).
                let change = Settings {
                    read_receipts: Some(on),
                };
                self.settings_change = if self.request_settings(Some(change), now) {
                    SettingsChange {
                        wanted: Some(change),
                        error: None,
                    }
                } else {
                    SettingsChange {
                        wanted: None,
                        error: Some(NOT_CONNECTED.into()),
                    }
                };
                self.event(SessionEvent::ChatChanged);
            }
            Input::LoadDevices => self.request_devices(None, now),
            Input::RevokeDevice { device_id } => self.request_devices(Some(device_id), now),
            Input::Logout { everywhere } => {
                let request = RawJson::of(&LogoutRequest { everywhere });
                if let Ok(id) =
                    self.core
                        .emit_with_ack(events::LOGOUT, &request, ACK_TIMEOUT_MS, now)
                {
                    self.pending.insert(id, Pending::Logout);
                }
            }
            Input::Emit { event, data } => {
                let _ = self.core.emit(event, data);
            }
            Input::Request { tag, event, data } => {
                match self.core.emit_with_ack(event, data, ACK_TIMEOUT_MS, now) {
                    Ok(id) => {
                        self.pending.insert(id, Pending::Caller { tag });
                    }
                    Err(_) => self.event(SessionEvent::Reply {
                        tag,
                        result: Err(AckFailure::Disconnected),
                    }),
                }
            }
        }
    }

    fn on_timer(&mut self, now: u64) {
        self.core.handle_timer(now);
        if self.chat.expire_typing(now) {
            self.event(SessionEvent::ChatChanged);
        }
        if let Some((before, at)) = self.conversations_due {
            if at <= now && matches!(self.core.state(), ConnState::Online { .. }) {
                self.conversations_due = None;
                self.request_conversations(before, now);
            }
        }
        if let Some(after) = self.restore_after_users {
            if after.at_latest <= now {
                self.restore_after_users = None;
                self.request_restore(after.peers_only, self.chat.last_id, now);
            }
        }
        if let Some(retry) = self.retry_restore {
            if retry.at <= now {
                self.retry_restore = None;
                self.request_restore(retry.peers_only, retry.since, now);
            }
        }
    }

    fn load_history(&mut self, peer: &str, now: u64) {
        let already_asked = self
            .pending
            .values()
            .any(|p| matches!(p, Pending::History { peer: asked } if asked == peer));
        if already_asked {
            return;
        }
        let request = HistoryRequest {
            with: peer.to_owned(),
            before: self.chat.oldest_id(peer),
            limit: Some(50),
        };
        let data = RawJson::of(&request);
        if let Ok(id) = self
            .core
            .emit_with_ack(events::HISTORY, &data, ACK_TIMEOUT_MS, now)
        {
            self.pending.insert(
                id,
                Pending::History {
                    peer: peer.to_owned(),
                },
            );
        }
    }

    fn pump(&mut self, now: u64) {
        self.pump_read(now);
        self.pump_search(now);
        // Set again below while it still holds: a deadline left behind would wake the adapter
        // again and again once passed.
        self.outbox_paused_until = None;
        if !self.restored {
            // Flush only after the state is restored, so acks land on an up-to-date view.
            return;
        }
        let before = self.outbox.entries().len();
        self.outbox_paused_until = self.outbox.pump(&mut self.core, now, ACK_TIMEOUT_MS);
        if let Some(id) = self.outbox.in_flight_id() {
            self.pending.entry(id).or_insert(Pending::Outbox);
        }
        if before != self.outbox.entries().len() {
            self.event(SessionEvent::OutboxChanged);
        }
    }

    /// Moves the core's outputs into ours, acting on its events.
    fn drain(&mut self, now: u64) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::OpenTransport => self.outputs.push_back(SessionOutput::OpenTransport),
                Output::Send(frame) => self.outputs.push_back(SessionOutput::Send(frame)),
                Output::CloseTransport => self.outputs.push_back(SessionOutput::CloseTransport),
                Output::Prove { challenge } => {
                    self.outputs.push_back(SessionOutput::Prove { challenge })
                }
                Output::Event(event) => self.on_core_event(event, now),
            }
        }
    }

    fn on_core_event(&mut self, event: CoreEvent, now: u64) {
        match event {
            CoreEvent::State(state) => {
                if !matches!(state, ConnState::Online { .. }) {
                    self.restored = false;
                    self.restore_after_users = None;
                    // The next connect restores from the newest message held; a point before
                    // it is kept for after that restore.
                    if let Some(retry) = self.retry_restore.take() {
                        if retry.since < self.chat.last_id {
                            self.restore_later(retry.since);
                        }
                    }
                }
                if state == ConnState::Stopped(StopReason::Unauthorized) {
                    self.event(SessionEvent::SignedOut);
                }
                if matches!(state, ConnState::Online { .. }) {
                    self.moved = false;
                }
                if state == ConnState::Stopped(StopReason::ServerDisconnect) && self.moved {
                    self.event(SessionEvent::Moved);
                }
                self.event(SessionEvent::State(state));
            }
            // A socket of our own gets `users` (everyone's presence) on every connect, so the
            // restore need only name the people in the messages it returns. A tab joining a
            // shared connection that is already up gets that connection's `users` again from
            // the hub, which may be old: it asks for everyone.
            CoreEvent::Connected { .. } => {
                self.request_conversations(None, now);
                self.request_settings(None, now);
                if let Some(query) = &self.search_wanted {
                    self.searches.want_at(query, now);
                }
                let peers_only = !self.is_shared();
                if self.chat.last_id == 0 {
                    // Holding nothing (a page just loaded): the `users` that follows carries
                    // each conversation's newest messages, older ones come from `history`, and
                    // a restore from 0 would page through the whole history. Restore from the
                    // newest message in `users` once it is here (that catches anything newer).
                    self.restore_after_users = Some(AfterUsers {
                        peers_only,
                        at_latest: now + ACK_TIMEOUT_MS,
                    });
                } else {
                    self.request_restore(peers_only, self.chat.last_id, now)
                }
            }
            CoreEvent::ConnectError { .. } => {}
            CoreEvent::Message { event, args, ack } => {
                self.on_server_event(&event, args, now);
                if let Some(id) = ack {
                    let _ = self.core.ack(id, &RawJson::null());
                }
            }
            CoreEvent::Ack { id, args } => self.on_ack(id, Ok(args), now),
            CoreEvent::AckFailed { id, reason } => self.on_ack(id, Err(reason), now),
        }
    }

    /// Asks for every message after `since`, and for presence (everyone's, or with
    /// `peers_only` only that of the people in the returned messages).
    fn request_restore(&mut self, peers_only: bool, since: i64, now: u64) {
        let request = RawJson::of(&RestoreStateRequest { since, peers_only });
        match self
            .core
            .emit_with_ack(events::RESTORE_STATE, &request, ACK_TIMEOUT_MS, now)
        {
            Ok(id) => {
                self.pending
                    .insert(id, Pending::Restore { peers_only, since });
            }
            // Offline: the next connect restores from the newest message held; a point before
            // it must not be forgotten, so it waits for that restore to finish.
            Err(_) if since < self.chat.last_id => self.restore_later(since),
            Err(_) => {}
        }
    }

    /// Remembers a point to restore from once the running restore (or the next connect's) is
    /// done; of several, the oldest.
    fn restore_later(&mut self, since: i64) {
        self.resync_from = Some(self.resync_from.map_or(since, |f| f.min(since)));
    }

    fn on_server_event(&mut self, event: &str, args: Vec<Arg>, now: u64) {
        let first = args.into_iter().next();
        match event {
            events::SESSION => {
                if let Some(info) = parse::<SessionInfo>(first) {
                    self.chat.me = Some(info.user_id.clone());
                    self.chat_session = Some(info.session_id.clone());
                    self.event(SessionEvent::Session(info));
                }
            }
            events::USERS => {
                if let Some(users) = parse::<Vec<UserEntry>>(first) {
                    self.chat.apply_users(users);
                    self.settle_outbox_from_chat();
                    self.event(SessionEvent::ChatChanged);
                    if let Some(after) = self.restore_after_users.take() {
                        self.request_restore(after.peers_only, self.chat.last_id, now);
                    }
                }
            }
            events::USER_CONNECTED => {
                if let Some(user) = parse::<UserEntry>(first) {
                    self.chat.user_connected(user);
                    self.event(SessionEvent::ChatChanged);
                }
            }
            events::SESSION_MOVED => self.moved = true,
            // The server could not queue a message for us: catch up from just before it (a
            // later message may have arrived since, so the newest id held can be past it).
            events::RESYNC => {
                let since = parse::<protocol::payloads::Resync>(first)
                    .and_then(|r| r.since)
                    .map_or(self.chat.last_id, |s| s.min(self.chat.last_id));
                let restoring = self.restore_after_users.is_some()
                    || self
                        .pending
                        .values()
                        .any(|p| matches!(p, Pending::Restore { .. }));
                if restoring {
                    self.restore_later(since);
                } else {
                    // Presence events may have been lost too: ask for everyone's.
                    self.request_restore(false, since, now);
                }
            }
            events::TABS => {
                if let Some(tabs) = parse::<protocol::payloads::Tabs>(first) {
                    self.tabs = Some(tabs.count);
                    self.event(SessionEvent::ChatChanged);
                }
            }
            events::USER_DISCONNECTED => {
                if let Some(user_id) = parse::<String>(first) {
                    self.chat.user_disconnected(&user_id);
                    self.event(SessionEvent::ChatChanged);
                }
            }
            events::READ => {
                if let Some(state) = parse::<ReadState>(first) {
                    self.chat.apply_read_state(state);
                    self.event(SessionEvent::ChatChanged);
                }
            }
            events::SEEN => {
                if let Some(seen) = parse::<Seen>(first) {
                    self.chat.apply_seen(seen);
                    self.event(SessionEvent::ChatChanged);
                }
            }
            events::TYPING => {
                if let Some(typing) = parse::<Typing>(first) {
                    self.chat.set_typing(&typing.from, now + TYPING_SHOWN_MS);
                    self.event(SessionEvent::ChatChanged);
                }
            }
            events::SETTINGS => {
                if let Some(settings) = parse::<Settings>(first) {
                    self.chat.apply_settings(settings);
                    self.event(SessionEvent::ChatChanged);
                }
            }
            events::PRIVATE_MESSAGE => {
                if let Some(message) = parse::<Message>(first) {
                    if self.outbox.settle(&message) {
                        self.event(SessionEvent::OutboxChanged);
                    }
                    if self.chat.stop_typing(&message.from) {
                        self.event(SessionEvent::ChatChanged);
                    }
                    let mine = self.chat.me.as_deref() == Some(message.from.as_str());
                    // A sender not known here (outside the roster): the newest conversations
                    // page names them.
                    if !mine && self.chat.peer(&message.from).is_none() {
                        self.request_conversations(None, now);
                    }
                    if self.chat.insert(message.clone()) {
                        self.event(SessionEvent::ChatChanged);
                        if !mine {
                            self.event(SessionEvent::Arrived(message));
                        }
                    }
                }
            }
            _ => self.event(SessionEvent::ServerEvent {
                event: event.to_owned(),
                data: first.unwrap_or_else(RawJson::null),
            }),
        }
    }

    fn on_ack(&mut self, id: u64, result: Result<Vec<Arg>, AckFailure>, now: u64) {
        if let Some(peer) = self.reads.answered(id) {
            return self.on_read_answer(peer, result, now);
        }
        if let Some(query) = self.searches.answered(id) {
            return self.on_search_answer(query, result, now);
        }
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match pending {
            Pending::Restore { peers_only, since } => {
                let restored =
                    parse::<Ack<RestoreState>>(result.ok().and_then(|a| a.into_iter().next()));
                // Refused for now (a read budget, the store): ask again from the same point in
                // a moment rather than stop with the rest missing.
                if let Some(Ack::Error(error)) = &restored {
                    if matches!(
                        error.code,
                        protocol::ErrorCode::RateLimited | protocol::ErrorCode::StoreUnavailable
                    ) {
                        self.retry_restore = Some(RetryRestore {
                            peers_only,
                            since,
                            at: now + RESTORE_RETRY_MS,
                        });
                        return;
                    }
                }
                if let Some(Ack::Ok(restored)) = restored {
                    let more = restored.has_more;
                    let reached = restored.messages.iter().map(|m| m.id).max();
                    self.chat.apply_restore(restored);
                    self.settle_outbox_from_chat();
                    self.event(SessionEvent::ChatChanged);
                    if let (true, Some(reached)) = (more, reached) {
                        // Cut at the server's limit: ask for the rest from where it stopped.
                        self.request_restore(peers_only, reached, now);
                        return;
                    }
                }
                if let Some(since) = self.resync_from.take() {
                    self.request_restore(false, since, now);
                    return;
                }
                // Even when restoring failed, what the outbox holds must still go out.
                self.restored = true;
                self.event(SessionEvent::Restored);
            }
            Pending::History { peer } => {
                let page = parse::<Ack<History>>(result.ok().and_then(|a| a.into_iter().next()));
                if let Some(Ack::Ok(page)) = page {
                    self.chat.apply_history(&peer, page);
                    self.event(SessionEvent::ChatChanged);
                }
            }
            Pending::Outbox => {
                let me = self.chat.me.clone().unwrap_or_default();
                let args = result.as_ref().ok().map(|a| a.as_slice());
                match self.outbox.on_ack(id, args, &me, now) {
                    AckOutcome::Sent(message) => {
                        self.chat.insert(message);
                        self.event(SessionEvent::ChatChanged);
                        self.event(SessionEvent::OutboxChanged);
                    }
                    AckOutcome::Failed => self.event(SessionEvent::OutboxChanged),
                    AckOutcome::Retry | AckOutcome::NotOurs => {}
                }
            }
            Pending::Logout => {}
            Pending::Conversations { before } => {
                // Not answered in time: asked again in a moment, as a refusal is (a lost
                // answer left the counts it carries unknown). A disconnect needs nothing: the
                // next connect asks for the first page.
                let timed_out = matches!(result, Err(AckFailure::Timeout));
                match parse::<Ack<ConversationList>>(first_arg(result)) {
                    Some(Ack::Ok(list)) => {
                        self.conversations_failures = 0;
                        self.chat
                            .apply_conversations(list.conversations, list.has_more);
                        // Reads made here that the server did not hear of (offline, a lost
                        // answer) are reported now.
                        let peers: Vec<String> = self.chat.read_up_to.keys().cloned().collect();
                        for peer in peers {
                            self.report_read_later(&peer, now);
                        }
                        self.event(SessionEvent::ChatChanged);
                    }
                    Some(Ack::Error(error)) if refused_for_now(error.code) => {
                        self.conversations_failures = self.conversations_failures.saturating_add(1);
                        let wait = conversations_retry_ms(self.conversations_failures);
                        self.conversations_due = Some((before, now + wait));
                    }
                    None if timed_out => {
                        self.conversations_failures = self.conversations_failures.saturating_add(1);
                        let wait = conversations_retry_ms(self.conversations_failures);
                        self.conversations_due = Some((before, now + wait));
                    }
                    _ => {}
                }
            }
            Pending::Settings { change } => {
                let answer = parse::<Ack<Settings>>(first_arg(result));
                if let Some(Ack::Ok(settings)) = &answer {
                    self.chat.apply_settings(*settings);
                }
                // The change's answer (of the latest asked: an earlier one's is not its).
                if change.is_some() && self.settings_change.wanted == change {
                    let another = self.in_flight(
                        |p| matches!(p, Pending::Settings { change: Some(c) } if Some(*c) == change),
                    );
                    if !another {
                        self.settings_change.wanted = None;
                        self.settings_change.error = match answer {
                            Some(Ack::Ok(_)) => None,
                            Some(Ack::Error(error)) => Some(error.message),
                            None => Some(NO_ANSWER.into()),
                        };
                    }
                }
                self.event(SessionEvent::ChatChanged);
            }
            Pending::Devices => {
                self.devices.busy = false;
                match parse::<Ack<DeviceList>>(first_arg(result)) {
                    Some(Ack::Ok(list)) => {
                        self.devices.list = Some(list.devices);
                        self.devices.error = None;
                    }
                    Some(Ack::Error(error)) => self.devices.error = Some(error.message),
                    None => self.devices.error = Some(NO_ANSWER.into()),
                }
                self.event(SessionEvent::ChatChanged);
            }
            Pending::Revoke { device_id } => {
                self.devices.busy = false;
                let answer = parse::<Ack<bool>>(first_arg(result));
                let gone = match &answer {
                    Some(Ack::Ok(_)) => true,
                    // Ended already (elsewhere, or expired): gone all the same.
                    Some(Ack::Error(error)) => error.code == ErrorCode::UnknownDevice,
                    None => false,
                };
                if gone {
                    if let Some(list) = &mut self.devices.list {
                        list.retain(|d| d.device_id != device_id);
                    }
                }
                self.devices.error = match answer {
                    Some(Ack::Error(error)) if !gone => Some(error.message),
                    None => Some(NO_ANSWER.into()),
                    _ => None,
                };
                self.event(SessionEvent::ChatChanged);
            }
            Pending::Caller { tag } => {
                let result =
                    result.map(|args| args.into_iter().next().unwrap_or_else(RawJson::null));
                self.event(SessionEvent::Reply { tag, result });
            }
        }
    }

    /// The answer to the `read` on its way for `peer`.
    fn on_read_answer(&mut self, peer: String, result: Result<Vec<Arg>, AckFailure>, now: u64) {
        match result {
            Ok(args) => match parse::<Ack<ReadState>>(args.into_iter().next()) {
                Some(Ack::Ok(state)) => {
                    self.chat.apply_read_state(state);
                    self.event(SessionEvent::ChatChanged);
                    // Read further while this one was on its way.
                    self.report_read_later(&peer, now + READ_DEBOUNCE_MS);
                }
                Some(Ack::Error(error)) if refused_for_now(error.code) => {
                    self.reads.want_at(&peer, now + REFUSED_RETRY_MS);
                }
                _ => {}
            },
            Err(AckFailure::Timeout) => self.reads.want_at(&peer, now + REFUSED_RETRY_MS),
            // The next connection's `conversations` answer reports it.
            Err(AckFailure::Disconnected) => {}
        }
    }

    /// The answer to the `users_search` on its way, for `query`.
    fn on_search_answer(&mut self, query: String, result: Result<Vec<Arg>, AckFailure>, now: u64) {
        let answer = parse::<Ack<UsersSearch>>(first_arg(result));
        let wanted = self.search_wanted.as_deref() == Some(query.as_str());
        let refused = match &answer {
            Some(Ack::Error(error)) => refused_for_now(error.code),
            Some(Ack::Ok(_)) => false,
            None => true,
        };
        if refused {
            // Asked again shortly: the query the box holds then.
            if let Some(wanted) = &self.search_wanted {
                self.searches.want_at(wanted, now + REFUSED_RETRY_MS);
            }
            return;
        }
        match answer {
            _ if !wanted => {}
            Some(Ack::Ok(found)) => {
                self.chat.set_search(Some(SearchResults {
                    query,
                    users: found.users.into_iter().map(Into::into).collect(),
                    failed: false,
                }));
                self.event(SessionEvent::ChatChanged);
            }
            _ => {
                self.chat.set_search(Some(SearchResults {
                    query,
                    users: Vec::new(),
                    failed: true,
                }));
                self.event(SessionEvent::ChatChanged);
            }
        }
        // The query changed while this one was asked: the new one goes now, unless it is still
        // settling.
        if let Some(newest) = self.search_wanted.as_ref().filter(|_| !wanted) {
            self.searches.want_unless_wanted(newest, now);
        }
    }

    /// Asks for a page of conversations (`before`: `None` for the first), unless one is asked.
    fn request_conversations(&mut self, before: Option<i64>, now: u64) {
        if self.in_flight(|p| matches!(p, Pending::Conversations { .. })) {
            return;
        }
        let request = RawJson::of(&ConversationsRequest {
            before,
            limit: None,
        });
        if let Ok(id) =
            self.core
                .emit_with_ack(events::CONVERSATIONS, &request, ACK_TIMEOUT_MS, now)
        {
            self.pending.insert(id, Pending::Conversations { before });
        }
    }

    /// Asks for the device list (`revoke`: None), or to end the device `revoke`; one request
    /// at a time, and only while connected (else it says so in [`Devices::error`]).
    fn request_devices(&mut self, revoke: Option<&str>, now: u64) {
        if self.devices.busy {
            return;
        }
        let sent = match revoke {
            None => self
                .core
                .emit_with_ack(events::DEVICES, &empty_object(), ACK_TIMEOUT_MS, now)
                .map(|id| (id, Pending::Devices)),
            Some(device_id) => {
                let request = RawJson::of(&RevokeDeviceRequest {
                    device_id: device_id.to_owned(),
                });
                self.core
                    .emit_with_ack(events::REVOKE_DEVICE, &request, ACK_TIMEOUT_MS, now)
                    .map(|id| {
                        (
                            id,
                            Pending::Revoke {
                                device_id: device_id.to_owned(),
                            },
                        )
                    })
            }
        };
        match sent {
            Ok((id, pending)) => {
                self.pending.insert(id, pending);
                self.devices.busy = true;
                self.devices.error = None;
            }
            Err(_) => self.devices.error = Some(NOT_CONNECTED.into()),
        }
        self.event(SessionEvent::ChatChanged);
    }

    /// Asks to change the settings named in `change` (`None`: read them). Returns whether the
    /// request went out.
    fn request_settings(&mut self, change: Option<Settings>, now: u64) -> bool {
        let request = RawJson::of(&change.unwrap_or_default());
        match self
            .core
            .emit_with_ack(events::SETTINGS, &request, ACK_TIMEOUT_MS, now)
        {
            Ok(id) => {
                self.pending.insert(id, Pending::Settings { change });
                true
            }
            Err(_) => false,
        }
    }

    /// Reports `peer`'s read cursor at `at` or before (but not within [`READ_EVERY_MS`] of
    /// the last report), if the server is behind this client's.
    fn report_read_later(&mut self, peer: &str, at: u64) {
        if self.chat.read_to_report(peer).is_none() {
            return;
        }
        let at = self
            .times
            .get(peer)
            .and_then(|t| t.read_sent)
            .map_or(at, |sent| at.max(sent + READ_EVERY_MS));
        self.reads.want_by(&peer.to_owned(), at);
    }

    /// Sends the `read` whose time has come, one at a time.
    fn pump_read(&mut self, now: u64) {
        let Some(peer) = self.reads.next(now).cloned() else {
            return;
        };
        let Some(up_to) = self.chat.read_to_report(&peer) else {
            self.reads.drop_key(&peer);
            return;
        };
        let request = RawJson::of(&ReadRequest {
            with: peer.clone(),
            up_to,
        });
        if let Ok(id) = self
            .core
            .emit_with_ack(events::READ, &request, ACK_TIMEOUT_MS, now)
        {
            self.times.entry(peer.clone()).or_default().read_sent = Some(now);
            self.reads.sent(peer, id);
        }
    }

    fn send_typing(&mut self, to: &str, now: u64) {
        if self.chat.me.as_deref() == Some(to) {
            return;
        }
        let recent = self
            .times
            .get(to)
            .and_then(|t| t.typing_sent)
            .is_some_and(|at| now < at + TYPING_EVERY_MS);
        if recent {
            return;
        }
        let request = RawJson::of(&TypingRequest { to: to.to_owned() });
        if self.core.emit(events::TYPING, &request).is_ok() {
            self.times.entry(to.to_owned()).or_default().typing_sent = Some(now);
        }
    }

    fn search(&mut self, query: &str, now: u64) {
        let query: String = query.trim().chars().take(SEARCH_MAX_CHARS).collect();
        let query = query.trim_end();
        if query.is_empty() {
            self.search_wanted = None;
            self.searches.clear_wanted();
            if self.chat.search().is_some() {
                self.chat.set_search(None);
                self.event(SessionEvent::ChatChanged);
            }
            return;
        }
        if self.search_wanted.as_deref() == Some(query) {
            return;
        }
        self.search_wanted = Some(query.to_owned());
        self.searches
            .want_only(&query.to_owned(), now + SEARCH_DEBOUNCE_MS);
    }

    /// Asks for the query the search box holds once it has rested, one search at a time.
    fn pump_search(&mut self, now: u64) {
        // What is wanted is always the query the box holds (`search` replaces it).
        let Some(query) = self.searches.next(now).cloned() else {
            return;
        };
        let answered = self
            .chat
            .search()
            .is_some_and(|r| r.query == query && !r.failed);
        if answered {
            self.searches.drop_key(&query);
            return;
        }
        let request = RawJson::of(&UsersSearchRequest {
            query: query.clone(),
            limit: Some(SEARCH_LIMIT),
        });
        if let Ok(id) = self
            .core
            .emit_with_ack(events::USERS_SEARCH, &request, ACK_TIMEOUT_MS, now)
        {
            self.searches.sent(query, id);
        }
    }

    /// Outbox entries whose message the server already has (seen in `users` or a restore).
    fn settle_outbox_from_chat(&mut self) {
        let settled: Vec<Message> = self
            .outbox
            .entries()
            .iter()
            .filter(|e| !self.outbox.is_in_flight(&e.client_id))
            .filter_map(|e| {
                self.chat
                    .conversation(&e.to)
                    .into_iter()
                    .find(|m| m.client_id.as_deref() == Some(e.client_id.as_str()))
            })
            .collect();
        if !settled.is_empty() {
            for message in &settled {
                self.outbox.settle(message);
            }
            self.event(SessionEvent::OutboxChanged);
        }
    }

    fn event(&mut self, event: SessionEvent) {
        self.outputs.push_back(SessionOutput::Event(event));
    }
}

/// `{}`: a request without parameters.
fn empty_object() -> RawJson {
    RawJson::of(&std::collections::BTreeMap::<String, bool>::new())
}

fn parse<T: FromJson>(arg: Option<Arg>) -> Option<T> {
    arg?.parse()
}

/// An ack's first argument, if it came.
fn first_arg(result: Result<Vec<Arg>, AckFailure>) -> Option<Arg> {
    result.ok().and_then(|args| args.into_iter().next())
}

/// The server refused for the moment: asking again later may succeed.
fn refused_for_now(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::RateLimited | ErrorCode::StoreUnavailable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::CoreConfig;
    use crate::testing::{auth, raw};
    use protocol::HandshakeAuth;
    use serde_json::json;

    fn sent(session: &mut Session) -> Vec<String> {
        std::iter::from_fn(|| session.poll_output())
            .filter_map(|o| match o {
                SessionOutput::Send(frame) => Some(frame),
                _ => None,
            })
            .collect()
    }

    /// A session on its own connection that holds nothing, just connected (namespace joined).
    fn connected() -> Session {
        let core = Core::new(
            CoreConfig::default(),
            || auth(json!({ "sessionID": "s" })),
            || 0.5,
        );
        let mut session = Session::new(core, ChatState::new(Some("me".into())), Outbox::default());
        session.step(Input::Connect, 0);
        session.step(Input::Frame(r#"0{"sid":"e","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#), 1);
        session.step(Input::Frame(r#"40{"sid":"s1"}"#), 2);
        session
    }

    /// A session that connected and was restored (its first `restore_state` answered).
    fn restored() -> Session {
        let mut session = connected();
        session.step(
            Input::Frame(r#"42["session",{"sessionID":"s","userID":"me"}]"#),
            2,
        );
        // Holding nothing, it restores once `users` is here.
        assert!(!sent(&mut session)
            .iter()
            .any(|f| f.contains("restore_state")));
        session.step(Input::Frame(r#"42["users",[]]"#), 2);
        // After a connect, presence comes with `users`: the restore asks for peers only.
        let frames = sent(&mut session);
        assert!(frames.contains(&r#"422["restore_state",{"since":0,"peersOnly":true}]"#.to_owned()));
        session.step(Input::Frame(r#"432[{"ok":{"messages":[{"id":7,"ts":1,"content":"x","from":"u","to":"me"}],"users":[],"hasMore":false}}]"#), 3);
        sent(&mut session);
        session
    }

    #[test]
    fn a_fresh_page_restores_from_the_newest_message_in_users_not_from_the_start() {
        let mut session = connected();
        session.step(
            Input::Frame(r#"42["session",{"sessionID":"s","userID":"me"}]"#),
            2,
        );
        assert!(!sent(&mut session)
            .iter()
            .any(|f| f.contains("restore_state")));
        session.step(Input::Frame(r#"42["users",[{"userID":"u","username":"u","connected":true,"messages":[{"id":40,"ts":1,"content":"x","from":"u","to":"me"},{"id":90,"ts":2,"content":"y","from":"me","to":"u"}]}]]"#), 3);
        assert_eq!(
            sent(&mut session),
            [r#"422["restore_state",{"since":90,"peersOnly":true}]"#]
        );
        session.step(
            Input::Frame(r#"432[{"ok":{"messages":[],"users":[],"hasMore":false}}]"#),
            4,
        );
        let restored = SessionOutput::Event(SessionEvent::Restored);
        assert!(std::iter::from_fn(|| session.poll_output()).any(|o| o == restored));
    }

    #[test]
    fn a_resync_before_users_waits_for_the_restore_that_users_starts() {
        let mut session = connected();
        sent(&mut session);
        session.step(Input::Frame(r#"42["resync",{"since":0}]"#), 3);
        assert!(sent(&mut session).is_empty());
        session.step(Input::Frame(r#"42["users",[{"userID":"u","username":"u","connected":true,"messages":[{"id":5,"ts":1,"content":"x","from":"u","to":"me"}]}]]"#), 4);
        assert_eq!(
            sent(&mut session),
            [r#"422["restore_state",{"since":5,"peersOnly":true}]"#]
        );
        session.step(
            Input::Frame(r#"432[{"ok":{"messages":[],"users":[],"hasMore":false}}]"#),
            5,
        );
        assert_eq!(sent(&mut session), [r#"423["restore_state",{"since":0}]"#]);
    }

    #[test]
    fn a_restore_refused_for_now_is_asked_again_from_the_same_point() {
        let restored = SessionOutput::Event(SessionEvent::Restored);
        let mut session = connected();
        sent(&mut session);
        // (The connect's conversations are answered: one not answered is asked again.)
        session.step(
            Input::Frame(r#"430[{"ok":{"conversations":[],"hasMore":false}}]"#),
            2,
        );
        session.step(Input::Timer, 2 + ACK_TIMEOUT_MS);
        assert_eq!(
            sent(&mut session),
            [r#"422["restore_state",{"since":0,"peersOnly":true}]"#]
        );
        let t = 3 + ACK_TIMEOUT_MS;
        session.step(
            Input::Frame(r#"432[{"error":{"code":"rate_limited","message":"wait"}}]"#),
            t,
        );
        // Not restored yet (the outbox keeps waiting), and asked again a second later.
        assert!(!std::iter::from_fn(|| session.poll_output()).any(|o| o == restored));
        assert_eq!(session.next_deadline(), Some(t + RESTORE_RETRY_MS));
        session.step(Input::Timer, t + RESTORE_RETRY_MS - 1);
        assert!(sent(&mut session).is_empty());
        session.step(Input::Timer, t + RESTORE_RETRY_MS);
        assert_eq!(
            sent(&mut session),
            [r#"423["restore_state",{"since":0,"peersOnly":true}]"#]
        );
        session.step(
            Input::Frame(r#"433[{"ok":{"messages":[],"users":[],"hasMore":false}}]"#),
            t + RESTORE_RETRY_MS + 1,
        );
        assert!(std::iter::from_fn(|| session.poll_output()).any(|o| o == restored));
    }

    #[test]
    fn without_users_a_fresh_session_still_restores_after_the_ack_timeout() {
        let mut session = connected();
        sent(&mut session);
        assert_eq!(session.next_deadline(), Some(2 + ACK_TIMEOUT_MS));
        session.step(Input::Timer, 2 + ACK_TIMEOUT_MS - 1);
        assert!(sent(&mut session).is_empty());
        session.step(Input::Timer, 2 + ACK_TIMEOUT_MS);
        assert_eq!(
            sent(&mut session),
            [r#"422["restore_state",{"since":0,"peersOnly":true}]"#]
        );
    }

    #[test]
    fn a_tab_joining_a_shared_connection_asks_for_everyones_presence() {
        let link = SharedLink::new(|| auth(json!({ "sessionID": "s" })));
        let mut session =
            Session::shared(link, ChatState::new(Some("me".into())), Outbox::default());
        session.step(Input::Connect, 0);
        while session.poll_hub_message().is_some() {}
        // The hub's connection is already up: it tells this tab, and replays that connection's
        // `users`, which may be old.
        session.step(
            Input::Hub(HubToTab::State {
                state: crate::link::SharedState::Online { sid: "x".into() },
                reconnects: 0,
            }),
            1,
        );
        session.step(
            Input::Hub(HubToTab::Connected {
                sid: "x".into(),
                reconnect: false,
            }),
            1,
        );
        let restores = |session: &mut Session| -> Vec<RawJson> {
            std::iter::from_fn(|| session.poll_hub_message())
                .filter_map(|m| match m {
                    TabToHub::Request { event, data, .. } if event == "restore_state" => Some(data),
                    _ => None,
                })
                .collect()
        };
        assert!(restores(&mut session).is_empty());
        let message = json!({ "id": 12, "ts": 1, "content": "x", "from": "u", "to": "me" });
        let users =
            json!([{ "userID": "u", "username": "u", "connected": false, "messages": [message] }]);
        session.step(
            Input::Hub(HubToTab::Message {
                event: "users".into(),
                args: vec![raw(users)],
            }),
            2,
        );
        assert_eq!(restores(&mut session), [raw(json!({ "since": 12 }))]);
    }

    #[test]
    fn a_restore_cut_at_the_limit_continues_with_the_same_kind_of_request() {
        let mut session = restored();
        session.step(Input::Frame(r#"42["resync"]"#), 4);
        sent(&mut session);
        session.step(Input::Frame(r#"433[{"ok":{"messages":[{"id":9,"ts":1,"content":"y","from":"u","to":"me"}],"users":[],"hasMore":true}}]"#), 5);
        assert_eq!(sent(&mut session), [r#"424["restore_state",{"since":9}]"#]);
    }

    #[test]
    fn resync_restores_from_before_the_message_that_could_not_be_queued() {
        let mut session = restored();
        // Message 5 could not be queued; 7 (held) came after it.
        session.step(Input::Frame(r#"42["resync",{"since":4}]"#), 4);
        assert_eq!(sent(&mut session), [r#"423["restore_state",{"since":4}]"#]);
        // A page cut at the limit continues after its own newest message, not the newest held.
        session.step(Input::Frame(r#"433[{"ok":{"messages":[{"id":5,"ts":1,"content":"y","from":"u","to":"me"}],"users":[],"hasMore":true}}]"#), 5);
        assert_eq!(sent(&mut session), [r#"424["restore_state",{"since":5}]"#]);
        // A cursor past what is held changes nothing: from the newest held.
        let mut session = restored();
        session.step(Input::Frame(r#"42["resync",{"since":40}]"#), 4);
        assert_eq!(sent(&mut session), [r#"423["restore_state",{"since":7}]"#]);
    }

    #[test]
    fn a_resync_during_a_restore_restores_again_from_its_point_once_that_one_is_done() {
        let mut session = restored();
        session.step(Input::Frame(r#"42["resync"]"#), 4);
        assert_eq!(sent(&mut session), [r#"423["restore_state",{"since":7}]"#]);
        session.step(Input::Frame(r#"42["resync",{"since":6}]"#), 5);
        session.step(Input::Frame(r#"42["resync",{"since":3}]"#), 5);
        assert!(sent(&mut session).is_empty());
        session.step(
            Input::Frame(r#"433[{"ok":{"messages":[],"users":[],"hasMore":false}}]"#),
            6,
        );
        assert_eq!(sent(&mut session), [r#"424["restore_state",{"since":3}]"#]);
        session.step(
            Input::Frame(r#"434[{"ok":{"messages":[],"users":[],"hasMore":false}}]"#),
            7,
        );
        assert!(sent(&mut session).is_empty());
    }

    #[test]
    fn a_resync_point_survives_the_connection_dropping_before_it_is_restored() {
        let mut session = restored();
        session.step(Input::Frame(r#"42["resync"]"#), 4);
        session.step(Input::Frame(r#"42["resync",{"since":3}]"#), 5);
        sent(&mut session);
        // The connection drops with the first restore unanswered.
        session.step(Input::TransportClosed, 6);
        let mut now = 6;
        while !matches!(session.state(), ConnState::Online { .. }) && now < 60_000 {
            now += 100;
            session.step(Input::Timer, now);
            if std::iter::from_fn(|| session.poll_output())
                .any(|o| o == SessionOutput::OpenTransport)
            {
                session.step(Input::Frame(r#"0{"sid":"f","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#), now);
                session.step(Input::Frame(r#"40{"sid":"s2"}"#), now);
            }
        }
        let frames = sent(&mut session);
        // The roster need not carry what the session holds (up to 7); what it missed before
        // that comes from the resync point below.
        assert!(
            frames.contains(&r#"40{"sessionID":"s","since":7}"#.to_owned()),
            "{frames:?}"
        );
        let reconnect_restore = frames
            .iter()
            .find(|f| f.contains("restore_state"))
            .expect("a restore after the reconnect");
        assert!(
            reconnect_restore.contains(r#"{"since":7,"peersOnly":true}"#),
            "{frames:?}"
        );
        let ack = reconnect_restore
            .strip_prefix("42")
            .and_then(|r| r.split('[').next())
            .unwrap();
        session.step(
            Input::Frame(&format!(
                r#"43{ack}[{{"ok":{{"messages":[],"users":[],"hasMore":false}}}}]"#
            )),
            now,
        );
        let frames = sent(&mut session);
        assert!(
            frames
                .iter()
                .any(|f| f.ends_with(r#"["restore_state",{"since":3}]"#)),
            "{frames:?}"
        );
    }

    #[test]
    fn resync_restores_from_the_last_id_held() {
        let mut session = restored();
        session.step(Input::Frame(r#"42["resync"]"#), 4);
        assert_eq!(sent(&mut session), [r#"423["restore_state",{"since":7}]"#]);
        // A second resync while that restore is in flight asks nothing more.
        session.step(Input::Frame(r#"42["resync"]"#), 5);
        assert!(sent(&mut session).is_empty());
    }

    /// The ack number of a frame the session sent (`42<n>[...]`).
    fn ack_number(frame: &str) -> u64 {
        let rest = frame.strip_prefix("42").unwrap();
        rest[..rest.find('[').unwrap()].parse().unwrap()
    }

    fn messages_sent(session: &mut Session) -> Vec<String> {
        sent(session)
            .into_iter()
            .filter(|f| f.contains(r#"["private message","#))
            .collect()
    }

    #[test]
    fn the_outbox_waits_for_the_restore_then_sends_one_message_per_ack_in_order() {
        let mut session = connected();
        let write = |session: &mut Session, content: &str, now: u64| {
            session.step(
                Input::Send {
                    to: "u",
                    content,
                    wall_ms: 1,
                },
                now,
            )
        };
        write(&mut session, "one", 2);
        session.step(
            Input::Frame(r#"42["session",{"sessionID":"s","userID":"me"}]"#),
            2,
        );
        session.step(Input::Frame(r#"42["users",[]]"#), 2);
        // Not before the restore is answered.
        assert!(messages_sent(&mut session).is_empty());
        session.step(
            Input::Frame(r#"432[{"ok":{"messages":[],"users":[],"hasMore":false}}]"#),
            3,
        );
        let first = messages_sent(&mut session);
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(first[0].contains(r#""content":"one""#), "{first:?}");
        // One at a time: the second waits for the first's ack.
        write(&mut session, "two", 4);
        assert!(messages_sent(&mut session).is_empty());
        let ack = ack_number(&first[0]);
        session.step(
            Input::Frame(&format!(r#"43{ack}[{{"ok":{{"id":8,"ts":5}}}}]"#)),
            5,
        );
        let second = messages_sent(&mut session);
        assert_eq!(second.len(), 1, "{second:?}");
        assert!(second[0].contains(r#""content":"two""#), "{second:?}");
        assert_eq!(session.outbox().entries().len(), 1);
        assert_eq!(session.chat().conversation("u")[0].id, 8);
        // A message refused for good stays, marked failed, until retried.
        let ack = ack_number(&second[0]);
        session.step(
            Input::Frame(&format!(
                r#"43{ack}[{{"error":{{"code":"invalid_content","message":"no"}}}}]"#
            )),
            6,
        );
        assert!(messages_sent(&mut session).is_empty());
        let client_id = session.outbox().entries()[0].client_id.clone();
        session.step(
            Input::Retry {
                client_id: &client_id,
            },
            7,
        );
        assert_eq!(messages_sent(&mut session).len(), 1);
    }

    #[test]
    fn a_message_the_server_refused_for_now_is_sent_again_when_the_pause_ends() {
        let mut session = restored();
        session.step(
            Input::Send {
                to: "u",
                content: "hi",
                wall_ms: 1,
            },
            4,
        );
        let first = messages_sent(&mut session);
        let ack = ack_number(&first[0]);
        session.step(
            Input::Frame(&format!(
                r#"43{ack}[{{"error":{{"code":"rate_limited","message":"wait"}}}}]"#
            )),
            5,
        );
        assert!(messages_sent(&mut session).is_empty());
        // The session wakes itself when the pause ends, not at the next unrelated event.
        assert_eq!(session.next_deadline(), Some(5 + 1_000));
        session.step(Input::Timer, 5 + 1_000);
        assert_eq!(messages_sent(&mut session).len(), 1);

        // Offline during the pause, the passed pause is no deadline (that would wake the
        // adapter over and over).
        let mut session = restored();
        session.step(
            Input::Send {
                to: "u",
                content: "hi",
                wall_ms: 1,
            },
            4,
        );
        let ack = ack_number(&messages_sent(&mut session)[0]);
        session.step(
            Input::Frame(&format!(
                r#"43{ack}[{{"error":{{"code":"rate_limited","message":"wait"}}}}]"#
            )),
            5,
        );
        session.step(Input::TransportClosed, 6);
        session.step(Input::Timer, 5 + 1_000);
        assert!(session.next_deadline().is_none_or(|at| at > 5 + 1_000));
    }

    #[test]
    fn a_request_is_answered_once_even_when_it_cannot_be_sent() {
        let replies = |session: &mut Session| -> Vec<(u64, Result<RawJson, AckFailure>)> {
            std::iter::from_fn(|| session.poll_output())
                .filter_map(|o| match o {
                    SessionOutput::Event(SessionEvent::Reply { tag, result }) => {
                        Some((tag, result))
                    }
                    _ => None,
                })
                .collect()
        };
        let data = raw(json!({ "x": 1 }));
        let core = Core::new(CoreConfig::default(), HandshakeAuth::default, || 0.5);
        let mut offline = Session::new(core, ChatState::new(None), Outbox::default());
        offline.step(
            Input::Request {
                tag: 7,
                event: "echo",
                data: &data,
            },
            0,
        );
        assert_eq!(replies(&mut offline), [(7, Err(AckFailure::Disconnected))]);

        let mut session = restored();
        session.step(
            Input::Request {
                tag: 8,
                event: "echo",
                data: &data,
            },
            4,
        );
        let frames = sent(&mut session);
        assert_eq!(frames, [r#"423["echo",{"x":1}]"#]);
        session.step(Input::Frame(r#"433[{"y":2}]"#), 5);
        assert_eq!(replies(&mut session), [(8, Ok(raw(json!({ "y": 2 }))))]);
    }

    fn events(session: &mut Session) -> Vec<SessionEvent> {
        std::iter::from_fn(|| session.poll_output())
            .filter_map(|o| match o {
                SessionOutput::Event(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    /// A DISCONNECT that says nothing (PROTOCOL.md, "Server disconnects") keeps the session
    /// and asks again after the backoff; only the handshake's `invalid username` signs out.
    /// `session moved` and this tab's own logout still stop at once.
    #[test]
    fn a_server_disconnect_keeps_the_session_until_the_handshake_refuses_it() {
        let mut session = restored();
        session.step(Input::Frame("41"), 10);
        let out = events(&mut session);
        assert!(!out.contains(&SessionEvent::SignedOut), "{out:?}");
        assert!(!out.contains(&SessionEvent::Moved), "{out:?}");
        let ConnState::Offline { retry_at } = session.state() else {
            panic!("no reconnect scheduled: {:?}", session.state())
        };
        assert_eq!(session.next_deadline(), Some(retry_at));
        session.step(Input::Timer, retry_at);
        let opened =
            std::iter::from_fn(|| session.poll_output()).any(|o| o == SessionOutput::OpenTransport);
        assert!(opened);
        session.step(Input::Frame(r#"0{"sid":"e2","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#), retry_at);
        // The reconnect resumes the same session, naming what it holds.
        assert_eq!(sent(&mut session), [r#"40{"sessionID":"s","since":7}"#]);
        session.step(
            Input::Frame(r#"44{"message":"invalid username"}"#),
            retry_at + 1,
        );
        assert!(events(&mut session).contains(&SessionEvent::SignedOut));
        assert_eq!(
            session.state(),
            ConnState::Stopped(StopReason::Unauthorized)
        );

        // A takeover: stopped, and offered back ("Use here").
        let mut session = restored();
        session.step(Input::Frame(r#"42["session moved"]"#), 10);
        session.step(Input::Frame("41"), 10);
        assert!(events(&mut session).contains(&SessionEvent::Moved));
        assert_eq!(
            session.state(),
            ConnState::Stopped(StopReason::ServerDisconnect)
        );
        assert_eq!(session.next_deadline(), None);

        // This tab's own logout: stopped at once, without a probe.
        let mut session = restored();
        session.step(Input::Logout { everywhere: false }, 10);
        assert_eq!(
            sent(&mut session),
            [r#"423["logout",{"everywhere":false}]"#]
        );
        session.step(Input::Frame("41"), 11);
        assert!(!events(&mut session).contains(&SessionEvent::Moved));
        assert_eq!(
            session.state(),
            ConnState::Stopped(StopReason::ServerDisconnect)
        );
        assert_eq!(session.next_deadline(), None);
        assert!(!session.moved());
    }

    /// `step` is the one way in, and it always finishes the job: nothing the connection
    /// produced is left for a later input to find.
    #[test]
    fn after_every_input_nothing_is_left_waiting_in_the_connection() {
        let data = RawJson::null();
        let mut session = restored();
        let mut now = 4;
        let mut step = |session: &mut Session, input: Input<'_>| {
            now += 1;
            session.step(input, now);
            assert!(session.core.poll_output().is_none(), "at {now}");
            while session.poll_output().is_some() {}
        };
        step(
            &mut session,
            Input::Send {
                to: "u",
                content: "a",
                wall_ms: 1,
            },
        );
        step(&mut session, Input::Frame(r#"42["resync"]"#));
        step(&mut session, Input::LoadHistory { peer: "u" });
        step(&mut session, Input::MarkRead { peer: "u" });
        step(
            &mut session,
            Input::Emit {
                event: "e",
                data: &data,
            },
        );
        step(
            &mut session,
            Input::Request {
                tag: 1,
                event: "e",
                data: &data,
            },
        );
        step(&mut session, Input::Discard { client_id: "none" });
        step(&mut session, Input::Timer);
        step(&mut session, Input::TransportClosed);
        step(&mut session, Input::Connect);
        step(&mut session, Input::Logout { everywhere: false });
        step(&mut session, Input::Disconnect);
        step(&mut session, Input::Reset);
        assert!(session.outbox().entries().is_empty());
        assert!(session.chat().conversation("u").is_empty());
    }

    /// A restored session whose `conversations` (ack 0) and `settings` (ack 1) are answered:
    /// u has 2 unread, counted as of message 7 (held) after the cursor 5.
    fn messenger() -> Session {
        let mut session = restored();
        session.step(Input::Frame(r#"430[{"ok":{"conversations":[{"userID":"u","username":"ursula","connected":true,"last":{"id":7,"ts":1,"content":"x","from":"u","to":"me"},"unread":2,"readUpTo":5}],"hasMore":false}}]"#), 3);
        session.step(Input::Frame(r#"431[{"ok":{"readReceipts":true}}]"#), 3);
        sent(&mut session);
        session
    }

    /// Sends every frame the session has, answering none.
    fn frames_with(session: &mut Session, what: &str) -> Vec<String> {
        sent(session)
            .into_iter()
            .filter(|f| f.contains(what))
            .collect()
    }

    #[test]
    fn every_connect_asks_for_the_conversations_and_the_settings() {
        let mut session = connected();
        assert_eq!(
            sent(&mut session),
            [
                r#"40{"sessionID":"s"}"#,
                r#"420["conversations",{"before":null,"limit":null}]"#,
                r#"421["settings",{}]"#
            ]
        );
        let mut session = messenger();
        assert_eq!(session.chat().unread("u"), 2);
        assert_eq!(session.chat().peer("u").unwrap().username, "ursula");
        assert_eq!(session.chat().settings().unwrap().read_receipts, Some(true));
        // Again after a reconnect (the counts may have moved meanwhile).
        session.step(Input::TransportClosed, 10);
        let ConnState::Offline { retry_at } = session.state() else {
            panic!("{:?}", session.state())
        };
        session.step(Input::Timer, retry_at);
        session.step(Input::Frame(r#"0{"sid":"e2","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#), retry_at);
        session.step(Input::Frame(r#"40{"sid":"s2"}"#), retry_at);
        let frames = sent(&mut session);
        assert!(
            frames
                .iter()
                .any(|f| f.ends_with(r#"["conversations",{"before":null,"limit":null}]"#)),
            "{frames:?}"
        );
        assert!(
            frames.iter().any(|f| f.ends_with(r#"["settings",{}]"#)),
            "{frames:?}"
        );
    }

    const TWO_DEVICES: &str = r#"[{"ok":{"devices":[{"deviceID":"aaaaaaaaaaaaaaaa","browser":"Firefox on Linux","firstSeen":1,"lastSeen":2,"current":true},{"deviceID":"bbbbbbbbbbbbbbbb","browser":"Safari on iOS","firstSeen":3,"lastSeen":4,"current":false}]}}]"#;

    fn device_ids(session: &Session) -> Vec<String> {
        let list = session.devices().list.clone().unwrap_or_default();
        list.into_iter().map(|d| d.device_id).collect()
    }

    #[test]
    fn devices_are_listed_on_request_and_a_revoked_one_leaves_the_list() {
        let mut session = messenger();
        assert_eq!(
            session.devices(),
            &Devices::default(),
            "not asked for by itself"
        );
        session.step(Input::LoadDevices, 10);
        assert_eq!(sent(&mut session), [r#"423["devices",{}]"#]);
        assert!(session.devices().busy);
        session.step(Input::LoadDevices, 11);
        session.step(
            Input::RevokeDevice {
                device_id: "bbbbbbbbbbbbbbbb",
            },
            11,
        );
        assert!(sent(&mut session).is_empty(), "one request at a time");
        session.step(Input::Frame(&format!("433{TWO_DEVICES}")), 12);
        assert!(!session.devices().busy);
        assert_eq!(
            device_ids(&session),
            ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"]
        );
        let list = session.devices().list.clone().unwrap();
        assert!(list[0].current && !list[1].current);
        assert_eq!(list[1].browser, "Safari on iOS");

        session.step(
            Input::RevokeDevice {
                device_id: "bbbbbbbbbbbbbbbb",
            },
            13,
        );
        assert_eq!(
            sent(&mut session),
            [r#"424["revoke_device",{"deviceID":"bbbbbbbbbbbbbbbb"}]"#]
        );
        session.step(Input::Frame(r#"434[{"ok":true}]"#), 14);
        assert_eq!(device_ids(&session), ["aaaaaaaaaaaaaaaa"]);
        assert_eq!(session.devices().error, None);
        // Someone else signs in next: nothing of this account is kept.
        session.step(Input::Reset, 15);
        assert_eq!(session.devices(), &Devices::default());
    }

    #[test]
    fn a_refused_revoke_says_why_and_a_device_already_gone_leaves_the_list() {
        let mut session = messenger();
        session.step(Input::LoadDevices, 10);
        session.step(Input::Frame(&format!("433{TWO_DEVICES}")), 11);
        session.step(
            Input::RevokeDevice {
                device_id: "bbbbbbbbbbbbbbbb",
            },
            12,
        );
        sent(&mut session);
        session.step(
            Input::Frame(r#"434[{"error":{"code":"rate_limited","message":"too many requests"}}]"#),
            13,
        );
        assert_eq!(device_ids(&session).len(), 2, "still there");
        assert_eq!(
            session.devices().error.as_deref(),
            Some("too many requests")
        );
        session.step(
            Input::RevokeDevice {
                device_id: "bbbbbbbbbbbbbbbb",
            },
            14,
        );
        sent(&mut session);
        session.step(
            Input::Frame(r#"435[{"error":{"code":"unknown_device","message":"no such device"}}]"#),
            15,
        );
        assert_eq!(device_ids(&session), ["aaaaaaaaaaaaaaaa"]);
        assert_eq!(session.devices().error, None);
        // No answer in time: said so, and the next request may go.
        session.step(Input::LoadDevices, 16);
        sent(&mut session);
        session.step(Input::Timer, 16 + ACK_TIMEOUT_MS);
        assert!(!session.devices().busy);
        assert_eq!(session.devices().error.as_deref(), Some(NO_ANSWER));
        // Offline: nothing is sent, and the page says why.
        session.step(Input::TransportClosed, 20 + ACK_TIMEOUT_MS);
        sent(&mut session);
        session.step(
            Input::RevokeDevice {
                device_id: "aaaaaaaaaaaaaaaa",
            },
            21 + ACK_TIMEOUT_MS,
        );
        assert!(sent(&mut session).is_empty());
        assert_eq!(session.devices().error.as_deref(), Some(NOT_CONNECTED));
        assert_eq!(device_ids(&session), ["aaaaaaaaaaaaaaaa"]);
    }

    #[test]
    fn reading_reports_the_cursor_once_it_rests_and_one_read_at_a_time() {
        let mut session = messenger();
        session.step(Input::MarkRead { peer: "u" }, 10);
        assert_eq!(session.chat().unread("u"), 0, "at once, here");
        assert!(sent(&mut session).is_empty(), "not before it rests");
        assert_eq!(session.next_deadline(), Some(10 + READ_DEBOUNCE_MS));
        session.step(Input::Timer, 10 + READ_DEBOUNCE_MS);
        assert_eq!(sent(&mut session), [r#"423["read",{"with":"u","upTo":7}]"#]);
        // More arrives and is read while that one is on its way: it waits for the answer.
        session.step(
            Input::Frame(
                r#"42["private message",{"id":8,"ts":2,"content":"y","from":"u","to":"me"}]"#,
            ),
            400,
        );
        session.step(Input::MarkRead { peer: "u" }, 401);
        session.step(Input::Timer, 401 + READ_DEBOUNCE_MS);
        assert!(sent(&mut session).is_empty());
        assert!(session
            .next_deadline()
            .is_none_or(|at| at > 401 + READ_DEBOUNCE_MS));
        session.step(
            Input::Frame(r#"433[{"ok":{"with":"u","upTo":7,"unread":1,"asOf":8}}]"#),
            800,
        );
        assert_eq!(session.chat().unread("u"), 0, "8 was read here");
        // Not within a second of the last one.
        session.step(Input::Timer, 800 + READ_DEBOUNCE_MS);
        assert!(sent(&mut session).is_empty());
        let first_sent = 10 + READ_DEBOUNCE_MS;
        assert_eq!(session.next_deadline(), Some(first_sent + READ_EVERY_MS));
        session.step(Input::Timer, first_sent + READ_EVERY_MS);
        assert_eq!(sent(&mut session), [r#"424["read",{"with":"u","upTo":8}]"#]);
        session.step(
            Input::Frame(r#"434[{"ok":{"with":"u","upTo":8,"unread":0,"asOf":8}}]"#),
            1400,
        );
        // Nothing new: nothing to report.
        session.step(Input::MarkRead { peer: "u" }, 1500);
        session.step(Input::Timer, 1500 + READ_EVERY_MS);
        assert!(sent(&mut session).is_empty());
        assert_eq!(
            session.next_deadline(),
            session.core.next_deadline(),
            "the connection's own only"
        );
    }

    #[test]
    fn a_read_refused_for_now_is_reported_again_a_second_later() {
        let mut session = messenger();
        session.step(Input::MarkRead { peer: "u" }, 10);
        session.step(Input::Timer, 10 + READ_DEBOUNCE_MS);
        sent(&mut session);
        session.step(
            Input::Frame(r#"433[{"error":{"code":"rate_limited","message":"wait"}}]"#),
            400,
        );
        assert_eq!(session.next_deadline(), Some(400 + 1_000));
        session.step(Input::Timer, 1_400);
        assert_eq!(sent(&mut session), [r#"424["read",{"with":"u","upTo":7}]"#]);
    }

    #[test]
    fn a_read_made_offline_is_reported_after_the_reconnect_and_waits_without_waking() {
        let mut session = messenger();
        session.step(Input::TransportClosed, 5);
        session.step(Input::MarkRead { peer: "u" }, 10);
        assert_eq!(session.chat().unread("u"), 0);
        let ConnState::Offline { retry_at } = session.state() else {
            panic!("{:?}", session.state())
        };
        // Offline, a read due is no deadline (it would wake the adapter over and over).
        assert_eq!(session.next_deadline(), Some(retry_at));
        session.step(Input::Timer, retry_at);
        session.step(Input::Frame(r#"0{"sid":"e2","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#), retry_at);
        session.step(Input::Frame(r#"40{"sid":"s2"}"#), retry_at);
        // Reported as soon as the connection is back.
        let frames = sent(&mut session);
        let ack_of = |what: &str| {
            frames
                .iter()
                .find(|f| f.contains(what))
                .map(|f| ack_number(f))
                .unwrap_or_else(|| panic!("no {what} in {frames:?}"))
        };
        let read = ack_of(r#"["read",{"with":"u","upTo":7}]"#);
        let conversations = ack_of(r#"["conversations""#);
        // The server still has the old cursor: the read is on its way, nothing more is asked.
        session.step(
            Input::Frame(&format!(
                r#"43{conversations}[{{"ok":{{"conversations":[{{"userID":"u","username":"ursula","connected":true,"last":{{"id":7,"ts":1,"content":"x","from":"u","to":"me"}},"unread":2,"readUpTo":5}}],"hasMore":false}}}}]"#
            )),
            retry_at + 1,
        );
        assert_eq!(session.chat().unread("u"), 0);
        session.step(
            Input::Frame(&format!(
                r#"43{read}[{{"ok":{{"with":"u","upTo":7,"unread":0,"asOf":7}}}}]"#
            )),
            retry_at + 2,
        );
        session.step(Input::Timer, retry_at + 2 + READ_DEBOUNCE_MS);
        assert!(frames_with(&mut session, r#"["read""#).is_empty());
        assert_eq!(session.chat().server_read_cursor("u"), 7);
    }

    #[test]
    fn a_read_from_another_tab_or_device_clears_the_count() {
        let mut session = messenger();
        session.step(
            Input::Frame(r#"42["read",{"with":"u","upTo":7,"unread":0,"asOf":7}]"#),
            10,
        );
        assert_eq!(session.chat().unread("u"), 0);
        assert!(events(&mut session).contains(&SessionEvent::ChatChanged));
        // Nothing for this tab to report: the server is ahead.
        session.step(Input::MarkRead { peer: "u" }, 11);
        session.step(Input::Timer, 11 + READ_DEBOUNCE_MS);
        assert!(sent(&mut session).is_empty());
    }

    #[test]
    fn typing_is_sent_at_most_every_three_seconds_and_shown_for_six() {
        let mut session = messenger();
        session.step(Input::Typing { to: "u" }, 10);
        assert_eq!(sent(&mut session), [r#"42["typing",{"to":"u"}]"#]);
        session.step(Input::Typing { to: "u" }, 10 + TYPING_EVERY_MS - 1);
        assert!(sent(&mut session).is_empty());
        session.step(Input::Typing { to: "v" }, 20);
        assert_eq!(sent(&mut session), [r#"42["typing",{"to":"v"}]"#]);
        session.step(Input::Typing { to: "u" }, 10 + TYPING_EVERY_MS);
        assert_eq!(sent(&mut session), [r#"42["typing",{"to":"u"}]"#]);
        session.step(Input::Typing { to: "me" }, 5_000);
        assert!(sent(&mut session).is_empty(), "not to oneself");

        session.step(Input::Frame(r#"42["typing",{"from":"u"}]"#), 100);
        assert!(session.chat().typing("u"));
        assert_eq!(session.next_deadline(), Some(100 + TYPING_SHOWN_MS));
        session.step(Input::Frame(r#"42["typing",{"from":"u"}]"#), 2_000);
        session.step(Input::Timer, 100 + TYPING_SHOWN_MS);
        assert!(session.chat().typing("u"), "the last one counts");
        events(&mut session);
        session.step(Input::Timer, 2_000 + TYPING_SHOWN_MS);
        assert!(!session.chat().typing("u"));
        assert!(events(&mut session).contains(&SessionEvent::ChatChanged));
        // Their message ends it at once.
        session.step(Input::Frame(r#"42["typing",{"from":"u"}]"#), 9_000);
        session.step(
            Input::Frame(
                r#"42["private message",{"id":8,"ts":2,"content":"y","from":"u","to":"me"}]"#,
            ),
            9_001,
        );
        assert!(!session.chat().typing("u"));
        // Offline, nothing is sent.
        session.step(Input::TransportClosed, 9_002);
        session.step(Input::Typing { to: "w" }, 9_003);
        assert!(frames_with(&mut session, "typing").is_empty());
    }

    #[test]
    fn a_search_waits_for_the_query_to_rest_and_asks_one_at_a_time() {
        let mut session = messenger();
        session.step(Input::Search { query: "  ad " }, 10);
        assert!(sent(&mut session).is_empty());
        assert_eq!(session.next_deadline(), Some(10 + SEARCH_DEBOUNCE_MS));
        session.step(Input::Timer, 10 + SEARCH_DEBOUNCE_MS);
        assert_eq!(
            sent(&mut session),
            [r#"423["users_search",{"query":"ad","limit":20}]"#]
        );
        // Typed on while it is asked: the newest query goes once the answer is in.
        session.step(Input::Search { query: "ada" }, 220);
        session.step(Input::Search { query: "adam" }, 230);
        session.step(Input::Timer, 430);
        assert!(sent(&mut session).is_empty());
        session.step(
            Input::Frame(
                r#"433[{"ok":{"users":[{"userID":"a0","username":"adalbert","connected":true}]}}]"#,
            ),
            500,
        );
        assert!(
            session.chat().search().is_none(),
            "an answer to an old query is not shown"
        );
        assert_eq!(
            sent(&mut session),
            [r#"424["users_search",{"query":"adam","limit":20}]"#]
        );
        session.step(
            Input::Frame(
                r#"434[{"ok":{"users":[{"userID":"a1","username":"adam","connected":false}]}}]"#,
            ),
            600,
        );
        let results = session.chat().search().unwrap();
        assert_eq!(results.query, "adam");
        assert_eq!(results.users[0].username, "adam");
        assert_eq!(session.chat().peer("a1").unwrap().username, "adam");
        // The same query again asks nothing; an empty one clears the results.
        session.step(Input::Search { query: "adam " }, 700);
        session.step(Input::Timer, 700 + SEARCH_DEBOUNCE_MS);
        assert!(sent(&mut session).is_empty());
        session.step(Input::Search { query: " " }, 1_000);
        assert!(session.chat().search().is_none());
        // A query past the server's limit is cut to it.
        let long = "x".repeat(100);
        session.step(Input::Search { query: &long }, 2_000);
        session.step(Input::Timer, 2_000 + SEARCH_DEBOUNCE_MS);
        let frames = sent(&mut session);
        assert_eq!(
            frames,
            [format!(
                r#"425["users_search",{{"query":"{}","limit":20}}]"#,
                "x".repeat(SEARCH_MAX_CHARS)
            )]
        );
        session.step(
            Input::Frame(r#"435[{"error":{"code":"invalid_payload","message":"no"}}]"#),
            2_300,
        );
        assert!(session.chat().search().unwrap().failed);
    }

    #[test]
    fn turning_read_receipts_off_asks_the_server_and_hides_every_seen_mark() {
        let mut session = messenger();
        session.step(Input::Frame(r#"42["seen",{"by":"u","upTo":9,"at":99}]"#), 5);
        assert_eq!(
            session.chat().seen("u"),
            Some(protocol::payloads::ReadMark { up_to: 9, at: 99 })
        );
        session.step(Input::SetReadReceipts { on: false }, 10);
        assert_eq!(
            sent(&mut session),
            [r#"423["settings",{"readReceipts":false}]"#]
        );
        // Applied once the server accepts it.
        assert!(session.chat().seen("u").is_some());
        assert_eq!(
            session.settings_change().wanted,
            Some(Settings {
                read_receipts: Some(false)
            })
        );
        session.step(Input::Frame(r#"433[{"ok":{"readReceipts":false}}]"#), 20);
        assert_eq!(
            session.chat().settings().unwrap().read_receipts,
            Some(false)
        );
        assert_eq!(session.chat().seen("u"), None);
        assert_eq!(session.settings_change(), &SettingsChange::default());
        // Turned back on from another tab.
        session.step(Input::Frame(r#"42["settings",{"readReceipts":true}]"#), 30);
        assert!(session.chat().seen("u").is_some());
    }

    #[test]
    fn a_settings_change_the_server_refused_or_never_answered_changes_nothing_and_says_why() {
        let mut session = messenger();
        let receipts = |session: &Session| session.chat().settings().unwrap().read_receipts;
        // Refused.
        session.step(Input::SetReadReceipts { on: false }, 10);
        assert_eq!(sent(&mut session).len(), 1);
        session.step(
            Input::Frame(r#"433[{"error":{"code":"rate_limited","message":"Slow down."}}]"#),
            20,
        );
        assert_eq!(receipts(&session), Some(true));
        assert_eq!(
            session.settings_change(),
            &SettingsChange {
                wanted: None,
                error: Some("Slow down.".into())
            }
        );
        // Not answered in time.
        session.step(Input::SetReadReceipts { on: false }, 30);
        assert_eq!(sent(&mut session).len(), 1);
        assert_eq!(session.settings_change().error, None, "asked again");
        session.step(Input::Timer, 30 + ACK_TIMEOUT_MS);
        assert_eq!(receipts(&session), Some(true));
        assert_eq!(session.settings_change().wanted, None);
        assert_eq!(session.settings_change().error.as_deref(), Some(NO_ANSWER));
        // The server made it all the same, and says so: it applies.
        session.step(
            Input::Frame(r#"42["settings",{"readReceipts":false}]"#),
            40 + ACK_TIMEOUT_MS,
        );
        assert_eq!(receipts(&session), Some(false));
        // Offline: nothing is asked, and it says so.
        session.step(Input::Disconnect, 50 + ACK_TIMEOUT_MS);
        sent(&mut session);
        session.step(Input::SetReadReceipts { on: true }, 60 + ACK_TIMEOUT_MS);
        assert!(sent(&mut session).is_empty());
        assert_eq!(receipts(&session), Some(false));
        assert_eq!(
            session.settings_change().error.as_deref(),
            Some(NOT_CONNECTED)
        );
    }

    #[test]
    fn a_message_from_someone_unknown_asks_for_the_newest_conversations_which_name_them() {
        let mut session = restored();
        session.step(
            Input::Frame(r#"430[{"ok":{"conversations":[],"hasMore":false}}]"#),
            3,
        );
        sent(&mut session);
        session.step(
            Input::Frame(
                r#"42["private message",{"id":8,"ts":5,"content":"hi","from":"zed","to":"me"}]"#,
            ),
            4,
        );
        assert_eq!(
            sent(&mut session),
            [r#"423["conversations",{"before":null,"limit":null}]"#]
        );
        assert!(session.chat().peer("zed").is_none());
        session.step(Input::Frame(r#"433[{"ok":{"conversations":[{"userID":"zed","username":"Zed","connected":false,"last":{"id":8,"ts":5,"content":"hi","from":"zed","to":"me"},"unread":1,"readUpTo":0}],"hasMore":false}}]"#), 5);
        assert_eq!(
            session.chat().peer("zed").map(|p| p.username.as_str()),
            Some("Zed")
        );
        // Known now: nothing more is asked.
        session.step(
            Input::Frame(
                r#"42["private message",{"id":9,"ts":6,"content":"again","from":"zed","to":"me"}]"#,
            ),
            6,
        );
        assert!(sent(&mut session).is_empty());
    }

    #[test]
    fn a_conversations_page_failing_again_and_again_is_asked_ever_less_often() {
        let mut session = restored();
        let mut asked_at = 2;
        let mut waits = Vec::new();
        for _ in 0..3 {
            // The server's heartbeat goes on (it is the answers that do not come).
            session.step(Input::Frame("2"), asked_at + 1);
            sent(&mut session);
            let timed_out = asked_at + ACK_TIMEOUT_MS;
            session.step(Input::Timer, timed_out);
            let again = session.next_deadline().unwrap();
            waits.push(again - timed_out);
            session.step(Input::Timer, again);
            let frames = sent(&mut session);
            assert!(
                frames.len() == 1 && frames[0].contains(r#"["conversations","#),
                "{frames:?}"
            );
            asked_at = again;
        }
        assert_eq!(waits, [1_000, 2_000, 4_000]);
        let later: Vec<u64> = (4..=7).map(conversations_retry_ms).collect();
        assert_eq!(later, [8_000, 16_000, 30_000, 30_000]);
        assert_eq!(conversations_retry_ms(u32::MAX), CONVERSATIONS_RETRY_MAX_MS);
    }

    #[test]
    fn a_conversations_page_not_answered_in_time_is_asked_again() {
        let mut session = restored();
        // The connect's page (asked at 2) gets no answer.
        let timed_out = 2 + ACK_TIMEOUT_MS;
        session.step(Input::Timer, timed_out);
        assert!(sent(&mut session).is_empty(), "after a moment");
        let again = session.next_deadline().unwrap();
        assert!(again <= timed_out + REFUSED_RETRY_MS, "{again}");
        session.step(Input::Timer, again);
        assert_eq!(
            sent(&mut session),
            [r#"423["conversations",{"before":null,"limit":null}]"#]
        );
        session.step(Input::Frame(r#"433[{"ok":{"conversations":[{"userID":"u","username":"ursula","connected":true,"last":{"id":7,"ts":1,"content":"x","from":"u","to":"me"},"unread":1,"readUpTo":0}],"hasMore":false}}]"#), again + 1);
        assert_eq!(session.chat().unread("u"), 1);
    }

    #[test]
    fn the_rosters_read_cursors_count_unread_beyond_the_conversations_pages() {
        let mut session = connected();
        session.step(
            Input::Frame(r#"42["session",{"sessionID":"s","userID":"me"}]"#),
            2,
        );
        // Two conversations, read on another device up to 40 and 50; no page names them.
        session.step(Input::Frame(r#"42["users",[{"userID":"u","username":"u","connected":true,"readUpTo":40,"messages":[{"id":40,"ts":1,"content":"a","from":"u","to":"me"},{"id":41,"ts":2,"content":"b","from":"u","to":"me"}]},{"userID":"v","username":"v","connected":false,"readUpTo":50,"messages":[{"id":50,"ts":3,"content":"c","from":"v","to":"me"}]},{"userID":"w","username":"w","connected":false,"messages":[]}]]"#), 3);
        assert_eq!(session.chat().unread("u"), 1);
        assert_eq!(session.chat().unread("v"), 0);
        assert_eq!(session.chat().total_unread(), 1);
        let list = session.chat().conversation_list(&[]);
        let unread: Vec<(&str, usize)> = list
            .iter()
            .map(|c| (c.user_id.as_str(), c.unread))
            .collect();
        assert_eq!(unread, [("v", 0), ("u", 1)]);
    }

    #[test]
    fn older_conversations_are_asked_for_before_the_oldest_one_held() {
        let mut session = restored();
        session.step(Input::Frame(r#"430[{"ok":{"conversations":[{"userID":"u","username":"u","connected":true,"last":{"id":7,"ts":1,"content":"x","from":"u","to":"me"},"unread":0,"readUpTo":7}],"hasMore":true}}]"#), 3);
        sent(&mut session);
        session.step(Input::LoadConversations, 4);
        session.step(Input::LoadConversations, 4);
        assert_eq!(
            sent(&mut session),
            [r#"423["conversations",{"before":7,"limit":null}]"#],
            "one page at a time"
        );
        session.step(
            Input::Frame(r#"433[{"ok":{"conversations":[],"hasMore":false}}]"#),
            5,
        );
        session.step(Input::LoadConversations, 6);
        assert!(sent(&mut session).is_empty(), "nothing older");
    }

    #[test]
    fn a_tab_on_the_shared_connection_gets_counts_and_reports_reads_through_the_hub() {
        let link = SharedLink::new(|| auth(json!({ "sessionID": "s" })));
        let mut session =
            Session::shared(link, ChatState::new(Some("me".into())), Outbox::default());
        session.step(Input::Connect, 0);
        session.step(
            Input::Hub(HubToTab::State {
                state: crate::link::SharedState::Online { sid: "x".into() },
                reconnects: 0,
            }),
            1,
        );
        session.step(
            Input::Hub(HubToTab::Connected {
                sid: "x".into(),
                reconnect: false,
            }),
            1,
        );
        let requests = |session: &mut Session| -> Vec<(u64, String, RawJson)> {
            std::iter::from_fn(|| session.poll_hub_message())
                .filter_map(|m| match m {
                    TabToHub::Request {
                        id, event, data, ..
                    } => Some((id, event, data)),
                    _ => None,
                })
                .collect()
        };
        let asked = requests(&mut session);
        let events: Vec<&str> = asked.iter().map(|(_, e, _)| e.as_str()).collect();
        assert_eq!(events, ["conversations", "settings"]);
        let message = json!({ "id": 7, "ts": 1, "content": "x", "from": "u", "to": "me" });
        session.step(
            Input::Hub(HubToTab::Message {
                event: "private message".into(),
                args: vec![raw(message.clone())],
            }),
            2,
        );
        let summary = json!({ "userID": "u", "username": "u", "connected": true,
            "last": message, "unread": 1, "readUpTo": 0 });
        session.step(
            Input::Hub(HubToTab::Ack {
                id: asked[0].0,
                args: vec![raw(
                    json!({ "ok": { "conversations": [summary], "hasMore": false } }),
                )],
            }),
            3,
        );
        assert_eq!(session.chat().unread("u"), 1);
        session.step(Input::MarkRead { peer: "u" }, 4);
        session.step(Input::Timer, 4 + READ_DEBOUNCE_MS);
        let asked = requests(&mut session);
        assert_eq!(asked.len(), 1);
        assert_eq!(
            (asked[0].1.as_str(), asked[0].2.get()),
            ("read", r#"{"with":"u","upTo":7}"#)
        );
        // Another tab's read, relayed by the hub, reaches this one too.
        let mut other = Session::shared(
            SharedLink::new(|| auth(json!({ "sessionID": "s" }))),
            ChatState::new(Some("me".into())),
            Outbox::default(),
        );
        other.step(
            Input::Hub(HubToTab::Message {
                event: "private message".into(),
                args: vec![raw(message)],
            }),
            5,
        );
        assert_eq!(other.chat().unread("u"), 1);
        other.step(
            Input::Hub(HubToTab::Message {
                event: "read".into(),
                args: vec![raw(
                    json!({ "with": "u", "upTo": 7, "unread": 0, "asOf": 7 }),
                )],
            }),
            6,
        );
        assert_eq!(other.chat().unread("u"), 0);
    }
}
