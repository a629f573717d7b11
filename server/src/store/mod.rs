//! Storage behind one trait: sessions, users, messages and presence.
//!
//! [`sqlite::SqliteStore`] is the embedded default. Every write is committed before the call
//! returns, so a caller that acks after `insert_message` only ever acks durable data.

pub mod presence;
pub mod redis;
pub mod sqlite;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use protocol::payloads::Message;

use crate::domain::{ClientMsgId, MessageContent, SessionId, UserId, Username};
pub use crate::identity::pop::PopKey;

/// Why a store request failed. The request had no effect (its transaction rolled back, its
/// script did not run). `{}` names the kind of failure only; the cause is the error's
/// [`source`](std::error::Error::source), and `{:#}` shows the whole chain, as logs should.
/// No cause carries the store's URL, password or file path (the backends' own errors name
/// none; the contract test `a_failing_store_fails_with_its_cause` checks), and none of it
/// reaches a client: the wire says `store_unavailable` and nothing more.
#[derive(Debug)]
pub enum StoreError {
    /// SQLite failed a statement, or the commit of the batch the request was in (shared by
    /// every request of that batch).
    Sqlite(Arc<rusqlite::Error>),
    /// Redis failed the command or script, or could not be reached.
    Redis(::redis::RedisError),
    /// The store answered, or holds, data this release cannot read.
    Unreadable(Box<dyn std::error::Error + Send + Sync>),
    /// The store's own machinery is gone (its threads stopped, or a request of it panicked).
    Stopped(&'static str),
    /// Any other failure (another backend's error, a store that could not start).
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
}

impl std::fmt::Display for StoreError {
    /// The kind of failure; with `{:#}`, followed by every cause (`: cause: its cause`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Sqlite(_) => f.write_str("the SQLite store failed")?,
            StoreError::Redis(_) => f.write_str("the Redis store failed")?,
            StoreError::Unreadable(_) => f.write_str("the store holds data it cannot read")?,
            StoreError::Stopped(what) => write!(f, "the store stopped: {what}")?,
            StoreError::Unavailable(_) => f.write_str("store unavailable")?,
        }
        if f.alternate() {
            let mut cause = std::error::Error::source(self);
            while let Some(e) = cause {
                write!(f, ": {e}")?;
                cause = e.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sqlite(e) => Some(e.as_ref()),
            StoreError::Redis(e) => Some(e),
            StoreError::Unreadable(e) | StoreError::Unavailable(e) => Some(e.as_ref()),
            StoreError::Stopped(_) => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(e))
    }
}

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        StoreError::Redis(e)
    }
}

impl From<::redis::ParsingError> for StoreError {
    fn from(e: ::redis::ParsingError) -> Self {
        StoreError::Unreadable(Box::new(e))
    }
}

/// A live session, as found by its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: UserId,
    pub username: String,
    /// The key the session is bound to (issue #25, proof of possession); `None`: unbound.
    /// Stores keep an unbound session's key as absent (from before keys: it may bind once) or
    /// empty (made without one: never binds).
    pub pop_key: Option<PopKey>,
    /// The session's family: the digest of its first secret, which keys it in the store, its
    /// sockets' room and its devices entry. Its secrets rotate; its family never changes.
    pub family: String,
    /// The state of the secret it was found by (or made with).
    pub secret: Secret,
}

impl Session {
    /// A session just made with the secret `id` (its first: the family is its digest), unbound.
    pub(crate) fn made(id: &SessionId, user_id: UserId, username: String, now: i64) -> Self {
        Self {
            user_id,
            username,
            pop_key: None,
            family: id.digest(),
            secret: Secret::Current { issued_at: now },
        }
    }
}

/// The state of one secret of a session (issue #25 §5, rotation): a session has one current
/// secret and any number of retired ones, kept as digests only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// The session's current secret, issued at `issued_at` (ms since the Unix epoch; 0: due
    /// for rotation now, as after a sign-in from another device).
    Current { issued_at: i64 },
    /// A secret rotated out at `retired_at` (ms); `current` is the digest of the session's
    /// current secret (what [`Store::rotate_secret`] must be given to rotate again).
    Retired { retired_at: i64, current: String },
}

