//! Tether's server: the axum host that renders the Leptos app, serves the built site, and
//! carries Socket.IO on the same port.
//!
//! Errors: `anyhow` is used for start-up and background tasks only; request and event paths use
//! typed errors (`transport::EventError`, `store::StoreError`) mapped explicitly to the wire.

pub mod assets;
pub mod backup;
pub mod config;
pub mod domain;
pub mod expiry;
pub mod http;
pub mod memory;
pub mod ops;
pub mod origin;
pub mod process;
pub mod refusals;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use leptos::config::LeptosOptions;
use socketioxide::SocketIo;
use tokio::net::TcpListener;

pub use config::Config;
use store::redis::{NodeOptions, RedisFiles, RedisStore, RedisTarget};
use store::sqlite::{Durability, SessionPolicy, SqliteStore};
use store::Store;
use transport::{Limits, SocketState};

/// The Socket.IO adapter of a cluster: rooms and broadcasts shared through Redis pub/sub.
pub type ClusterAdapter = socketioxide_redis::RedisAdapter<socketioxide::adapter::Emitter>;

/// The Socket.IO handle: one node on its own, or one node of a Redis cluster.
#[derive(Clone)]
pub enum Io {
    Local(SocketIo),
    Cluster(SocketIo<ClusterAdapter>),
}

impl Io {
    /// Disconnects every socket of this node (on shutdown).
    pub async fn close(&self) {
        match self {
            Io::Local(io) => io.close().await,
            Io::Cluster(io) => io.close().await,
        }
    }

    /// The handle of a single-node server (tests inspect its rooms).
    pub fn local(&self) -> Option<&SocketIo> {
        match self {
            Io::Local(io) => Some(io),
            Io::Cluster(_) => None,
        }
    }
}

