//! The Redis backend, for several nodes sharing one Redis (7 or newer, one primary endpoint,
//! over TLS or not). Not Redis Cluster yet: presence is hash-tagged (each of its scripts stays
//! in one slot, and is tested on a cluster), the rest of the layout is not, since its scripts
//! name keys they compute (issue #27 item 1 moves it, part by part).
//! [`RedisTarget`] is how a node reaches it, for this store and the Socket.IO adapter alike.
//!
//! Layout, every key under `{prefix}:`:
//! - `usernames` hash userID → name; `directory` sorted set of userIDs scored by sign-up number
//!   (`users:seq`), so a node's cached directory reads only the entries after the last it has;
//!   `users:epoch` counts the sweeps that deleted accounts (a node whose epoch is behind reads
//!   the whole directory again). Before expiry the directory was a `users` list of
//!   `[userID, name]` JSON, which [`RedisStore::connect`] converts once;
//! - `session:{sha256(secret)}` hash (user, name, created) whose TTL is the idle timeout,
//!   refreshed on every use; `user:{id}:sessions` set of digests for "sign out everywhere";
//!   `session-deadlines` sorted set of `{digest}:{user}` scored by when the session expires
//!   (idle or maximum age, whichever is first), so the per-second sweep reads only what is
//!   due; `quiet-users` sorted set of the users that never sent or received a message, scored
//!   by their last handshake (0: no session left), read by the account sweep;
//! - `msg:seq` counter (message ids); `messages` hash id → the wire JSON of the message;
//!   `inbox:{user}` and `conv:{a}|{b}` sorted sets of ids (score = id); `peers:{user}` set;
//!   `dedupe:{user}` hash clientId → id. One Lua script checks the recipient, de-duplicates,
//!   takes the id and writes all of it atomically, before the caller acks;
//! - read state: `reads:{user}` hash peer → `"{upTo}:{at}"`, the user's read cursor of each
//!   conversation, written only when it moves (one script reads, clamps and writes it, so it
//!   never goes back); `seen:{user}` hash peer → `"{upTo}:{at}"`, the user's seen cursor (what
//!   the peer may know they read), written by the same script to the read cursor's new place
//!   only when it moves while both have read receipts on (absent: nothing seen; cursors read
//!   before this hash existed are not copied into it: peers see "Seen" again from the next
//!   read made with receipts shared); `settings:{user}` hash (`readReceipts` `"0"`/`"1"`;
//!   absent: on). Nothing
//!   about reading is written per message: the conversation list takes each conversation's
//!   newest id from its `conv:` set, and an unread count reads the messages after the cursor
//!   (newest first, at most `UNREAD_MAX` for `read`, `--unread-count-max` for a conversation
//!   page, stopping at the reader's own);
//! - presence ([`presence`], hash-tagged so that each script stays in one Redis Cluster slot,
//!   issue #27): `{u:<user>}:presence` hash node → the user's sockets on that node, whose sum
//!   is the user's count; `{<prefix>:n:<node>}:users` set, the users with sockets on the node
//!   (read by `online_users` and by the sweep of a dead node); `{<prefix>:g}:node:<node>` a
//!   heartbeat key with a TTL, `{<prefix>:g}:nodes` set of the registered nodes,
//!   `{<prefix>:g}:sweeping` sorted set of the dead nodes being swept, scored by when the
//!   sweep's lease lapses, `{<prefix>:g}:swept` sorted set of the nodes swept with users listed
//!   (each swept once more later), scored by when. The keys of the layout before (`nodes`, `presence:<node>`,
//!   `node:<node>`) are dropped at connect;
//! - `{<prefix>:n:<node>}:ready`: what the node's readiness probe (`/readyz`) writes,
//!   expiring in a minute;
//! - passkeys (issue #25 slice 4): `protected` hash name key → userID (first to protect wins),
//!   `creds` hash credential id → userID (unique across accounts), `user:{id}:passkeys` hash
//!   credential id → the `Passkey` JSON, `user:{id}:passkey-info` hash credential id →
//!   `added|last used|added in` (ms, ms, device label; absent for passkeys from before it);
//!   `ceremony:{id}` string, a sign-in ceremony's state with
//!   its TTL, taken by `GETDEL` (single use).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use protocol::payloads::Message;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, IntoConnectionInfo, ProtocolVersion, Script};

use super::sqlite::SessionPolicy;
use super::NewDevice;
use super::{
    cut_to_page, now_ms, ConversationEntry, ConversationPage, Conversations, Device, Expired,
    MarkedRead, NewMessage, Page, PresenceChange, ReadCursor, ReadStatus, Session, SettingsChange,
    SettingsChanged, Store, StoreError, Stored, User, UserSettings, UNREAD_MAX,
};
use super::{
    name_key, AccountPasskeys, Bind, Created, PasskeyInfo, PopKey, Protect, Reissue,
    RemovedPasskey, Rotate, Secret, StoredPasskey, Touched, PASSKEYS_PER_USER_MAX,
};
use crate::domain::{SessionId, UserId, Username};

pub mod presence;
pub use presence::RedisPresence;

/// A connection to a standalone Redis (one primary endpoint) or to a Redis Cluster. Both
/// reconnect by themselves and are cheap to clone (clones share one multiplexed connection
/// per server). A cluster connection routes each command by its first key's slot and resends
/// a command whose connection dropped, so a script sent over it may run twice: every write
/// script must be idempotent.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_command(cmd),
            RedisConn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(conn) => conn.get_db(),
            RedisConn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// What completes a Redis URL, each from a file: TLS trust and identity, and a password kept
/// out of the URL (and so out of process lists).
#[derive(Debug, Clone, Default)]
pub struct RedisFiles {
    /// PEM certificates of the CA(s) that sign the server's certificate, trusted instead of the
    /// system's CA store (a private CA).
    pub ca: Option<PathBuf>,
    /// PEM certificate chain this node shows a Redis that verifies clients (mutual TLS).
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// A file holding the password (one trailing newline is ignored).
    pub password: Option<PathBuf>,
}

/// Why a Redis URL and its files make no usable connection, or the first connection failed.
/// No variant holds a credential: URLs are shown through [`redacted_url`].
#[derive(Debug, thiserror::Error)]
pub enum RedisTargetError {
    #[error("{shown} is not a usable Redis URL")]
    Url {
        shown: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("cannot read the {what} {}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} {} holds no PEM certificate", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the password file {} is empty", path.display())]
    EmptyPassword { path: PathBuf },
    #[error("a password in the URL and a password file: give the password in one place")]
    PasswordTwice,
    #[error("--redis-client-cert and --redis-client-key go together: one is missing")]
    HalfClientIdentity,
    #[error("{shown} turns certificate verification off (#insecure), which Tether does not do")]
    Insecure { shown: String },
    #[error("a CA file or client certificate needs TLS: {shown} is not a rediss:// URL")]
    TlsFilesWithoutTls { shown: String },
    #[error("unusable TLS certificate or key for {shown}")]
    Tls {
        shown: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("cannot use Redis at {shown}: {hint}")]
    Connect {
        shown: String,
        hint: &'static str,
        #[source]
        source: redis::RedisError,
    },
}

/// How this node reaches its Redis, the one definition for the store and the Socket.IO adapter:
/// the address and credentials of the URL (plus a password file), and for `rediss://` the
/// trusted CAs (the system's CA store unless a CA file is given) and an optional client identity.
#[derive(Clone)]
pub struct RedisTarget {
    info: redis::ConnectionInfo,
    tls: Option<redis::TlsCertificates>,
    shown: String,
}

impl RedisTarget {
    /// Reads the files and checks the URL; connects to nothing yet.
    pub fn new(url: &str, files: &RedisFiles) -> Result<Self, RedisTargetError> {
        let shown = redacted_url(url);
        let mut info = url
            .into_connection_info()
            .map_err(|source| RedisTargetError::Url {
                shown: shown.clone(),
                source,
            })?;
        if let Some(path) = &files.password {
            if info.redis_settings().password().is_some() {
                return Err(RedisTargetError::PasswordTwice);
            }
            let text = String::from_utf8(read("password file", path)?).map_err(|e| {
                RedisTargetError::File {
                    what: "password file",
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
                }
            })?;
            let password = text
                .strip_suffix('\n')
                .map(|p| p.strip_suffix('\r').unwrap_or(p))
                .unwrap_or(&text);
            if password.is_empty() {
                return Err(RedisTargetError::EmptyPassword { path: path.clone() });
            }
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let is_tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        if matches!(
            info.addr(),
            redis::ConnectionAddr::TcpTls { insecure: true, .. }
        ) {
            return Err(RedisTargetError::Insecure { shown });
        }
        let has_tls_files =
            files.ca.is_some() || files.client_cert.is_some() || files.client_key.is_some();
        if has_tls_files && !is_tls {
            return Err(RedisTargetError::TlsFilesWithoutTls { shown });
        }
        let identity = match (&files.client_cert, &files.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read_certificates("client certificate", cert)?,
                client_key: read("client key", key)?,
            }),
            _ => return Err(RedisTargetError::HalfClientIdentity),
        };
        let root_cert = files
            .ca
            .as_deref()
            .map(|path| read_certificates("CA file", path))
            .transpose()?;
        let tls = has_tls_files.then_some(redis::TlsCertificates {
            client_tls: identity,
            root_cert,
        });
        if is_tls {
            // redis' rustls has no provider of its own; `ring` is the one this build carries.
            // Err only means one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let target = Self { info, tls, shown };
        // Parses the PEM now, so a bad key fails here rather than at the first connection.
        target.client(ProtocolVersion::RESP2)?;
        Ok(target)
    }

    /// The URL as messages show it: without its credentials.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A client speaking `protocol`: RESP2 for the store (its scripts' replies are read as
    /// RESP2 types), RESP3 for the adapter (pub/sub messages arrive as push messages).
    ///
    /// Every connection has `TCP_NODELAY`, keepalive probes and (on Linux) a TCP user timeout of
    /// [`DEAD_CONNECTION_AFTER`]: a connection whose Redis vanished without a FIN or RST (a host
    /// gone, a partition) fails within that instead of the kernel's 15 minutes of retransmits,
    /// and its `ConnectionManager` reconnects: the pub/sub one (RESP3) at once, a RESP2 one when
    /// its next command finds the connection closed. A response timeout alone would not: redis
    /// retries the command on the same dead connection.
    pub fn client(&self, protocol: ProtocolVersion) -> Result<redis::Client, RedisTargetError> {
        let settings = self.info.redis_settings().clone().set_protocol(protocol);
        let keepalive = redis::io::tcp::socket2::TcpKeepalive::new()
            .with_time(DEAD_CONNECTION_AFTER)
            .with_interval(Duration::from_secs(1));
        let tcp = self
            .info
            .tcp_settings()
            .clone()
            .set_nodelay(true)
            .set_keepalive(keepalive);
        #[cfg(target_os = "linux")]
        let tcp = tcp.set_user_timeout(DEAD_CONNECTION_AFTER);
        let info = self
            .info
            .clone()
            .set_redis_settings(settings)
            .set_tcp_settings(tcp);
        match &self.tls {
            None => redis::Client::open(info),
            Some(certificates) => redis::Client::build_with_tls(info, certificates.clone()),
        }
        .map_err(|source| RedisTargetError::Tls {
            shown: self.shown.clone(),
            source,
        })
    }

    /// Opens one connection and sends PING, so that what no retry can fix (credentials
    /// refused, a certificate not trusted, no RESP3) stops the start with a clear message.
    /// A Redis not listening yet is left to the store's connection, which retries.
    pub async fn check(&self) -> Result<(), RedisTargetError> {
        let result = async {
            let mut conn = self
                .client(ProtocolVersion::RESP3)?
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| self.refused(e))?;
            redis::cmd("PING")
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.refused(e))
        }
        .await;
        match result {
            Err(RedisTargetError::Connect { source, .. }) if source.is_connection_refusal() => {
                Ok(())
            }
            other => other,
        }
    }