/// What [`Store::online_count`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnlineCount {
    /// Users online (Redis: summed over the nodes' sets, so a user on two nodes counts twice).
    pub users: usize,
    /// What [`Store::online_among`] costs per user asked, in rows read, where reading every
    /// online user costs one row each (Redis: one per node's set).
    pub check_cost: usize,
}

/// What [`Store::touch_sessions`] found, by digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Gone or past their deadline: their sockets must be closed.
    pub gone: Vec<String>,
    /// Refreshed, with their current secret marked due for rotation (issued at 0, as a sign-in
    /// from another device marks them): rotated while connected if bound to a key.
    pub due: Vec<String>,
}

/// What [`Store::rotate_secret`] did.
#[derive(Debug)]
pub enum Rotate {
    /// The session's current secret is this new one; the one expected is retired now.
    Rotated(SessionId),
    /// The current secret is no longer the one expected (another rotation won): nothing written.
    Moved,
    /// No such session: nothing written.
    Gone,
    /// The session had [`Reissue::max`] secrets retired since [`Reissue::since`] already:
    /// nothing written.
    TooMany,
}

/// The cap on how often a session's secret may rotate: at most `max` secrets retired at or after
/// `since` (ms since the Unix epoch), counting the one a rotation would retire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reissue {
    pub since: i64,
    pub max: u32,
}

/// A session's key as a store holds it (its bytes); anything else is data the store cannot read.
pub(crate) fn stored_pop_key(bytes: &[u8]) -> Result<PopKey, StoreError> {
    PopKey::from_bytes(bytes)
        .ok_or_else(|| StoreError::Unreadable("a session's key is not a P-256 point".into()))
}

/// What [`Store::bind_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// The session was unbound; it is bound to this key from now on.
    Bound,
    /// The session was bound to this very key already (a retry, or two tabs binding at once).
    AlreadyThis,
    /// The session is bound to another key: nothing written.
    OtherKey,
    /// No such live session: nothing written.
    Gone,
    /// The session was made without a key, after keys existed: it stays unbound. Nothing
    /// written.
    Never,
}

/// What [`Store::create_device_session`] did.
#[derive(Debug)]
pub enum NewDevice {
    /// A new session of the user.
    Created(SessionId, Session),
    /// No such user: nothing written.
    UnknownUser,
    /// The user holds the most live sessions allowed already: nothing written.
    TooManySessions,
}

impl NewDevice {
    /// The new session, if one was made.
    pub fn created(self) -> Option<(SessionId, Session)> {
        match self {
            NewDevice::Created(id, session) => Some((id, session)),
            NewDevice::UnknownUser | NewDevice::TooManySessions => None,
        }
    }
}

/// A session of a user, as its devices list shows it (issue #25). A session is keyed by its
/// *family*, the digest of its first secret (the digest [`SessionId::digest`] gives today).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub family: String,
    /// The browser it signed up in ("Firefox on Linux"; empty for a session from before labels).
    pub label: String,
    /// When it was created, and last used (a handshake, or a touch while connected; at most a
    /// minute old while a socket of it is connected), ms since the Unix epoch.
    pub created: i64,
    pub last_seen: i64,
    /// Whether it is bound to a key (its handshakes prove possession). An unbound one is a
    /// tutorial client's, or one from before keys (which binds on its first proof).
    pub bound: bool,
}

/// The most characters of a device label a store keeps (labels are made by the server, a few
/// words long; this bounds what a store row can hold).
pub const DEVICE_LABEL_MAX: usize = 64;

/// A label as stored: at most [`DEVICE_LABEL_MAX`] characters.
pub(crate) fn stored_label(label: &str) -> String {
    label.chars().take(DEVICE_LABEL_MAX).collect()
}

/// A passkey of an account (issue #25 slice 4), as stored: its credential id (the raw id's bytes
/// in lowercase hex, unique across accounts) and the `webauthn_rs` `Passkey` as JSON (its public
/// key and counter). The store never reads inside `json` (it compares it whole, in
/// [`Store::passkey_used`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    pub cred_id: String,
    pub json: String,
}

/// A passkey as its account's sessions list it ([`Store::passkeys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyInfo {
    /// As in [`StoredPasskey::cred_id`].
    pub cred_id: String,
    /// The browser it was added in (a device label, at most [`DEVICE_LABEL_MAX`] characters);
    /// empty when not known.
    pub added_in: String,
    /// When it was added, and last used to sign in (ms; `added` until then). Both 0 for a
    /// passkey stored before they were kept (Redis only).
    pub added: i64,
    pub last_used: i64,
}

