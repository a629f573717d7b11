//! The Redis backend, for several nodes sharing one Redis (7 or newer, one primary endpoint,
//! over TLS or not) or a Redis Cluster: every key is hash-tagged and every script stays in one
//! slot, so a node whose `--redis-url` names a cluster node runs on the whole cluster
//! ([`RedisStore::connect_to`] asks `CLUSTER INFO`). [`RedisTarget`] is how a node reaches
//! it, for this store, the sid routing and the Socket.IO adapter alike.
//!
//! Layout, every key under `{prefix}:`, in hash-tagged slots: `{<prefix>:d}` the directory,
//! `{s:<digest>}` one session, `{u:<user>}` one user, `{<prefix>:g}` the nodes,
//! `{<prefix>:n:<node>}` one node. Each script touches one slot; an operation over several is a
//! sequence of scripts, ordered so that a crash between two leaves nothing a reader trips on,
//! and each safe to run twice (a cluster connection resends a command whose connection dropped).
//! - the directory (`{<prefix>:d}`): `usernames` hash userID → name; `directory` sorted set of
//!   userIDs scored by sign-up number (`users:seq`), so a node's cached directory reads only
//!   the entries after the last it has; `users:epoch` counts the sweeps that deleted accounts
//!   and the protections (a node whose epoch is behind reads the whole directory again);
//!   `name-keys` hash userID → name key, `names:<key>` sorted set of the users with that key by
//!   sign-up number, `protected` hash name key → userID (first to protect wins), `creds` hash
//!   credential id → userID (unique across accounts); `session-deadlines` sorted set of
//!   `{digest}:{user}` scored by when the session expires (idle or maximum age, whichever is
//!   first), so the per-second sweep reads only what is due; `quiet-users` sorted set of the
//!   users that never sent or received a message, scored by their last handshake (0: no
//!   session left), read by the account sweep. Before expiry the directory was a `users` list
//!   of `[userID, name]` JSON, which [`RedisStore::connect`] converts once;
//! - a session (`{s:<sha256(secret)>}`): `session` hash (user, name, created, seen, device,
//!   key, deadline, and the rotation's `cur`, `issued`, `r:<digest>`) whose TTL is the idle
//!   timeout, refreshed on every use; `secret`, in the slot of a later secret's digest, the
//!   family it belongs to (until the session's maximum age);
//! - a user (`{u:<user>}`): `user` hash (name), the marker that the user exists, asked in the
//!   user's own slot (settings now, a message's recipient next); `sessions` hash family →
//!   created (the device limit, "sign out everywhere"); `passkeys` hash credential id → the `Passkey` JSON, `passkey-info` hash
//!   credential id → `added|last used|added in` (ms, ms, device label; absent for passkeys
//!   from before it); `peers` set; `settings` hash (`readReceipts` `"0"`/`"1"`; absent: on);
//!   `presence` (below); and the user's messages and read state (below);
//! - messages: `{<prefix>:seq}:msg:seq` counter (message ids, the one key every message
//!   touches); each party keeps its own copy in its slot: `msg` hash id → the wire JSON,
//!   `inbox` and `conv:<peer>` sorted sets of ids (score = id), `top` the highest id the copy
//!   ever held (absent: the inbox's highest), `dedupe` hash clientId → id (the sender's),
//!   `pending` sorted set of the sender's messages whose recipient's copy may not be written
//!   yet. A message is stored in steps, each one slot and safe to run twice: the dedupe check,
//!   the recipient's marker, the id, the sender's copy (marked pending), the recipient's copy
//!   (a recipient gone meanwhile takes the sender's back), the mark off; only then is it acked
//!   (with replica acks the id, the sender's copy and the recipient's each wait for their
//!   shard's replicas before the next step). A duplicate still pending finishes the recipient's copy
//!   first. A copy takes only an id above its `top`: a message whose id a copy has passed (two
//!   senders to one user at once) takes a new one (the sender's copy moves to it in one step,
//!   still pending) and tries again, so every copy holds its ids in the order they arrived and
//!   `since` and read cursors (ids) mean "arrived after". Reading touches the viewer's slot
//!   only;
//! - read state, in the reader's slot: `reads` hash peer → `"{upTo}:{at}"`, the user's read
//!   cursor of each conversation, written only when it moves (one script reads, clamps and
//!   writes it, so it never goes back); `seen` hash peer → `"{upTo}:{at}"`, the user's
//!   seen cursor (what the peer may know they read), written by the same script to the read
//!   cursor's new place only when it moves while both have read receipts on (absent: nothing
//!   seen; cursors read before this hash existed are not copied into it: peers see "Seen"
//!   again from the next read made with receipts shared). Nothing about reading is written per
//!   message: the conversation list takes each conversation's newest id from its `conv:` set,
//!   and an unread count reads the messages after the cursor (newest first, at most
//!   `UNREAD_MAX` for `read`, `--unread-count-max` for a conversation page, stopping at the
//!   reader's own);
//! - presence ([`presence`]): `{u:<user>}:presence` hash node → the user's sockets on that
//!   node, whose sum is the user's count; `{<prefix>:n:<node>}:users` set, the users with
//!   sockets on the node (read by `online_users` and by the sweep of a dead node);
//!   `{<prefix>:g}:node:<node>` a heartbeat key with a TTL, `{<prefix>:g}:nodes` set of the
//!   registered nodes, `{<prefix>:g}:sweeping` sorted set of the dead nodes being swept, scored
//!   by when the sweep's lease lapses, `{<prefix>:g}:swept` sorted set of the nodes swept with
//!   users listed (each swept once more later), scored by when;
//! - `{<prefix>:n:<node>}:ready`: what the node's readiness probe (`/readyz`) writes,
//!   expiring in a minute; `ceremony:{id}` string, a sign-in ceremony's state with its TTL,
//!   taken by `GETDEL` (single use); `layout`: 2 once a Redis written before hash tags was
//!   moved (at the first connect of this release; presence's old keys are dropped then).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use protocol::payloads::Message;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, IntoConnectionInfo, ProtocolVersion, Script, ScriptInvocation};

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
    #[error("cannot use Redis at {shown}: {CLUSTER_DATABASE}")]
    ClusterDatabase { shown: String },
    #[error("cannot make a Redis Cluster client for {shown}")]
    Cluster {
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

    /// Whether the target is a Redis Cluster node: a node then runs on the whole cluster,
    /// learning its other nodes from this one. Waits for a Redis that is not listening yet as
    /// the store's connection does.
    pub async fn is_cluster(&self) -> Result<bool, RedisTargetError> {
        let client = self.client(ProtocolVersion::RESP2)?;
        let mut conn = ConnectionManager::new(client)
            .await
            .map_err(|e| self.refused(e))?;
        is_cluster_node(&mut conn)
            .await
            .map_err(|e| self.refused(e))
    }

    /// A Redis Cluster client's settings, reaching the cluster through this target's node with
    /// its credentials, TLS and TCP settings ([`Self::client`]); a cluster has only database 0.
    pub fn cluster(
        &self,
        protocol: ProtocolVersion,
    ) -> Result<redis::cluster::ClusterClientBuilder, RedisTargetError> {
        if self.info.redis_settings().db() != 0 {
            return Err(RedisTargetError::ClusterDatabase {
                shown: self.shown.clone(),
            });
        }
        let info = self.client(protocol)?.get_connection_info().clone();
        let tcp = info.tcp_settings().clone();
        let builder = redis::cluster::ClusterClientBuilder::new(vec![info])
            .use_protocol(protocol)
            .tcp_settings(tcp);
        Ok(match &self.tls {
            None => builder,
            Some(certificates) => builder.certs(certificates.clone()),
        })
    }

    /// Builds `builder` (from [`Self::cluster`]).
    fn built(
        &self,
        builder: redis::cluster::ClusterClientBuilder,
    ) -> Result<redis::cluster::ClusterClient, RedisTargetError> {
        builder.build().map_err(|source| RedisTargetError::Cluster {
            shown: self.shown.clone(),
            source,
        })
    }

    /// A RESP2 connection (the store's kind) to the target: a standalone Redis's, or with
    /// `cluster` the whole cluster's.
    pub async fn connect(&self, cluster: bool) -> Result<RedisConn, RedisTargetError> {
        Ok(if cluster {
            let client = self.built(self.cluster(ProtocolVersion::RESP2)?)?;
            RedisConn::Cluster(
                client
                    .get_async_connection()
                    .await
                    .map_err(|e| self.refused(e))?,
            )
        } else {
            let client = self.client(ProtocolVersion::RESP2)?;
            RedisConn::Single(
                ConnectionManager::new(client)
                    .await
                    .map_err(|e| self.refused(e))?,
            )
        })
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

/// Why a URL naming a database fails on a Redis Cluster node.
const CLUSTER_DATABASE: &str =
    "a Redis Cluster has only database 0: leave the database out of the URL";

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
        _ if error
            .detail()
            .is_some_and(|d| d.contains("not allowed in cluster mode")) =>
        {
            CLUSTER_DATABASE
        }
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
    /// The directory's slot: every key about names and accounts as a whole, and the sweeps'
    /// indexes (one slot for now; the indexes can be spread over buckets later).
    fn dir(&self, name: &str) -> String {
        self.tagged(&format!("{}:d", self.prefix), name)
    }
    /// What the directory slot's keys start with, for the scripts that name the ones they
    /// compute (`names:<key>`), always in that slot.
    fn dir_prefix(&self) -> String {
        self.dir("")
    }
    /// A session's slot: its hash, and the pointer of a later secret's digest.
    fn session_slot(&self, digest: &str, name: &str) -> String {
        self.tagged(&format!("s:{digest}"), name)
    }
    /// A user's slot: every key about one user.
    fn user_slot(&self, user: &str, name: &str) -> String {
        self.tagged(&format!("u:{user}"), name)
    }
    fn usernames(&self) -> String {
        self.dir("usernames")
    }
    /// The directory as it was before expiry (a list), converted at connect.
    fn legacy_users(&self) -> String {
        self.dir("users")
    }
    fn directory(&self) -> String {
        self.dir("directory")
    }
    fn users_seq(&self) -> String {
        self.dir("users:seq")
    }
    fn users_epoch(&self) -> String {
        self.dir("users:epoch")
    }
    fn protected(&self) -> String {
        self.dir("protected")
    }
    /// Each user's name key (`store::name_key`), by user id.
    fn name_keys(&self) -> String {
        self.dir("name-keys")
    }
    /// The users with one name key, scored by sign-up number (oldest first).
    fn names(&self, name_key: &str) -> String {
        self.dir(&format!("names:{name_key}"))
    }
    /// Set once the users from before name keys have theirs (see `RedisStore::fill_name_keys`).
    fn name_keys_filled(&self) -> String {
        self.dir("name-keys:filled")
    }
    fn creds(&self) -> String {
        self.dir("creds")
    }
    fn passkeys(&self, user: &str) -> String {
        self.user_slot(user, "passkeys")
    }
    /// A user's passkeys as listed: credential id → `added|last used|added in`.
    fn passkey_info(&self, user: &str) -> String {
        self.user_slot(user, "passkey-info")
    }
    fn ceremony(&self, id: &str) -> String {
        self.key(&format!("ceremony:{id}"))
    }
    fn quiet_users(&self) -> String {
        self.dir("quiet-users")
    }
    fn session_deadlines(&self) -> String {
        self.dir("session-deadlines")
    }
    /// Users the account sweep claimed and has not finished with: user → when the claim
    /// lapses (ms; another sweep then redoes it), and user → their name meanwhile.
    fn claimed_users(&self) -> String {
        self.dir("claimed-users")
    }
    fn claimed_names(&self) -> String {
        self.dir("claimed-names")
    }
    /// What every key starts with, for the scripts that name keys they compute.
    fn all(&self) -> String {
        self.key("")
    }
    fn session(&self, digest: &str) -> String {
        self.session_slot(digest, "session")
    }
    /// A secret after a session's first (issue #25, rotation): the session's family, so the
    /// secret finds its session. (The first secret's digest is the family itself.)
    fn secret(&self, digest: &str) -> String {
        self.session_slot(digest, "secret")
    }
    /// The user's marker (name): "the user exists", asked in the user's own slot.
    fn user_marker(&self, user: &str) -> String {
        self.user_slot(user, "user")
    }
    /// The user's sessions: family → when it was created (ms).
    fn user_sessions(&self, user: &str) -> String {
        self.user_slot(user, "sessions")
    }
    /// Which layout the keys are in (absent: the one before hash tags).
    fn layout(&self) -> String {
        self.key("layout")
    }
    /// Message ids: the one counter every message takes a number from (its own slot).
    fn message_seq(&self) -> String {
        self.tagged(&format!("{}:seq", self.prefix), "msg:seq")
    }
    /// The user's copy of every message they sent or received: id → the wire JSON.
    fn user_messages(&self, user: &str) -> String {
        self.user_slot(user, "msg")
    }
    /// The user's messages sent whose recipient's copy may not be written yet: id → when.
    fn pending(&self, user: &str) -> String {
        self.user_slot(user, "pending")
    }
    fn dedupe(&self, user: &str) -> String {
        self.user_slot(user, "dedupe")
    }
    fn inbox(&self, user: &str) -> String {
        self.user_slot(user, "inbox")
    }
    /// The highest message id the user's copy ever held: a copy takes only ids above it.
    fn top(&self, user: &str) -> String {
        self.user_slot(user, "top")
    }
    /// The viewer's copy of their conversation with `peer`: ids.
    fn conversation(&self, viewer: &str, peer: &str) -> String {
        self.user_slot(viewer, &format!("conv:{peer}"))
    }
    fn peers(&self, user: &str) -> String {
        self.user_slot(user, "peers")
    }
    /// The user's read cursors, by peer.
    fn reads(&self, user: &str) -> String {
        self.user_slot(user, "reads")
    }
    /// The user's seen cursors, by peer (what each peer may know the user read).
    fn seen(&self, user: &str) -> String {
        self.user_slot(user, "seen")
    }
    fn settings(&self, user: &str) -> String {
        self.user_slot(user, "settings")
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
        self.user_slot(user, "presence")
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
local function redis_now()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
"#;

/// Shared by the scripts that move an older layout: only keys named by this store's own ids
/// move (a deployment whose prefix nests under this one, `<prefix>:session` say, keeps its
/// keys): digests are 64 hex digits, user ids UUIDs.
const OWN_IDS: &str = r#"
local function is_digest(id)
  return id ~= nil and #id == 64 and string.match(id, '^%x+$') ~= nil
end
local function is_user(id)
  return id ~= nil and string.match(id, '^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$') ~= nil
end
"#;

/// Lists a new user in the directory's slot, unless its name key ARGV[4] is protected (-1,
/// nothing written) or its id is taken by another user (0: draw again); 1 when listed (a resent
/// call that listed it included). The user joins `quiet-users` (no message yet), its name key's
/// users with its sign-up number, and its first session's deadline (`ARGV[5]:ARGV[1]` at
/// ARGV[6]) is indexed. KEYS: protected, usernames, users:seq, directory, names:<key>,
/// name-keys, quiet-users, session-deadlines.
const CREATE_USER: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[4]) == 1 then return -1 end
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  if held == ARGV[2] and redis.call('ZSCORE', KEYS[4], ARGV[1]) then return 1 end
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local seq = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[4], seq, ARGV[1])
redis.call('ZADD', KEYS[5], seq, ARGV[1])
redis.call('HSET', KEYS[6], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[7], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[8], ARGV[6], ARGV[5] .. ':' .. ARGV[1])
return 1
"#;

/// Creates session KEYS[1] (its own slot; KEYS[2] the pointer a later secret with this digest
/// would have) for user ARGV[1] named ARGV[2], created now (ARGV[3]), idle TTL ARGV[4] ms, device
/// label ARGV[5], key ARGV[6], deadline ARGV[7]: 1 when made (a resent call included), 0 when
/// the digest is taken (draw again).
const CREATE_SESSION: &str = r#"
local held = redis.call('HGET', KEYS[1], 'user')
if held then
  if held == ARGV[1] then return 1 end
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'name', ARGV[2], 'created', ARGV[3], 'seen', ARGV[3], 'device', ARGV[5], 'key', ARGV[6], 'deadline', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#;

/// Admits session ARGV[1], created ARGV[2], into the user's sessions KEYS[1] (family →
/// created) unless the user holds ARGV[3] sessions created within the maximum age ARGV[4]
/// already: `{'ok'}` (a resent call included), or `{'full', family, ...}` with those sessions
/// (the caller drops the ones that no longer exist and asks again).
const ADMIT_SESSION: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {'ok'} end
local now, max, max_age = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('HLEN', KEYS[1]) >= max then
  local live = {}
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if now - tonumber(all[i + 1]) <= max_age then table.insert(live, all[i]) end
  end
  if #live >= max then
    local out = {'full'}
    for _, d in ipairs(live) do table.insert(out, d) end
    return out
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {'ok'}
"#;

/// Ends session KEYS[1] if it is user ARGV[1]'s (any user's when ARGV[1] is '') and, with
/// ARGV[2] = 1, only if it is not bound to a key: the user it was, or nil.
const END_SESSION: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'user', 'key')
if not s[1] then return false end
if ARGV[1] ~= '' and s[1] ~= ARGV[1] then return false end
if ARGV[2] == '1' and s[2] and s[2] ~= '' then return false end
redis.call('DEL', KEYS[1])
return s[1]
"#;

