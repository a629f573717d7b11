//! Event names, as they travel on the wire.

/// Server → socket: `{ sessionID, userID }` right after an accepted handshake.
pub const SESSION: &str = "session";
/// Server → socket: the roster, one entry per user.
pub const USERS: &str = "users";
/// Server → everyone else: a user's socket connected.
pub const USER_CONNECTED: &str = "user connected";
/// Server → everyone else: a user's last socket left (payload: the bare userID string).
pub const USER_DISCONNECTED: &str = "user disconnected";
/// Both ways: a direct message.
pub const PRIVATE_MESSAGE: &str = "private message";
/// Client → server (with ack): messages after a cursor, plus presence.
pub const RESTORE_STATE: &str = "restore_state";
/// Client → server (with ack): older messages of one conversation.
pub const HISTORY: &str = "history";
/// Client → server (with ack): a page of the user directory, `{ offset, limit }`.
pub const USERS_PAGE: &str = "users_page";
/// Client → server (with ack): end this session (or, with `everywhere`, all of the user's).
pub const LOGOUT: &str = "logout";
/// Server → every socket of a user: how many sockets (tabs) the user has connected.
pub const TABS: &str = "tabs";

/// Server → the sockets a takeover replaced, just before they are disconnected.
pub const SESSION_MOVED: &str = "session moved";

/// The CONNECT_ERROR message for every refused handshake, exactly as the tutorial has it.
pub const INVALID_USERNAME: &str = "invalid username";
/// The CONNECT_ERROR message for a sign-up (a handshake creating an account) whose name a passkey
/// protects (issue #25): that name is its account's alone; the client may offer a passkey
/// sign-in instead.
pub const NAME_PROTECTED: &str = "name protected";
/// The CONNECT_ERROR message for a session bound to a key (issue #25, proof of possession)
/// whose handshake has no valid `pop`: its id was copied to another browser, or a captured
/// CONNECT was replayed. The session itself is untouched.
pub const PROOF_REQUIRED: &str = "proof required";
/// The CONNECT_ERROR message for a session secret that was rotated out (issue #25, rotation)
/// presented again after its grace: a copy of the session is in two hands, so the session is
/// ended on every node (an unbound session only; a bound one goes by its proof of possession).
/// The client must sign in again.
pub const SESSION_REUSED: &str = "session reused";
/// What a proof of possession signs: this prefix, then the connection's Engine.IO sid.
pub const POP_PREFIX: &str = "tether-pop-1:";
/// What stands for the sid in the proof a passkey sign-in carries (`POST /api/passkey/signin`):
/// this prefix, then the ceremony id. An Engine.IO sid never holds a `:`, so neither proof can
/// be passed off as the other.
pub const SIGN_IN_POP_PREFIX: &str = "signin:";
/// The CONNECT_ERROR message when the tab policy forbids a second connection of a session.
pub const SESSION_ALREADY_ACTIVE: &str = "session already active";
/// The CONNECT_ERROR message when a handshake would create an account but its client address,
/// or the server as a whole, has used up its sign-ups for now (try again later).
pub const TOO_MANY_SIGNUPS: &str = "too many sign-ups";
/// The CONNECT_ERROR message when the session's socket was just disconnected for sending past
/// its limits: it may connect again after the server's cooldown.
pub const TOO_MANY_REQUESTS: &str = "too many requests";
/// Server → client (Tether extension): the server could not queue an event for this socket
/// (its send buffer was full), so it may have missed something: run `restore_state` from the
/// last id held.
pub const RESYNC: &str = "resync";

/// Client → server (with ack): the viewer's conversations, latest activity first, each with its
/// last message, unread count and read cursors.
pub const CONVERSATIONS: &str = "conversations";
/// Client → server (with ack): move the viewer's read cursor of one conversation.
/// Server → every socket of the viewer (every tab, device and node): a read cursor moved.
pub const READ: &str = "read";
/// Server → every socket of a sender: the recipient read the sender's messages up to an id
/// (only while both share read receipts).
pub const SEEN: &str = "seen";
/// Client → server (no ack): the viewer is typing to a user (relayed at most once per
/// `--typing-every-ms` per conversation). Server → every socket of that user: `{ from }`.
/// Volatile: never stored, never replayed.
pub const TYPING: &str = "typing";
/// Client → server (with ack): users whose name contains a query, across the whole directory.
pub const USERS_SEARCH: &str = "users_search";
/// Client → server (with ack): read or change the viewer's settings.
/// Server → every socket of the viewer: the settings changed.
pub const SETTINGS: &str = "settings";
/// Client → server (with ack): the viewer's devices (every session of the account), with the
/// asking one marked `current`.
pub const DEVICES: &str = "devices";
/// Client → server (with ack): end one of the viewer's sessions by its `deviceID` (the current
/// one too: that signs this browser out); its sockets close on every node.
pub const REVOKE_DEVICE: &str = "revoke_device";
/// Client → server (with ack): start protecting the viewer's name with a passkey (issue #25):
/// `{ ok: { publicKey } }`, the WebAuthn creation options for `navigator.credentials.create`.
pub const PASSKEY_OPTIONS: &str = "passkey_options";
/// Client → server (with ack): `{ credential }`, the created credential (`toJSON()`), finishing
/// what `passkey_options` started on this socket: `{ ok: { protected: true } }`.
pub const PASSKEY_ADD: &str = "passkey_add";
/// Client → server (with ack): the account's passkeys (oldest first) and whether its name is
/// protected: `{ ok: { protected, passkeys: [{ passkeyID, addedIn, added, lastUsed }] } }`.
pub const PASSKEYS: &str = "passkeys";
/// Client → server (with ack): `{ passkeyID }`, remove one of the account's passkeys; the last
/// one's removal gives the name up: `{ ok: { protected } }`.
pub const PASSKEY_REMOVE: &str = "passkey_remove";