    fn refused(&self, source: redis::RedisError) -> RedisTargetError {
        RedisTargetError::Connect {
            shown: self.shown.clone(),
            hint: hint(&source),
            source,
        }
    }
}

/// What an operator should look at, by the kind of failure.
fn hint(error: &redis::RedisError) -> &'static str {
    use redis::{ErrorKind, ServerErrorKind};
    let tls = tls_failure(error);
    match error.kind() {
        _ if error.code() == Some("NOAUTH") => {
            "Redis wants a password: in the URL (redis://:PASSWORD@host) or a password file"
        }
        _ if error.code() == Some("WRONGPASS") => {
            "Redis refused the credentials (the user and password in the URL or the password file)"
        }
        _ if matches!(tls, Some(rustls::Error::InvalidCertificate(_))) => {
            "TLS: the server's certificate is not trusted; is it signed by a CA this node \
             trusts (the system's CA store, or --redis-ca-file), for the host in the URL?"
        }
        _ if matches!(tls, Some(rustls::Error::AlertReceived(_))) => {
            "TLS: the server refused the connection; does it want a client certificate \
             (--redis-client-cert, --redis-client-key) signed by a CA it trusts?"
        }
        _ if tls.is_some() => {
            "TLS failed: does this port speak TLS (a rediss:// URL to a plain port?), with a \
             TLS version and cipher suite in common?"
        }
        ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm) => {
            "Redis refused the credentials (the user and password in the URL or the password file)"
        }
        ErrorKind::RESP3NotSupported => "the Socket.IO adapter needs RESP3 (Redis 6 or newer)",
        ErrorKind::Io if error.is_timeout() || error.is_connection_dropped() => {
            "no answer: is the scheme right for this port (rediss:// for TLS, redis:// for \
             plain), and the host reachable?"
        }
        _ => "Redis did not answer as expected",
    }
}

/// The rustls error that ended the connection, if TLS did. redis keeps the I/O error behind
/// an `Arc`, which the walk opens.
fn tls_failure<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        return io.get_ref()?.downcast_ref::<rustls::Error>();
    }
    if let Some(shared) = error.downcast_ref::<Shared>() {
        let inner: &(dyn std::error::Error + 'static) = shared.as_ref();
        return tls_failure(inner);
    }
    tls_failure(error.source()?)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, RedisTargetError> {
    std::fs::read(path).map_err(|source| RedisTargetError::File {
        what,
        path: path.to_owned(),
        source,
    })
}

/// A PEM file with at least one certificate in it (an empty trust store would refuse every
/// server, later and less clearly).
fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<u8>, RedisTargetError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let pem = read(what, path)?;
    if !CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok()) {
        return Err(RedisTargetError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(pem)
}

/// The URL without its credentials, for error messages and logs. Everything before the last
/// `@` is hidden, so a password with an unescaped `@` in it stays hidden too.
pub fn redacted_url(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((scheme_and_auth, host)) => match scheme_and_auth.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://<credentials>@{host}"),
            None => format!("<credentials>@{host}"),
        },
        None => url.to_owned(),
    }
}

/// Key names, all under one prefix so several deployments can share a Redis.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }
    fn usernames(&self) -> String {
        self.key("usernames")
    }
    /// The directory as it was before expiry (a list), converted at connect.
    fn legacy_users(&self) -> String {
        self.key("users")
    }
    fn directory(&self) -> String {
        self.key("directory")
    }
    fn users_seq(&self) -> String {
        self.key("users:seq")
    }
    fn users_epoch(&self) -> String {
        self.key("users:epoch")
    }
    fn protected(&self) -> String {
        self.key("protected")
    }
    /// Each user's name key (`store::name_key`), by user id.
    fn name_keys(&self) -> String {
        self.key("name-keys")
    }
    /// The users with one name key, scored by sign-up number (oldest first).
    fn names(&self, name_key: &str) -> String {
        self.key(&format!("names:{name_key}"))
    }
    /// Set once the users from before name keys have theirs (see `RedisStore::fill_name_keys`).
    fn name_keys_filled(&self) -> String {
        self.key("name-keys:filled")
    }
    fn creds(&self) -> String {
        self.key("creds")
    }
    fn passkeys(&self, user: &str) -> String {
        self.key(&format!("user:{user}:passkeys"))
    }
    /// A user's passkeys as listed: credential id → `added|last used|added in`.
    fn passkey_info(&self, user: &str) -> String {
        self.key(&format!("user:{user}:passkey-info"))
    }
    fn ceremony(&self, id: &str) -> String {
        self.key(&format!("ceremony:{id}"))
    }
    fn quiet_users(&self) -> String {
        self.key("quiet-users")
    }
    fn session_deadlines(&self) -> String {
        self.key("session-deadlines")
    }
    /// What every key starts with, for the scripts that name keys they compute.
    fn all(&self) -> String {
        self.key("")
    }
    fn session(&self, digest: &str) -> String {
        self.key(&format!("session:{digest}"))
    }
    /// A secret after a session's first (issue #25, rotation): the session's family, so the
    /// secret finds its session. (The first secret's digest is the family itself.)
    fn secret(&self, digest: &str) -> String {
        self.key(&format!("secret:{digest}"))
    }
    fn user_sessions(&self, user: &str) -> String {
        self.key(&format!("user:{user}:sessions"))
    }
    fn message_seq(&self) -> String {
        self.key("msg:seq")
    }
    fn messages(&self) -> String {
        self.key("messages")
    }
    fn dedupe(&self, user: &str) -> String {
        self.key(&format!("dedupe:{user}"))
    }
    fn inbox(&self, user: &str) -> String {
        self.key(&format!("inbox:{user}"))
    }
    fn conversation(&self, a: &str, b: &str) -> String {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        self.key(&format!("conv:{lo}|{hi}"))
    }
    fn peers(&self, user: &str) -> String {
        self.key(&format!("peers:{user}"))
    }
    /// The user's read cursors, by peer.
    fn reads(&self, user: &str) -> String {
        self.key(&format!("reads:{user}"))
    }
    /// The user's seen cursors, by peer (what each peer may know the user read).
    fn seen(&self, user: &str) -> String {
        self.key(&format!("seen:{user}"))
    }
    fn settings(&self, user: &str) -> String {
        self.key(&format!("settings:{user}"))
    }
    /// `{prefix}:{<tag>}:<name>`. Keys that share a hash tag share a Redis Cluster slot, so
    /// a script may touch them together (issue #27: each script stays in one slot).
    fn tagged(&self, tag: &str, name: &str) -> String {
        format!("{}:{{{tag}}}:{name}", self.prefix)
    }
    /// The deployment's global keys about nodes (one slot; the prefix is in the tag so that
    /// deployments sharing a cluster do not share it).
    fn nodes_slot(&self, name: &str) -> String {
        self.tagged(&format!("{}:g", self.prefix), name)
    }
    /// The registered nodes (live, or dead and not yet claimed by a sweep).
    fn nodes(&self) -> String {
        self.nodes_slot("nodes")
    }
    /// Dead nodes being swept: node → when the sweep's lease lapses (ms).
    fn sweeping(&self) -> String {
        self.nodes_slot("sweeping")
    }
    /// Nodes swept while they listed users: node → when (ms). Each is swept once more later,
    /// in case it was alive and wrote after its sweep; a node that comes back finds itself here.
    fn swept(&self) -> String {
        self.nodes_slot("swept")
    }
    /// Prefix of the per-node heartbeat keys (the scripts append the node id).
    fn heartbeat_prefix(&self) -> String {
        self.nodes_slot("node:")
    }
    /// The users with sockets on a node (its presence index, read by `online_users` and by the
    /// sweep of a dead node).
    fn node_users(&self, node: &str) -> String {
        self.node_slot(node, "users")
    }
    /// One node's own keys (one slot per node).
    fn node_slot(&self, node: &str, name: &str) -> String {
        self.tagged(&format!("{}:n:{node}", self.prefix), name)
    }
    /// A user's presence: node → the user's sockets there.
    fn presence(&self, user: &str) -> String {
        self.tagged(&format!("u:{user}"), "presence")
    }
    /// The presence keys before they were hash-tagged (`nodes` set, `presence:<node>` hashes,
    /// `node:<node>` heartbeats), dropped at connect.
    fn legacy_nodes(&self) -> String {
        self.key("nodes")
    }
    /// The key a node's readiness probe writes (expiring: a stopped node leaves none behind).
    fn ready(&self, node: &str) -> String {
        self.node_slot(node, "ready")
    }
}

/// How long a Redis connection may go unanswered (unacknowledged bytes, or no reply to
/// keepalive probes) before it is dropped and made again.
pub const DEAD_CONNECTION_AFTER: Duration = Duration::from_secs(5);

/// How long a readiness probe's key outlives the probe.
const READY_KEY_TTL_MS: u64 = 60_000;

/// Lua numbers are doubles, and Redis turns one into a string with 14 digits at most:
/// millisecond times go through this to stay exact.
const INT: &str = r#"
local function int(n) return string.format('%.0f', n) end
"#;

/// Creates the user and its session, unless its name key ARGV[8] is protected (then -1, nothing
/// written) or either id is taken (then 0: draw again). A new user has no message yet: it joins
/// `quiet-users`; it joins its name key's users with its sign-up number.
const CREATE_SESSION: &str = r#"
if redis.call('HEXISTS', KEYS[8], ARGV[8]) == 1 then return -1 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local seq = redis.call('INCR', KEYS[5])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('ZADD', KEYS[9], seq, ARGV[1])
redis.call('HSET', KEYS[10], ARGV[1], ARGV[8])
redis.call('HSET', KEYS[3], 'user', ARGV[1], 'name', ARGV[2], 'created', ARGV[3], 'seen', ARGV[3], 'device', ARGV[7], 'key', ARGV[9])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[5])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[7], ARGV[6], ARGV[5] .. ':' .. ARGV[1])
return 1
"#;

/// Another session (device) of an existing user, unless the user holds ARGV[7] live sessions
/// already (`{'full'}`: sessions whose key expired or that are past the maximum age ARGV[8] do
/// not count; the set is walked only when it is that large) or its id is taken (then
/// `{'taken'}`: draw again). Returns nil when the user is unknown, else `{'ok', name}`.
const CREATE_DEVICE_SESSION: &str = r#"
local name = redis.call('HGET', KEYS[1], ARGV[1])
if not name then return false end
local max = tonumber(ARGV[7])
if redis.call('SCARD', KEYS[3]) >= max then
  local live, now, max_age = 0, tonumber(ARGV[2]), tonumber(ARGV[8])
  for _, d in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local created = redis.call('HGET', ARGV[9] .. 'session:' .. d, 'created')
    if created and now - tonumber(created) <= max_age then live = live + 1 end
  end
  if live >= max then return {'full'} end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'taken'} end
redis.call('HSET', KEYS[2], 'user', ARGV[1], 'name', name, 'created', ARGV[2], 'seen', ARGV[2], 'device', ARGV[6], 'key', ARGV[10])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4] .. ':' .. ARGV[1])
redis.call('ZADD', KEYS[5], 'XX', 'GT', ARGV[2], ARGV[1])
return {'ok', name}
"#;

/// The user's live sessions: `{family, created, seen, device, bound, ...}` (`seen` and `device`
/// are absent from sessions made before devices: then `created` and ''; `bound` is '1' when the
/// session has a key, '0' when it was made without one or before keys).
const DEVICES: &str = r#"
local now, max_age = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local s = redis.call('HMGET', ARGV[3] .. 'session:' .. d, 'user', 'created', 'seen', 'device', 'key')
  if s[1] == ARGV[4] and now - tonumber(s[2]) <= max_age then
    table.insert(out, d)
    table.insert(out, s[2])
    table.insert(out, s[3] or s[2])
    table.insert(out, s[4] or '')
    table.insert(out, (s[5] and s[5] ~= '') and '1' or '0')
  end
end
return out
"#;

/// Ends one session (by family) if it is the user's; returns 1 if it was.
const END_FAMILY: &str = r#"
local user = redis.call('HGET', KEYS[1], 'user')
if user ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1] .. ':' .. user)
redis.call('SREM', ARGV[2] .. 'user:' .. user .. ':sessions', ARGV[1])
mark_if_sessionless(KEYS[3], ARGV[2], user)
return 1
"#;