/// A built application: the router to serve, the Socket.IO handle behind it, and the
/// background tasks (the memory trim, the cluster heartbeat) that end with it.
pub struct App {
    pub router: Router,
    pub io: Io,
    /// `/healthz`, `/readyz` and `/metrics`, for the `--metrics-listen` address.
    pub ops: Router,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Each WebSocket's read buffer is allocated at connect and held for the socket's life. Client
/// frames are small (an event is a few hundred bytes); a larger frame grows the buffer to its
/// size while it is read. engineioxide's default is 4 KiB.
const WS_READ_BUFFER: usize = 1024;

/// Builds the whole application from its configuration: store, Socket.IO layer, HTTP routes,
/// behind the Origin check of `origins`.
pub async fn build_app(config: &Config, origins: origin::OriginPolicy) -> anyhow::Result<App> {
    http::metrics_handle();
    let policy = SessionPolicy {
        idle: config.session_idle(),
        max_age: config.session_max_age(),
    };
    // One definition of how this node reaches Redis, for the store and the adapter alike.
    let redis = match &config.redis_url {
        Some(url) => {
            let target = RedisTarget::new(
                url,
                &RedisFiles {
                    ca: config.redis_ca_file.clone(),
                    client_cert: config.redis_client_cert.clone(),
                    client_key: config.redis_client_key.clone(),
                    password: config.redis_password_file.clone(),
                },
            )?;
            target.check().await?;
            Some(target)
        }
        None => None,
    };
    let store: Arc<dyn Store> = match &redis {
        Some(target) => Arc::new(
            RedisStore::connect_to(
                target,
                &config.redis_prefix,
                policy,
                NodeOptions {
                    heartbeat_ttl: Duration::from_millis(config.node_ttl_ms.max(300)),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("redis store at {}: {e:#}", target.shown()))?,
        ),
        None => {
            let durability = match config.sqlite_sync {
                config::SqliteSync::Full => Durability::Full,
                config::SqliteSync::Normal => Durability::Normal,
            };
            Arc::new(SqliteStore::open_with(
                &config.data_dir,
                policy,
                durability,
            )?)
        }
    };
    let state = SocketState {
        store: store.clone(),
        limits: Arc::new(Limits {
            max_message_chars: config.max_message_chars,
            roster_messages_per_peer: config.roster_messages_per_peer,
            restore_page: 500,
            history_page_max: 200,
            max_answer_bytes: config.max_answer_bytes.max(1),
            roster_max_bytes: config.roster_max_bytes,
            max_sockets_per_user: config.max_sockets_per_user,
            roster_full_max: config.roster_full_max,
            tab_policy: config.tab_policy,
        }),
        rate: Arc::new(transport::RateLimiter::new(
            config.messages_per_sec,
            config.message_burst,
        )),
        reads: Arc::new(transport::ReadLimits::new(
            transport::Rate::new(
                config.read_bytes_per_sec as f64,
                config.read_burst_bytes as f64,
            ),
            transport::Rate::new(
                config.socket_read_bytes_per_sec as f64,
                config.socket_read_burst_bytes as f64,
            ),
        )),
        signups: Arc::new(transport::signup::SignupLimiter::new(
            transport::signup::SignupRate::new(
                f64::from(config.signups_per_ip_per_min) / 60.0,
                f64::from(config.signup_burst_per_ip),
            ),
            transport::signup::SignupRate::new(
                f64::from(config.signups_per_sec),
                f64::from(config.signup_burst),
            ),
        )),
        penalties: Arc::new(transport::Penalties::new(
            config.max_refused_requests,
            Duration::from_secs(config.abuse_cooldown_secs),
        )),
    };
    state
        .reads
        .check(state.limits.largest_read())
        .map_err(anyhow::Error::msg)?;
    let builder = SocketIo::builder()
        .with_state(state.clone())
        .ping_interval(Duration::from_millis(config.ping_interval_ms))
        .ping_timeout(Duration::from_millis(config.ping_timeout_ms))
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .max_payload(config.max_payload_bytes)
        .max_buffer_size(config.socket_buffer_bytes)
        .ws_max_message_size(config.max_payload_bytes as usize)
        .ws_max_frame_size(config.max_payload_bytes as usize)
        .ws_read_buffer_size(WS_READ_BUFFER);

    // The site embedded in the binary, unless the operator names a directory (cargo-leptos'
    // `serve` and `watch` do, for a site they rebuild while the server runs).
    let assets = match &config.site_root {
        Some(_) => None,
        None => assets::Assets::embedded().map(Arc::new),
    };
    let output_name = match &assets {
        Some(assets) => assets.output_name(),
        None => config.output_name.clone(),
    };
    let leptos_options = LeptosOptions::builder()
        .output_name(output_name)
        .site_root(config.site_root().to_owned())
        .site_pkg_dir("pkg")
        .site_addr(config.listen_addr())
        .build();
    let routes = http::router(
        leptos_options,
        app::ClientConfig {
            shared_connection: config.shared_connection,
        },
        assets,
    );
    // `/metrics` on the public address unless it has one of its own.
    let readiness = Arc::new(ops::Readiness::new(
        store.clone(),
        Duration::from_millis(config.ready_timeout_ms),
    ));
    let routes = routes.merge(ops::routes(
        readiness.clone(),
        config.metrics_listen.is_none(),
    ));
    let ops = ops::routes(readiness, true);
    let mut tasks = vec![
        tokio::spawn(memory::trim_loop(Duration::from_millis(
            config.memory_trim_ms,
        ))),
        tokio::spawn(refusals::report_loop(Duration::from_millis(
            config.refusal_log_ms,
        ))),
    ];
    let (routes, io) = match &redis {
        None => {
            let (layer, io) = builder.build_layer();
            transport::register(&io);
            (routes.layer(layer), Io::Local(io))
        }
        Some(target) => {
            let client = target.client(redis::ProtocolVersion::RESP3)?;
            let adapter = socketioxide_redis::RedisAdapterCtr::new_with_redis_config(
                &client,
                socketioxide_redis::RedisAdapterConfig::new()
                    .with_prefix(format!("{}:sio", config.redis_prefix)),
            )
            .await
            .map_err(|e| anyhow::anyhow!("redis adapter at {}: {e}", target.shown()))?;
            // Websocket only: a socket lives on one node for its whole life, so a load
            // balancer needs no sticky sessions.
            let (layer, io) = builder
                .transports([socketioxide::TransportType::Websocket])
                .with_adapter::<ClusterAdapter>(adapter)
                .build_layer();
            transport::register(&io)
                .await
                .map_err(|e| anyhow::anyhow!("redis adapter: {e}"))?;
            tasks.push(tokio::spawn(transport::presence::heartbeat_loop(
                io.clone(),
                state,
            )));
            (routes.layer(layer), Io::Cluster(io))
        }
    };
    let expiry = expiry::ExpiryOptions {
        session_idle: config.session_idle(),
        idle_account: Duration::from_secs(config.idle_account_secs),
    };
    tasks.push(match &io {
        Io::Local(io) => tokio::spawn(expiry::expiry_loop(io.clone(), store.clone(), expiry)),
        Io::Cluster(io) => tokio::spawn(expiry::expiry_loop(io.clone(), store.clone(), expiry)),
    });
    // Both wrap the Socket.IO layer; the origin check (and CORS) runs first, before any handshake.
    let origins = Arc::new(origins.allow_credentials(config.cors_allow_credentials));
    let router = routes
        .layer(axum::middleware::from_fn(
            transport::request_head::detach_socket_request_head,
        ))
        // Before the head is detached: it reads `X-Forwarded-For`, which the copy drops.
        .layer(axum::middleware::from_fn_with_state(
            transport::signup::TrustedProxies(config.trust_forwarded_for),
            transport::signup::resolve_client_addr,
        ))
        .layer(axum::middleware::from_fn_with_state(
            origins,
            origin::check_origin,
        ))
        // A request's body must arrive within the header-read time too: once its head is read a
        // request is in flight, and neither the header nor the idle timeout would end one whose
        // body trickles in (a polling POST of up to --max-payload-bytes, held open forever).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            Duration::from_millis(config.header_read_timeout_ms),
        ));
    Ok(App {
        router,
        io,
        ops,
        tasks,
    })
}