/// Drops families (ARGV) from the user's sessions KEYS[1]; returns how many the user has left.
const FORGET_SESSIONS: &str = r#"
if #ARGV > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV)) end
return redis.call('HLEN', KEYS[1])
"#;

/// Unindexes ended sessions of user ARGV[1] (their families ARGV[3..]) from the deadlines
/// KEYS[1]; with ARGV[2] = 1 (the user has none left) the account sweep may take the user as
/// soon as it has no message (`quiet-users` KEYS[2], score 0).
const UNINDEX_SESSIONS: &str = r#"
for i = 3, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i] .. ':' .. ARGV[1]) end
if ARGV[2] == '1' then redis.call('ZADD', KEYS[2], 'XX', 0, ARGV[1]) end
return 1
"#;

/// Indexes used sessions (ARGV: user, then family/deadline pairs) in the deadlines KEYS[1],
/// and moves the user's last handshake (`quiet-users` KEYS[2], only if it has no message yet)
/// to now (ARGV[2]).
const INDEX_SESSIONS: &str = r#"
for i = 3, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i] .. ':' .. ARGV[1]) end
redis.call('ZADD', KEYS[2], 'XX', 'GT', ARGV[2], ARGV[1])
return 1
"#;

/// Finds a session by one of its secrets (ARGV[5], a digest) and, unless it is past its maximum
/// age, refreshes it as used now: its idle TTL, its deadline (stored in it, for the sweep),
/// its last use (`seen`, for the devices list). KEYS[1] is the session of family ARGV[4];
/// with ARGV[6] = 1 (then the family is the digest itself, and KEYS[2] its pointer, in the same
/// slot) a secret that has a pointer (one after the session's first) answers `{'family',
/// family}` only: the caller asks again with that family and ARGV[6] = 0 (and KEYS[1] alone).
/// Returns nil when unknown, else `{user, name, live, key, state, at, current, deadline}`:
/// `live` 0 past its maximum age; `key` the hex of the point the session is bound to ('' when
/// unbound); `state` `current` (issued `at`; 0: due) or `retired` (at `at`); `current` the
/// digest of the current secret (`cur`, absent: the family's own); `deadline` when it expires
/// now. The caller indexes the deadline and the account's last handshake.
const FIND_SESSION: &str = r#"
if ARGV[6] == '1' then
  local family = redis.call('GET', KEYS[2])
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
if now - created > max_age then return {s[1], s[2], '0', '', state, at, cur, '0'} end
local deadline = int(math.min(now + idle, created + max_age))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'seen', ARGV[1], 'deadline', deadline)
return {s[1], s[2], '1', s[4] or '', state, at, cur, deadline}
"#;

/// Refreshes session KEYS[1] as a handshake would (its sockets are connected): `{'gone'}` when
/// it is gone or past its maximum age ARGV[3], else `{user, deadline, due}` (`due` 1 when its
/// secret is marked due for rotation).
const TOUCH_SESSION: &str = r#"
local now, idle, max_age = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'user', 'created', 'issued')
if not s[1] or now - tonumber(s[2]) > max_age then return {'gone'} end
local deadline = int(math.min(now + idle, tonumber(s[2]) + max_age))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'seen', ARGV[1], 'deadline', deadline)
return {s[1], deadline, s[3] == '0' and '1' or '0'}
"#;

/// Claims a later secret's pointer KEYS[1] (digest ARGV[3]) for family ARGV[1] until ARGV[2]
/// (ms): `ok` (a resent call included), or `taken` when the digest is a secret of another
/// session or a session itself (KEYS[2]).
const CLAIM_SECRET: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 'taken' end
local held = redis.call('GET', KEYS[1])
if held then
  if held == ARGV[1] then return 'ok' end
  return 'taken'
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 'ok'
"#;

/// Rotates the secret of session KEYS[1] (family ARGV[1]) if its current secret is still ARGV[2]
/// (compare-and-set) and fewer than ARGV[6] secrets were retired since ARGV[5]: ARGV[3] (whose
/// pointer the caller claimed) becomes current (issued now, ARGV[4]), the old one is retired
/// now (`r:<digest>`). Returns `rotated` (a resent call that rotated included: `cur` is ARGV[3]
/// already), `moved`, `gone` or `too_many`.
const ROTATE_SECRET: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'user', 'created', 'cur')
if not s[1] then return 'gone' end
local cur = s[3] or ARGV[1]
if cur == ARGV[3] then return 'rotated' end
if cur ~= ARGV[2] then return 'moved' end
local recent, since = 0, tonumber(ARGV[5])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'r:' and tonumber(all[i + 1]) >= since then recent = recent + 1 end
end
if recent >= tonumber(ARGV[6]) then return 'too_many' end
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

/// The directory's checks before user ARGV[1] adds passkey ARGV[2] (checked in the contract's
/// order: `unknown`, `name_taken`, `credential_taken`); past them the credential is reserved
/// for the user (`ok`; `held` when it is the user's already: a passkey of theirs, or a
/// reservation a resent or interrupted call left, which the caller tells apart), with whether
/// the user owns its name key's claim already (`owner`) or may claim it (`claim`: it is the
/// oldest account with the key). Returns `{verdict, state}`. KEYS: usernames, name-keys,
/// protected, creds; ARGV[3] the directory slot's key prefix.
const PROTECT_CHECK: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {'unknown', ''} end
local key = redis.call('HGET', KEYS[2], ARGV[1])
if not key then return {'unknown', ''} end
local owner = redis.call('HGET', KEYS[3], key)
if owner and owner ~= ARGV[1] then return {'name_taken', ''} end
if not owner and redis.call('ZRANGE', ARGV[3] .. 'names:' .. key, 0, 0)[1] ~= ARGV[1] then
  return {'name_taken', ''}
end
local state = 'claim'
if owner then state = 'owner' end
local held = redis.call('HGET', KEYS[4], ARGV[2])
if held == ARGV[1] then return {'held', state} end
if held then return {'credential_taken', ''} end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])
return {'ok', state}
"#;

/// Adds passkey ARGV[1] (JSON ARGV[2], info ARGV[3]) to the user's passkeys KEYS[1] and their
/// info KEYS[2], unless the user holds ARGV[4] already: `added` (a resent call included) or
/// `full`.
const ADD_PASSKEY: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'added' end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return 'full' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 'added'
"#;

/// The directory's part of a passkey added to user ARGV[1]: the user owns its name key's
/// claim after it (claiming it if it is free and the user still the oldest with the key: then
/// the directory's epoch moves, so every node reads the roster's marks again) and leaves
/// `quiet-users` (a protected account is never swept). Returns `protected` when ARGV[2] = 1
/// (the first passkey), else `added`; or `name_taken` (another account claimed it meanwhile:
/// nothing written, the caller undoes the passkey). Claiming whatever ARGV[2] says covers a
/// last passkey removed meanwhile, whose removal gave the claim up. KEYS: name-keys,
/// protected, quiet-users, users:epoch; ARGV[3] the directory slot's key prefix.
const PROTECT_FINISH: &str = r#"
local key = redis.call('HGET', KEYS[1], ARGV[1])
if not key then return 'name_taken' end
local owner = redis.call('HGET', KEYS[2], key)
if not owner then
  if redis.call('ZRANGE', ARGV[3] .. 'names:' .. key, 0, 0)[1] ~= ARGV[1] then
    return 'name_taken'
  end
  redis.call('HSET', KEYS[2], key, ARGV[1])
  redis.call('INCR', KEYS[4])
elseif owner ~= ARGV[1] then
  return 'name_taken'
end
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[2] == '1' then return 'protected' end
return 'added'
"#;

/// Frees credential ARGV[2] (KEYS[1] creds) if user ARGV[1] holds it.
const RELEASE_CREDENTIAL: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[1], ARGV[2]) end
return 1
"#;

/// Gives the users from before name keys theirs, once (unless `name-keys:filled` is set):
/// ARGV holds `user, key` pairs of the users, then `old key, new key, user` triples of the
/// protected names, the owners oldest first (two claims that now share a key keep the older
/// account's). ARGV[1] is the directory slot's key prefix, ARGV[2] the number of users.
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

/// The user that protected name key ARGV[1] (KEYS[1] protected) and its name (KEYS[2]
/// usernames): nil when none, else `{user, name}`.
const OWNER_OF_NAME: &str = r#"
local user = redis.call('HGET', KEYS[1], ARGV[1])
if not user then return false end
local name = redis.call('HGET', KEYS[2], user)
if not name then return false end
return {user, name}
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

/// Whether user ARGV[1] owns its name key's claim (KEYS[1] name-keys, KEYS[2] protected): 1/0.
const OWNS_NAME: &str = r#"
local key = redis.call('HGET', KEYS[1], ARGV[1])
if key and redis.call('HGET', KEYS[2], key) == ARGV[1] then return 1 end
return 0
"#;

/// A user's passkeys (KEYS[1]) with their info (KEYS[2]): `{cred_id, info or '', ...}`.
const LIST_PASSKEYS: &str = r#"
local out = {}
for _, cred in ipairs(redis.call('HKEYS', KEYS[1])) do
  table.insert(out, cred)
  table.insert(out, redis.call('HGET', KEYS[2], cred) or '')
end
return out
"#;

/// Removes passkey ARGV[1] from the user's passkeys KEYS[1] and info KEYS[2]: -1 when it is
/// not theirs, else how many they have left.
const REMOVE_PASSKEY: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('HLEN', KEYS[1])
"#;

/// The directory's part of removing user ARGV[1]'s passkey ARGV[2] (ARGV[3] of them left): the
/// credential is freed, and with none left the user's name claim is given up (the epoch
/// moves, so every node reads the roster's marks again). Returns 1 when the name is still
/// protected, 0 when it was not, 2 when this gave it up (the caller checks that no passkey was
/// added meanwhile). KEYS: creds, name-keys, protected, users:epoch.
const RELEASE_PASSKEY: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[1], ARGV[2]) end
local key = redis.call('HGET', KEYS[2], ARGV[1])
local owns = key and redis.call('HGET', KEYS[3], key) == ARGV[1]
if not owns then return 0 end
if tonumber(ARGV[3]) > 0 then return 1 end
redis.call('HDEL', KEYS[3], key)
redis.call('INCR', KEYS[4])
return 2
"#;