/// Ends every session of user ARGV[2] not bound to a key (its `key` field empty or absent):
/// KEYS[1] the user's sessions, KEYS[2] the deadlines, KEYS[3] the quiet users. Returns the
/// families ended.
const END_UNBOUND: &str = r#"
local ended = {}
for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local s = redis.call('HMGET', ARGV[1] .. 'session:' .. d, 'user', 'key')
  if s[1] == ARGV[2] and not (s[2] and s[2] ~= '') then
    redis.call('DEL', ARGV[1] .. 'session:' .. d)
    redis.call('ZREM', KEYS[2], d .. ':' .. ARGV[2])
    redis.call('SREM', KEYS[1], d)
    table.insert(ended, d)
  end
end
if #ended > 0 then mark_if_sessionless(KEYS[3], ARGV[1], ARGV[2]) end
return ended
"#;

/// Finds a session by one of its secrets (ARGV[5], a digest) and, unless it is past its maximum
/// age, refreshes it as used now: its idle TTL, its deadline, its last use (`seen`, for the
/// devices list), and its user's last handshake if the user has no message yet. KEYS[1] is the
/// session of family ARGV[4], KEYS[4] the secret's pointer. With ARGV[6] = 1 a secret that has
/// a pointer (one after the session's first) answers `{'family', family}` only: the caller asks
/// again with that family and ARGV[6] = 0. Returns nil when unknown, else `{user, name, live,
/// key, state, at, current}`: `live` 0 past its maximum age; `key` the hex of the point the
/// session is bound to ('' when unbound); `state` `current` (issued `at`; 0: due) or `retired`
/// (at `at`); `current` the digest of the current secret (`cur`, absent: the family's own).
const FIND_SESSION: &str = r#"
if ARGV[6] == '1' then
  local family = redis.call('GET', KEYS[4])
  if family then return {'family', family} end
end
local s = redis.call('HMGET', KEYS[1], 'user', 'name', 'created', 'key', 'cur', 'issued', 'r:' .. ARGV[5])
if not s[1] then return false end
local cur = s[5] or ARGV[4]
local state, at
if cur == ARGV[5] then
  state, at = 'current', s[6] or s[3]
elseif s[7] then
  state, at = 'retired', s[7]
else
  return false
end
local now, idle, max_age = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local created = tonumber(s[3])
if now - created > max_age then return {s[1], s[2], '0', '', state, at, cur} end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'seen', ARGV[1])
redis.call('ZADD', KEYS[2], int(math.min(now + idle, created + max_age)), ARGV[4] .. ':' .. s[1])
redis.call('ZADD', KEYS[3], 'XX', 'GT', ARGV[1], s[1])
return {s[1], s[2], '1', s[4] or '', state, at, cur}
"#;

/// Rotates the secret of session KEYS[1] (family ARGV[1]) if its current secret is still ARGV[2]
/// (compare-and-set) and fewer than ARGV[6] secrets were retired since ARGV[5]: ARGV[3] becomes
/// current (issued now, ARGV[4]), the old one is retired now (`r:<digest>`), and the new one's
/// pointer KEYS[2] names the family until the session's maximum age (ARGV[7]) is reached.
/// Returns `rotated`, `moved`, `gone`, `too_many`, or `taken` (the new digest is a secret or a
/// session already, KEYS[2] or KEYS[3]: draw again). Idempotent under retries (a retry after
/// a success is `moved`).
const ROTATE_SECRET: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'user', 'created', 'cur')
if not s[1] then return 'gone' end
local cur = s[3] or ARGV[1]
if cur ~= ARGV[2] then return 'moved' end
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 'taken' end
local recent, since = 0, tonumber(ARGV[5])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'r:' and tonumber(all[i + 1]) >= since then recent = recent + 1 end
end
if recent >= tonumber(ARGV[6]) then return 'too_many' end
redis.call('SET', KEYS[2], ARGV[1], 'PXAT', int(tonumber(s[2]) + tonumber(ARGV[7])))
redis.call('HSET', KEYS[1], 'cur', ARGV[3], 'issued', ARGV[4], 'r:' .. cur, ARGV[4])
return 'rotated'
"#;

/// Marks session KEYS[1]'s current secret due for rotation (issued at 0), if the session exists;
/// returns 1 if it did.
const MARK_ROTATION_DUE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'issued', '0')
return 1
"#;

/// Binds a session (ARGV[1]: the key's hex) unless it is bound already: `bound`, `this` (bound
/// to this key already), `other` or `gone`. Idempotent under retries.
const BIND_KEY: &str = r#"
local held = redis.call('HMGET', KEYS[1], 'user', 'key')
if not held[1] then return 'gone' end
if not held[2] then
  redis.call('HSET', KEYS[1], 'key', ARGV[1])
  return 'bound'
end
if held[2] == '' then return 'never' end
if held[2] == ARGV[1] then return 'this' end
return 'other'
"#;

/// Adds a passkey to a user and, on its first, claims the user's name key for it, if the user is
/// the oldest with that key; the user leaves `quiet-users` (a protected account is never swept)
/// and the directory's epoch moves (every node reads it again, to mark the owner).
/// Returns `protected`, `added`, `name_taken`, `credential_taken`, `full` or `unknown` (checked
/// in that order, as SQLite does); all or nothing. A registered credential is
/// `credential_taken` whoever holds it (a retry of a call that succeeded included).
const PROTECT: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 'unknown' end
local key = redis.call('HGET', KEYS[6], ARGV[1])
if not key then return 'unknown' end
local owner = redis.call('HGET', KEYS[2], key)
if owner and owner ~= ARGV[1] then return 'name_taken' end
if not owner and redis.call('ZRANGE', ARGV[4] .. 'names:' .. key, 0, 0)[1] ~= ARGV[1] then
  return 'name_taken'
end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 'credential_taken' end
if redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[5]) then return 'full' end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[8], ARGV[2], ARGV[6] .. '|' .. ARGV[6] .. '|' .. ARGV[7])
redis.call('ZREM', KEYS[5], ARGV[1])
if owner then return 'added' end
redis.call('HSET', KEYS[2], key, ARGV[1])
redis.call('INCR', KEYS[7])
return 'protected'
"#;

/// Gives the users from before name keys theirs, once (unless `name-keys:filled` is set):
/// ARGV holds `user, key` pairs of the users, then `old key, new key, user` triples of the
/// protected names, the owners oldest first (two claims that now share a key keep the older
/// account's). ARGV[1] is the key prefix, ARGV[2] the number of users.
const FILL_NAME_KEYS: &str = r#"
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local users = tonumber(ARGV[2])
for i = 3, 2 + 2 * users, 2 do
  local user, key = ARGV[i], ARGV[i + 1]
  local seq = redis.call('ZSCORE', KEYS[2], user)
  if seq and redis.call('HSETNX', KEYS[1], user, key) == 1 then
    redis.call('ZADD', ARGV[1] .. 'names:' .. key, seq, user)
  end
end
local first = 3 + 2 * users
for i = first, #ARGV, 3 do
  if redis.call('HGET', KEYS[3], ARGV[i]) == ARGV[i + 2] then redis.call('HDEL', KEYS[3], ARGV[i]) end
end
for i = first, #ARGV, 3 do redis.call('HSETNX', KEYS[3], ARGV[i + 1], ARGV[i + 2]) end
redis.call('SET', KEYS[4], '1')
return users
"#;

/// The user that protected name key ARGV[1], its name and its passkeys: nil when none, else
/// `{user, name, cred_id, json, ...}`.
const PASSKEYS_BY_NAME: &str = r#"
local user = redis.call('HGET', KEYS[1], ARGV[1])
if not user then return false end
local name = redis.call('HGET', KEYS[2], user)
if not name then return false end
local out = {user, name}
for _, v in ipairs(redis.call('HGETALL', ARGV[2] .. 'user:' .. user .. ':passkeys')) do
  table.insert(out, v)
end
return out
"#;

/// Replaces a passkey of user ARGV[1] (credential ARGV[2]) with ARGV[3] if it is theirs and
/// still ARGV[4] (compare-and-set), and marks it used at ARGV[5]; returns 1 if it was replaced.
const PASSKEY_USED: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
local added, label = string.match(redis.call('HGET', KEYS[2], ARGV[2]) or '', '^(%d+)|%d+|(.*)$')
if added then redis.call('HSET', KEYS[2], ARGV[2], added .. '|' .. ARGV[5] .. '|' .. label) end
return 1
"#;

/// User ARGV[1]'s passkeys: `{protected (0/1), cred_id, info or '', ...}`.
const LIST_PASSKEYS: &str = r#"
local key = redis.call('HGET', KEYS[3], ARGV[1])
local protected = 0
if key and redis.call('HGET', KEYS[4], key) == ARGV[1] then protected = 1 end
local out = {protected}
for _, cred in ipairs(redis.call('HKEYS', KEYS[1])) do
  table.insert(out, cred)
  table.insert(out, redis.call('HGET', KEYS[2], cred) or '')
end
return out
"#;

/// Removes user ARGV[1]'s passkey ARGV[2]; the last one gives the user's name claim up (and the
/// directory's epoch moves, so every node reads the roster's marks again). Returns -1 when the
/// passkey is not the user's, else whether the name is still protected (1/0).
const REMOVE_PASSKEY: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return -1 end
redis.call('HDEL', KEYS[2], ARGV[2])
if redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[3], ARGV[2]) end
local key = redis.call('HGET', KEYS[4], ARGV[1])
local owns = key and redis.call('HGET', KEYS[5], key) == ARGV[1]
if not owns then return 0 end
if redis.call('HLEN', KEYS[1]) > 0 then return 1 end
redis.call('HDEL', KEYS[5], key)
redis.call('INCR', KEYS[6])
return 0
"#;

/// Shared by the scripts that end sessions: a message-less user whose last session ended is
/// due for the account sweep (score 0).
const MARK_IF_SESSIONLESS: &str = r#"
local function mark_if_sessionless(quiet, prefix, user)
  if redis.call('SCARD', prefix .. 'user:' .. user .. ':sessions') == 0 then
    redis.call('ZADD', quiet, 'XX', 0, user)
  end
end
"#;

/// Ends one session (by digest); returns 1 if it existed.
const DELETE_SESSION: &str = r#"
local user = redis.call('HGET', KEYS[1], 'user')
local deleted = redis.call('DEL', KEYS[1])
if user then
  redis.call('ZREM', KEYS[2], ARGV[1] .. ':' .. user)
  redis.call('SREM', ARGV[2] .. 'user:' .. user .. ':sessions', ARGV[1])
  mark_if_sessionless(KEYS[3], ARGV[2], user)
end
return deleted
"#;

/// Ends every session of a user; returns how many still existed.
const DELETE_USER_SESSIONS: &str = r#"
local deleted = 0
for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  deleted = deleted + redis.call('DEL', ARGV[2] .. 'session:' .. d)
  redis.call('ZREM', KEYS[2], d .. ':' .. ARGV[1])
end
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[3], 'XX', 0, ARGV[1])
return deleted
"#;

/// The session sweep: ends up to `limit` sessions whose deadline passed (their hash may be
/// gone already, by its TTL) and returns their digests. Each is taken by one node only.
const EXPIRE_SESSIONS: &str = r#"
local out = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local sep = string.find(member, ':', 1, true)
  local digest, user = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  redis.call('ZREM', KEYS[1], member)
  redis.call('DEL', ARGV[3] .. 'session:' .. digest)
  redis.call('SREM', ARGV[3] .. 'user:' .. user .. ':sessions', digest)
  mark_if_sessionless(KEYS[2], ARGV[3], user)
  table.insert(out, digest)
end
return out
"#;