/// An account's passkeys, oldest first, and whether the account's name is protected (by them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountPasskeys {
    pub protected: bool,
    pub passkeys: Vec<PasskeyInfo>,
}

/// What [`Store::remove_passkey`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovedPasskey {
    /// Removed; `protected` says whether the account's name is still protected (false once its
    /// last passkey is gone).
    Removed { protected: bool },
    /// No such passkey of this account (another account's, removed already, or none): nothing
    /// written.
    Unknown,
}

/// What [`Store::create_session`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The new user and its session.
    Session(SessionId, Session),
    /// A passkey protects the name's [`name_key`]: nothing written.
    NameProtected,
}

impl Created {
    /// The new user's session, if one was made.
    pub fn into_session(self) -> Option<(SessionId, Session)> {
        match self {
            Created::Session(id, session) => Some((id, session)),
            Created::NameProtected => None,
        }
    }
}

/// What [`Store::protect`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protect {
    /// The account's name is protected from now on, by this passkey.
    Protected,
    /// The name was already this account's; one more passkey.
    Added,
    /// The name is not this account's to protect: an older account with the same
    /// [`name_key`] still exists, or another account protected it first. Nothing written.
    NameTaken,
    /// The credential is registered already (to any account): nothing written.
    CredentialTaken,
    /// The account holds [`PASSKEYS_PER_USER_MAX`] passkeys already: nothing written.
    Full,
    /// No such user: nothing written.
    UnknownUser,
}

/// The key a name is compared by (case, width, invisible characters, look-alikes and spaces
/// aside): one definition, in the protocol crate, see [`protocol::domain::name_key`].
pub use protocol::domain::name_key;

/// The most passkeys one account keeps: each is a row, and an entry of every sign-in ceremony's
/// options and stored state (about 150 bytes each).
pub const PASSKEYS_PER_USER_MAX: usize = 16;

/// A user as the roster lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub user_id: UserId,
    pub username: String,
    /// A passkey protects the user's name for this user (the name's owner, not a "ghost" of
    /// the same name): the roster marks it (`UserEntry.protected`).
    pub protected: bool,
}

/// A message to store; `from` is the sender's session, never the payload.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub from: UserId,
    pub to: UserId,
    pub content: MessageContent,
    pub client_id: Option<ClientMsgId>,
}

/// Whether storing a message wrote it now or found an earlier copy with the same client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    New(Message),
    Duplicate(Message),
}

impl Stored {
    pub fn message(&self) -> &Message {
        match self {
            Stored::New(m) | Stored::Duplicate(m) => m,
        }
    }
}

/// A presence change the heartbeat found: another node died, or this one came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceChange {
    /// The user's sockets on a dead node are uncounted; `sockets_left` remain elsewhere
    /// (0: the user went offline).
    Left { user: UserId, sockets_left: u32 },
    /// This node had been declared dead while it still held the user's sockets; they are
    /// counted again.
    Returned { user: UserId },
}

/// Milliseconds since the Unix epoch (message timestamps, session ages).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Cuts a result fetched with one extra row (`limit + 1`) to `limit`; true when the extra row
/// was there, i.e. more exist.
pub(crate) fn cut_to_page<T>(mut rows: Vec<T>, limit: u32) -> (Vec<T>, bool) {
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    (rows, has_more)
}

/// A viewer's conversations, for the roster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversations {
    /// Everyone the viewer has a conversation with (the viewer too, for notes to self), whether
    /// or not any of its messages are in `messages`.
    pub peers: Vec<UserId>,
    /// The messages asked for, of every conversation, oldest first.
    pub messages: Vec<Message>,
    /// The viewer's read cursors (peer, newest message id read), of the conversations the
    /// viewer has read at all (none listed: 0).
    pub read: Vec<(UserId, i64)>,
}

/// What an expiry sweep ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// The digests of the sessions ended; their sockets are in the room `session:<digest>`
    /// ([`crate::transport::Viewer::session_room`]) and must be closed.
    pub sessions: Vec<String>,
    /// How many accounts were deleted.
    pub users: usize,
}

/// A page of messages, oldest first; `has_more` says the page was cut at its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