/// A listening socket with room for `backlog` connections not yet accepted (tokio's
/// `TcpListener::bind` allows 1,024, which a 1,000-user connect storm overflowed: measured
/// hundreds of dropped handshakes per storm, each retried by its client a second later).
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's bind does: a restarted server can take its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A server bound to its socket, ready to run.
pub struct Server {
    listener: TcpListener,
    /// `--metrics-listen`: `/metrics` (with `/healthz` and `/readyz`) served apart.
    metrics_listener: Option<TcpListener>,
    app: App,
    limits: serve::ConnectionLimits,
}

/// Connections the kernel may queue for the metrics address: a scraper and a few probes.
const METRICS_BACKLOG: u32 = 128;

impl Server {
    /// Binds the listening socket, then builds the app: without `--public-origin`, the origin
    /// browsers may open sockets from is the address actually bound (port 0 picks one).
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let listener = listen(config.listen_addr(), config.listen_backlog)?;
        let origins = origin::OriginPolicy::new(
            config.public_origin.as_deref(),
            &config.allowed_origins,
            listener.local_addr()?,
        )?;
        if origins.lacks_a_public_origin() {
            // Only the operator's own listen address and flags, never a client's.
            tracing::warn!(
                allowed = ?origins.origins(),
                "listening on every address without --public-origin: browser pages pass the \
                 Origin check only from these origins; set --public-origin to the address \
                 users visit"
            );
        }
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let listener = listen(addr, METRICS_BACKLOG)
                    .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))?;
                tracing::info!(
                    port = listener.local_addr()?.port(),
                    "serving /metrics on its own address (not on the public one)"
                );
                Some(listener)
            }
            None => None,
        };
        let app = build_app(config, origins).await?;
        Ok(Self {
            listener,
            metrics_listener,
            app,
            limits: serve::ConnectionLimits::from_config(config),
        })
    }

    /// The Socket.IO handle, for embedding programs and tests that inspect rooms.
    pub fn io(&self) -> Io {
        self.app.io.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address `/metrics` is served on with `--metrics-listen` (port 0 picks one).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then closes every socket and drains requests.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let io = self.app.io.clone();
        // The metrics address stops with the public one: both watch this.
        let (stopping, stop) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            let _ = stopping.send(true);
            tracing::info!("shutting down: closing sockets");
            io.close().await;
        };
        // The same serve loop as the public address: its header-read and idle timeouts and
        // its bound on pending connections hold there too (axum::serve has none of them).
        let metrics = self.metrics_listener.map(|listener| {
            let mut stop = stop.clone();
            tokio::spawn(serve::serve(
                listener,
                self.app.ops,
                self.limits,
                async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                },
            ))
        });
        serve::serve(self.listener, self.app.router, self.limits, shutdown).await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        for task in self.app.tasks {
            task.abort();
        }
        // What was refused since the last report, so that it is not lost with the process.
        refusals::report();
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