/// The account sweep: deletes up to `limit` message-less users last seen before `cutoff`
/// (or left without a session: score 0), with their sessions and directory entry. Returns
/// `{deleted, digest1, digest2, ...}`.
const EXPIRE_ACCOUNTS: &str = r#"
local deleted, out = 0, {0}
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])) do
  redis.call('ZREM', KEYS[1], user)
  if redis.call('EXISTS', ARGV[3] .. 'peers:' .. user) == 0 then
    local set = ARGV[3] .. 'user:' .. user .. ':sessions'
    for _, d in ipairs(redis.call('SMEMBERS', set)) do
      redis.call('DEL', ARGV[3] .. 'session:' .. d)
      redis.call('ZREM', KEYS[4], d .. ':' .. user)
      table.insert(out, d)
    end
    redis.call('DEL', set)
    redis.call('DEL', ARGV[3] .. 'settings:' .. user)
    redis.call('ZREM', KEYS[2], user)
    redis.call('HDEL', KEYS[3], user)
    local key = redis.call('HGET', KEYS[6], user)
    if key then
      redis.call('ZREM', ARGV[3] .. 'names:' .. key, user)
      redis.call('HDEL', KEYS[6], user)
    end
    deleted = deleted + 1
  end
end
if deleted > 0 then redis.call('INCR', KEYS[5]) end
out[1] = deleted
return out
"#;

/// Refreshes sessions whose sockets are connected, as a handshake would; returns the digests
/// of those gone or past their maximum age.
const TOUCH_SESSIONS: &str = r#"
local now, idle, max_age = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local gone, due = {}, {}
for i = 5, #ARGV do
  local key = ARGV[4] .. 'session:' .. ARGV[i]
  local s = redis.call('HMGET', key, 'user', 'created', 'issued')
  if not s[1] or now - tonumber(s[2]) > max_age then
    table.insert(gone, ARGV[i])
  else
    if s[3] == '0' then table.insert(due, ARGV[i]) end
    redis.call('PEXPIRE', key, ARGV[2])
    redis.call('HSET', key, 'seen', ARGV[1])
    redis.call('ZADD', KEYS[1], int(math.min(now + idle, tonumber(s[2]) + max_age)), ARGV[i] .. ':' .. s[1])
    redis.call('ZADD', KEYS[2], 'XX', 'GT', ARGV[1], s[1])
  end
end
return {gone, due}
"#;

/// The directory after sign-up number `ARGV[2]`, or all of it when the epoch (moved by account
/// deletions and protections) is not `ARGV[1]`: `{epoch, whole, seq1, user1, name1,
/// protected1, ...}` (protected: 1 when the user owns its name key's claim).
const LIST_USERS: &str = r#"
local epoch = redis.call('GET', KEYS[1]) or '0'
local whole, from = 0, '(' .. ARGV[2]
if epoch ~= ARGV[1] then whole, from = 1, '-inf' end
local out = {tonumber(epoch), whole}
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], from, '+inf', 'WITHSCORES')
for i = 1, #ids, 2 do
  table.insert(out, ids[i + 1])
  table.insert(out, ids[i])
  table.insert(out, redis.call('HGET', KEYS[3], ids[i]) or '')
  local key = redis.call('HGET', KEYS[4], ids[i])
  table.insert(out, (key and redis.call('HGET', KEYS[5], key) == ids[i]) and 1 or 0)
end
return out
"#;

/// Converts the directory as it was before expiry (a list of `[userID, name]` JSON) once:
/// every user joins the sorted directory in the same order, every live session gets its
/// deadline, and users without a message start their idle time now.
const MIGRATE_DIRECTORY: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now, max_age = tonumber(ARGV[2]), tonumber(ARGV[3])
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
for _, entry in ipairs(entries) do
  local user = cjson.decode(entry)[1]
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), user)
  local set = ARGV[1] .. 'user:' .. user .. ':sessions'
  for _, d in ipairs(redis.call('SMEMBERS', set)) do
    local key = ARGV[1] .. 'session:' .. d
    local created, ttl = redis.call('HGET', key, 'created'), redis.call('PTTL', key)
    if created and ttl > 0 then
      redis.call('ZADD', KEYS[5], int(math.min(now + ttl, tonumber(created) + max_age)), d .. ':' .. user)
    else
      redis.call('SREM', set, d)
    end
  end
  if redis.call('EXISTS', ARGV[1] .. 'peers:' .. user) == 0 then
    redis.call('ZADD', KEYS[4], ARGV[2], user)
  end
end
redis.call('DEL', KEYS[1])
return #entries
"#;

/// Stores a message: `{0, json}` for a resend of a client id already stored (whatever its
/// recipient, as the `Store` contract says), nil for an unknown recipient, `{1, json}` for a
/// new message.
const INSERT_MESSAGE: &str = r#"
if ARGV[2] ~= '' then
  local existing = redis.call('HGET', KEYS[4], ARGV[2])
  if existing then return {0, redis.call('HGET', KEYS[3], existing)} end
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
local id = redis.call('INCR', KEYS[2])
local json = '{"id":' .. id .. ',' .. ARGV[3]
redis.call('HSET', KEYS[3], id, json)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[4], ARGV[2], id) end
redis.call('ZADD', KEYS[5], id, id)
redis.call('ZADD', KEYS[6], id, id)
redis.call('ZADD', KEYS[7], id, id)
redis.call('SADD', KEYS[8], ARGV[1])
redis.call('SADD', KEYS[9], ARGV[4])
redis.call('ZREM', KEYS[10], ARGV[1], ARGV[4])
return {1, json}
"#;

/// Shared by the read-state scripts: a read cursor (`"{upTo}:{at}"`, absent: `0, 0`); whether a
/// user's read receipts are on; and the unread count of a conversation: its messages after
/// `after` up to `as_of`, newest first, at most `max`, up to the first one `viewer` sent.
/// Returns `unread, scanned` (the messages read). The stored JSON is serde's, in which a quote
/// inside a string is always escaped: `,"from":"<id>"` can only be the sender field.
const READ_STATE: &str = r#"
local function cursor(key, field)
  local v = redis.call('HGET', key, field)
  if not v then return 0, 0 end
  local sep = string.find(v, ':', 1, true)
  return tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
end
local function receipts_on(key)
  return redis.call('HGET', key, 'readReceipts') ~= '0'
end
local function count_unread(conv, messages, after, as_of, viewer, max)
  local ids = redis.call('ZREVRANGEBYSCORE', conv, int(as_of), '(' .. int(after), 'LIMIT', 0, max)
  local needle = ',"from":"' .. viewer .. '"'
  local unread = 0
  for _, id in ipairs(ids) do
    local json = redis.call('HGET', messages, id)
    if json and string.find(json, needle, 1, true) then return unread, unread + 1 end
    unread = unread + 1
  end
  return unread, unread
end
"#;

/// Moves the viewer's read cursor of a conversation, and their seen cursor (`KEYS[7]`) with it
/// when both have read receipts on (see `Store::mark_read`): nil for an unknown peer, else
/// `{upTo, at, unread, asOf, moved, seen}` (`seen` 1: the seen cursor moved to `upTo`, `at`).
const MARK_READ: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
local up, at = cursor(KEYS[3], ARGV[1])
local newest = redis.call('ZREVRANGE', KEYS[2], 0, 0)[1]
if not newest then return {0, 0, 0, 0, 0, 0} end
newest = tonumber(newest)
local moved, seen = 0, 0
local target = math.min(tonumber(ARGV[2]), newest)
if target > up then
  up, at, moved = target, tonumber(ARGV[3]), 1
  redis.call('HSET', KEYS[3], ARGV[1], int(up) .. ':' .. ARGV[3])
  if ARGV[1] ~= ARGV[4] and receipts_on(KEYS[5]) and receipts_on(KEYS[6]) then
    seen = 1
    redis.call('HSET', KEYS[7], ARGV[1], int(up) .. ':' .. ARGV[3])
  end
end
local unread = count_unread(KEYS[2], KEYS[4], up, newest, ARGV[4], tonumber(ARGV[5]))
return {up, at, unread, newest, moved, seen}
"#;

/// One entry of a conversation page, whose newest message is `ARGV[3]`: `{json, name,
/// upTo, at, unread, scanned, peerShares, peerUpTo, peerAt}` (`peerShares` 1 when both have
/// receipts on and the peer is not the viewer; `peerUpTo`, `peerAt`: the peer's seen cursor,
/// `KEYS[5]`, never their read cursor), or nil when the message is gone.
const CONVERSATION_ENTRY: &str = r#"
local json = redis.call('HGET', KEYS[2], ARGV[3])
if not json then return false end
local name = redis.call('HGET', KEYS[1], ARGV[2]) or ''
local up, at = cursor(KEYS[4], ARGV[2])
local unread, scanned = count_unread(KEYS[3], KEYS[2], up, tonumber(ARGV[3]), ARGV[1], tonumber(ARGV[4]))
local shares, peer_up, peer_at = 0, 0, 0
if ARGV[1] ~= ARGV[2] and receipts_on(KEYS[6]) and receipts_on(KEYS[7]) then
  shares = 1
  peer_up, peer_at = cursor(KEYS[5], ARGV[1])
end
return {json, name, up, at, unread, scanned, shares, peer_up, peer_at}
"#;

/// Applies a settings change (`ARGV[2]`: `"0"`, `"1"` or `""` for unchanged) to a known user:
/// nil for an unknown one, else `{readReceipts, changed}`.
const CHANGE_SETTINGS: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
local old = redis.call('HGET', KEYS[2], 'readReceipts') or '1'
if ARGV[2] == '' or ARGV[2] == old then return {tonumber(old), 0} end
redis.call('HSET', KEYS[2], 'readReceipts', ARGV[2])
return {tonumber(ARGV[2]), 1}
"#;

struct Scripts {
    create_session: Script,
    create_device_session: Script,
    devices: Script,
    end_family: Script,
    end_unbound: Script,
    find_session: Script,
    rotate_secret: Script,
    mark_rotation_due: Script,
    bind_key: Script,
    delete_session: Script,
    delete_user_sessions: Script,
    expire_sessions: Script,
    expire_accounts: Script,
    touch_sessions: Script,
    list_users: Script,
    migrate_directory: Script,
    insert_message: Script,
    mark_read: Script,
    conversation_entry: Script,
    change_settings: Script,
    protect: Script,
    passkeys_by_name: Script,
    passkey_used: Script,
    list_passkeys: Script,
    remove_passkey: Script,
    fill_name_keys: Script,
}

/// A script from its parts, in order (shared functions first). `#!lua` makes Redis check that
/// every key it touches is in the slot of its declared keys, on a one-node cluster too, so a
/// cross-slot script fails every time instead of only when the slots are on different nodes.
pub(crate) fn lua(parts: &[&str]) -> Script {
    Script::new(&format!("#!lua\n{}", parts.join("\n")))
}

/// A script that writes nothing: Redis runs it even when it refuses writes (out of memory, say).
fn lua_read(parts: &[&str]) -> Script {
    Script::new(&format!("#!lua flags=no-writes\n{}", parts.join("\n")))
}

impl Scripts {
    fn new() -> Self {
        Self {
            create_session: lua(&[CREATE_SESSION]),
            create_device_session: lua(&[CREATE_DEVICE_SESSION]),
            devices: lua_read(&[DEVICES]),
            end_family: lua(&[MARK_IF_SESSIONLESS, END_FAMILY]),
            end_unbound: lua(&[MARK_IF_SESSIONLESS, END_UNBOUND]),
            find_session: lua(&[INT, FIND_SESSION]),
            rotate_secret: lua(&[INT, ROTATE_SECRET]),
            mark_rotation_due: lua(&[MARK_ROTATION_DUE]),
            bind_key: lua(&[BIND_KEY]),
            delete_session: lua(&[MARK_IF_SESSIONLESS, DELETE_SESSION]),
            delete_user_sessions: lua(&[DELETE_USER_SESSIONS]),
            expire_sessions: lua(&[MARK_IF_SESSIONLESS, EXPIRE_SESSIONS]),
            expire_accounts: lua(&[EXPIRE_ACCOUNTS]),
            touch_sessions: lua(&[INT, TOUCH_SESSIONS]),
            list_users: lua_read(&[LIST_USERS]),
            migrate_directory: lua(&[INT, MIGRATE_DIRECTORY]),
            insert_message: lua(&[INSERT_MESSAGE]),
            mark_read: lua(&[INT, READ_STATE, MARK_READ]),
            conversation_entry: lua_read(&[INT, READ_STATE, CONVERSATION_ENTRY]),
            change_settings: lua(&[CHANGE_SETTINGS]),
            protect: lua(&[PROTECT]),
            passkeys_by_name: lua_read(&[PASSKEYS_BY_NAME]),
            passkey_used: lua(&[PASSKEY_USED]),
            list_passkeys: lua_read(&[LIST_PASSKEYS]),
            remove_passkey: lua(&[REMOVE_PASSKEY]),
            fill_name_keys: lua(&[FILL_NAME_KEYS]),
        }
    }
}