/// The most unread messages counted in one conversation: a count of this many means "this many
/// or more" (clients show "999+"). What `read` counts to, and the default of
/// `--unread-count-max`, what a `conversations` page counts to ([`Store::conversation_page`]).
pub const UNREAD_MAX: u32 = 1000;

/// How far a user has read a conversation: up to message `up_to` (0: nothing), the cursor last
/// moving at `at` (ms since the Unix epoch; 0 when it never moved).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCursor {
    pub up_to: i64,
    pub at: i64,
}

/// The viewer's read state of one conversation: the cursor, and `unread` of the peer's messages
/// counted up to `as_of` (the conversation's newest message when counted; 0: no message).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStatus {
    pub cursor: ReadCursor,
    pub unread: u32,
    pub as_of: i64,
}

/// What [`Store::mark_read`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkedRead {
    /// The viewer's state after the call.
    pub status: ReadStatus,
    /// The cursor moved (this call wrote it).
    pub moved: bool,
    /// The viewer's seen cursor, when this call moved it (the read cursor moved while both
    /// parties had read receipts on; never for notes to self): what the peer is told (`seen`).
    /// `None` for a read made while either has them off: it is never reported.
    pub seen: Option<ReadCursor>,
}

/// One of the viewer's conversations, as [`Store::conversation_page`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationEntry {
    /// The other party (the viewer, for notes to self).
    pub peer: UserId,
    pub username: String,
    /// The newest message: its id orders the list.
    pub last: Message,
    /// The peer's messages after the viewer's cursor and after the viewer's own newest message,
    /// up to `last` (at most the page's `unread_max`; 0 for notes to self).
    pub unread: u32,
    /// The viewer's cursor.
    pub read: ReadCursor,
    /// The peer's *seen* cursor (how far they read while both had read receipts on, see
    /// [`Store::mark_read`]), only while both have them on now (never for notes to self).
    pub peer_read: Option<ReadCursor>,
}

impl ConversationEntry {
    /// The entry as each store reads it: the peer as stored, the unread count as counted (at
    /// most the page's `unread_max`, held to 0 and above), and the peer's seen cursor, kept only
    /// while read receipts are `shared` (both parties have them on, and it is not a note to self).
    pub(crate) fn read(
        peer: String,
        username: String,
        last: Message,
        unread: i64,
        read: ReadCursor,
        peer_seen: ReadCursor,
        shared: bool,
    ) -> Self {
        Self {
            peer: UserId::from_store(peer),
            username,
            last,
            unread: u32::try_from(unread.max(0)).unwrap_or(u32::MAX),
            read,
            peer_read: shared.then_some(peer_seen),
        }
    }
}

/// A page of [`Store::conversation_page`], newest activity first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationPage {
    pub conversations: Vec<ConversationEntry>,
    /// Conversations with older activity exist.
    pub has_more: bool,
    /// What the page cost the store, in rows (or entries) read: one per conversation of the
    /// viewer considered, plus the messages read to count the unread ones. Callers price it.
    pub scanned: u64,
}

/// A user's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserSettings {
    /// Send read receipts and see other people's (default on).
    pub read_receipts: bool,
}

impl Default for UserSettings {
    fn default() -> Self {
        Self {
            read_receipts: true,
        }
    }
}

/// The settings to change (`None`: unchanged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettingsChange {
    pub read_receipts: Option<bool>,
}

impl SettingsChange {
    /// These settings with the change applied.
    pub fn applied_to(self, settings: UserSettings) -> UserSettings {
        UserSettings {
            read_receipts: self.read_receipts.unwrap_or(settings.read_receipts),
        }
    }
}

/// What [`Store::change_settings`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingsChanged {
    /// Every setting, after the change.
    pub settings: UserSettings,
    /// Something differs from before (this call wrote it).
    pub changed: bool,
}

/// Counts the unread messages of a conversation from its newest messages after the cursor,
/// newest first (at most `max` of them): the peer's, up to the first of the viewer's (a message
/// the viewer sent reads what came before it).
pub(crate) fn count_unread(newest_first_senders: impl IntoIterator<Item = bool>, max: u32) -> u32 {
    let mut unread = 0;
    for from_viewer in newest_first_senders.into_iter().take(max as usize) {
        if from_viewer {
            break;
        }
        unread += 1;
    }
    unread
}

