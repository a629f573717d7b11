//! Operator configuration: clap flags, each with an environment fallback, and defaults that run
//! on a laptop with no setup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSync {
    Full,
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TabPolicy {
    Share,
    Reject,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "tether",
    version = crate::assets::version(false),
    long_version = crate::assets::version(true),
    about = "Tether: real-time sessions that survive the browser"
)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port (the bound address is printed on stdout).
    /// Defaults to LEPTOS_SITE_ADDR when cargo-leptos sets it, else 127.0.0.1:3000.
    #[arg(long, env = "TETHER_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Connections the kernel may hold for the server before it accepts them (capped by
    /// net.core.somaxconn). A connect storm fills a short queue: its overflow is dropped and
    /// retried by the client a second later.
    #[arg(long, env = "TETHER_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,

    /// A connection must send a whole request head (request line and headers) within this
    /// many milliseconds of opening, or of its previous response; otherwise it is closed. A
    /// request being answered (a long poll) and an upgraded WebSocket are not affected.
    #[arg(long, env = "TETHER_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,

    /// A keep-alive connection with no request in flight for this many milliseconds is closed.
    /// The header-read timeout also runs while a connection waits for its next request, so the
    /// wait is the shorter of the two.
    #[arg(long, env = "TETHER_IDLE_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,

    /// Connections accepted that have not sent their first whole request head yet. At this
    /// many the server accepts no more until one does (or closes); if none does within a
    /// second, new connections are closed at once until one does (counted in `/metrics` as
    /// `tether_connections_refused_total{reason="pending_limit"}`).
    #[arg(long, env = "TETHER_MAX_PENDING_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_connections: u32,

    /// Largest request head (request line and headers) accepted, in bytes; a larger one is
    /// answered 431 and its connection closed. What a connection waiting for its head can hold.
    #[arg(long, env = "TETHER_MAX_HEADER_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_header_bytes: u32,

    /// Directory for the embedded store (created if missing).
    #[arg(long, env = "TETHER_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,

    /// Log filter in tracing's EnvFilter syntax.
    #[arg(long, env = "TETHER_LOG", default_value = "info,tower_http=warn")]
    pub log: String,

    /// Log lines as `text` (for people) or `json` (one object a line, for log shippers).
    #[arg(long, env = "TETHER_LOG_FORMAT", value_enum,
          default_value_t = crate::telemetry::LogFormat::Text)]
    pub log_format: crate::telemetry::LogFormat,

    /// Refused connections and requests are logged as one line per kind of refusal with its
    /// count, at most once per this many milliseconds (and only when there were some), not
    /// one line each.
    #[arg(long, env = "TETHER_REFUSAL_LOG_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub refusal_log_ms: u64,

    /// Serve `/metrics` (with `/healthz` and `/readyz`) on this address, e.g. `127.0.0.1:9100`,
    /// and not on the public one. Unset: `/metrics` is on the public address.
    #[arg(long, env = "TETHER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// `/readyz` answers 503 when the store has not committed its probe write within this
    /// many milliseconds.
    #[arg(long, env = "TETHER_READY_TIMEOUT_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ready_timeout_ms: u64,

    /// Directory the built site (pkg/, assets) is served from. Unset: the site embedded in
    /// the binary (a release build made with `cargo leptos build --release --precompress`),
    /// else `target/site`.
    #[arg(long, env = "LEPTOS_SITE_ROOT")]
    pub site_root: Option<String>,

    /// Name of the built wasm/js/css files inside the site's pkg directory.
    #[arg(long, env = "LEPTOS_OUTPUT_NAME", default_value = "tether")]
    pub output_name: String,

    /// SQLite durability: `full` syncs the WAL on every commit (survives power loss); `normal`
    /// syncs at checkpoints (survives a crash or kill -9 of the server, not of the machine).
    #[arg(long, env = "TETHER_SQLITE_SYNC", value_enum, default_value_t = SqliteSync::Full)]
    pub sqlite_sync: SqliteSync,

    /// Once writes arrive faster than commits (the last commit answered more than one), the
    /// store's writer waits up to this long (µs) after a write for others to share its commit:
    /// fewer fsyncs and less CPU per message under load, for up to this much more latency.
    /// On a quiet server writes do not wait, except the first one after a burst (one window).
    /// 0: commit at once (group commit still takes what queued during the previous commit).
    #[arg(
        long,
        env = "TETHER_SQLITE_COMMIT_GATHER_US",
        default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(0..=100_000)
    )]
    pub sqlite_commit_gather_us: u64,

    /// Longest message body accepted, in characters.
    #[arg(long, env = "TETHER_MAX_MESSAGE_CHARS", default_value_t = protocol::domain::MESSAGE_MAX_CHARS)]
    pub max_message_chars: usize,

    /// Largest Engine.IO payload accepted, in bytes, on polling and websocket alike.
    #[arg(long, env = "TETHER_MAX_PAYLOAD_BYTES", default_value_t = 64 * 1024)]
    pub max_payload_bytes: u64,

    /// How many stored messages of each conversation `users` carries; older ones come by `history`.
    #[arg(long, env = "TETHER_ROSTER_MESSAGES", default_value_t = 200)]
    pub roster_messages_per_peer: u32,

    /// Up to this many users, `users` lists everyone (the tutorial's contract). Beyond it, the
    /// roster holds the caller's contacts and online users only (this many at most) and the
    /// directory is paged with `users_page`, so a connect costs a bounded amount.
    #[arg(long, env = "TETHER_ROSTER_FULL_MAX", default_value_t = 1000)]
    pub roster_full_max: usize,

    /// A session unused for this many seconds expires.
    #[arg(long, env = "TETHER_SESSION_IDLE_SECS", default_value_t = 30 * 24 * 3600)]
    pub session_idle_secs: u64,

    /// A session older than this many seconds expires, used or not.
    #[arg(long, env = "TETHER_SESSION_MAX_AGE_SECS", default_value_t = 180 * 24 * 3600)]
    pub session_max_age_secs: u64,

    /// A session's secret older than this many seconds is replaced by a new one at its next
    /// handshake (the `session` event carries it); 0 turns rotation off. A rotated-out secret
    /// presented again after `--session-rotate-grace-secs` ends its session (reuse), unless the
    /// session is bound to a key and the handshake proves it.
    #[arg(long, env = "TETHER_SESSION_ROTATE_SECS", default_value_t = 24 * 3600)]
    pub session_rotate_secs: u64,

    /// How long a rotated-out secret is still accepted (it is then replaced again): a `session`
    /// event lost with its connection, or a tab that reconnected before another saved the new
    /// one. At most `--session-rotate-reissues` rotations per session per grace window.
    #[arg(long, env = "TETHER_SESSION_ROTATE_GRACE_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub session_rotate_grace_secs: u64,

    /// The most rotations of one session within a grace window (`--session-rotate-grace-secs`):
    /// past it a handshake that would rotate again is refused `too many requests` (a flapping
    /// network, or someone replaying a rotated-out secret), never taken for reuse. Each rotation
    /// keeps a retired secret's digest while the session lives, so this also bounds those.
    #[arg(long, env = "TETHER_SESSION_ROTATE_REISSUES", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub session_rotate_reissues: u32,

    /// An account that never sent or received a message is deleted once it has had no
    /// handshake (and no connected socket) for this many seconds, or once it has no session
    /// left.
    #[arg(long, env = "TETHER_IDLE_ACCOUNT_SECS", default_value_t = 7 * 24 * 3600)]
    pub idle_account_secs: u64,

    /// Sign-ups (handshakes that create an account) one client address may make per minute,
    /// sustained; IPv6 addresses count by /64. Per node.
    #[arg(long, env = "TETHER_SIGNUPS_PER_IP_PER_MIN", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub signups_per_ip_per_min: u32,

    /// Sign-ups one client address may make in a burst.
    #[arg(long, env = "TETHER_SIGNUP_BURST_PER_IP", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub signup_burst_per_ip: u32,

    /// Sign-ups per second from all addresses together, sustained. Per node.
    #[arg(long, env = "TETHER_SIGNUPS_PER_SEC", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub signups_per_sec: u32,

    /// Sign-ups from all addresses together in a burst.
    #[arg(long, env = "TETHER_SIGNUP_BURST", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub signup_burst: u32,

    /// Proxies in front of the server whose `X-Forwarded-For` is trusted: the client address
    /// is the entry this many hops from the right of that header followed by the TCP peer.
    /// 0 ignores the header (the TCP peer is the client).
    #[arg(long, env = "TETHER_TRUST_FORWARDED_FOR", default_value_t = 0)]
    pub trust_forwarded_for: u8,

    /// The origin browsers load the app from, e.g. `https://chat.example` (what a proxy in
    /// front serves). Pages from it may open sockets. Default: `http://<bound address>`, and
    /// `http://localhost:<port>` too when that address is a loopback one.
    #[arg(long, env = "TETHER_PUBLIC_ORIGIN")]
    pub public_origin: Option<String>,

    /// Browser origins besides the public origin allowed to open sockets, comma-separated,
    /// e.g. `https://chat.example`. Scheme, host and port must match exactly.
    #[arg(long, env = "TETHER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Cross-origin answers (to pages on an allowed origin) carry
    /// `Access-Control-Allow-Credentials: true`, as socket.io's `cors.credentials`: needed only
    /// by a client that sends cookies (`withCredentials: true`). Tether's session travels in the
    /// handshake's `auth`, not in a cookie, so its own client does not need it.
    #[arg(long, env = "TETHER_CORS_ALLOW_CREDENTIALS")]
    pub cors_allow_credentials: bool,

    /// Passkeys (issue #25): protecting a name with a passkey, and signing in with it. On by
    /// default wherever the server has a domain to make them for (see --passkey-rp-id);
    /// `--passkeys=false` or `TETHER_PASSKEYS=false` turns them off.
    #[arg(long, env = "TETHER_PASSKEYS", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub passkeys: bool,

    /// The WebAuthn relying party id passkeys are made for (issue #25), e.g. `chat.example`.
    /// Default: the host of `--public-origin` when it is `https://<domain>` (or `localhost` for
    /// a loopback bind without it), never that of an `--allowed-origins` entry. Passkeys work
    /// only from the server's own origins and `--passkey-origins` at or below it that are
    /// `https` (or `http://localhost`); with none they are off, and a warning at start says why.
    #[arg(long, env = "TETHER_PASSKEY_RP_ID")]
    pub passkey_rp_id: Option<String>,

    /// Origins besides the server's own whose pages may use its passkeys (sign in, and add
    /// one), comma-separated, e.g. `https://app.chat.example`: at or below the relying party
    /// id, `https` (or `http://localhost`). An `--allowed-origins` entry is not one unless
    /// named here too (allowing an origin for CORS does not grant it account sign-in); a page
    /// here needs to be allowed as well to reach the server.
    #[arg(long, env = "TETHER_PASSKEY_ORIGINS", value_delimiter = ',')]
    pub passkey_origins: Vec<String>,

    /// The name passkey prompts show for this site.
    #[arg(long, env = "TETHER_PASSKEY_RP_NAME", default_value = "Tether")]
    pub passkey_rp_name: String,

    /// Seconds a passkey ceremony (adding one, or signing in) may take: the browser's timeout
    /// and how long its state is kept.
    #[arg(long, env = "TETHER_PASSKEY_CEREMONY_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub passkey_ceremony_secs: u64,

    /// Passkey sign-in requests (`/api/passkey/options` and `/api/passkey/signin`, each paid
    /// before anything is looked up: a sign-in is two) one client address may make per minute,
    /// sustained; IPv6 by /64. Per node.
    #[arg(long, env = "TETHER_PASSKEY_CEREMONIES_PER_IP_PER_MIN", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub passkey_ceremonies_per_ip_per_min: u32,

    /// Passkey sign-in requests one client address may make in a burst.
    #[arg(long, env = "TETHER_PASSKEY_CEREMONY_BURST_PER_IP", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub passkey_ceremony_burst_per_ip: u32,

    /// Passkey sign-ins per second from all addresses together, sustained. Per node.
    #[arg(long, env = "TETHER_PASSKEY_CEREMONIES_PER_SEC", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub passkey_ceremonies_per_sec: u32,

    /// Passkey sign-ins from all addresses together in a burst.
    #[arg(long, env = "TETHER_PASSKEY_CEREMONY_BURST", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub passkey_ceremony_burst: u32,

    /// Passkey registrations (`passkey_options`) one user may start per hour (a burst of as
    /// many). Per node.
    #[arg(long, env = "TETHER_PASSKEY_REGISTRATIONS_PER_HOUR", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub passkey_registrations_per_hour: u32,

    /// Messages a user may send per second, sustained (token bucket refill rate).
    #[arg(long, env = "TETHER_MESSAGES_PER_SEC", default_value_t = 10.0)]
    pub messages_per_sec: f64,

    /// Messages a user may send in a burst (token bucket size).
    #[arg(long, env = "TETHER_MESSAGE_BURST", default_value_t = 30.0)]
    pub message_burst: f64,

    /// `read` requests (and settings changes) one user may make per second, sustained, per
    /// node: each may be a write. Past it they are answered `rate_limited`.
    #[arg(long, env = "TETHER_READ_MARKS_PER_SEC", default_value_t = 10.0)]
    pub read_marks_per_sec: f64,

    /// `read` requests (and settings changes) one user may make in a burst.
    #[arg(long, env = "TETHER_READ_MARK_BURST", default_value_t = 50.0)]
    pub read_mark_burst: f64,

    /// A user's `typing` to one person is passed on at most once per this many milliseconds
    /// (per node); the others are dropped.
    #[arg(long, env = "TETHER_TYPING_EVERY_MS", default_value_t = 3_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub typing_every_ms: u64,

    /// `typing` events one user may send per second, sustained, passed on or not (per node).
    /// Past it (and the burst) they are dropped and count against the socket as refused
    /// requests (`--max-refused-requests`).
    #[arg(long, env = "TETHER_TYPING_PER_SEC", default_value_t = 2.0)]
    pub typing_per_sec: f64,

    /// `typing` events one user may send in a burst.
    #[arg(long, env = "TETHER_TYPING_BURST", default_value_t = 10.0)]
    pub typing_burst: f64,

    /// Bytes of answers (`restore_state`, `history`, `users_page`, a connect's `users`) one
    /// user may read per second, sustained, over all their sockets on this node.
    #[arg(long, env = "TETHER_READ_BYTES_PER_SEC", default_value_t = 1024 * 1024)]
    pub read_bytes_per_sec: u64,

    /// Bytes of answers one user may read in a burst.
    #[arg(long, env = "TETHER_READ_BURST_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub read_burst_bytes: u64,

    /// Bytes of answers one socket may read per second, sustained.
    #[arg(long, env = "TETHER_SOCKET_READ_BYTES_PER_SEC", default_value_t = 512 * 1024)]
    pub socket_read_bytes_per_sec: u64,

    /// Bytes of answers one socket may read in a burst.
    #[arg(long, env = "TETHER_SOCKET_READ_BURST_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub socket_read_burst_bytes: u64,

    /// The most one `restore_state` or `history` answer carries, in bytes of messages; past it
    /// the page is cut and says `hasMore`. Keep it well below the socket's send budget.
    #[arg(long, env = "TETHER_MAX_ANSWER_BYTES", default_value_t = 256 * 1024)]
    pub max_answer_bytes: usize,

    /// The most unread messages a `conversations` page counts in one conversation: a count of
    /// this many means "this many or more". Each one counted is a row the store reads, and a page
    /// reserves from the read buckets, before it is read, a row for each message it may count
    /// and one for each conversation it asks for (128 bytes each, up to the largest read).
    #[arg(long, env = "TETHER_UNREAD_COUNT_MAX", default_value_t = crate::store::UNREAD_MAX,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub unread_count_max: u32,

    /// The most the messages in a connect's `users` carry, in bytes (the newest first, over
    /// every conversation); older ones come from `history`.
    #[arg(long, env = "TETHER_ROSTER_MAX_BYTES", default_value_t = 256 * 1024)]
    pub roster_max_bytes: usize,

    /// A socket whose requests are refused this many times within ten seconds (`rate_limited`) is
    /// disconnected, and its session may not connect again for `--abuse-cooldown-secs`.
    #[arg(long, env = "TETHER_MAX_REFUSED_REQUESTS", default_value_t = 32)]
    pub max_refused_requests: u32,

    /// How long a session whose socket was disconnected for flooding may not connect.
    #[arg(long, env = "TETHER_ABUSE_COOLDOWN_SECS", default_value_t = 10)]
    pub abuse_cooldown_secs: u64,

    /// A session bound to a key (proof of possession, issue #25) whose handshakes come this many
    /// times within ten seconds without a valid proof may not connect for
    /// `--abuse-cooldown-secs` (the session is not ended).
    #[arg(long, env = "TETHER_POP_FAILURES_PER_SESSION", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub pop_failures_per_session: u32,

    /// Sockets (tabs) one user may have open at once.
    #[arg(long, env = "TETHER_MAX_SOCKETS_PER_USER", default_value_t = 64)]
    pub max_sockets_per_user: u32,

    /// Live sessions (devices) one account may hold: a passkey sign-in past it is refused
    /// (`too_many_sessions`) until one is ended. Checked atomically in the store with the
    /// session's creation, on every node.
    #[arg(long, env = "TETHER_MAX_SESSIONS_PER_USER", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions_per_user: u32,

    /// What a second concurrent connection of one session gets: `share` (every tab is the same
    /// user) or `reject` (refused with `session already active`, unless it asks to take over).
    #[arg(long, env = "TETHER_TAB_POLICY", value_enum, default_value_t = TabPolicy::Share)]
    pub tab_policy: TabPolicy,

    /// Browsers share one connection per origin across all their tabs (held by a
    /// SharedWorker; tabs without SharedWorker fall back to their own). Off: one per tab.
    #[arg(long, env = "TETHER_SHARED_CONNECTION")]
    pub shared_connection: bool,

    /// Redis URL (`redis://host:port/db`, Redis 7 or newer; `rediss://` for TLS; credentials
    /// as `redis://:PASSWORD@host` or `redis://USER:PASSWORD@host`, better given by the
    /// environment than on the command line). When set, the store and the
    /// Socket.IO adapter live in Redis so several nodes serve one cluster, with no sticky
    /// sessions needed (see --advertise-url). Unset: the embedded SQLite store, one node.
    #[arg(long, env = "TETHER_REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and pub/sub channel, so deployments can share a Redis: 1 to 64
    /// characters, without `{`, `}` (they would change which Redis Cluster slot a key is in),
    /// spaces or control characters.
    #[arg(long, env = "TETHER_REDIS_PREFIX", default_value = "tether",
          value_parser = redis_prefix)]
    pub redis_prefix: String,

    /// With `rediss://`: a PEM file of the CA certificates that sign the Redis server's
    /// certificate, trusted instead of the system's CA store (for a private CA).
    #[arg(long, env = "TETHER_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// With `rediss://`: a PEM certificate (chain) this node presents to a Redis that verifies
    /// its clients (mutual TLS); needs --redis-client-key.
    #[arg(long, env = "TETHER_REDIS_CLIENT_CERT")]
    pub redis_client_cert: Option<PathBuf>,

    /// The PEM private key of --redis-client-cert.
    #[arg(long, env = "TETHER_REDIS_CLIENT_KEY")]
    pub redis_client_key: Option<PathBuf>,

    /// A file holding the Redis password (one trailing newline ignored), instead of a password
    /// in the URL.
    #[arg(long, env = "TETHER_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// With Redis: a message is acked only once this many replicas of the primary hold it
    /// (`WAIT`), so a failover (the primary killed, its replica promoted) loses no acked
    /// message. 0: acked once the primary has it (replication is asynchronous). Set it with
    /// `min-replicas-to-write` on the primary, so an isolated primary refuses writes.
    #[arg(long, env = "TETHER_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,

    /// With --redis-wait-replicas: how long a message waits for its replicas before it is
    /// refused `store_unavailable` (not acked; clients send it again with its clientId).
    #[arg(long, env = "TETHER_REDIS_WAIT_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..=60_000))]
    pub redis_wait_timeout_ms: u64,

    /// With Redis: a node silent for this many milliseconds is dead, and users whose only
    /// sockets were on it go offline for everyone (within this time plus a third of it).
    #[arg(long, env = "TETHER_NODE_TTL_MS", default_value_t = 10_000)]
    pub node_ttl_ms: u64,

    /// With Redis: the URL other nodes reach this node at (`http://host:port`), so a
    /// long-polling request that arrives at another node is forwarded here (no sticky sessions
    /// needed). Unset: `http://` plus the listen address when it names one (not 0.0.0.0 or
    /// ::); with neither, this node serves WebSocket only.
    #[arg(long, env = "TETHER_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// With Redis: polling requests this node forwards to other nodes at once; beyond it they
    /// are answered 503 and the client retries.
    #[arg(long, env = "TETHER_MAX_FORWARDED_REQUESTS", default_value_t = 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_forwarded_requests: usize,

    /// With Redis: WebSockets this node relays to the node that holds their session (a client
    /// that opened by polling through this node and upgraded), about 16 KiB each; beyond it
    /// the upgrade is refused and the client stays on polling.
    #[arg(long, env = "TETHER_MAX_RELAYED_SOCKETS", default_value_t = 4096)]
    pub max_relayed_sockets: usize,

    /// Bytes that may wait to be sent to one socket (each packet counts its size plus 64
    /// bytes; packets written but not yet taken by the connection count too). A socket that
    /// would go past it is closed: its client is not reading, and restores after
    /// reconnecting. Bursts (the roster on connect, presence events in a connect storm, a
    /// restore page) need room here. At least 65536.
    #[arg(long, env = "TETHER_SOCKET_BUFFER_BYTES", default_value_t = 1 << 20,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(65_536..))]
    pub socket_buffer_bytes: usize,

    /// Every this many milliseconds, check whether to hand memory the allocator keeps but
    /// nothing uses (what a connect storm's bursts freed) back to the system: done once the
    /// resident size grew 16 MiB since the last time and the server is quiet. 0 turns it
    /// off. glibc only.
    #[arg(long, env = "TETHER_MEMORY_TRIM_MS", default_value_t = 1_000)]
    pub memory_trim_ms: u64,

    /// Engine.IO ping interval in milliseconds.
    #[arg(long, env = "TETHER_PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,

    /// Engine.IO ping timeout in milliseconds.
    #[arg(long, env = "TETHER_PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,

    /// A client that opens a transport but does not connect to a namespace within this many
    /// milliseconds is dropped.
    #[arg(long, env = "TETHER_CONNECT_TIMEOUT_MS", default_value_t = 10_000)]
    pub connect_timeout_ms: u64,

    /// What to do; none: serve.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Copy the SQLite store in --data-dir to PATH, consistently, while the server runs (see
    /// README, "Backups").
    Backup(crate::backup::BackupArgs),
}