/// How this node takes part in cluster presence, and how durable an acked message is.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// A node whose heartbeat is older than this is dead: its users' sockets are uncounted.
    pub heartbeat_ttl: Duration,
    /// Replicas that must hold a message before it is acked (`--redis-wait-replicas`); `None`
    /// acks once the primary has it, and a failover may lose what its replica had not copied.
    pub replica_acks: Option<ReplicaAcks>,
}

/// A message is acked only once this many replicas hold it: Redis replication is asynchronous,
/// so without this a primary killed right after a write takes the acked message with it when
/// its replica is promoted. `WAIT` runs in the same pipeline as the write (a dropped connection
/// fails both, so a reconnect never answers for a write it did not carry), on a connection of
/// its own: `WAIT` holds back the commands behind it until the replicas answer, and everything
/// else this node asks of Redis should not wait for that.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaAcks {
    pub replicas: u32,
    /// How long to wait for them (at least 1 ms: `WAIT` with 0 waits forever). Past it the
    /// write is refused `store_unavailable` and not acked; the client sends it again with its
    /// clientId and is acked once the replicas caught up (or the failover is over).
    pub timeout: Duration,
}

impl NodeOptions {
    /// Presence with this heartbeat TTL; messages acked once the primary has them.
    pub fn new(heartbeat_ttl: Duration) -> Self {
        Self {
            heartbeat_ttl,
            replica_acks: None,
        }
    }

    /// How often to beat: three times per TTL, so one late beat does not kill a live node.
    pub fn heartbeat_every(&self) -> Duration {
        self.heartbeat_ttl / 3
    }
}

pub struct RedisStore {
    conn: ConnectionManager,
    /// With [`ReplicaAcks`]: the connection a message is written and waited for on.
    acked: Option<(ConnectionManager, ReplicaAcks)>,
    keys: Keys,
    scripts: Scripts,
    policy: SessionPolicy,
    options: NodeOptions,
    /// This node's presence (registered once the store is ready).
    presence: RedisPresence,
    /// The user directory as last read: a refresh reads the sign-ups after the last one it
    /// holds, or everything again after a sweep deleted accounts.
    directory: Mutex<Directory>,
}

/// A node's copy of the user directory.
#[derive(Debug, Default)]
struct Directory {
    /// The deletion epoch it was read at (`None`: never read).
    epoch: Option<i64>,
    /// The sign-up number of its newest entry.
    last_seq: i64,
    users: Arc<Vec<User>>,
}

/// Refuses a Redis Cluster node at start, with a clear error: the store's scripts each touch
/// keys in several hash slots (issue #27 item 1 restructures them), so on a cluster they would
/// fail at run time (`CROSSSLOT`, `MOVED`, or "non local key") instead. `CLUSTER INFO` answers
/// on a cluster node and is refused with "cluster support disabled" on a standalone one; an
/// ACL user narrowed as the README suggests may run it (it is not `@dangerous`), and one that
/// may not is let through.
async fn refuse_cluster(conn: &mut ConnectionManager) -> Result<(), StoreError> {
    match ::redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async::<String>(conn)
        .await
    {
        Ok(_) => Err(StoreError::Unavailable(
            "the Redis at --redis-url is a Redis Cluster node; Tether's store needs a standalone \
             Redis (a primary, with replicas for failover: --redis-wait-replicas), since its \
             scripts touch keys in several hash slots (Redis Cluster support is issue #27)"
                .into(),
        )),
        Err(e) if e.kind() == ::redis::ErrorKind::Io => Err(e.into()),
        Err(e) => {
            tracing::debug!(error = %e, "the Redis store is not a cluster node");
            Ok(())
        }
    }
}

impl RedisStore {
    /// Connects to a plain URL; see [`RedisStore::connect_to`].
    pub async fn connect(
        url: &str,
        prefix: &str,
        policy: SessionPolicy,
        options: NodeOptions,
    ) -> Result<Self, StoreError> {
        let target = RedisTarget::new(url, &RedisFiles::default())
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        Self::connect_to(&target, prefix, policy, options).await
    }

    /// Connects (the connection reconnects by itself afterwards) and registers this node.
    pub async fn connect_to(
        target: &RedisTarget,
        prefix: &str,
        policy: SessionPolicy,
        options: NodeOptions,
    ) -> Result<Self, StoreError> {
        let client = target
            .client(ProtocolVersion::RESP2)
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let acked = match options.replica_acks {
            Some(acks) => Some((ConnectionManager::new(client.clone()).await?, acks)),
            None => None,
        };
        let mut conn = ConnectionManager::new(client).await?;
        refuse_cluster(&mut conn).await?;
        let keys = Keys {
            prefix: prefix.to_owned(),
        };
        let scripts = Scripts::new();
        let converted: i64 = scripts
            .migrate_directory
            .key(keys.legacy_users())
            .key(keys.directory())
            .key(keys.users_seq())
            .key(keys.quiet_users())
            .key(keys.session_deadlines())
            .arg(keys.all())
            .arg(now_ms())
            .arg(policy.max_age.as_millis() as u64)
            .invoke_async(&mut conn.clone())
            .await?;
        if converted > 0 {
            tracing::info!(users = converted, "converted the user directory for expiry");
        }
        Self::fill_name_keys(&mut conn.clone(), &keys, &scripts).await?;
        let presence = RedisPresence::join(
            RedisConn::Single(conn.clone()),
            prefix,
            options.heartbeat_ttl,
        )
        .await?;
        Ok(Self {
            conn,
            acked,
            keys,
            scripts,
            policy,
            options,
            presence,
            directory: Mutex::new(Directory::default()),
        })
    }

    /// This node's id in the presence keys (random per process start).
    pub fn node_id(&self) -> &str {
        self.presence.node_id()
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Ends one session (by family); returns whether it existed.
    async fn delete_family(&self, family: &str) -> Result<bool, StoreError> {
        let deleted: i64 = self
            .scripts
            .delete_session
            .key(self.keys.session(family))
            .key(self.keys.session_deadlines())
            .key(self.keys.quiet_users())
            .arg(family)
            .arg(self.keys.all())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(deleted > 0)
    }

    /// Once per Redis (at the first connect of a release with name keys): every user gets its
    /// name key, computed here (Lua has no Unicode folding), and the protected names are
    /// claimed under their owners' new keys. Users signed up meanwhile by this release have
    /// theirs already.
    async fn fill_name_keys(
        conn: &mut ConnectionManager,
        keys: &Keys,
        scripts: &Scripts,
    ) -> Result<(), StoreError> {
        let filled: bool = conn.exists(keys.name_keys_filled()).await?;
        if filled {
            return Ok(());
        }
        let names: std::collections::HashMap<String, String> =
            conn.hgetall(keys.usernames()).await?;
        let claims: Vec<(String, String)> = conn.hgetall(keys.protected()).await?;
        let order: Vec<(String, f64)> = conn.zrange_withscores(keys.directory(), 0, -1).await?;
        let seq: std::collections::HashMap<&str, f64> =
            order.iter().map(|(user, s)| (user.as_str(), *s)).collect();
        let mut claims: Vec<(String, String, String)> = claims
            .into_iter()
            .filter_map(|(old, user)| {
                let new = name_key(names.get(&user)?);
                Some((old, new, user))
            })
            .collect();
        claims.sort_by(|a, b| {
            let at = |user: &str| seq.get(user).copied().unwrap_or(f64::MAX);
            at(&a.2).total_cmp(&at(&b.2))
        });
        let mut fill = scripts.fill_name_keys.prepare_invoke();
        fill.key(keys.name_keys())
            .key(keys.directory())
            .key(keys.protected())
            .key(keys.name_keys_filled())
            .arg(keys.all())
            .arg(names.len());
        for (user, name) in &names {
            fill.arg(user).arg(name_key(name));
        }
        for (old, new, user) in &claims {
            fill.arg(old).arg(new).arg(user);
        }
        let filled: i64 = fill.invoke_async(conn).await?;
        if filled > 0 {
            tracing::info!(users = filled, "gave every user its name key");
        }
        Ok(())
    }

    async fn read_messages(&self, ids: &[i64]) -> Result<Vec<Message>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.messages())
            .arg(ids)
            .query_async(&mut self.conn())
            .await?;
        raw.into_iter()
            .flatten()
            .map(|json| parse_message(&json))
            .collect()
    }
}

fn parse_message(json: &str) -> Result<Message, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Unreadable(Box::new(e)))
}

/// The wire JSON of a message after its `"id":N,` (the script prepends the id it takes).
fn json_after_id(message: &Message) -> String {
    let json = serde_json::to_string(message).expect("a message always serializes");
    let prefix = format!("{{\"id\":{},", message.id);
    json.strip_prefix(&prefix)
        .expect("`id` is the first field of Message")
        .to_owned()
}

/// A new session's `key` field: the key's bytes in hex, or empty (made without one: unbound for
/// good; a session hash without the field is from before keys, and binds once).
fn stored_key(key: Option<&PopKey>) -> String {
    key.map(|k| hex::encode(k.as_bytes())).unwrap_or_default()
}

#[async_trait]
impl Store for RedisStore {
    async fn create_session(
        &self,
        username: &Username,
        device: &str,
        pop_key: Option<&PopKey>,
    ) -> Result<Created, StoreError> {
        let hex_key = stored_key(pop_key);
        let name = username.as_str().to_owned();
        let key = name_key(&name);
        let device = super::stored_label(device);
        // Ids are 122 random bits; the script still checks both are new and we draw again.
        for _ in 0..8 {
            let user_id = UserId::random();
            let session_id = SessionId::random();
            let digest = session_id.digest();
            let now = now_ms();
            let deadline = now + self.policy.idle.min(self.policy.max_age).as_millis() as i64;
            let created: i64 = self
                .scripts
                .create_session
                .key(self.keys.usernames())
                .key(self.keys.directory())
                .key(self.keys.session(&digest))
                .key(self.keys.user_sessions(user_id.as_str()))
                .key(self.keys.users_seq())
                .key(self.keys.quiet_users())
                .key(self.keys.session_deadlines())
                .key(self.keys.protected())
                .key(self.keys.names(&key))
                .key(self.keys.name_keys())
                .arg(user_id.as_str())
                .arg(&name)
                .arg(now)
                .arg(self.policy.idle.as_millis() as u64)
                .arg(&digest)
                .arg(deadline)
                .arg(&device)
                .arg(&key)
                .arg(&hex_key)
                .invoke_async(&mut self.conn())
                .await?;
            if created == -1 {
                return Ok(Created::NameProtected);
            }
            if created == 1 {
                let session = Session {
                    pop_key: pop_key.cloned(),
                    ..Session::made(&session_id, user_id, name, now)
                };
                return Ok(Created::Session(session_id, session));
            }
        }
        Err(StoreError::Unavailable("could not draw unused ids".into()))
    }