/// The session sweep's claim: takes up to ARGV[2] entries of the deadlines KEYS[1] whose
/// deadline passed (ARGV[1]) off the index and returns them (`digest:user`), so that each is
/// taken by one node only.
const CLAIM_DUE_SESSIONS: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"#;

/// Ends claimed session KEYS[1] unless it was used after the claim (its stored deadline is
/// past ARGV[1]): 1 when it is gone (ended here, or by its TTL), else its deadline (the caller
/// indexes it again).
const EXPIRE_SESSION: &str = r#"
local deadline = redis.call('HGET', KEYS[1], 'deadline')
if deadline and tonumber(deadline) > tonumber(ARGV[1]) then return {0, deadline} end
redis.call('DEL', KEYS[1])
return {1, '0'}
"#;

/// The account sweep's claim, with a lease of ARGV[3] ms (Redis' clock): first every claim
/// whose lease lapsed (a sweep that stopped midway), then up to ARGV[2] in all of the users last
/// seen before ARGV[1] (or left without a session: score 0), taken off `quiet-users` KEYS[1]
/// and out of `usernames` KEYS[2] (so no message can reach them meanwhile), their names kept in
/// KEYS[4] while claimed (KEYS[3]). Returns `{user, name, ...}`.
const CLAIM_QUIET_USERS: &str = r#"
local now = redis_now()
local lease = int(now + tonumber(ARGV[3]))
local limit = tonumber(ARGV[2])
local out = {}
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', int(now), 'LIMIT', 0, limit)) do
  local name = redis.call('HGET', KEYS[4], user)
  if name then
    redis.call('ZADD', KEYS[3], lease, user)
    table.insert(out, user)
    table.insert(out, name)
  else
    redis.call('ZREM', KEYS[3], user)
  end
end
local room = limit - #out / 2
if room <= 0 then return out end
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, room)) do
  redis.call('ZREM', KEYS[1], user)
  local name = redis.call('HGET', KEYS[2], user)
  if name then
    redis.call('HDEL', KEYS[2], user)
    redis.call('HSET', KEYS[4], user, name)
    redis.call('ZADD', KEYS[3], lease, user)
    table.insert(out, user)
    table.insert(out, name)
  end
end
return out
"#;

/// Gives a claimed user back their name (ARGV[2]) in `usernames` KEYS[1]: a message reached
/// them before the claim, so they stay. Ends the claim (KEYS[2], KEYS[3]).
const UNCLAIM_USER: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"#;

/// Deletes a claimed user's own keys (KEYS: peers, sessions, settings, marker, top), unless it
/// has a message (`peers`): nil then, else the families of its sessions.
const DROP_USER: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local families = redis.call('HKEYS', KEYS[2])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return families
"#;

/// Takes a deleted user ARGV[1] out of the directory (KEYS: directory, name-keys, deadlines,
/// users:epoch, claimed users, claimed names; ARGV[2] the directory slot's key prefix,
/// ARGV[3..] its sessions' families), ends the claim and moves the epoch.
const DROP_ENTRY: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
local key = redis.call('HGET', KEYS[2], ARGV[1])
if key then
  redis.call('ZREM', ARGV[2] .. 'names:' .. key, ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
for i = 3, #ARGV do redis.call('ZREM', KEYS[3], ARGV[i] .. ':' .. ARGV[1]) end
redis.call('INCR', KEYS[4])
return 1
"#;

/// The directory after sign-up number `ARGV[2]`, or all of it when the epoch (moved by account
/// deletions and protections) is not `ARGV[1]`: `{epoch, whole, seq1, user1, name1,
/// protected1, ...}` (protected: 1 when the user owns its name key's claim). A user without a
/// name is being deleted by the account sweep (or was, by one that stopped midway): left out.
const LIST_USERS: &str = r#"
local epoch = redis.call('GET', KEYS[1]) or '0'
local whole, from = 0, '(' .. ARGV[2]
if epoch ~= ARGV[1] then whole, from = 1, '-inf' end
local out = {tonumber(epoch), whole}
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], from, '+inf', 'WITHSCORES')
for i = 1, #ids, 2 do
  local name = redis.call('HGET', KEYS[3], ids[i])
  if name then
    table.insert(out, ids[i + 1])
    table.insert(out, ids[i])
    table.insert(out, name)
    local key = redis.call('HGET', KEYS[4], ids[i])
    table.insert(out, (key and redis.call('HGET', KEYS[5], key) == ids[i]) and 1 or 0)
  end
end
return out
"#;

/// Converts the directory as it was before expiry (a list of `[userID, name]` JSON) once, on a
/// standalone Redis only (it names keys of every slot): every user joins the sorted directory
/// in the same order, every live session gets its deadline, and users without a message start
/// their idle time now. ARGV[1] is the key prefix (`<prefix>:`).
const MIGRATE_DIRECTORY: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now, max_age = tonumber(ARGV[2]), tonumber(ARGV[3])
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
for _, entry in ipairs(entries) do
  local user = cjson.decode(entry)[1]
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), user)
  local set = ARGV[1] .. '{u:' .. user .. '}:sessions'
  for _, d in ipairs(redis.call('HKEYS', set)) do
    local key = ARGV[1] .. '{s:' .. d .. '}:session'
    local created, ttl = redis.call('HGET', key, 'created'), redis.call('PTTL', key)
    if created and ttl > 0 then
      local deadline = int(math.min(now + ttl, tonumber(created) + max_age))
      redis.call('ZADD', KEYS[5], deadline, d .. ':' .. user)
      redis.call('HSET', key, 'deadline', deadline)
    else
      redis.call('HDEL', set, d)
    end
  end
  if redis.call('EXISTS', ARGV[1] .. '{u:' .. user .. '}:peers') == 0 then
    redis.call('ZADD', KEYS[4], ARGV[2], user)
  end
end
redis.call('DEL', KEYS[1])
return #entries
"#;

/// Moves a standalone Redis's keys from the layout before hash tags to this one, once (KEYS[1]
/// the layout version, set to 2 after): the directory's keys into its slot, each session and
/// later secret into its own, and each user's sessions (a set of families, now a hash family →
/// created), passkeys, peers and settings into the user's (MOVE_MESSAGES, right after,
/// gives each user its marker). Sessions get their deadline from the
/// deadlines index. Keys it does not know (messages, read state) keep their names. ARGV[1] is
/// the key prefix (`<prefix>:`), ARGV[2] the directory slot's, ARGV[3] the SCAN pattern of the
/// prefix. Returns how many keys moved, or -1 when done before. One script: it runs once, on a
/// Redis that no node of the older release uses any more.
const MOVE_TO_HASH_TAGS: &str = r#"
if tonumber(redis.call('GET', KEYS[1]) or '0') >= 2 then return -1 end
local p, dir = ARGV[1], ARGV[2]
local globals = {usernames = true, directory = true, ['users:seq'] = true, ['users:epoch'] = true,
  protected = true, ['name-keys'] = true, ['name-keys:filled'] = true, creds = true,
  ['quiet-users'] = true, ['session-deadlines'] = true, users = true}
local moved, sets = 0, {}
local cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[3], 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    local rest = string.sub(key, #p + 1)
    local new
    if string.sub(rest, 1, 1) ~= '{' then
      if globals[rest] then
        new = dir .. rest
      elseif string.sub(rest, 1, 6) == 'names:' then
        if redis.call('TYPE', key)['ok'] == 'zset' and is_user(redis.call('ZRANGE', key, 0, 0)[1]) then
          new = dir .. rest
        end
      else
        local kind, id = string.match(rest, '^(%a+):([^:]+)$')
        if (kind == 'session' or kind == 'secret') and is_digest(id) then
          new = p .. '{s:' .. id .. '}:' .. kind
        elseif (kind == 'peers' or kind == 'settings') and is_user(id) then
          new = p .. '{u:' .. id .. '}:' .. kind
        else
          local user, what = string.match(rest, '^user:([^:]+):([%a-]+)$')
          if is_user(user) and (what == 'passkeys' or what == 'passkey-info') then
            new = p .. '{u:' .. user .. '}:' .. what
          elseif is_user(user) and what == 'sessions' then
            table.insert(sets, {key, user})
          end
        end
      end
    end
    -- SCAN may return a key twice; one renamed already is gone.
    if new and redis.call('EXISTS', key) == 1 then
      redis.call('RENAME', key, new)
      moved = moved + 1
    end
  end
until cursor == '0'
for _, set in ipairs(sets) do
  local sessions = p .. '{u:' .. set[2] .. '}:sessions'
  for _, d in ipairs(redis.call('SMEMBERS', set[1])) do
    if not is_digest(d) then d = '' end
    local created = d ~= '' and redis.call('HGET', p .. '{s:' .. d .. '}:session', 'created')
    if created then redis.call('HSET', sessions, d, created) end
  end
  redis.call('DEL', set[1])
  moved = moved + 1
end
local deadlines = redis.call('ZRANGE', dir .. 'session-deadlines', 0, -1, 'WITHSCORES')
for i = 1, #deadlines, 2 do
  local d = string.match(deadlines[i], '^([^:]+):')
  if d and redis.call('EXISTS', p .. '{s:' .. d .. '}:session') == 1 then
    redis.call('HSET', p .. '{s:' .. d .. '}:session', 'deadline', deadlines[i + 1])
  end
end
redis.call('SET', KEYS[1], '2')
return moved
"#;

/// Moves a standalone Redis's messages and read state into each user's slot, once (KEYS[1] the
/// layout version, 2 before and 3 after; KEYS[2] the old `messages` hash, KEYS[3] the old id
/// counter, KEYS[4] the new one): every message is copied into both parties' `msg` and
/// `conv:<peer>` (one copy for a note to self), and each user's `inbox`, `dedupe`, `reads` and
/// `seen` move into the user's slot; the old `messages` and `conv:<a>|<b>` keys go; every user
/// gets its marker (`{u}:user`, its name). ARGV as
/// MOVE_TO_HASH_TAGS's. Returns how many messages moved, or -1 when done before.
const MOVE_MESSAGES: &str = r#"
if tonumber(redis.call('GET', KEYS[1]) or '0') >= 3 then return -1 end
local p = ARGV[1]
local moved = 0
local cursor = '0'
repeat
  local page = redis.call('HSCAN', KEYS[2], cursor, 'COUNT', 1000)
  cursor = page[1]
  local fields = page[2]
  for i = 1, #fields, 2 do
    local id, json = fields[i], fields[i + 1]
    local ok, m = pcall(cjson.decode, json)
    if ok and type(m) == 'table' and m.from and m.to then
      redis.call('HSET', p .. '{u:' .. m.from .. '}:msg', id, json)
      redis.call('ZADD', p .. '{u:' .. m.from .. '}:conv:' .. m.to, id, id)
      if m.to ~= m.from then
        redis.call('HSET', p .. '{u:' .. m.to .. '}:msg', id, json)
        redis.call('ZADD', p .. '{u:' .. m.to .. '}:conv:' .. m.from, id, id)
      end
      moved = moved + 1
    end
  end
until cursor == '0'
redis.call('DEL', KEYS[2])
cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[3], 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    local rest = string.sub(key, #p + 1)
    local kind, user = string.match(rest, '^(%a+):([^:]+)$')
    if (kind == 'inbox' or kind == 'dedupe' or kind == 'reads' or kind == 'seen') and is_user(user) then
      if redis.call('EXISTS', key) == 1 then redis.call('RENAME', key, p .. '{u:' .. user .. '}:' .. kind) end
    elseif string.match(rest, '^conv:[^:|]+|[^:|]+$') then
      redis.call('DEL', key)
    end
  end
until cursor == '0'
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('RENAME', KEYS[3], KEYS[4]) end
local names = redis.call('HGETALL', ARGV[2] .. 'usernames')
for i = 1, #names, 2 do
  redis.call('HSET', p .. '{u:' .. names[i] .. '}:user', 'name', names[i + 1])
end
redis.call('SET', KEYS[1], '3')
return moved
"#;

/// `send_out`'s, `send_in`'s and `SEND_MOVE`'s answer when the copy holds a higher id already.
const SEND_BELOW_TOP: i64 = 2;

/// How many ids a message may take before one is above its sender's copy's `top`, and again
/// before one is above its recipient's: each miss is a message that reached the copy between
/// this one's id and its write, so more than a few means a hot spot no retry fixes; the send
/// fails as unavailable. Nothing is stored when the sender's copy refused every id; when the
/// recipient's did, the message stays pending in the sender's copy (a resend with its client
/// id, or the repair, goes on with it).
const PLACE_ATTEMPTS: usize = 64;

/// After a miss, a send waits a moment before it takes another id (from the third miss on,
/// up to this many milliseconds, at random): a burst of sends into one copy (30 at once in
/// the store contract) then spreads out instead of all missing again behind the newest.
const PLACE_BACKOFF_MAX_MS: u64 = 8;

/// The wait before attempt `attempt` (0 first) of a send that missed.
async fn place_backoff(attempt: usize) {
    if attempt > 0 {
        metrics::counter!("tether_redis_message_id_misses_total").increment(1);
    }
    if attempt < 2 {
        return;
    }
    let most = PLACE_BACKOFF_MAX_MS.min(attempt as u64) * 1000;
    let jitter = (uuid::Uuid::new_v4().as_u128() as u64) % (most + 1);
    tokio::time::sleep(Duration::from_micros(jitter)).await;
}

/// What became of a pending message's recipient copy ([`RedisStore::finish_send`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Written,
    /// The recipient is gone: the sender's copy was taken back.
    RecipientGone,
    /// The recipient's copy holds a higher id: nothing was written, the sender's copy is still
    /// pending under this id and moves to a new one.
    Later,
}

/// What became of a pending message ([`RedisStore::deliver`]).
enum Delivered {
    /// Both copies hold it: its JSON, under the id it ended with.
    Written(String),
    /// The recipient is gone: the sender's copy was taken back.
    RecipientGone,
    /// Another send moved it (or took it back) meanwhile and goes on with it.
    Elsewhere,
}

/// How long a message may stay pending (its recipient's copy not written) before the sender's
/// next send finishes it: longer than any send takes.
const PENDING_REPAIR_AFTER: Duration = Duration::from_secs(30);

/// How long the account sweep holds a claimed user before another sweep redoes it (a sweep
/// that stopped midway leaves the user claimed: out of the names, not yet deleted).
const ACCOUNT_CLAIM_LEASE: Duration = Duration::from_secs(60);

/// `text` with the characters a `SCAN MATCH` pattern gives a meaning escaped.
fn glob_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Shared by the scripts that store a message: each party's part, one slot each.
///
/// `send_out`, the sender's part (KEYS: dedupe, msg, inbox, conv:<to>, peers, pending, top):
/// `{0, id, json, pending}` for client id `cid` stored already (whatever its recipient, as the
/// `Store` contract says) under another id, or under this one when the id is not this call's
/// own (`own` '0': a duplicate's); else writes the sender's copy (`{"id":` id `,` rest) and
/// answers `{1, id, json, pending}`, a resent call included. `pending` 1: the recipient's copy
/// may not be written yet; with `mark` '1' the message is marked pending since `now` (a note
/// to self, or a store that writes both copies at once, marks nothing). `{2, id, '', 0}`: the
/// copy holds a higher id already (`top`), nothing is written: store it under a new id.
///
/// `send_in`, the recipient's part (KEYS: marker, msg, inbox, conv:<from>, peers, top): writes
/// their copy unless they do not exist (0); 1 when it is written (by this call or one before);
/// 2 when their copy holds a higher id already (nothing written: the sender's copy moves to a
/// new id, SEND_MOVE, and this runs again).
const SEND_STEPS: &str = r#"
local function held(top, inbox)
  local id = redis.call('GET', top)
  if not id then id = redis.call('ZREVRANGE', inbox, 0, 0)[1] or '0' end
  return tonumber(id)
end
local function above_top(top, inbox, id)
  return tonumber(id) > held(top, inbox)
end
local function send_out(k, id, cid, rest, now, mark, to, own)
  if cid ~= '' then
    local existing = redis.call('HGET', k[1], cid)
    if existing and not (own == '1' and existing == tostring(id)) then
      local pending = redis.call('ZSCORE', k[6], existing) and 1 or 0
      return {0, existing, redis.call('HGET', k[2], existing), pending}
    end
  end
  local json = redis.call('HGET', k[2], id)
  if not json then
    if not above_top(k[7], k[3], id) then return {2, id, '', 0} end
    redis.call('SET', k[7], id)
    json = '{"id":' .. id .. ',' .. rest
    redis.call('HSET', k[2], id, json)
    if cid ~= '' then redis.call('HSET', k[1], cid, id) end
    redis.call('ZADD', k[3], id, id)
    redis.call('ZADD', k[4], id, id)
    redis.call('SADD', k[5], to)
    if mark == '1' then redis.call('ZADD', k[6], now, id) end
  end
  local pending = redis.call('ZSCORE', k[6], id) and 1 or 0
  return {1, id, json, pending}
end
local function send_in(k, id, json, from)
  if redis.call('EXISTS', k[1]) == 0 then return 0 end
  if redis.call('HEXISTS', k[2], id) == 0 then
    if not above_top(k[6], k[3], id) then return 2 end
    redis.call('SET', k[6], id)
    redis.call('HSET', k[2], id, json)
    redis.call('ZADD', k[3], id, id)
    redis.call('ZADD', k[4], id, id)
    redis.call('SADD', k[5], from)
  end
  return 1
end
"#;

/// The sender's part of storing message ARGV[1], in the sender's slot (`send_out`; ARGV: id,
/// client id, the JSON after the id, now, '1' to mark it pending, to, '1' when the id is this
/// call's own).
const SEND_OUT: &str = r#"
return send_out(KEYS, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
"#;

/// The recipient's part, in the recipient's slot (`send_in`; ARGV: id, JSON, from).
const SEND_IN: &str = r#"
return send_in(KEYS, ARGV[1], ARGV[2], ARGV[3])
"#;

/// Whether a user's `msg` hash (KEYS[1]) holds message ARGV[2] under id ARGV[1], rewritten as
/// it is when it does: a write, so that a `WAIT` after it on the same connection counts from a
/// replication offset past the copy (a Redis Cluster with replica acks; see
/// `RedisStore::confirm_copy`). 1 or 0.
const CONFIRM_COPY: &str = r#"
local json = redis.call('HGET', KEYS[1], ARGV[1])
if json ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], json)
return 1
"#;