/// What every store promises. `server/tests/api/store_contract.rs` checks each promise against
/// every store (a new store is one line there). Besides what each method says:
///
/// - **Durable before it answers.** A write that returned `Ok` is seen by every later call, and
///   by a new instance of the store opened on the same data (a restart, another node).
/// - **All or nothing.** A call that fails changed nothing; calls made at the same time behave
///   as if made one after the other.
/// - **Ordered.** Message ids are positive and never reused (not even across a restart); a
///   message stored after another was answered has a higher id. Every list of messages is
///   oldest (lowest id) first.
/// - **Sessions.** A session lives until it is ended, has been unused for the store's idle
///   time, or has reached its maximum age ([`sqlite::SessionPolicy`]); using it
///   ([`Store::find_session`], [`Store::touch_sessions`]) starts its idle time over.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- sessions ----
    /// Creates a user and its session, with ids from the OS CSPRNG whose uniqueness the store
    /// checks. The user joins the end of [`Store::list_users`]. `device` is the session's
    /// browser label ([`Device::label`]). A name whose [`name_key`] a passkey protects is
    /// refused ([`Created::NameProtected`]), in the same step as the insert: a sign-up and the
    /// first [`Store::protect`] of its name never both succeed.
    ///
    /// `key`: the key the session is bound to from birth (its browser proved it holds it);
    /// without one the session is unbound for good ([`Store::bind_key`] never binds it).
    async fn create_session(
        &self,
        username: &Username,
        device: &str,
        key: Option<&PopKey>,
    ) -> Result<Created, StoreError>;
    /// Creates another session (device) of an existing user (a passkey sign-in on a new
    /// device, issue #25 slice 4), unless the user holds `max_sessions` live sessions already
    /// ([`NewDevice::TooManySessions`]; sessions past their idle time or maximum age do not
    /// count). The count and the write are one atomic step: of calls made at the same time, no
    /// more succeed than there is room for.
    /// `key` as in [`Store::create_session`].
    async fn create_device_session(
        &self,
        user: &UserId,
        device: &str,
        max_sessions: u32,
        key: Option<&PopKey>,
    ) -> Result<NewDevice, StoreError>;
    /// The user's live sessions, oldest first.
    async fn devices(&self, user: &UserId) -> Result<Vec<Device>, StoreError>;
    /// Ends the session whose family is `family` if it is the user's (a device revoked), as
    /// [`Store::delete_session`] does. Returns whether it was (another user's, or an unknown
    /// family, changes nothing).
    async fn end_family(&self, user: &UserId, family: &str) -> Result<bool, StoreError>;
    /// Ends every session of the user that is not bound to a key (made without one, or from
    /// before keys), in one step: a session made while this runs is either ended or made
    /// after it. Returns the families ended. Passkey add (review finding 1c).
    async fn end_unbound(&self, user: &UserId) -> Result<Vec<String>, StoreError>;
    /// Binds the session whose family is `family` to `key` if it is a session from before
    /// keys, unbound (proof of possession, issue #25: trust on first use, once): once bound, a
    /// session's key never changes, and a session made since without a key is never bound
    /// ([`Bind::Never`]: a copied id must not bind itself to a thief's key). Atomic: of two
    /// binds racing with different keys, one is [`Bind::Bound`] and the other
    /// [`Bind::OtherKey`].
    async fn bind_key(&self, family: &str, key: &PopKey) -> Result<Bind, StoreError>;
    /// The live session for this secret, current or retired ([`Session::secret`]), refreshed
    /// as used now; `None` for a secret that is unknown, ended or expired (an expired session
    /// is ended).
    async fn find_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;
    /// Rotates the secret of the session `family` (issue #25 §5): a new current secret, drawn
    /// from the OS CSPRNG, and `expect_current` (the digest of the current one) retired now.
    /// Compare-and-set: only while `expect_current` is still the current secret, so of
    /// rotations racing one wins and the others are [`Rotate::Moved`]; and only while fewer
    /// than `cap.max` secrets were retired since `cap.since` ([`Rotate::TooMany`]). Retired
    /// secrets are kept (as digests) while the session lives: [`Store::find_session`] finds
    /// them as [`Secret::Retired`].
    async fn rotate_secret(
        &self,
        family: &str,
        expect_current: &str,
        cap: Reissue,
    ) -> Result<Rotate, StoreError>;
    /// Marks the current secret of each of the user's sessions but `except` (a family) due for
    /// rotation (issued at 0): a sign-in from a new device. Returns how many were marked.
    async fn mark_rotation_due(&self, user: &UserId, except: &str) -> Result<usize, StoreError>;
    /// Ends a session for good, found by any of its secrets. Returns whether it was live (one that lapsed on its own and was
    /// not swept yet may count either way).
    async fn delete_session(&self, id: &SessionId) -> Result<bool, StoreError>;
    /// Ends every session of a user ("sign out everywhere"). Returns how many there were (as
    /// [`Store::delete_session`] counts).
    async fn delete_user_sessions(&self, user: &UserId) -> Result<usize, StoreError>;
    /// Ends up to `limit` sessions past their deadline (idle or maximum age). A user that never
    /// sent or received a message and has no session left is marked for
    /// [`Store::expire_accounts`] (as ending a session by `delete_session` does).
    /// Returns the digests of the sessions ended (see [`Expired::sessions`]): each by one sweep
    /// only, whichever instance runs it, and never a live session's.
    async fn expire_sessions(&self, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Deletes up to `limit` accounts that never sent or received a message and either have no
    /// session left or had no handshake (nor a touch) for `idle`: the user, its sessions and
    /// its directory entry. Their sessions are returned, to close their sockets. A deleted
    /// account is an unknown recipient from then on.
    async fn expire_accounts(&self, idle: Duration, limit: usize) -> Result<Expired, StoreError>;
    /// These sessions (by digest) are in use now: sockets of theirs are connected. They, and a
    /// message-less account of theirs, are refreshed as a handshake would. Says which are gone
    /// or past their deadline (their sockets must be closed; a touch never brings one back),
    /// and which of the others have their current secret marked due ([`Store::mark_rotation_due`]).
    async fn touch_sessions(&self, digests: Vec<String>) -> Result<Touched, StoreError>;

    // ---- passkeys (issue #25 slice 4) ----
    /// Adds a passkey to the user's account (`added_in`: the browser it is added in, a device
    /// label) and, on its first, protects the account's name ([`name_key`]) until its last
    /// passkey is removed ([`Store::remove_passkey`]): meanwhile later sign-ups with it are
    /// refused. A protected account is never swept by [`Store::expire_accounts`] (nor, once
    /// protected, later). Only the oldest existing account with that name key
    /// (the first of them in [`Store::list_users`]) may protect it: a newer one is
    /// [`Protect::NameTaken`], as is a name another account protected first. All or nothing:
    /// that, or a credential id registered already (to any account, this one included: a
    /// retry of a call that succeeded is [`Protect::CredentialTaken`]), writes nothing. An
    /// account holds at most [`PASSKEYS_PER_USER_MAX`] passkeys (more is [`Protect::Full`]).
    /// When several apply, the first of [`Protect::UnknownUser`], [`Protect::NameTaken`],
    /// [`Protect::CredentialTaken`], [`Protect::Full`] is the answer.
    async fn protect(
        &self,
        user: &UserId,
        passkey: StoredPasskey,
        added_in: &str,
    ) -> Result<Protect, StoreError>;
    /// The account that protected this name (compared as [`name_key`]) and its passkeys, in
    /// credential id order; `None` when no account protects it (or that account is gone).
    async fn passkeys_by_name(
        &self,
        username: &str,
    ) -> Result<Option<(User, Vec<StoredPasskey>)>, StoreError>;
    /// The oldest existing account whose name has this name's [`name_key`] (the first of them in
    /// [`Store::list_users`]): the only one [`Store::protect`] lets protect it while nobody
    /// has. `None` when there is none.
    async fn oldest_with_name(&self, username: &str) -> Result<Option<UserId>, StoreError>;
    /// The user's passkeys, oldest first (then by credential id), and whether they protect its
    /// name; none for an unknown user.
    async fn passkeys(&self, user: &UserId) -> Result<AccountPasskeys, StoreError>;
    /// Removes one of the user's passkeys; removing its last gives its name up (a sign-up with
    /// it is then allowed again, and any account that is now the oldest with it may protect it).
    /// Atomic with [`Store::protect`] and sign-ups.
    async fn remove_passkey(
        &self,
        user: &UserId,
        cred_id: &str,
    ) -> Result<RemovedPasskey, StoreError>;
    /// Replaces a passkey of the user after a sign-in (its counter may have moved; `now` may
    /// equal `was`) and records the sign-in as its last use, compare-and-set:
    /// only while it is still stored exactly as `was` (the passkey the sign-in was checked
    /// against, its counter below the new one). Returns whether it was replaced; a credential
    /// that is not the user's, or that another sign-in changed meanwhile, is left alone
    /// (`false`), so a counter never goes back, whatever sign-ins race.
    async fn passkey_used(
        &self,
        user: &UserId,
        was: &StoredPasskey,
        now: StoredPasskey,
    ) -> Result<bool, StoreError>;
    /// Keeps a sign-in ceremony's state for `ttl` under `id` (a random id the caller drew).
    async fn put_ceremony(&self, id: &str, state: String, ttl: Duration) -> Result<(), StoreError>;
    /// Takes a ceremony's state: the first call within its ttl gets it, every other call (at
    /// the same time, later, on any node) gets `None`. Single use.
    async fn take_ceremony(&self, id: &str) -> Result<Option<String>, StoreError>;

    // ---- users ----
    /// Every user, in sign-up order, without the accounts [`Store::expire_accounts`] deleted
    /// (shared: callers only read it).
    async fn list_users(&self) -> Result<std::sync::Arc<Vec<User>>, StoreError>;

    // ---- messages ----
    /// Stores a message durably, and answers only then (a caller that acks after this acks
    /// durable data). `None` when the recipient is unknown: nothing is written. The same
    /// `(from, client_id)` again, at the same time or after a restart, writes nothing and
    /// returns the first copy as [`Stored::Duplicate`], whatever the resend's content or
    /// recipient say (the resend of a stored message is answered, never refused). Client ids
    /// are per sender. A message is in both its sender's and its recipient's conversations; a
    /// message to oneself is a note, listed once.
    async fn insert_message(&self, message: NewMessage) -> Result<Option<Stored>, StoreError>;
    /// Who the viewer has conversations with (in no particular order), and of each
    /// conversation the newest `per_peer` messages among those with `id > since` (0: all), of
    /// those the newest `most` overall, oldest first: a connect reads a bounded number of
    /// messages however many people wrote to the viewer. Every conversation is named, whether
    /// or not any of its messages are listed.
    async fn conversations(
        &self,
        viewer: &UserId,
        per_peer: u32,
        since: i64,
        most: u32,
    ) -> Result<Conversations, StoreError>;
    /// The viewer's messages (of every conversation) with `id > since`, oldest first, at most
    /// `limit`; `has_more` when more follow the last.
    async fn messages_since(
        &self,
        viewer: &UserId,
        since: i64,
        limit: u32,
    ) -> Result<Page, StoreError>;
    /// The newest `limit` of the viewer's messages with `peer` older than `before` (none: the
    /// newest), oldest first; `has_more` when older ones exist.
    async fn history(
        &self,
        viewer: &UserId,
        peer: &UserId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page, StoreError>;

    // ---- read state and settings ----
    //
    // Read cursors are written only when they move (by `mark_read`), never per message; the
    // conversation list and unread counts are computed when read, from the messages already
    // indexed by conversation. So storing a message costs what it did before (issue 26): a
    // "latest activity" index kept per user would be two more B-tree writes per message on the
    // SQLite writer (the sender's and the recipient's rows). Reading pays instead, one index seek
    // per conversation of the viewer: measured on SQLite (release), a page of 50 takes 2.7 ms
    // out of 1,000 conversations and 9.6 ms out of 5,000, on a reader thread, priced by rows
    // (`transport::price::STORE_ROW`); unread counts read at most `unread_max` messages each
    // (`--unread-count-max`), `UNREAD_MAX` for `read`.

    /// Moves the viewer's read cursor of the conversation with `peer` to `up_to`, clamped to the
    /// conversation's newest message, if that is past the cursor: a cursor never goes back,
    /// whatever calls race. Returns the viewer's state after it, unread counted as of the
    /// newest message. `None` when `peer` is not a user. Without a conversation (no message yet)
    /// nothing is written and the state is all zero.
    ///
    /// Besides the read cursor, each (viewer, conversation) has a *seen* cursor: what the peer
    /// may know the viewer read. A call that moves the read cursor while both have read
    /// receipts on (checked atomically with the write, never for notes to self) moves the seen
    /// cursor to the same place and time ([`MarkedRead::seen`]); any other call leaves it where
    /// it is. So what is read while either has receipts off is never reported, not even once
    /// they are on again: the seen cursor stays where it was until the next read that moves the
    /// read cursor with receipts shared (reading the same messages again moves nothing). Being
    /// a cursor, that next one covers every message before it. The seen cursor never goes back
    /// and is never past the read cursor.
    async fn mark_read(
        &self,
        viewer: &UserId,
        peer: &UserId,
        up_to: i64,
    ) -> Result<Option<MarkedRead>, StoreError>;
    /// The viewer's conversations whose newest message is older than `before` (none: from the
    /// newest), newest activity first, at most `limit`; `has_more` when older ones exist.
    /// A conversation's activity is its newest message's id. Each unread count reads at most
    /// `unread_max` messages (a count of that many means "that many or more"), so a listed
    /// conversation costs at most `1 + unread_max` rows of `scanned`.
    async fn conversation_page(
        &self,
        viewer: &UserId,
        before: Option<i64>,
        limit: u32,
        unread_max: u32,
    ) -> Result<ConversationPage, StoreError>;
    /// The user's settings (the defaults for a user that changed none, or is unknown).
    async fn settings(&self, user: &UserId) -> Result<UserSettings, StoreError>;
    /// Applies the change; `None` when the user is unknown (nothing written).
    async fn change_settings(
        &self,
        user: &UserId,
        change: SettingsChange,
    ) -> Result<Option<SettingsChanged>, StoreError>;

    // ---- presence ----
    /// Counts a new socket of the user; returns the user's socket count (1: just came online),
    /// atomically: of calls made at the same time each gets its own count, so a caller past
    /// its per-user limit knows it is the one to undo its socket.
    async fn socket_connected(&self, user: &UserId) -> Result<u32, StoreError>;
    /// Uncounts a socket of the user; returns how many are left (0: just went offline, for
    /// exactly one of calls made at the same time), or `None` when none was counted.
    async fn socket_disconnected(&self, user: &UserId) -> Result<Option<u32>, StoreError>;
    /// A snapshot of who is online: the users with a socket counted (shared, not copied,
    /// where the store can).
    async fn online_users(&self) -> Result<Arc<HashSet<UserId>>, StoreError>;
    /// Which of `users` are online, read at the cost of those users where the store can
    /// (Redis: one membership check per node, not a read of every online user), so that an
    /// answer naming a page of users costs that page, whoever else is online.
    async fn online_among(&self, users: &[UserId]) -> Result<HashSet<UserId>, StoreError> {
        let online = self.online_users().await?;
        Ok(users
            .iter()
            .filter(|u| online.contains(*u))
            .cloned()
            .collect())
    }
    /// How many users are online, without reading who, and what checking one user costs:
    /// what the roster uses to choose the cheaper way to find online users.
    async fn online_count(&self) -> Result<OnlineCount, StoreError> {
        Ok(OnlineCount {
            users: self.online_users().await?.len(),
            check_cost: 1,
        })
    }
    /// How many sockets of the user are counted now.
    async fn socket_count(&self, user: &UserId) -> Result<u32, StoreError>;

    // ---- health ----
    /// Proves the store serves requests now, by a real write committed the way every other
    /// write is (SQLite: through the writer thread; Redis: on the store's own connection). A
    /// store that cannot write (a read-only or failing disk, a database file deleted under the
    /// server, a Redis that is gone or refuses writes) fails it. `/readyz` runs it, at most
    /// about once a second, so it must stay cheap.
    async fn check_ready(&self) -> Result<(), StoreError>;

    // ---- cluster presence ----
    /// How often [`Store::heartbeat`] must run; `None` for a store with one node only.
    fn heartbeat_every(&self) -> Option<Duration> {
        None
    }
    /// Proves this node alive and reclaims the presence of nodes that stopped doing so. While
    /// every node is alive there is no change to report (a store with one node has none ever).
    async fn heartbeat(&self) -> Result<Vec<PresenceChange>, StoreError> {
        Ok(Vec::new())
    }
}