    async fn create_device_session(
        &self,
        user: &UserId,
        device: &str,
        max_sessions: u32,
        pop_key: Option<&PopKey>,
    ) -> Result<NewDevice, StoreError> {
        let device = super::stored_label(device);
        let hex_key = stored_key(pop_key);
        // A session id is 122 random bits; the script still checks it is new and we draw again.
        for _ in 0..8 {
            let session_id = SessionId::random();
            let digest = session_id.digest();
            let now = now_ms();
            let deadline = now + self.policy.idle.min(self.policy.max_age).as_millis() as i64;
            let created: Option<Vec<String>> = self
                .scripts
                .create_device_session
                .key(self.keys.usernames())
                .key(self.keys.session(&digest))
                .key(self.keys.user_sessions(user.as_str()))
                .key(self.keys.session_deadlines())
                .key(self.keys.quiet_users())
                .arg(user.as_str())
                .arg(now)
                .arg(self.policy.idle.as_millis() as u64)
                .arg(&digest)
                .arg(deadline)
                .arg(&device)
                .arg(max_sessions)
                .arg(self.policy.max_age.as_millis() as u64)
                .arg(self.keys.all())
                .arg(&hex_key)
                .invoke_async(&mut self.conn())
                .await?;
            match created.as_deref() {
                None => return Ok(NewDevice::UnknownUser),
                Some([full]) if full == "full" => return Ok(NewDevice::TooManySessions),
                Some([ok, name]) if ok == "ok" => {
                    let session = Session {
                        pop_key: pop_key.cloned(),
                        ..Session::made(&session_id, user.clone(), name.clone(), now)
                    };
                    return Ok(NewDevice::Created(session_id, session));
                }
                Some(_) => continue,
            }
        }
        Err(StoreError::Unavailable(
            "could not draw an unused id".into(),
        ))
    }