/// Both parts at once, with the id, on a standalone Redis (it names keys of several slots):
/// the message is stored in one step, so ids reach every copy in the order they are taken
/// (a cluster stores it in steps; see `RedisStore::insert_message`). KEYS: the sender's seven
/// (as `send_out`), the recipient's six (as `send_in`), the id counter, `quiet-users`; ARGV: client id, the JSON after the id, now, to, from.
/// Returns nil for an unknown recipient (after the client id check), else
/// `{fresh, id, json, 0}`. A counter behind a copy's `top` (keys restored from an older
/// backup, say) moves up past it first.
const SEND_AT_ONCE: &str = r#"
local out = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}
if ARGV[1] ~= '' then
  local existing = redis.call('HGET', KEYS[1], ARGV[1])
  if existing then return send_out(out, existing, ARGV[1], '', ARGV[3], '0', ARGV[4], '0') end
end
if redis.call('EXISTS', KEYS[8]) == 0 then return false end
local id = redis.call('INCR', KEYS[14])
local floor = held(KEYS[7], KEYS[3])
if ARGV[4] ~= ARGV[5] then floor = math.max(floor, held(KEYS[13], KEYS[10])) end
if id <= floor then
  id = floor + 1
  redis.call('SET', KEYS[14], id)
end
id = tostring(id)
local stored = send_out(out, id, ARGV[1], ARGV[2], ARGV[3], '0', ARGV[4], '1')
if ARGV[4] ~= ARGV[5] then
  send_in({KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13]}, id, stored[3], ARGV[5])
end
redis.call('ZREM', KEYS[15], ARGV[4], ARGV[5])
return stored
"#;

/// Moves the sender's pending copy of message ARGV[1] to id ARGV[2] (the JSON ARGV[3], client
/// id ARGV[4], pending since ARGV[5]), when the recipient's copy holds a higher id than its
/// own; in the sender's slot, all at once, so the message is never in neither place (KEYS: as
/// `send_out`'s). 1 when it is under the new id (by this call or one before), 0 when the old
/// id is gone or no longer pending (another send moved, took back or finished it), 2 when the sender's copy holds an id above
/// the new one already (nothing written: move it again).
const SEND_MOVE: &str = r#"
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 1 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 or not redis.call('ZSCORE', KEYS[6], ARGV[1]) then
  return 0
end
if not above_top(KEYS[7], KEYS[3], ARGV[2]) then return 2 end
redis.call('SET', KEYS[7], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[2])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZADD', KEYS[6], ARGV[5], ARGV[2])
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], ARGV[4]) == ARGV[1] then redis.call('HSET', KEYS[1], ARGV[4], ARGV[2]) end
return 1
"#;

/// Takes back the sender's copy of message ARGV[1] (client id ARGV[2], to ARGV[3]) whose
/// recipient is gone (KEYS as `send_out`'s; `top` stays: ids above it are still taken).
const SEND_UNDO: &str = r#"
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[1], ARGV[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('SREM', KEYS[5], ARGV[3]) end
return 1
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

/// Moves the viewer's read cursor of a conversation (in the viewer's slot; KEYS: conv:<peer>,
/// reads, msg, settings, seen), and their seen cursor with it when both have read receipts on
/// (the peer's setting, read from their slot just before, is ARGV[6]; see `Store::mark_read`):
/// `{upTo, at, unread, asOf, moved, seen}` (`seen` 1: the seen cursor moved to `upTo`, `at`).
const MARK_READ: &str = r#"
local up, at = cursor(KEYS[2], ARGV[1])
local newest = redis.call('ZREVRANGE', KEYS[1], 0, 0)[1]
if not newest then return {0, 0, 0, 0, 0, 0} end
newest = tonumber(newest)
local moved, seen = 0, 0
local target = math.min(tonumber(ARGV[2]), newest)
if target > up then
  up, at, moved = target, tonumber(ARGV[3]), 1
  redis.call('HSET', KEYS[2], ARGV[1], int(up) .. ':' .. ARGV[3])
  if ARGV[1] ~= ARGV[4] and receipts_on(KEYS[4]) and ARGV[6] == '1' then
    seen = 1
    redis.call('HSET', KEYS[5], ARGV[1], int(up) .. ':' .. ARGV[3])
  end
end
local unread = count_unread(KEYS[1], KEYS[3], up, newest, ARGV[4], tonumber(ARGV[5]))
return {up, at, unread, newest, moved, seen}
"#;

/// One entry of a conversation page (in the viewer's slot; KEYS: msg, conv:<peer>, reads,
/// settings), whose newest message is `ARGV[3]`, with what was read from the peer's slot and
/// the directory just before (ARGV[5] the peer's name, ARGV[6] their receipts setting '1'/'0',
/// ARGV[7] their seen cursor of the viewer, '' for none): `{json, name, upTo, at, unread,
/// scanned, peerShares, peerUpTo, peerAt}` (`peerShares` 1 when both have receipts on and the
/// peer is not the viewer; `peerUpTo`, `peerAt`: the peer's seen cursor, never their read
/// cursor), or nil when the message is gone.
const CONVERSATION_ENTRY: &str = r#"
local json = redis.call('HGET', KEYS[1], ARGV[3])
if not json then return false end
local up, at = cursor(KEYS[3], ARGV[2])
local unread, scanned = count_unread(KEYS[2], KEYS[1], up, tonumber(ARGV[3]), ARGV[1], tonumber(ARGV[4]))
local shares, peer_up, peer_at = 0, 0, 0
if ARGV[1] ~= ARGV[2] and receipts_on(KEYS[4]) and ARGV[6] == '1' then
  shares = 1
  local sep = string.find(ARGV[7], ':', 1, true)
  if sep then
    peer_up, peer_at = tonumber(string.sub(ARGV[7], 1, sep - 1)), tonumber(string.sub(ARGV[7], sep + 1))
  end
end
return {json, ARGV[5], up, at, unread, scanned, shares, peer_up, peer_at}
"#;

/// Applies a settings change (`ARGV[2]`: `"0"`, `"1"` or `""` for unchanged) to a known user:
/// nil for an unknown one, else `{readReceipts, changed}`.
const CHANGE_SETTINGS: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local old = redis.call('HGET', KEYS[2], 'readReceipts') or '1'
if ARGV[2] == '' or ARGV[2] == old then return {tonumber(old), 0} end
redis.call('HSET', KEYS[2], 'readReceipts', ARGV[2])
return {tonumber(ARGV[2]), 1}
"#;

struct Scripts {
    create_user: Script,
    create_session: Script,
    admit_session: Script,
    end_session: Script,
    forget_sessions: Script,
    unindex_sessions: Script,
    index_sessions: Script,
    find_session: Script,
    touch_session: Script,
    claim_secret: Script,
    rotate_secret: Script,
    mark_rotation_due: Script,
    bind_key: Script,
    protect_check: Script,
    add_passkey: Script,
    protect_finish: Script,
    release_credential: Script,
    fill_name_keys: Script,
    owner_of_name: Script,
    passkey_used: Script,
    owns_name: Script,
    list_passkeys: Script,
    remove_passkey: Script,
    release_passkey: Script,
    claim_due_sessions: Script,
    expire_session: Script,
    claim_quiet_users: Script,
    unclaim_user: Script,
    drop_user: Script,
    drop_entry: Script,
    list_users: Script,
    migrate_directory: Script,
    move_to_hash_tags: Script,
    send_out: Script,
    send_in: Script,
    send_at_once: Script,
    send_undo: Script,
    send_move: Script,
    confirm_copy: Script,
    move_messages: Script,
    mark_read: Script,
    conversation_entry: Script,
    change_settings: Script,
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
            create_user: lua(&[CREATE_USER]),
            create_session: lua(&[CREATE_SESSION]),
            admit_session: lua(&[ADMIT_SESSION]),
            end_session: lua(&[END_SESSION]),
            forget_sessions: lua(&[FORGET_SESSIONS]),
            unindex_sessions: lua(&[UNINDEX_SESSIONS]),
            index_sessions: lua(&[INDEX_SESSIONS]),
            find_session: lua(&[INT, FIND_SESSION]),
            touch_session: lua(&[INT, TOUCH_SESSION]),
            claim_secret: lua(&[CLAIM_SECRET]),
            rotate_secret: lua(&[ROTATE_SECRET]),
            mark_rotation_due: lua(&[MARK_ROTATION_DUE]),
            bind_key: lua(&[BIND_KEY]),
            protect_check: lua(&[PROTECT_CHECK]),
            add_passkey: lua(&[ADD_PASSKEY]),
            protect_finish: lua(&[PROTECT_FINISH]),
            release_credential: lua(&[RELEASE_CREDENTIAL]),
            fill_name_keys: lua(&[FILL_NAME_KEYS]),
            owner_of_name: lua_read(&[OWNER_OF_NAME]),
            passkey_used: lua(&[PASSKEY_USED]),
            owns_name: lua_read(&[OWNS_NAME]),
            list_passkeys: lua_read(&[LIST_PASSKEYS]),
            remove_passkey: lua(&[REMOVE_PASSKEY]),
            release_passkey: lua(&[RELEASE_PASSKEY]),
            claim_due_sessions: lua(&[CLAIM_DUE_SESSIONS]),
            expire_session: lua(&[EXPIRE_SESSION]),
            claim_quiet_users: lua(&[INT, CLAIM_QUIET_USERS]),
            unclaim_user: lua(&[UNCLAIM_USER]),
            drop_user: lua(&[DROP_USER]),
            drop_entry: lua(&[DROP_ENTRY]),
            list_users: lua_read(&[LIST_USERS]),
            migrate_directory: lua(&[INT, MIGRATE_DIRECTORY]),
            move_to_hash_tags: lua(&[OWN_IDS, MOVE_TO_HASH_TAGS]),
            send_out: lua(&[SEND_STEPS, SEND_OUT]),
            send_in: lua(&[SEND_STEPS, SEND_IN]),
            send_at_once: lua(&[SEND_STEPS, SEND_AT_ONCE]),
            send_undo: lua(&[SEND_UNDO]),
            send_move: lua(&[SEND_STEPS, SEND_MOVE]),
            confirm_copy: lua(&[CONFIRM_COPY]),
            move_messages: lua(&[OWN_IDS, MOVE_MESSAGES]),
            mark_read: lua(&[INT, READ_STATE, MARK_READ]),
            conversation_entry: lua_read(&[INT, READ_STATE, CONVERSATION_ENTRY]),
            change_settings: lua(&[CHANGE_SETTINGS]),
        }
    }
}