impl Config {
    /// The directory the site is read from when none is embedded (or one is named).
    pub fn site_root(&self) -> &str {
        self.site_root.as_deref().unwrap_or("target/site")
    }

    /// The defaults, with the given data directory: what tests start from.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Self::parse_from(["tether"]);
        config.data_dir = data_dir.into();
        config
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .or_else(|| std::env::var("LEPTOS_SITE_ADDR").ok()?.parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000)))
    }

    /// How other cluster nodes reach this one (see --advertise-url): the flag, checked to be
    /// `http://host:port` with nothing after it, or the bound address when it names one;
    /// `None` when it does not (0.0.0.0 or ::) and no flag says.
    pub fn advertise_url(&self, bound: SocketAddr) -> anyhow::Result<Option<axum::http::Uri>> {
        let Some(url) = &self.advertise_url else {
            return Ok((!bound.ip().is_unspecified())
                .then(|| format!("http://{bound}").parse())
                .transpose()?);
        };
        let uri: axum::http::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--advertise-url {url}: {e}"))?;
        let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
        if uri.scheme_str() != Some("http") || uri.authority().is_none() || !bare {
            anyhow::bail!(
                "--advertise-url {url}: expected http://host:port (nodes forward to each other \
                 over plain HTTP on their private network)"
            );
        }
        Ok(Some(uri))
    }

    pub fn session_idle(&self) -> Duration {
        Duration::from_secs(self.session_idle_secs)
    }

    pub fn session_max_age(&self) -> Duration {
        Duration::from_secs(self.session_max_age_secs)
    }

    /// When and how a session's secret rotates (issue #25 §5).
    pub fn rotation(&self) -> crate::transport::rotation::Rotation {
        crate::transport::rotation::Rotation {
            period: (self.session_rotate_secs > 0)
                .then(|| Duration::from_secs(self.session_rotate_secs)),
            grace: Duration::from_secs(self.session_rotate_grace_secs),
            reissues: self.session_rotate_reissues,
        }
    }
}