    async fn devices(&self, user: &UserId) -> Result<Vec<Device>, StoreError> {
        let flat: Vec<String> = self
            .scripts
            .devices
            .key(self.keys.user_sessions(user.as_str()))
            .arg(now_ms())
            .arg(self.policy.max_age.as_millis() as u64)
            .arg(self.keys.all())
            .arg(user.as_str())
            .invoke_async(&mut self.conn())
            .await?;
        let number = |text: &str| {
            text.parse::<i64>()
                .map_err(|e| StoreError::Unreadable(Box::new(e)))
        };
        let mut devices = flat
            .chunks_exact(5)
            .map(|d| {
                Ok(Device {
                    family: d[0].clone(),
                    created: number(&d[1])?,
                    last_seen: number(&d[2])?,
                    label: d[3].clone(),
                    bound: d[4] == "1",
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        devices.sort_by(|a, b| (a.created, &a.family).cmp(&(b.created, &b.family)));
        Ok(devices)
    }

    async fn end_family(&self, user: &UserId, family: &str) -> Result<bool, StoreError> {
        let ended: i64 = self
            .scripts
            .end_family
            .key(self.keys.session(family))
            .key(self.keys.session_deadlines())
            .key(self.keys.quiet_users())
            .arg(family)
            .arg(self.keys.all())
            .arg(user.as_str())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(ended > 0)
    }

    async fn end_unbound(&self, user: &UserId) -> Result<Vec<String>, StoreError> {
        Ok(self
            .scripts
            .end_unbound
            .key(self.keys.user_sessions(user.as_str()))
            .key(self.keys.session_deadlines())
            .key(self.keys.quiet_users())
            .arg(self.keys.all())
            .arg(user.as_str())
            .invoke_async(&mut self.conn())
            .await?)
    }

    async fn find_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let digest = id.digest();
        // Read and refresh in one round trip (idle TTL, deadline, the account's last handshake);
        // two for a secret after the session's first (its pointer names the family).
        let mut family = digest.clone();
        let mut follow = true;
        let found = loop {
            let found: Option<Vec<String>> = self
                .scripts
                .find_session
                .key(self.keys.session(&family))
                .key(self.keys.session_deadlines())
                .key(self.keys.quiet_users())
                .key(self.keys.secret(&family))
                .arg(now_ms())
                .arg(self.policy.idle.as_millis() as u64)
                .arg(self.policy.max_age.as_millis() as u64)
                .arg(&family)
                .arg(&digest)
                .arg(if follow { "1" } else { "0" })
                .invoke_async(&mut self.conn())
                .await?;
            match found.as_deref() {
                Some([tag, named]) if tag == "family" && follow => {
                    family = named.clone();
                    follow = false;
                }
                _ => break found,
            }
        };
        let Some(found) = found else {
            return Ok(None);
        };
        let [user, name, live, key, state, at, current] = <[String; 7]>::try_from(found)
            .map_err(|_| StoreError::Unreadable("find_session answered another shape".into()))?;
        if live == "0" {
            self.delete_family(&family).await?;
            return Ok(None);
        }
        let at = at
            .parse::<i64>()
            .map_err(|e| StoreError::Unreadable(Box::new(e)))?;
        let secret = match state.as_str() {
            "current" => Secret::Current { issued_at: at },
            "retired" => Secret::Retired {
                retired_at: at,
                current,
            },
            other => {
                return Err(StoreError::Unreadable(
                    format!("a secret in state {other:?}").into(),
                ))
            }
        };
        Ok(Some(Session {
            user_id: UserId::from_store(user),
            username: name,
            pop_key: match key.as_str() {
                "" => None,
                hex_key => Some(super::stored_pop_key(
                    &hex::decode(hex_key).map_err(|e| StoreError::Unreadable(Box::new(e)))?,
                )?),
            },
            family,
            secret,
        }))
    }

    async fn rotate_secret(
        &self,
        family: &str,
        expect_current: &str,
        cap: Reissue,
    ) -> Result<Rotate, StoreError> {
        // A secret is 122 random bits; the script still checks it is new and we draw again.
        for _ in 0..8 {
            let secret = SessionId::random();
            let digest = secret.digest();
            let answer: String = self
                .scripts
                .rotate_secret
                .key(self.keys.session(family))
                .key(self.keys.secret(&digest))
                .key(self.keys.session(&digest))
                .arg(family)
                .arg(expect_current)
                .arg(&digest)
                .arg(now_ms())
                .arg(cap.since)
                .arg(cap.max)
                .arg(self.policy.max_age.as_millis() as u64)
                .invoke_async(&mut self.conn())
                .await?;
            match answer.as_str() {
                "rotated" => return Ok(Rotate::Rotated(secret)),
                "moved" => return Ok(Rotate::Moved),
                "gone" => return Ok(Rotate::Gone),
                "too_many" => return Ok(Rotate::TooMany),
                "taken" => continue,
                other => {
                    return Err(StoreError::Unreadable(
                        format!("rotate_secret answered {other:?}").into(),
                    ))
                }
            }
        }
        Err(StoreError::Unavailable(
            "could not draw an unused secret".into(),
        ))
    }

    async fn mark_rotation_due(&self, user: &UserId, except: &str) -> Result<usize, StoreError> {
        let families: Vec<String> = self
            .conn()
            .smembers(self.keys.user_sessions(user.as_str()))
            .await?;
        let mut marked = 0;
        for family in families.iter().filter(|f| *f != except) {
            let done: i64 = self
                .scripts
                .mark_rotation_due
                .key(self.keys.session(family))
                .invoke_async(&mut self.conn())
                .await?;
            marked += done.max(0) as usize;
        }
        Ok(marked)
    }

    async fn bind_key(&self, family: &str, key: &PopKey) -> Result<Bind, StoreError> {
        let answer: String = self
            .scripts
            .bind_key
            .key(self.keys.session(family))
            .arg(hex::encode(key.as_bytes()))
            .invoke_async(&mut self.conn())
            .await?;
        match answer.as_str() {
            "bound" => Ok(Bind::Bound),
            "this" => Ok(Bind::AlreadyThis),
            "other" => Ok(Bind::OtherKey),
            "gone" => Ok(Bind::Gone),
            "never" => Ok(Bind::Never),
            other => Err(StoreError::Unreadable(
                format!("bind_key answered {other:?}").into(),
            )),
        }
    }

    async fn delete_session(&self, id: &SessionId) -> Result<bool, StoreError> {
        let digest = id.digest();
        // By any of its secrets: one after the session's first names its family.
        let family: Option<String> = self.conn().get(self.keys.secret(&digest)).await?;
        self.delete_family(family.as_deref().unwrap_or(&digest))
            .await
    }

    async fn delete_user_sessions(&self, user: &UserId) -> Result<usize, StoreError> {
        let deleted: i64 = self
            .scripts
            .delete_user_sessions
            .key(self.keys.user_sessions(user.as_str()))
            .key(self.keys.session_deadlines())
            .key(self.keys.quiet_users())
            .arg(user.as_str())
            .arg(self.keys.all())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(deleted.max(0) as usize)
    }

    async fn expire_sessions(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let digests: Vec<String> = self
            .scripts
            .expire_sessions
            .key(self.keys.session_deadlines())
            .key(self.keys.quiet_users())
            .arg(now_ms())
            .arg(limit)
            .arg(self.keys.all())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(digests)
    }

    async fn expire_accounts(&self, idle: Duration, limit: usize) -> Result<Expired, StoreError> {
        let reply: Vec<redis::Value> = self
            .scripts
            .expire_accounts
            .key(self.keys.quiet_users())
            .key(self.keys.directory())
            .key(self.keys.usernames())
            .key(self.keys.session_deadlines())
            .key(self.keys.users_epoch())
            .key(self.keys.name_keys())
            .arg(now_ms() - idle.as_millis() as i64)
            .arg(limit)
            .arg(self.keys.all())
            .invoke_async(&mut self.conn())
            .await?;
        let mut values = reply.into_iter();
        let users: i64 = values
            .next()
            .map(redis::from_redis_value)
            .transpose()?
            .unwrap_or(0);
        let sessions = values
            .map(redis::from_redis_value)
            .collect::<Result<Vec<String>, _>>()?;
        Ok(Expired {
            sessions,
            users: users.max(0) as usize,
        })
    }

    async fn touch_sessions(&self, digests: Vec<String>) -> Result<Touched, StoreError> {
        if digests.is_empty() {
            return Ok(Touched::default());
        }
        let mut touch = self.scripts.touch_sessions.prepare_invoke();
        touch
            .key(self.keys.session_deadlines())
            .key(self.keys.quiet_users())
            .arg(now_ms())
            .arg(self.policy.idle.as_millis() as u64)
            .arg(self.policy.max_age.as_millis() as u64)
            .arg(self.keys.all());
        for digest in &digests {
            touch.arg(digest);
        }
        let (gone, due): (Vec<String>, Vec<String>) = touch.invoke_async(&mut self.conn()).await?;
        Ok(Touched { gone, due })
    }

    async fn protect(
        &self,
        user: &UserId,
        passkey: StoredPasskey,
        added_in: &str,
    ) -> Result<Protect, StoreError> {
        // The user's name key is the one stored at its sign-up.
        let done: String = self
            .scripts
            .protect
            .key(self.keys.usernames())
            .key(self.keys.protected())
            .key(self.keys.creds())
            .key(self.keys.passkeys(user.as_str()))
            .key(self.keys.quiet_users())
            .key(self.keys.name_keys())
            .key(self.keys.users_epoch())
            .key(self.keys.passkey_info(user.as_str()))
            .arg(user.as_str())
            .arg(&passkey.cred_id)
            .arg(&passkey.json)
            .arg(self.keys.all())
            .arg(PASSKEYS_PER_USER_MAX)
            .arg(now_ms())
            .arg(super::stored_label(added_in))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match done.as_str() {
            "protected" => Protect::Protected,
            "added" => Protect::Added,
            "name_taken" => Protect::NameTaken,
            "credential_taken" => Protect::CredentialTaken,
            "full" => Protect::Full,
            _ => Protect::UnknownUser,
        })
    }

    async fn passkeys_by_name(
        &self,
        username: &str,
    ) -> Result<Option<(User, Vec<StoredPasskey>)>, StoreError> {
        let found: Option<Vec<String>> = self
            .scripts
            .passkeys_by_name
            .key(self.keys.protected())
            .key(self.keys.usernames())
            .arg(name_key(username))
            .arg(self.keys.key(""))
            .invoke_async(&mut self.conn())
            .await?;
        let Some(found) = found else {
            return Ok(None);
        };
        let mut values = found.into_iter();
        let (Some(user_id), Some(username)) = (values.next(), values.next()) else {
            return Ok(None);
        };
        let mut passkeys = Vec::new();
        while let (Some(cred_id), Some(json)) = (values.next(), values.next()) {
            passkeys.push(StoredPasskey { cred_id, json });
        }
        // A claim whose passkeys are gone is still the account's (as `name_protected` says):
        // `Some` with an empty list, as on SQLite.
        passkeys.sort_by(|a, b| a.cred_id.cmp(&b.cred_id));
        Ok(Some((
            User {
                user_id: UserId::from_store(user_id),
                username,
                protected: true,
            },
            passkeys,
        )))
    }

    async fn passkey_used(
        &self,
        user: &UserId,
        was: &StoredPasskey,
        now: StoredPasskey,
    ) -> Result<bool, StoreError> {
        if was.cred_id != now.cred_id {
            return Ok(false);
        }
        let replaced: i64 = self
            .scripts
            .passkey_used
            .key(self.keys.passkeys(user.as_str()))
            .key(self.keys.passkey_info(user.as_str()))
            .arg(user.as_str())
            .arg(&now.cred_id)
            .arg(&now.json)
            .arg(&was.json)
            .arg(now_ms())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(replaced == 1)
    }

    async fn oldest_with_name(&self, username: &str) -> Result<Option<UserId>, StoreError> {
        // The key's users scored by sign-up number, as `PROTECT` reads them.
        let oldest: Vec<String> = self
            .conn()
            .zrange(self.keys.names(&name_key(username)), 0, 0)
            .await?;
        Ok(oldest.into_iter().next().map(UserId::from_store))
    }

    async fn passkeys(&self, user: &UserId) -> Result<AccountPasskeys, StoreError> {
        let listed: Vec<redis::Value> = self
            .scripts
            .list_passkeys
            .key(self.keys.passkeys(user.as_str()))
            .key(self.keys.passkey_info(user.as_str()))
            .key(self.keys.name_keys())
            .key(self.keys.protected())
            .arg(user.as_str())
            .invoke_async(&mut self.conn())
            .await?;
        let mut values = listed.into_iter();
        let protected: i64 = match values.next() {
            Some(v) => redis::from_redis_value(v)?,
            None => 0,
        };
        let mut passkeys = Vec::new();
        while let (Some(cred_id), Some(info)) = (values.next(), values.next()) {
            let cred_id: String = redis::from_redis_value(cred_id)?;
            let info: String = redis::from_redis_value(info)?;
            let mut parts = info.splitn(3, '|');
            let mut number = || {
                parts
                    .next()
                    .and_then(|n| n.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            let (added, last_used) = (number(), number());
            passkeys.push(PasskeyInfo {
                cred_id,
                added_in: parts.next().unwrap_or_default().to_owned(),
                added,
                last_used,
            });
        }
        passkeys.sort_by(|a, b| (a.added, &a.cred_id).cmp(&(b.added, &b.cred_id)));
        Ok(AccountPasskeys {
            protected: protected == 1,
            passkeys,
        })
    }

    async fn remove_passkey(
        &self,
        user: &UserId,
        cred_id: &str,
    ) -> Result<RemovedPasskey, StoreError> {
        let done: i64 = self
            .scripts
            .remove_passkey
            .key(self.keys.passkeys(user.as_str()))
            .key(self.keys.passkey_info(user.as_str()))
            .key(self.keys.creds())
            .key(self.keys.name_keys())
            .key(self.keys.protected())
            .key(self.keys.users_epoch())
            .arg(user.as_str())
            .arg(cred_id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match done {
            -1 => RemovedPasskey::Unknown,
            kept => RemovedPasskey::Removed {
                protected: kept == 1,
            },
        })
    }

    async fn put_ceremony(&self, id: &str, state: String, ttl: Duration) -> Result<(), StoreError> {
        let _: () = self
            .conn()
            .pset_ex(self.keys.ceremony(id), state, ttl.as_millis().max(1) as u64)
            .await?;
        Ok(())
    }

    async fn take_ceremony(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.conn().get_del(self.keys.ceremony(id)).await?)
    }

    async fn list_users(&self) -> Result<Arc<Vec<User>>, StoreError> {
        let (known_epoch, last_seq) = {
            let directory = self.directory.lock().unwrap_or_else(|e| e.into_inner());
            (directory.epoch.unwrap_or(-1), directory.last_seq)
        };
        let reply: Vec<redis::Value> = self
            .scripts
            .list_users
            .key(self.keys.users_epoch())
            .key(self.keys.directory())
            .key(self.keys.usernames())
            .key(self.keys.name_keys())
            .key(self.keys.protected())
            .arg(known_epoch)
            .arg(last_seq)
            .invoke_async(&mut self.conn())
            .await?;
        let mut values = reply.into_iter();
        let mut next_int = || -> Result<i64, StoreError> {
            Ok(values
                .next()
                .map(redis::from_redis_value)
                .transpose()?
                .unwrap_or(0))
        };
        let epoch = next_int()?;
        let whole = next_int()? == 1;
        let mut entries = Vec::new();
        while let (Some(seq), Some(user), Some(name), Some(protected)) =
            (values.next(), values.next(), values.next(), values.next())
        {
            let seq: i64 = redis::from_redis_value(seq)?;
            let user: String = redis::from_redis_value(user)?;
            let name: String = redis::from_redis_value(name)?;
            let protected: i64 = redis::from_redis_value(protected)?;
            entries.push((seq, user, name, protected == 1));
        }
        let read_through = entries.last().map_or(0, |(seq, _, _, _)| *seq);
        let to_user = |(_, user_id, username, protected): (i64, String, String, bool)| User {
            user_id: UserId::from_store(user_id),
            username,
            protected,
        };
        let mut directory = self.directory.lock().unwrap_or_else(|e| e.into_inner());
        if whole {
            // Another call may have read newer sign-ups of the same epoch meanwhile: keep those.
            if directory.epoch != Some(epoch) || read_through >= directory.last_seq {
                directory.users = Arc::new(entries.into_iter().map(to_user).collect());
                directory.last_seq = read_through;
                directory.epoch = Some(epoch);
            }
        } else if directory.epoch == Some(epoch) {
            // Another call may have appended meanwhile; only add what is still missing.
            let known = directory.last_seq;
            let fresh: Vec<_> = entries
                .into_iter()
                .filter(|(seq, _, _, _)| *seq > known)
                .collect();
            if let Some((seq, _, _, _)) = fresh.last() {
                directory.last_seq = *seq;
                Arc::make_mut(&mut directory.users).extend(fresh.into_iter().map(to_user));
            }
        }
        Ok(directory.users.clone())
    }

    async fn insert_message(&self, message: NewMessage) -> Result<Option<Stored>, StoreError> {
        let from = message.from.as_str();
        let to = message.to.as_str();
        let client_id = message.client_id.as_ref().map(|c| c.as_str().to_owned());
        let draft = Message {
            id: 0,
            ts: now_ms(),
            content: message.content.as_str().to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            client_id: client_id.clone(),
        };
        let mut insert = self.scripts.insert_message.key(self.keys.usernames());
        insert
            .key(self.keys.message_seq())
            .key(self.keys.messages())
            .key(self.keys.dedupe(from))
            .key(self.keys.inbox(from))
            .key(self.keys.inbox(to))
            .key(self.keys.conversation(from, to))
            .key(self.keys.peers(from))
            .key(self.keys.peers(to))
            .key(self.keys.quiet_users())
            .arg(to)
            .arg(client_id.unwrap_or_default())
            .arg(json_after_id(&draft))
            .arg(from);
        let result: Option<(i64, String)> = match &self.acked {
            None => insert.invoke_async(&mut self.conn()).await?,
            Some((conn, acks)) => {
                // A duplicate waits too: the replicas must hold the original before it is
                // acked again (`WAIT` covers every write the primary made before it).
                let (result, reached): (Option<(i64, String)>, u32) = redis::pipe()
                    .load_script(&self.scripts.insert_message)
                    .ignore()
                    .invoke_script(&insert)
                    .cmd("WAIT")
                    .arg(acks.replicas)
                    .arg(acks.timeout.as_millis().max(1) as u64)
                    .query_async(&mut conn.clone())
                    .await?;
                if reached < acks.replicas {
                    metrics::counter!("tether_redis_replica_acks_missed_total").increment(1);
                    tracing::warn!(
                        reached,
                        wanted = acks.replicas,
                        "a message reached too few Redis replicas in time; not acked"
                    );
                    return Err(StoreError::Unavailable(
                        format!("{reached} of {} replicas hold the message", acks.replicas).into(),
                    ));
                }
                result
            }
        };
        Ok(match result {
            None => None,
            Some((1, json)) => Some(Stored::New(parse_message(&json)?)),
            Some((_, json)) => Some(Stored::Duplicate(parse_message(&json)?)),
        })
    }

    async fn conversations(
        &self,
        viewer: &UserId,
        per_peer: u32,
        since: i64,
        most: u32,
    ) -> Result<Conversations, StoreError> {
        let peers: Vec<String> = self
            .conn()
            .smembers(self.keys.peers(viewer.as_str()))
            .await?;
        let mut messages = Vec::new();
        if !peers.is_empty() && per_peer > 0 {
            let mut pipe = redis::pipe();
            for peer in &peers {
                pipe.zrevrangebyscore_limit(
                    self.keys.conversation(viewer.as_str(), peer),
                    "+inf",
                    format!("({since}"),
                    0,
                    per_peer as isize,
                );
            }
            let per_conversation: Vec<Vec<i64>> = pipe.query_async(&mut self.conn()).await?;
            let mut ids: Vec<i64> = per_conversation.into_iter().flatten().collect();
            ids.sort_unstable();
            ids.dedup();
            // Only the newest `most` are read (ids alone come from the sorted sets).
            let keep = ids.len().min(most as usize);
            ids.drain(..ids.len() - keep);
            messages = self.read_messages(&ids).await?;
        }
        // `reads:{viewer}`, peer → "{upTo}:{at}": one field per conversation read.
        let cursors: Vec<(String, String)> = self
            .conn()
            .hgetall(self.keys.reads(viewer.as_str()))
            .await?;
        let read = cursors
            .into_iter()
            .filter_map(|(peer, cursor)| {
                let up_to = cursor.split(':').next()?.parse().ok()?;
                Some((UserId::from_store(peer), up_to))
            })
            .collect();
        Ok(Conversations {
            peers: peers.into_iter().map(UserId::from_store).collect(),
            messages,
            read,
        })
    }

    async fn messages_since(
        &self,
        viewer: &UserId,
        since: i64,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let ids: Vec<i64> = self
            .conn()
            .zrangebyscore_limit(
                self.keys.inbox(viewer.as_str()),
                format!("({since}"),
                "+inf",
                0,
                limit as isize + 1,
            )
            .await?;
        let (ids, has_more) = cut_to_page(ids, limit);
        Ok(Page {
            messages: self.read_messages(&ids).await?,
            has_more,
        })
    }

    async fn history(
        &self,
        viewer: &UserId,
        peer: &UserId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let max = before.map_or_else(|| "+inf".to_owned(), |b| format!("({b}"));
        let newest_first: Vec<i64> = self
            .conn()
            .zrevrangebyscore_limit(
                self.keys.conversation(viewer.as_str(), peer.as_str()),
                max,
                "-inf",
                0,
                limit as isize + 1,
            )
            .await?;
        let (mut ids, has_more) = cut_to_page(newest_first, limit);
        ids.reverse();
        Ok(Page {
            messages: self.read_messages(&ids).await?,
            has_more,
        })
    }

    async fn mark_read(
        &self,
        viewer: &UserId,
        peer: &UserId,
        up_to: i64,
    ) -> Result<Option<MarkedRead>, StoreError> {
        let (v, p) = (viewer.as_str(), peer.as_str());
        let found: Option<(i64, i64, i64, i64, i64, i64)> = self
            .scripts
            .mark_read
            .key(self.keys.usernames())
            .key(self.keys.conversation(v, p))
            .key(self.keys.reads(v))
            .key(self.keys.messages())
            .key(self.keys.settings(v))
            .key(self.keys.settings(p))
            .key(self.keys.seen(v))
            .arg(p)
            .arg(up_to)
            .arg(now_ms())
            .arg(v)
            .arg(UNREAD_MAX)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(found.map(|(up_to, at, unread, as_of, moved, seen)| {
            let cursor = ReadCursor { up_to, at };
            MarkedRead {
                status: ReadStatus {
                    cursor,
                    unread: unread.clamp(0, i64::from(UNREAD_MAX)) as u32,
                    as_of,
                },
                moved: moved == 1,
                seen: (seen == 1).then_some(cursor),
            }
        }))
    }

    async fn conversation_page(
        &self,
        viewer: &UserId,
        before: Option<i64>,
        limit: u32,
        unread_max: u32,
    ) -> Result<ConversationPage, StoreError> {
        // Each conversation's newest id from its sorted set (one command per conversation,
        // pipelined: Redis serves other clients between them), then a script per listed
        // conversation for its message, name, cursors and unread count. Nothing is kept per
        // message for this (see the layout above): a page costs one lookup per conversation of
        // the viewer, as a connect does.
        let v = viewer.as_str();
        let peers: Vec<String> = self.conn().smembers(self.keys.peers(v)).await?;
        let mut scanned = peers.len() as u64;
        if peers.is_empty() {
            return Ok(ConversationPage {
                conversations: Vec::new(),
                has_more: false,
                scanned,
            });
        }
        let mut pipe = redis::pipe();
        for peer in &peers {
            pipe.zrevrange(self.keys.conversation(v, peer), 0, 0);
        }
        let newest: Vec<Vec<i64>> = pipe.query_async(&mut self.conn()).await?;
        let before = before.unwrap_or(i64::MAX);
        let mut latest: Vec<(i64, &String)> = newest
            .iter()
            .zip(&peers)
            .filter_map(|(ids, peer)| ids.first().map(|id| (*id, peer)))
            .filter(|(id, _)| *id < before)
            .collect();
        latest.sort_unstable_by_key(|(id, _)| std::cmp::Reverse(*id));
        let (latest, has_more) = cut_to_page(latest, limit);
        if latest.is_empty() {
            return Ok(ConversationPage {
                conversations: Vec::new(),
                has_more,
                scanned,
            });
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&self.scripts.conversation_entry).ignore();
        let invocations: Vec<_> = latest
            .iter()
            .map(|(last, peer)| {
                let mut invocation = self.scripts.conversation_entry.prepare_invoke();
                invocation
                    .key(self.keys.usernames())
                    .key(self.keys.messages())
                    .key(self.keys.conversation(v, peer))
                    .key(self.keys.reads(v))
                    .key(self.keys.seen(peer))
                    .key(self.keys.settings(v))
                    .key(self.keys.settings(peer))
                    .arg(v)
                    .arg(peer.as_str())
                    .arg(*last)
                    .arg(unread_max);
                invocation
            })
            .collect();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        type Entry = Option<(String, String, i64, i64, i64, i64, i64, i64, i64)>;
        let entries: Vec<Entry> = pipe.query_async(&mut self.conn()).await?;
        let mut conversations = Vec::with_capacity(entries.len());
        for ((_, peer), entry) in latest.iter().zip(entries) {
            let Some((json, username, up_to, at, unread, read, shares, peer_up, peer_at)) = entry
            else {
                continue;
            };
            scanned += read.max(0) as u64;
            conversations.push(ConversationEntry::read(
                (*peer).clone(),
                username,
                parse_message(&json)?,
                unread,
                ReadCursor { up_to, at },
                ReadCursor {
                    up_to: peer_up,
                    at: peer_at,
                },
                shares == 1,
            ));
        }
        Ok(ConversationPage {
            conversations,
            has_more,
            scanned,
        })
    }

    async fn settings(&self, user: &UserId) -> Result<UserSettings, StoreError> {
        let receipts: Option<String> = self
            .conn()
            .hget(self.keys.settings(user.as_str()), "readReceipts")
            .await?;
        Ok(UserSettings {
            read_receipts: receipts.as_deref() != Some("0"),
        })
    }

    async fn change_settings(
        &self,
        user: &UserId,
        change: SettingsChange,
    ) -> Result<Option<SettingsChanged>, StoreError> {
        let receipts = match change.read_receipts {
            None => "",
            Some(true) => "1",
            Some(false) => "0",
        };
        let changed: Option<(i64, i64)> = self
            .scripts
            .change_settings
            .key(self.keys.usernames())
            .key(self.keys.settings(user.as_str()))
            .arg(user.as_str())
            .arg(receipts)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(changed.map(|(receipts, changed)| SettingsChanged {
            settings: UserSettings {
                read_receipts: receipts != 0,
            },
            changed: changed == 1,
        }))
    }

    async fn socket_connected(&self, user: &UserId) -> Result<u32, StoreError> {
        self.presence.socket_connected(user).await
    }

    async fn socket_disconnected(&self, user: &UserId) -> Result<Option<u32>, StoreError> {
        self.presence.socket_disconnected(user).await
    }

    async fn online_users(&self) -> Result<Arc<HashSet<UserId>>, StoreError> {
        self.presence.online_users().await
    }

    async fn socket_count(&self, user: &UserId) -> Result<u32, StoreError> {
        self.presence.socket_count(user).await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        // A write, not a PING: a replica left read-only by a failover, or a Redis out of memory
        // under `noeviction`, answers PING but refuses every write the server would make.
        let () = redis::cmd("SET")
            .arg(self.keys.ready(self.presence.node_id()))
            .arg(now_ms())
            .arg("PX")
            .arg(READY_KEY_TTL_MS)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    fn heartbeat_every(&self) -> Option<Duration> {
        Some(self.options.heartbeat_every())
    }

    async fn heartbeat(&self) -> Result<Vec<PresenceChange>, StoreError> {
        self.presence.heartbeat().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_json_is_the_wire_json_once_the_script_prepends_the_id() {
        let message = Message {
            id: 0,
            ts: 1_700_000_000_123,
            content: "hé \"quoted\" }".to_owned(),
            from: "a".to_owned(),
            to: "b".to_owned(),
            client_id: Some("c-1".to_owned()),
        };
        let stored = format!("{{\"id\":42,{}", json_after_id(&message));
        let back: Message = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, Message { id: 42, ..message });
    }

    /// The error and all its causes, as a log line or `anyhow` would show them.
    fn chain(error: &RedisTargetError) -> String {
        let mut shown = error.to_string();
        let mut cause = std::error::Error::source(error);
        while let Some(e) = cause {
            shown.push_str(&format!(": {e}"));
            cause = e.source();
        }
        shown
    }

    fn open_target(url: &str, files: RedisFiles) -> Result<RedisTarget, RedisTargetError> {
        RedisTarget::new(url, &files)
    }

    #[test]
    fn redis_credentials_never_reach_a_message() {
        for (url, shown) in [
            (
                "redis://user:s3cret@redis.internal:6379/2",
                "redis://<credentials>@redis.internal:6379/2",
            ),
            ("rediss://:s3cret@h:6380/", "rediss://<credentials>@h:6380/"),
            ("redis://:s3cret@h/", "redis://<credentials>@h/"),
            // Unescaped `@` in the password: all of it stays hidden.
            ("rediss://:s3@cret@h/", "rediss://<credentials>@h/"),
            ("user:s3cret@h:1", "<credentials>@h:1"),
        ] {
            assert_eq!(redacted_url(url), shown);
        }
        assert_eq!(redacted_url("redis://h:1/"), "redis://h:1/");
        assert_eq!(redacted_url("rediss://h:1/"), "rediss://h:1/");
    }

    #[test]
    fn a_url_redis_refuses_is_shown_without_its_password() {
        for url in [
            "redis://:s3cret@/",
            "rediss://:s3cret@h:notaport/",
            "redis://:s3cret@h/x",
        ] {
            let error = open_target(url, RedisFiles::default())
                .err()
                .expect("refused");
            assert!(matches!(error, RedisTargetError::Url { .. }), "{error:?}");
            assert!(!chain(&error).contains("s3cret"), "{}", chain(&error));
            assert!(!format!("{error:?}").contains("s3cret"), "{error:?}");
        }
    }

    #[test]
    fn the_store_speaks_resp2_and_the_adapter_resp3_to_the_same_redis() {
        let target = open_target("rediss://:pw@h:6380/3", RedisFiles::default()).unwrap();
        for protocol in [ProtocolVersion::RESP2, ProtocolVersion::RESP3] {
            let client = target.client(protocol).unwrap();
            let info = client.get_connection_info();
            assert_eq!(info.redis_settings().protocol(), protocol);
            assert_eq!(info.redis_settings().password(), Some("pw"));
            assert_eq!(info.redis_settings().db(), 3);
            assert!(matches!(
                info.addr(),
                redis::ConnectionAddr::TcpTls { host, port: 6380, .. } if host == "h"
            ));
        }
        // Even when the URL asks for another protocol.
        let target = open_target("redis://h/?protocol=resp3", RedisFiles::default()).unwrap();
        let client = target.client(ProtocolVersion::RESP2).unwrap();
        assert_eq!(
            client.get_connection_info().redis_settings().protocol(),
            ProtocolVersion::RESP2
        );
    }

    #[test]
    fn a_password_file_gives_the_password_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        let files = RedisFiles {
            password: Some(path.clone()),
            ..RedisFiles::default()
        };
        let target = open_target("redis://user@h/", files.clone()).unwrap();
        let client = target.client(ProtocolVersion::RESP3).unwrap();
        let settings = client.get_connection_info().redis_settings();
        assert_eq!(settings.password(), Some("s3cret"));
        assert_eq!(settings.username(), Some("user"));
        assert_eq!(target.shown(), "redis://<credentials>@h/");

        let twice = RedisTarget::new("redis://:other@h/", &files).err().unwrap();
        assert!(matches!(twice, RedisTargetError::PasswordTwice));
        assert!(!chain(&twice).contains("other") && !chain(&twice).contains("s3cret"));

        std::fs::write(&path, "\n").unwrap();
        let empty = RedisTarget::new("redis://h/", &files).err().unwrap();
        assert!(matches!(empty, RedisTargetError::EmptyPassword { .. }));
    }

    #[test]
    fn tls_files_are_checked_before_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let missing = dir.path().join("missing.pem");
        let with_ca = |ca: &Path| RedisFiles {
            ca: Some(ca.to_owned()),
            ..RedisFiles::default()
        };

        let error = open_target("rediss://:s3cret@h/", with_ca(&not_pem))
            .err()
            .unwrap();
        assert!(
            matches!(error, RedisTargetError::NoCertificate { .. }),
            "{error:?}"
        );
        assert!(chain(&error).contains("ca.pem"), "{}", chain(&error));

        let error = open_target("rediss://:s3cret@h/", with_ca(&missing))
            .err()
            .unwrap();
        assert!(matches!(error, RedisTargetError::File { .. }), "{error:?}");
        assert!(chain(&error).contains("missing.pem"), "{}", chain(&error));

        let error = open_target("redis://:s3cret@h/", with_ca(&not_pem))
            .err()
            .unwrap();
        assert!(matches!(error, RedisTargetError::TlsFilesWithoutTls { .. }));
        assert!(!chain(&error).contains("s3cret"), "{}", chain(&error));

        let error = open_target("rediss://:s3cret@h/#insecure", RedisFiles::default())
            .err()
            .unwrap();
        assert!(
            matches!(error, RedisTargetError::Insecure { .. }),
            "{error:?}"
        );
        assert!(!chain(&error).contains("s3cret"), "{}", chain(&error));

        let half = RedisFiles {
            client_cert: Some(not_pem.clone()),
            ..RedisFiles::default()
        };
        let error = open_target("rediss://h/", half).err().unwrap();
        assert!(matches!(error, RedisTargetError::HalfClientIdentity));
    }

    #[test]
    fn conversation_keys_do_not_depend_on_who_sends() {
        let keys = Keys {
            prefix: "t".to_owned(),
        };
        assert_eq!(keys.conversation("a", "b"), keys.conversation("b", "a"));
        assert_ne!(keys.conversation("a", "b"), keys.conversation("a", "c"));
    }
}