/// Whether `WAIT` answered that enough replicas hold a message; else it is not acked
/// (`store_unavailable`, which the client retries with its clientId).
fn enough_replicas(reached: u32, acks: ReplicaAcks) -> Result<(), StoreError> {
    if reached >= acks.replicas {
        return Ok(());
    }
    metrics::counter!("tether_redis_replica_acks_missed_total").increment(1);
    tracing::warn!(
        reached,
        wanted = acks.replicas,
        "a message reached too few Redis replicas in time; not acked"
    );
    Err(StoreError::Unavailable(
        format!("{reached} of {} replicas hold the message", acks.replicas).into(),
    ))
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
/// its replica is promoted. `WAIT` runs in the same pipeline as a write (a dropped connection
/// fails both, so a reconnect never answers for a write it did not carry), on a connection of
/// its own: `WAIT` holds back the commands behind it until the replicas answer, and everything
/// else this node asks of Redis should not wait for that. On a standalone Redis the write is
/// the message's one script; on a cluster, each step that must survive a failover of its shard
/// (the id, then each party's copy: `RedisStore::confirm_copy`).
#[derive(Debug, Clone, Copy)]
pub struct ReplicaAcks {
    pub replicas: u32,
    /// How long to wait for them (at least 1 ms: `WAIT` with 0 waits forever). Past it the
    /// write is refused `store_unavailable` and not acked; the client sends it again with its
    /// clientId and is acked once the replicas caught up (or the failover is over).
    pub timeout: Duration,
}

impl ReplicaAcks {
    /// `WAIT replicas timeout`, for the pipeline of the write it waits for.
    fn wait(&self) -> redis::Cmd {
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.replicas)
            .arg(self.timeout.as_millis().max(1) as u64);
        wait
    }

    /// Runs `invocation` of `script` and then this `WAIT`, in one pipeline on `conn` (the acked
    /// connection: a dropped connection fails both). The script goes by its digest
    /// (`EVALSHA`); only when the node does not hold it (`NOSCRIPT`: a restart, or a replica
    /// promoted by a failover, since loaded scripts are not replicated) does the pipeline go
    /// again with the script's body loaded ahead of it. A `NOSCRIPT` ran nothing, so the
    /// script still runs once; the first pipeline's `WAIT` still runs, so right after a
    /// promotion (replicas missing or behind) a message may wait two timeouts before it is
    /// refused. Before, every acked message carried the body (2.4 KB for SEND_AT_ONCE) for
    /// Redis to hash again.
    async fn invoke_then_wait<T: redis::FromRedisValue>(
        &self,
        conn: &mut RedisConn,
        script: &Script,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<(T, u32), redis::RedisError> {
        let first = redis::pipe()
            .invoke_script(invocation)
            .add_command(self.wait())
            .query_async(conn)
            .await;
        match first {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                redis::pipe()
                    .load_script(script)
                    .ignore()
                    .invoke_script(invocation)
                    .add_command(self.wait())
                    .query_async(conn)
                    .await
            }
            other => other,
        }
    }
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
    conn: RedisConn,
    /// With [`ReplicaAcks`]: the connection every `WAIT` goes out on, pipelined with the write it
    /// waits for (on a standalone Redis, the message's one script; on a cluster, each id taken
    /// and each copy's confirmation), so the store's other commands never queue behind one.
    acked: Option<(RedisConn, ReplicaAcks)>,
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

/// Whether `conn`'s Redis is a Redis Cluster node: `CLUSTER INFO` answers on one and is
/// refused with "cluster support disabled" by a standalone one. Refused otherwise (an ACL user
/// that may not run it, a service that renamed it), `INFO cluster`'s `cluster_enabled` says.
async fn is_cluster_node<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
) -> redis::RedisResult<bool> {
    match ::redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async::<String>(conn)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ::redis::ErrorKind::Io => Err(e),
        Err(e) if e.to_string().contains("cluster support disabled") => Ok(false),
        Err(e) => {
            tracing::debug!(error = %e, "CLUSTER INFO refused; asking INFO cluster");
            let info: String = ::redis::cmd("INFO")
                .arg("cluster")
                .query_async(conn)
                .await?;
            Ok(info.lines().any(|line| line.trim() == "cluster_enabled:1"))
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
        let mut conn = ConnectionManager::new(client.clone()).await?;
        if is_cluster_node(&mut conn).await? {
            return Self::connect_cluster_to(target, prefix, policy, options).await;
        }
        let acked = match options.replica_acks {
            Some(acks) => Some((
                RedisConn::Single(ConnectionManager::new(client).await?),
                acks,
            )),
            None => None,
        };
        let keys = Keys {
            prefix: prefix.to_owned(),
        };
        let scripts = Scripts::new();
        Self::convert_older_layouts(&mut conn, &keys, &scripts, policy).await?;
        Self::open(
            RedisConn::Single(conn),
            acked,
            keys,
            scripts,
            policy,
            options,
        )
        .await
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each; the
    /// client learns the others). Every script touches one slot (hash-tagged keys), and a
    /// message is stored in one-slot steps (see [`Self::insert_message`]).
    pub async fn connect_cluster(
        urls: &[String],
        prefix: &str,
        policy: SessionPolicy,
        options: NodeOptions,
    ) -> Result<Self, StoreError> {
        let client = redis::cluster::ClusterClient::new(urls.to_vec())?;
        let conn = RedisConn::Cluster(client.get_async_connection().await?);
        let acked = match options.replica_acks {
            Some(acks) => Some((
                RedisConn::Cluster(client.get_async_connection().await?),
                acks,
            )),
            None => None,
        };
        Self::open_cluster(conn, acked, prefix, policy, options).await
    }

    /// [`Self::connect_cluster`] through a target's node, with its credentials and TLS: what
    /// [`Self::connect_to`] does when the target is a cluster node.
    async fn connect_cluster_to(
        target: &RedisTarget,
        prefix: &str,
        policy: SessionPolicy,
        options: NodeOptions,
    ) -> Result<Self, StoreError> {
        let connect = || async {
            target
                .connect(true)
                .await
                .map_err(|e| StoreError::Unavailable(Box::new(e)))
        };
        let conn = connect().await?;
        let acked = match options.replica_acks {
            Some(acks) => Some((connect().await?, acks)),
            None => None,
        };
        Self::open_cluster(conn, acked, prefix, policy, options).await
    }

    async fn open_cluster(
        conn: RedisConn,
        acked: Option<(RedisConn, ReplicaAcks)>,
        prefix: &str,
        policy: SessionPolicy,
        options: NodeOptions,
    ) -> Result<Self, StoreError> {
        let keys = Keys {
            prefix: prefix.to_owned(),
        };
        // A cluster never held an older layout: Tether refused clusters until layout 3.
        Self::open(conn, acked, keys, Scripts::new(), policy, options).await
    }

    async fn open(
        conn: RedisConn,
        acked: Option<(RedisConn, ReplicaAcks)>,
        keys: Keys,
        scripts: Scripts,
        policy: SessionPolicy,
        options: NodeOptions,
    ) -> Result<Self, StoreError> {
        let presence =
            RedisPresence::join(conn.clone(), &keys.prefix, options.heartbeat_ttl).await?;
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

    /// Brings what older releases wrote to a standalone Redis to this layout, once each: the
    /// keys moved into hash-tagged slots, the directory from before expiry, the name keys.
    async fn convert_older_layouts(
        conn: &mut ConnectionManager,
        keys: &Keys,
        scripts: &Scripts,
        policy: SessionPolicy,
    ) -> Result<(), StoreError> {
        let moved: i64 = scripts
            .move_to_hash_tags
            .key(keys.layout())
            .arg(keys.all())
            .arg(keys.dir_prefix())
            .arg(format!("{}*", glob_escaped(&keys.all())))
            .invoke_async(conn)
            .await?;
        if moved > 0 {
            tracing::info!(
                keys = moved,
                "moved the store's keys into hash-tagged slots"
            );
        }
        let moved: i64 = scripts
            .move_messages
            .key(keys.layout())
            .key(keys.key("messages"))
            .key(keys.key("msg:seq"))
            .key(keys.message_seq())
            .arg(keys.all())
            .arg(keys.dir_prefix())
            .arg(format!("{}*", glob_escaped(&keys.all())))
            .invoke_async(conn)
            .await?;
        if moved > 0 {
            tracing::info!(messages = moved, "moved the messages into each user's slot");
        }
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
            .invoke_async(conn)
            .await?;
        if converted > 0 {
            tracing::info!(users = converted, "converted the user directory for expiry");
        }
        Self::fill_name_keys(conn, keys, scripts).await
    }

    /// This node's id in the presence keys (random per process start).
    pub fn node_id(&self) -> &str {
        self.presence.node_id()
    }

    fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Ends one session (by family); returns whether it existed.
    async fn delete_family(&self, family: &str) -> Result<bool, StoreError> {
        self.end_session(family, None, false)
            .await
            .map(|ended| ended.is_some())
    }

    /// Ends session `family` if it is `user`'s (anyone's: `None`), and only if unbound when
    /// asked; then takes it off the user's list and the deadlines. Returns its user if it
    /// ended it.
    async fn end_session(
        &self,
        family: &str,
        user: Option<&str>,
        unbound_only: bool,
    ) -> Result<Option<String>, StoreError> {
        let owner: Option<String> = self
            .scripts
            .end_session
            .key(self.keys.session(family))
            .arg(user.unwrap_or(""))
            .arg(if unbound_only { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await?;
        if let Some(owner) = &owner {
            self.forget_sessions(owner, &[family.to_owned()]).await?;
        }
        Ok(owner)
    }

    /// Takes ended sessions off the user's list (its slot) and the deadlines (the
    /// directory's); a user left without one may be taken by the account sweep.
    async fn forget_sessions(&self, user: &str, families: &[String]) -> Result<(), StoreError> {
        let left: i64 = self
            .scripts
            .forget_sessions
            .key(self.keys.user_sessions(user))
            .arg(families)
            .invoke_async(&mut self.conn())
            .await?;
        self.unindex_sessions(user, left == 0, families).await
    }

    async fn unindex_sessions(
        &self,
        user: &str,
        none_left: bool,
        families: &[String],
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .unindex_sessions
            .key(self.keys.session_deadlines())
            .key(self.keys.quiet_users())
            .arg(user)
            .arg(if none_left { "1" } else { "0" })
            .arg(families)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Indexes used sessions of a user by their deadlines, and the user's last handshake.
    async fn index_sessions(
        &self,
        user: &str,
        now: i64,
        sessions: &[(String, i64)],
    ) -> Result<(), StoreError> {
        let mut index = self.scripts.index_sessions.prepare_invoke();
        index
            .key(self.keys.session_deadlines())
            .key(self.keys.quiet_users())
            .arg(user)
            .arg(now);
        for (family, deadline) in sessions {
            index.arg(family).arg(*deadline);
        }
        let _: i64 = index.invoke_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Makes a session in its own slot: false when the digest is taken (draw again).
    #[allow(clippy::too_many_arguments)]
    async fn make_session(
        &self,
        user: &str,
        name: &str,
        digest: &str,
        now: i64,
        deadline: i64,
        device: &str,
        hex_key: &str,
    ) -> Result<bool, StoreError> {
        let made: i64 = self
            .scripts
            .create_session
            .key(self.keys.session(digest))
            .key(self.keys.secret(digest))
            .arg(user)
            .arg(name)
            .arg(now)
            .arg(self.policy.idle.as_millis() as u64)
            .arg(device)
            .arg(hex_key)
            .arg(deadline)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(made == 1)
    }

    /// Admits a new session into the user's list unless the user holds `max` live ones
    /// already (then false). At the limit, the sessions listed that no longer exist (their
    /// idle TTL ran out) are dropped from the list and it asks once more.
    async fn admit_session(
        &self,
        user: &str,
        digest: &str,
        now: i64,
        max: u32,
    ) -> Result<bool, StoreError> {
        for first in [true, false] {
            let answer: Vec<String> = self
                .scripts
                .admit_session
                .key(self.keys.user_sessions(user))
                .arg(digest)
                .arg(now)
                .arg(max)
                .arg(self.policy.max_age.as_millis() as u64)
                .invoke_async(&mut self.conn())
                .await?;
            let Some((verdict, listed)) = answer.split_first() else {
                return Err(StoreError::Unreadable(
                    "admit_session answered nothing".into(),
                ));
            };
            if verdict == "ok" {
                return Ok(true);
            }
            if !first {
                break;
            }
            let exists = futures_util::future::try_join_all(listed.iter().map(|family| async {
                let exists: bool = self.conn().exists(self.keys.session(family)).await?;
                Ok::<_, StoreError>(exists)
            }))
            .await?;
            let gone: Vec<&String> = listed
                .iter()
                .zip(exists)
                .filter(|(_, exists)| !exists)
                .map(|(family, _)| family)
                .collect();
            if gone.is_empty() {
                break;
            }
            let _: i64 = self
                .conn()
                .hdel(self.keys.user_sessions(user), gone)
                .await?;
        }
        Ok(false)
    }

    /// Stores a message in one script (a standalone Redis): `(fresh, json)`, or `None` for an
    /// unknown recipient. With replica acks, `WAIT` goes in the same pipeline on the acked
    /// connection: a dropped connection fails both, so a reconnect never answers for a write it
    /// did not carry (a new connection's `WAIT` returns at once).
    async fn store_at_once(
        &self,
        conn: &mut RedisConn,
        client_id: &str,
        rest: &str,
        from: &str,
        to: &str,
    ) -> Result<Option<(bool, String)>, StoreError> {
        let mut invocation = self.scripts.send_at_once.prepare_invoke();
        self.sender_keys(&mut invocation, from, to);
        self.recipient_keys(&mut invocation, to, from);
        invocation
            .key(self.keys.message_seq())
            .key(self.keys.quiet_users())
            .arg(client_id)
            .arg(rest)
            .arg(now_ms())
            .arg(to)
            .arg(from);
        type Stored = Option<(i64, i64, String, i64)>;
        let stored: Stored = match &self.acked {
            None => invocation.invoke_async(conn).await?,
            Some((_, acks)) => {
                // A duplicate waits too: the replicas must hold the original before it is
                // acked again (`WAIT` covers every write the primary made before it).
                let (stored, reached): (Stored, u32) = acks
                    .invoke_then_wait(conn, &self.scripts.send_at_once, &invocation)
                    .await?;
                enough_replicas(reached, *acks)?;
                stored
            }
        };
        Ok(stored.map(|(fresh, _, json, _)| (fresh == 1, json)))
    }

    /// A new message id. With replica acks on a cluster the `INCR` is pipelined with a `WAIT`
    /// on the acked connection and refused when too few replicas hold it: a failover never
    /// sets the counter back below an id in use (which a copy's `top` would not catch when the
    /// counter and the copy roll back together, one shard).
    async fn take_id(&self, conn: &mut RedisConn) -> Result<i64, StoreError> {
        let seq = self.keys.message_seq();
        match &self.acked {
            Some((acked @ RedisConn::Cluster(_), acks)) => {
                let (id, reached): (i64, u32) = redis::pipe()
                    .incr(seq, 1)
                    .add_command(acks.wait())
                    .query_async(&mut acked.clone())
                    .await?;
                enough_replicas(reached, *acks)?;
                Ok(id)
            }
            _ => Ok(conn.incr(seq, 1).await?),
        }
    }

    /// With replica acks on a cluster: waits until enough replicas of `user`'s shard hold their
    /// copy of the message `json` (its id `id`). One pipeline to the slot's primary on the
    /// acked connection (a dropped connection fails both): CONFIRM_COPY finds the copy and
    /// rewrites it, so the `WAIT` after it counts from a write past the copy, whichever
    /// connection wrote it. A copy that is gone or another message (lost in a failover) refuses
    /// the ack like too few replicas. The steps call it in order: the sender's copy before the
    /// recipient's is written, the recipient's before the pending mark comes off, so a send
    /// refused here is finished by the client's resend (its clientId finds it pending).
    async fn confirm_copy(&self, user: &str, id: i64, json: &str) -> Result<(), StoreError> {
        let Some((acked @ RedisConn::Cluster(_), acks)) = &self.acked else {
            return Ok(());
        };
        let mut invocation = self.scripts.confirm_copy.prepare_invoke();
        invocation
            .key(self.keys.user_messages(user))
            .arg(id)
            .arg(json);
        let (held, reached): (i64, u32) = acks
            .invoke_then_wait(&mut acked.clone(), &self.scripts.confirm_copy, &invocation)
            .await?;
        if held == 0 {
            metrics::counter!("tether_redis_replica_acks_missed_total").increment(1);
            tracing::warn!("a message's copy is not on its shard's primary; not acked");
            return Err(StoreError::Unavailable(
                "a copy of the message is not on its shard (a failover)".into(),
            ));
        }
        enough_replicas(reached, *acks)
    }

    /// Adds the keys of the sender's copy of a message from `from` to `to`, in the order
    /// `send_out`, SEND_MOVE, SEND_UNDO and SEND_AT_ONCE read them: dedupe, msg, inbox,
    /// conv:<to>, peers, pending, top.
    fn sender_keys(&self, call: &mut ScriptInvocation<'_>, from: &str, to: &str) {
        call.key(self.keys.dedupe(from))
            .key(self.keys.user_messages(from))
            .key(self.keys.inbox(from))
            .key(self.keys.conversation(from, to))
            .key(self.keys.peers(from))
            .key(self.keys.pending(from))
            .key(self.keys.top(from));
    }

    /// Adds the keys of the recipient's copy of a message from `from` to `to`, in the order
    /// `send_in` and SEND_AT_ONCE (after the sender's) read them: marker, msg, inbox,
    /// conv:<from>, peers, top.
    fn recipient_keys(&self, call: &mut ScriptInvocation<'_>, to: &str, from: &str) {
        call.key(self.keys.user_marker(to))
            .key(self.keys.user_messages(to))
            .key(self.keys.inbox(to))
            .key(self.keys.conversation(to, from))
            .key(self.keys.peers(to))
            .key(self.keys.top(to));
    }

    /// Stores a message in steps, each in one slot and safe to run twice (a Redis Cluster):
    /// the client id check, the recipient's marker, the id, the sender's copy marked pending,
    /// the recipient's copy (a recipient gone meanwhile takes the sender's back), the mark off.
    /// A duplicate still pending finishes its original's recipient copy first. A copy that
    /// holds a higher id already (two senders to one user at once, each taking an id before
    /// writing) refuses this one: the message takes a new id (the sender's copy moves to it in
    /// one step) and tries again, so ids reach every copy in order (design note, §5c).
    async fn store_in_steps(
        &self,
        conn: &mut RedisConn,
        client_id: &str,
        rest: &str,
        from: &str,
        to: &str,
    ) -> Result<Option<(bool, String)>, StoreError> {
        self.finish_pending(conn, from).await?;
        self.place(conn, client_id, rest, from, to).await
    }

    /// [`Self::store_in_steps`] after the repair of stopped sends: a new message or a
    /// duplicate.
    async fn place(
        &self,
        conn: &mut RedisConn,
        client_id: &str,
        rest: &str,
        from: &str,
        to: &str,
    ) -> Result<Option<(bool, String)>, StoreError> {
        // Whether this call wrote the sender's copy: it answers as the new message even when
        // a resend finished it (that one answers as a duplicate).
        let mut wrote = false;
        for attempt in 0..PLACE_ATTEMPTS {
            place_backoff(attempt).await;
            let stored: Option<i64> = if client_id.is_empty() {
                None
            } else {
                conn.hget(self.keys.dedupe(from), client_id).await?
            };
            let id = match stored {
                Some(id) => id,
                None => {
                    let exists: bool = conn.exists(self.keys.user_marker(to)).await?;
                    if !exists {
                        return Ok(None);
                    }
                    self.take_id(conn).await?
                }
            };
            let mut send_out = self.scripts.send_out.prepare_invoke();
            self.sender_keys(&mut send_out, from, to);
            let (fresh, placed, json, pending): (i64, i64, String, i64) = send_out
                .arg(id)
                .arg(client_id)
                .arg(rest)
                .arg(now_ms())
                .arg(if from == to { "0" } else { "1" })
                .arg(to)
                .arg(if stored.is_none() { "1" } else { "0" })
                .invoke_async(conn)
                .await?;
            if fresh == SEND_BELOW_TOP {
                // Nothing written: the sender's copy holds a higher id (a message that reached
                // it after this id was taken).
                continue;
            }
            wrote |= fresh == 1;
            // The sender's copy on enough replicas before the recipient's is written: a
            // failover of the sender's shard then never loses the copy (with the client id
            // that finds it) while the recipient's exists, which a resend would store twice.
            self.confirm_copy(from, placed, &json).await?;
            if pending == 1 {
                return match self.deliver(conn, json).await? {
                    Delivered::Written(json) => Ok(Some((wrote, json))),
                    Delivered::RecipientGone => Ok(None),
                    // Another send (a resend, or the repair) moved it: its client id finds it
                    // under the new id.
                    Delivered::Elsewhere if !client_id.is_empty() => continue,
                    Delivered::Elsewhere => Err(StoreError::Unavailable(
                        "the message is being stored by another send".into(),
                    )),
                };
            }
            if fresh == 1 {
                // A note to self (no recipient's copy): the user has a message now.
                let _: i64 = conn.zrem(self.keys.quiet_users(), &[from, to]).await?;
            } else if from != to {
                // A duplicate delivered before: its recipient's copy was confirmed then, unless
                // replica acks were turned on since.
                self.confirm_copy(to, placed, &json).await?;
            }
            return Ok(Some((wrote, json)));
        }
        Err(out_of_order_attempts())
    }

    /// Finishes a pending message (the sender's copy's JSON): writes the recipient's copy, or
    /// takes the sender's back if the recipient is gone; when the recipient's copy holds a
    /// higher id already, moves the sender's copy to a new id first (one step in the sender's
    /// slot, so the message is always in it) and tries again.
    async fn deliver(
        &self,
        conn: &mut RedisConn,
        mut json: String,
    ) -> Result<Delivered, StoreError> {
        let mut moves = 0;
        loop {
            match self.finish_send(conn, &json).await? {
                Delivery::Written => return Ok(Delivered::Written(json)),
                Delivery::RecipientGone => return Ok(Delivered::RecipientGone),
                Delivery::Later => {}
            }
            let mut message = parse_message(&json)?;
            let old = message.id;
            loop {
                if moves >= PLACE_ATTEMPTS {
                    return Err(out_of_order_attempts());
                }
                place_backoff(moves).await;
                moves += 1;
                message.id = self.take_id(conn).await?;
                message.ts = now_ms();
                let moved_json =
                    serde_json::to_string(&message).expect("a message always serializes");
                let (sender, recipient) = (message.from.as_str(), message.to.as_str());
                let mut send_move = self.scripts.send_move.prepare_invoke();
                self.sender_keys(&mut send_move, sender, recipient);
                let moved: i64 = send_move
                    .arg(old)
                    .arg(message.id)
                    .arg(&moved_json)
                    .arg(message.client_id.as_deref().unwrap_or(""))
                    .arg(message.ts)
                    .invoke_async(conn)
                    .await?;
                match moved {
                    1 => {
                        // As for the first id: on enough replicas before the recipient's copy.
                        self.confirm_copy(sender, message.id, &moved_json).await?;
                        json = moved_json;
                        break;
                    }
                    0 => return Ok(Delivered::Elsewhere),
                    _ => continue,
                }
            }
        }
    }

    /// Writes the recipient's copy of a pending message (its sender's copy's JSON) and takes
    /// the mark off, or takes the sender's copy back if the recipient is gone; writes nothing
    /// if their copy holds a higher id already. Both parties leave `quiet-users` once it is
    /// written.
    async fn finish_send(&self, conn: &mut RedisConn, json: &str) -> Result<Delivery, StoreError> {
        let message = parse_message(json)?;
        let (sender, recipient) = (message.from.as_str(), message.to.as_str());
        let mut send_in = self.scripts.send_in.prepare_invoke();
        self.recipient_keys(&mut send_in, recipient, sender);
        let delivered: i64 = send_in
            .arg(message.id)
            .arg(json)
            .arg(sender)
            .invoke_async(conn)
            .await?;
        if delivered == SEND_BELOW_TOP {
            return Ok(Delivery::Later);
        }
        if delivered == 0 {
            let mut send_undo = self.scripts.send_undo.prepare_invoke();
            self.sender_keys(&mut send_undo, sender, recipient);
            let _: i64 = send_undo
                .arg(message.id)
                .arg(message.client_id.as_deref().unwrap_or(""))
                .arg(recipient)
                .invoke_async(conn)
                .await?;
            return Ok(Delivery::RecipientGone);
        }
        // The mark comes off once the recipient's copy is on enough replicas: until then a
        // resend (or the repair) writes it again if a failover lost it.
        self.confirm_copy(recipient, message.id, json).await?;
        let _: i64 = conn.zrem(self.keys.pending(sender), message.id).await?;
        let _: i64 = conn
            .zrem(self.keys.quiet_users(), &[sender, recipient])
            .await?;
        Ok(Delivery::Written)
    }

    /// Finishes the sender's messages left pending (a send that stopped between its steps)
    /// for longer than [`PENDING_REPAIR_AFTER`], a few at a time: the recipient's copy is
    /// written (under a new id if theirs holds a higher one now), or the sender's taken back if
    /// the recipient is gone. The sender's next send runs it, so a message stopped midway
    /// reaches its recipient's copy then (and their next restore), never acked before.
    async fn finish_pending(&self, conn: &mut RedisConn, sender: &str) -> Result<(), StoreError> {
        let cutoff = now_ms() - PENDING_REPAIR_AFTER.as_millis() as i64;
        let stale: Vec<i64> = conn
            .zrangebyscore_limit(self.keys.pending(sender), "-inf", cutoff, 0, 10)
            .await?;
        for id in stale {
            let json: Option<String> = conn.hget(self.keys.user_messages(sender), id).await?;
            let Some(json) = json else {
                let _: i64 = conn.zrem(self.keys.pending(sender), id).await?;
                continue;
            };
            match self.deliver(conn, json).await {
                Ok(_) => {}
                Err(error @ StoreError::Unreadable(_)) => {
                    // Never finishable: its mark goes, so it does not hold up the others.
                    tracing::warn!(%error, id, "dropped a stopped send that cannot be read");
                    let _: i64 = conn.zrem(self.keys.pending(sender), id).await?;
                }
                Err(error) => {
                    // The send that runs the repair goes on; the message stays pending for
                    // the next one.
                    tracing::warn!(%error, id, "a stopped send could not be finished yet");
                    break;
                }
            }
        }
        Ok(())
    }

    /// Frees a credential the user reserved for a passkey that was not added.
    async fn release_credential(&self, user: &str, cred_id: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .release_credential
            .key(self.keys.creds())
            .arg(user)
            .arg(cred_id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
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
            .arg(keys.dir_prefix())
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

    /// The viewer's copies of these messages, in this order (a missing one is left out).
    async fn read_messages(&self, viewer: &str, ids: &[i64]) -> Result<Vec<Message>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.user_messages(viewer))
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

/// A send that found no id above both copies' `top` in [`PLACE_ATTEMPTS`] tries.
fn out_of_order_attempts() -> StoreError {
    metrics::counter!("tether_redis_message_reorders_exhausted_total").increment(1);
    StoreError::Unavailable(
        format!("no id in arrival order for the message after {PLACE_ATTEMPTS} tries").into(),
    )
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
        // Ids are 122 random bits; the scripts still check both are new and we draw again.
        for _ in 0..8 {
            let user_id = UserId::random();
            let session_id = SessionId::random();
            let digest = session_id.digest();
            let now = now_ms();
            let deadline = now + self.policy.idle.min(self.policy.max_age).as_millis() as i64;
            // The directory first, so that a protected name writes nothing; a crash after it
            // leaves a user without a session and without a message, whom the account sweep
            // takes.
            let listed: i64 = self
                .scripts
                .create_user
                .key(self.keys.protected())
                .key(self.keys.usernames())
                .key(self.keys.users_seq())
                .key(self.keys.directory())
                .key(self.keys.names(&key))
                .key(self.keys.name_keys())
                .key(self.keys.quiet_users())
                .key(self.keys.session_deadlines())
                .arg(user_id.as_str())
                .arg(&name)
                .arg(now)
                .arg(&key)
                .arg(&digest)
                .arg(deadline)
                .invoke_async(&mut self.conn())
                .await?;
            match listed {
                -1 => return Ok(Created::NameProtected),
                1 => {}
                _ => continue,
            }
            let _: i64 = self
                .conn()
                .hset(self.keys.user_marker(user_id.as_str()), "name", &name)
                .await?;
            if !self
                .make_session(
                    user_id.as_str(),
                    &name,
                    &digest,
                    now,
                    deadline,
                    &device,
                    &hex_key,
                )
                .await?
            {
                continue;
            }
            let _: i64 = self
                .conn()
                .hset(self.keys.user_sessions(user_id.as_str()), &digest, now)
                .await?;
            let session = Session {
                pop_key: pop_key.cloned(),
                ..Session::made(&session_id, user_id, name, now)
            };
            return Ok(Created::Session(session_id, session));
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
        let name: Option<String> = self
            .conn()
            .hget(self.keys.usernames(), user.as_str())
            .await?;
        let Some(name) = name else {
            return Ok(NewDevice::UnknownUser);
        };
        // A session id is 122 random bits; the script still checks it is new and we draw again.
        for _ in 0..8 {
            let session_id = SessionId::random();
            let digest = session_id.digest();
            let now = now_ms();
            let deadline = now + self.policy.idle.min(self.policy.max_age).as_millis() as i64;
            // The session first, then its place on the user's list: a listed session always
            // exists (so a caller at the limit that drops the listed ones that do not exist
            // never drops one being made). Refused, it goes again: its id was never handed out.
            if !self
                .make_session(
                    user.as_str(),
                    &name,
                    &digest,
                    now,
                    deadline,
                    &device,
                    &hex_key,
                )
                .await?
            {
                continue;
            }
            if !self
                .admit_session(user.as_str(), &digest, now, max_sessions)
                .await?
            {
                let _: i64 = self.conn().del(self.keys.session(&digest)).await?;
                return Ok(NewDevice::TooManySessions);
            }
            self.index_sessions(user.as_str(), now, &[(digest, deadline)])
                .await?;
            let session = Session {
                pop_key: pop_key.cloned(),
                ..Session::made(&session_id, user.clone(), name, now)
            };
            return Ok(NewDevice::Created(session_id, session));
        }
        Err(StoreError::Unavailable(
            "could not draw an unused id".into(),
        ))
    }

    async fn devices(&self, user: &UserId) -> Result<Vec<Device>, StoreError> {
        let families: Vec<String> = self
            .conn()
            .hkeys(self.keys.user_sessions(user.as_str()))
            .await?;
        let now = now_ms();
        let max_age = self.policy.max_age.as_millis() as i64;
        let read = futures_util::future::try_join_all(families.into_iter().map(|family| async {
            type Fields = (
                Option<String>,
                Option<i64>,
                Option<i64>,
                Option<String>,
                Option<String>,
            );
            let (owner, created, seen, label, key): Fields = redis::cmd("HMGET")
                .arg(self.keys.session(&family))
                .arg(&["user", "created", "seen", "device", "key"])
                .query_async(&mut self.conn())
                .await?;
            Ok::<_, StoreError>(match (owner, created) {
                (Some(owner), Some(created))
                    if owner == user.as_str() && now - created <= max_age =>
                {
                    Some(Device {
                        family,
                        created,
                        last_seen: seen.unwrap_or(created),
                        label: label.unwrap_or_default(),
                        bound: key.is_some_and(|k| !k.is_empty()),
                    })
                }
                _ => None,
            })
        }))
        .await?;
        let mut devices: Vec<Device> = read.into_iter().flatten().collect();
        devices.sort_by(|a, b| (a.created, &a.family).cmp(&(b.created, &b.family)));
        Ok(devices)
    }

    async fn end_family(&self, user: &UserId, family: &str) -> Result<bool, StoreError> {
        self.end_session(family, Some(user.as_str()), false)
            .await
            .map(|ended| ended.is_some())
    }

    async fn end_unbound(&self, user: &UserId) -> Result<Vec<String>, StoreError> {
        let families: Vec<String> = self
            .conn()
            .hkeys(self.keys.user_sessions(user.as_str()))
            .await?;
        let mut ended = Vec::new();
        for family in families {
            let owner: Option<String> = self
                .scripts
                .end_session
                .key(self.keys.session(&family))
                .arg(user.as_str())
                .arg("1")
                .invoke_async(&mut self.conn())
                .await?;
            if owner.is_some() {
                ended.push(family);
            }
        }
        if !ended.is_empty() {
            self.forget_sessions(user.as_str(), &ended).await?;
        }
        Ok(ended)
    }

    async fn find_session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let digest = id.digest();
        // Read and refresh in one round trip (idle TTL, deadline), then index the deadline and
        // the account's last handshake in the directory's slot; one more for a secret after
        // the session's first (its pointer names the family).
        let mut family = digest.clone();
        let mut follow = true;
        let now = now_ms();
        let found = loop {
            let mut find = self.scripts.find_session.prepare_invoke();
            find.key(self.keys.session(&family));
            if follow {
                find.key(self.keys.secret(&digest));
            }
            let found: Option<Vec<String>> = find
                .arg(now)
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
        let [user, name, live, key, state, at, current, deadline] = <[String; 8]>::try_from(found)
            .map_err(|_| StoreError::Unreadable("find_session answered another shape".into()))?;
        if live == "0" {
            self.delete_family(&family).await?;
            return Ok(None);
        }
        let number = |text: &str| {
            text.parse::<i64>()
                .map_err(|e| StoreError::Unreadable(Box::new(e)))
        };
        self.index_sessions(&user, now, &[(family.clone(), number(&deadline)?)])
            .await?;
        let at = number(&at)?;
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
        let created: Option<i64> = self
            .conn()
            .hget(self.keys.session(family), "created")
            .await?;
        let Some(created) = created else {
            return Ok(Rotate::Gone);
        };
        let until = created + self.policy.max_age.as_millis() as i64;
        // A secret is 122 random bits; the script still checks it is new and we draw again.
        for _ in 0..8 {
            let secret = SessionId::random();
            let digest = secret.digest();
            // The new secret's pointer first (its own slot), then the compare-and-set in the
            // session's: a rotation that does not happen takes its pointer back.
            let claimed: String = self
                .scripts
                .claim_secret
                .key(self.keys.secret(&digest))
                .key(self.keys.session(&digest))
                .arg(family)
                .arg(until)
                .invoke_async(&mut self.conn())
                .await?;
            if claimed != "ok" {
                continue;
            }
            let answer: String = self
                .scripts
                .rotate_secret
                .key(self.keys.session(family))
                .arg(family)
                .arg(expect_current)
                .arg(&digest)
                .arg(now_ms())
                .arg(cap.since)
                .arg(cap.max)
                .invoke_async(&mut self.conn())
                .await?;
            if answer != "rotated" {
                let _: i64 = self.conn().del(self.keys.secret(&digest)).await?;
            }
            return match answer.as_str() {
                "rotated" => Ok(Rotate::Rotated(secret)),
                "moved" => Ok(Rotate::Moved),
                "gone" => Ok(Rotate::Gone),
                "too_many" => Ok(Rotate::TooMany),
                other => Err(StoreError::Unreadable(
                    format!("rotate_secret answered {other:?}").into(),
                )),
            };
        }
        Err(StoreError::Unavailable(
            "could not draw an unused secret".into(),
        ))
    }

    async fn mark_rotation_due(&self, user: &UserId, except: &str) -> Result<usize, StoreError> {
        let families: Vec<String> = self
            .conn()
            .hkeys(self.keys.user_sessions(user.as_str()))
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
        let families: Vec<String> = self
            .conn()
            .hkeys(self.keys.user_sessions(user.as_str()))
            .await?;
        // The sessions first: a failure midway leaves the user's list naming sessions to end.
        let mut deleted = 0;
        for family in &families {
            let gone: i64 = self.conn().del(self.keys.session(family)).await?;
            deleted += gone.max(0) as usize;
        }
        // Only the families read: a session admitted meanwhile stays listed.
        self.forget_sessions(user.as_str(), &families).await?;
        Ok(deleted)
    }

    async fn expire_sessions(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let due: Vec<String> = self
            .scripts
            .claim_due_sessions
            .key(self.keys.session_deadlines())
            .arg(now)
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await?;
        let mut expired = Vec::new();
        let mut per_user: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for entry in due {
            let Some((digest, user)) = entry.split_once(':') else {
                continue;
            };
            let (gone, deadline): (i64, i64) = self
                .scripts
                .expire_session
                .key(self.keys.session(digest))
                .arg(now)
                .invoke_async(&mut self.conn())
                .await?;
            if gone == 1 {
                expired.push(digest.to_owned());
                per_user
                    .entry(user.to_owned())
                    .or_default()
                    .push(digest.to_owned());
            } else {
                // Used after the claim: indexed again by the deadline it has now.
                let _: i64 = self
                    .conn()
                    .zadd(self.keys.session_deadlines(), &entry, deadline)
                    .await?;
            }
        }
        for (user, families) in per_user {
            self.forget_sessions(&user, &families).await?;
        }
        Ok(expired)
    }

    async fn expire_accounts(&self, idle: Duration, limit: usize) -> Result<Expired, StoreError> {
        let claimed: Vec<String> = self
            .scripts
            .claim_quiet_users
            .key(self.keys.quiet_users())
            .key(self.keys.usernames())
            .key(self.keys.claimed_users())
            .key(self.keys.claimed_names())
            .arg(now_ms() - idle.as_millis() as i64)
            .arg(limit)
            .arg(ACCOUNT_CLAIM_LEASE.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await?;
        let mut expired = Expired {
            sessions: Vec::new(),
            users: 0,
        };
        for pair in claimed.chunks_exact(2) {
            let (user, name) = (&pair[0], &pair[1]);
            let families: Option<Vec<String>> = self
                .scripts
                .drop_user
                .key(self.keys.peers(user))
                .key(self.keys.user_sessions(user))
                .key(self.keys.settings(user))
                .key(self.keys.user_marker(user))
                .key(self.keys.top(user))
                .invoke_async(&mut self.conn())
                .await?;
            let Some(families) = families else {
                // A message reached the user before the claim took the name away: the user
                // stays (and is never quiet again).
                let _: i64 = self
                    .scripts
                    .unclaim_user
                    .key(self.keys.usernames())
                    .key(self.keys.claimed_users())
                    .key(self.keys.claimed_names())
                    .arg(user)
                    .arg(name)
                    .invoke_async(&mut self.conn())
                    .await?;
                continue;
            };
            for family in &families {
                let _: i64 = self.conn().del(self.keys.session(family)).await?;
            }
            let _: i64 = self
                .scripts
                .drop_entry
                .key(self.keys.directory())
                .key(self.keys.name_keys())
                .key(self.keys.session_deadlines())
                .key(self.keys.users_epoch())
                .key(self.keys.claimed_users())
                .key(self.keys.claimed_names())
                .arg(user)
                .arg(self.keys.dir_prefix())
                .arg(&families)
                .invoke_async(&mut self.conn())
                .await?;
            expired.sessions.extend(families);
            expired.users += 1;
        }
        Ok(expired)
    }

    async fn touch_sessions(&self, digests: Vec<String>) -> Result<Touched, StoreError> {
        if digests.is_empty() {
            return Ok(Touched::default());
        }
        let now = now_ms();
        let answers = futures_util::future::try_join_all(digests.iter().map(|digest| async {
            let answer: Vec<String> = self
                .scripts
                .touch_session
                .key(self.keys.session(digest))
                .arg(now)
                .arg(self.policy.idle.as_millis() as u64)
                .arg(self.policy.max_age.as_millis() as u64)
                .invoke_async(&mut self.conn())
                .await?;
            Ok::<_, StoreError>(answer)
        }))
        .await?;
        let mut touched = Touched::default();
        let mut per_user: std::collections::BTreeMap<String, Vec<(String, i64)>> =
            Default::default();
        for (digest, answer) in digests.into_iter().zip(answers) {
            match answer.as_slice() {
                [user, deadline, due] => {
                    if due == "1" {
                        touched.due.push(digest.clone());
                    }
                    let deadline = deadline
                        .parse::<i64>()
                        .map_err(|e| StoreError::Unreadable(Box::new(e)))?;
                    per_user
                        .entry(user.clone())
                        .or_default()
                        .push((digest, deadline));
                }
                _ => touched.gone.push(digest),
            }
        }
        for (user, sessions) in per_user {
            self.index_sessions(&user, now, &sessions).await?;
        }
        Ok(touched)
    }

    async fn protect(
        &self,
        user: &UserId,
        passkey: StoredPasskey,
        added_in: &str,
    ) -> Result<Protect, StoreError> {
        // The directory's checks (and the credential reserved), the passkey in the user's slot,
        // then the name's claim; a refusal past the first step takes back what was written.
        let (checked, state): (String, String) = self
            .scripts
            .protect_check
            .key(self.keys.usernames())
            .key(self.keys.name_keys())
            .key(self.keys.protected())
            .key(self.keys.creds())
            .arg(user.as_str())
            .arg(&passkey.cred_id)
            .arg(self.keys.dir_prefix())
            .invoke_async(&mut self.conn())
            .await?;
        match checked.as_str() {
            "ok" => {}
            "held" => {
                // The user's already: a passkey of theirs is taken; a reservation left by a
                // resent or interrupted call (no passkey behind it) goes on from here.
                let registered: bool = self
                    .conn()
                    .hexists(self.keys.passkeys(user.as_str()), &passkey.cred_id)
                    .await?;
                if registered {
                    return Ok(Protect::CredentialTaken);
                }
            }
            "name_taken" => return Ok(Protect::NameTaken),
            "credential_taken" => return Ok(Protect::CredentialTaken),
            _ => return Ok(Protect::UnknownUser),
        }
        let claim = state == "claim";
        let now = now_ms();
        let info = format!("{now}|{now}|{}", super::stored_label(added_in));
        let added: String = self
            .scripts
            .add_passkey
            .key(self.keys.passkeys(user.as_str()))
            .key(self.keys.passkey_info(user.as_str()))
            .arg(&passkey.cred_id)
            .arg(&passkey.json)
            .arg(&info)
            .arg(PASSKEYS_PER_USER_MAX)
            .invoke_async(&mut self.conn())
            .await?;
        if added == "full" {
            self.release_credential(user.as_str(), &passkey.cred_id)
                .await?;
            return Ok(Protect::Full);
        }
        let finished: String = self
            .scripts
            .protect_finish
            .key(self.keys.name_keys())
            .key(self.keys.protected())
            .key(self.keys.quiet_users())
            .key(self.keys.users_epoch())
            .arg(user.as_str())
            .arg(if claim { "1" } else { "0" })
            .arg(self.keys.dir_prefix())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match finished.as_str() {
            "protected" => Protect::Protected,
            "added" => Protect::Added,
            _ => {
                let _: i64 = self
                    .scripts
                    .remove_passkey
                    .key(self.keys.passkeys(user.as_str()))
                    .key(self.keys.passkey_info(user.as_str()))
                    .arg(&passkey.cred_id)
                    .invoke_async(&mut self.conn())
                    .await?;
                self.release_credential(user.as_str(), &passkey.cred_id)
                    .await?;
                Protect::NameTaken
            }
        })
    }

    async fn passkeys_by_name(
        &self,
        username: &str,
    ) -> Result<Option<(User, Vec<StoredPasskey>)>, StoreError> {
        let owner: Option<(String, String)> = self
            .scripts
            .owner_of_name
            .key(self.keys.protected())
            .key(self.keys.usernames())
            .arg(name_key(username))
            .invoke_async(&mut self.conn())
            .await?;
        let Some((user_id, username)) = owner else {
            return Ok(None);
        };
        let stored: Vec<(String, String)> =
            self.conn().hgetall(self.keys.passkeys(&user_id)).await?;
        let mut passkeys: Vec<StoredPasskey> = stored
            .into_iter()
            .map(|(cred_id, json)| StoredPasskey { cred_id, json })
            .collect();
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
        let protected: i64 = self
            .scripts
            .owns_name
            .key(self.keys.name_keys())
            .key(self.keys.protected())
            .arg(user.as_str())
            .invoke_async(&mut self.conn())
            .await?;
        let listed: Vec<String> = self
            .scripts
            .list_passkeys
            .key(self.keys.passkeys(user.as_str()))
            .key(self.keys.passkey_info(user.as_str()))
            .invoke_async(&mut self.conn())
            .await?;
        let mut passkeys = Vec::new();
        for pair in listed.chunks_exact(2) {
            let (cred_id, info) = (pair[0].clone(), &pair[1]);
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
        let left: i64 = self
            .scripts
            .remove_passkey
            .key(self.keys.passkeys(user.as_str()))
            .key(self.keys.passkey_info(user.as_str()))
            .arg(cred_id)
            .invoke_async(&mut self.conn())
            .await?;
        if left < 0 {
            // Not among the user's passkeys. (A resent call whose first run removed it but
            // did not free its credential leaves that reserved to the user: harmless, as a
            // credential id is its authenticator's, and the user adding it again goes on.)
            return Ok(RemovedPasskey::Unknown);
        }
        let kept: i64 = self
            .scripts
            .release_passkey
            .key(self.keys.creds())
            .key(self.keys.name_keys())
            .key(self.keys.protected())
            .key(self.keys.users_epoch())
            .arg(user.as_str())
            .arg(cred_id)
            .arg(left)
            .invoke_async(&mut self.conn())
            .await?;
        if kept == 2 {
            // It gave the name up as the last passkey went: a passkey added meanwhile (whose
            // protect saw the user still owning the name) claims it back.
            let added: i64 = self.conn().hlen(self.keys.passkeys(user.as_str())).await?;
            if added > 0 {
                let _: String = self
                    .scripts
                    .protect_finish
                    .key(self.keys.name_keys())
                    .key(self.keys.protected())
                    .key(self.keys.quiet_users())
                    .key(self.keys.users_epoch())
                    .arg(user.as_str())
                    .arg("0")
                    .arg(self.keys.dir_prefix())
                    .invoke_async(&mut self.conn())
                    .await?;
                let protected: i64 = self
                    .scripts
                    .owns_name
                    .key(self.keys.name_keys())
                    .key(self.keys.protected())
                    .arg(user.as_str())
                    .invoke_async(&mut self.conn())
                    .await?;
                return Ok(RemovedPasskey::Removed {
                    protected: protected == 1,
                });
            }
        }
        Ok(RemovedPasskey::Removed {
            protected: kept == 1,
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
        let client_id = message
            .client_id
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default();
        let draft = Message {
            id: 0,
            ts: now_ms(),
            content: message.content.as_str().to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            client_id: (!client_id.is_empty()).then(|| client_id.clone()),
        };
        // With replica acks on a standalone Redis the message is written on the acked
        // connection, pipelined with its `WAIT`; on a cluster its steps wait as they go.
        let rest = json_after_id(&draft);
        let stored = match (&self.conn, &self.acked) {
            (RedisConn::Single(_), Some((acked, _))) => {
                self.store_at_once(&mut acked.clone(), &client_id, &rest, from, to)
                    .await?
            }
            (RedisConn::Single(_), None) => {
                self.store_at_once(&mut self.conn(), &client_id, &rest, from, to)
                    .await?
            }
            (RedisConn::Cluster(_), _) => {
                self.store_in_steps(&mut self.conn(), &client_id, &rest, from, to)
                    .await?
            }
        };
        let Some((fresh, json)) = stored else {
            return Ok(None);
        };
        let message = parse_message(&json)?;
        Ok(Some(if fresh {
            Stored::New(message)
        } else {
            Stored::Duplicate(message)
        }))
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
            messages = self.read_messages(viewer.as_str(), &ids).await?;
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
            messages: self.read_messages(viewer.as_str(), &ids).await?,
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
            messages: self.read_messages(viewer.as_str(), &ids).await?,
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
        // The peer, from their slot first: whether they exist, and their receipts setting.
        let (exists, receipts): (bool, Option<String>) = redis::pipe()
            .exists(self.keys.user_marker(p))
            .hget(self.keys.settings(p), "readReceipts")
            .query_async(&mut self.conn())
            .await?;
        if !exists {
            return Ok(None);
        }
        let found: Option<(i64, i64, i64, i64, i64, i64)> = self
            .scripts
            .mark_read
            .key(self.keys.conversation(v, p))
            .key(self.keys.reads(v))
            .key(self.keys.user_messages(v))
            .key(self.keys.settings(v))
            .key(self.keys.seen(v))
            .arg(p)
            .arg(up_to)
            .arg(now_ms())
            .arg(v)
            .arg(UNREAD_MAX)
            .arg(if receipts.as_deref() == Some("0") {
                "0"
            } else {
                "1"
            })
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
        // What the entries show of each peer, from the directory (the name) and the peer's
        // own slot (their receipts setting, and their seen cursor of the viewer).
        let names: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.usernames())
            .arg(
                latest
                    .iter()
                    .map(|(_, peer)| peer.as_str())
                    .collect::<Vec<_>>(),
            )
            .query_async(&mut self.conn())
            .await?;
        let from_peers =
            futures_util::future::try_join_all(latest.iter().map(|(_, peer)| async move {
                let (receipts, seen): (Option<String>, Option<String>) = redis::pipe()
                    .hget(self.keys.settings(peer), "readReceipts")
                    .hget(self.keys.seen(peer), v)
                    .query_async(&mut self.conn())
                    .await?;
                Ok::<_, StoreError>((receipts.as_deref() != Some("0"), seen.unwrap_or_default()))
            }))
            .await?;
        let mut pipe = redis::pipe();
        pipe.load_script(&self.scripts.conversation_entry).ignore();
        let invocations: Vec<_> = latest
            .iter()
            .zip(&names)
            .zip(&from_peers)
            .map(|(((last, peer), name), (receipts, seen))| {
                let mut invocation = self.scripts.conversation_entry.prepare_invoke();
                invocation
                    .key(self.keys.user_messages(v))
                    .key(self.keys.conversation(v, peer))
                    .key(self.keys.reads(v))
                    .key(self.keys.settings(v))
                    .arg(v)
                    .arg(peer.as_str())
                    .arg(*last)
                    .arg(unread_max)
                    .arg(name.as_deref().unwrap_or(""))
                    .arg(if *receipts { "1" } else { "0" })
                    .arg(seen);
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
            .key(self.keys.user_marker(user.as_str()))
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

    async fn online_among(&self, users: &[UserId]) -> Result<HashSet<UserId>, StoreError> {
        self.presence.online_among(users).await
    }

    async fn online_count(&self) -> Result<crate::store::OnlineCount, StoreError> {
        self.presence.online_count().await
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

    /// The hash tag a key's slot is computed from (Redis Cluster: the text between the first
    /// `{` and the next `}`).
    fn tag(key: &str) -> &str {
        let open = key.find('{').expect("every key is tagged");
        let close = open + key[open..].find('}').expect("closed");
        &key[open + 1..close]
    }

    #[test]
    fn each_users_keys_share_the_users_slot_and_the_directorys_share_one() {
        let keys = Keys {
            prefix: "t".to_owned(),
        };
        let user = [
            keys.user_marker("a"),
            keys.user_sessions("a"),
            keys.passkeys("a"),
            keys.passkey_info("a"),
            keys.peers("a"),
            keys.settings("a"),
            keys.presence("a"),
            keys.user_messages("a"),
            keys.pending("a"),
            keys.dedupe("a"),
            keys.inbox("a"),
            keys.top("a"),
            keys.conversation("a", "b"),
            keys.reads("a"),
            keys.seen("a"),
        ];
        assert!(user.iter().all(|k| tag(k) == "u:a"), "{user:?}");
        assert_ne!(keys.conversation("a", "b"), keys.conversation("b", "a"));
        let dir = [
            keys.usernames(),
            keys.directory(),
            keys.users_seq(),
            keys.users_epoch(),
            keys.protected(),
            keys.name_keys(),
            keys.names("ada"),
            keys.creds(),
            keys.quiet_users(),
            keys.session_deadlines(),
            keys.claimed_users(),
            keys.claimed_names(),
        ];
        assert!(dir.iter().all(|k| tag(k) == "t:d"), "{dir:?}");
        assert_eq!(tag(&keys.session("d")), tag(&keys.secret("d")));
    }
}