fn redis_prefix(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.chars().count() > 64 {
        return Err("a Redis prefix has 1 to 64 characters".into());
    }
    if raw
        .chars()
        .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err(
            "a Redis prefix has no `{`, `}`, spaces or control characters (braces would move \
             its keys' hash slots)"
                .into(),
        );
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_without_any_flag() {
        let config = Config::for_data_dir("/tmp/x");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.max_message_chars, 4000);
    }

    #[test]
    fn the_advertised_url_is_the_flag_or_a_named_listen_address() {
        let bound: SocketAddr = "10.0.0.7:3000".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:3000".parse().unwrap();
        let config = Config::for_data_dir("/tmp/x");
        assert_eq!(
            config.advertise_url(bound).unwrap().unwrap().to_string(),
            "http://10.0.0.7:3000/"
        );
        assert!(
            config.advertise_url(any).unwrap().is_none(),
            "no address to name"
        );
        let with = |url: &str| {
            let mut config = Config::for_data_dir("/tmp/x");
            config.advertise_url = Some(url.to_owned());
            config.advertise_url(any)
        };
        assert_eq!(
            with("http://node-2.internal:3000")
                .unwrap()
                .unwrap()
                .to_string(),
            "http://node-2.internal:3000/"
        );
        for bad in [
            "https://node:3000",
            "http://node:3000/app",
            "node:3000",
            "http://n/?a=1",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_override_defaults() {
        let config = Config::parse_from([
            "tether",
            "--listen",
            "127.0.0.1:0",
            "--max-message-chars",
            "10",
            "--listen-backlog",
            "128",
        ]);
        assert_eq!(config.listen_addr().port(), 0);
        assert_eq!(config.max_message_chars, 10);
        assert_eq!(config.listen_backlog, 128);
    }

    #[test]
    fn the_unread_count_cap_defaults_to_unread_max_and_is_at_least_one() {
        let parse = |n: &str| Config::try_parse_from(["tether", "--unread-count-max", n]);
        assert_eq!(
            Config::for_data_dir("/tmp/x").unread_count_max,
            crate::store::UNREAD_MAX
        );
        assert_eq!(parse("1").unwrap().unread_count_max, 1);
        assert!(parse("0").is_err());
        assert!(parse("-1").is_err());
    }

    #[test]
    fn a_socket_buffer_below_64_kib_is_refused() {
        let parse =
            |bytes: &str| Config::try_parse_from(["tether", "--socket-buffer-bytes", bytes]);
        assert_eq!(Config::for_data_dir("/tmp/x").socket_buffer_bytes, 1 << 20);
        assert_eq!(parse("65536").unwrap().socket_buffer_bytes, 65_536);
        let refused = parse("65535").unwrap_err().to_string();
        assert!(refused.contains("65536"), "{refused}");
    }

    #[test]
    fn a_redis_prefix_with_braces_or_spaces_is_refused() {
        let parse = |prefix: &str| Config::try_parse_from(["tether", "--redis-prefix", prefix]);
        assert_eq!(parse("app:tether").unwrap().redis_prefix, "app:tether");
        for refused in ["", "a{b}", "a b", "x}"] {
            let error = parse(refused).unwrap_err().to_string();
            assert!(error.contains("Redis prefix"), "{refused:?}: {error}");
        }
    }
}
