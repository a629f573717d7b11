//! Tether's server: the axum host that renders the Leptos app, serves the built site, and
//! carries Socket.IO on the same port.
//!
//! Errors: `anyhow` is used for start-up and background tasks only; request and event paths use
//! typed errors (`transport::EventError`, `store::StoreError`) mapped explicitly to the wire.

pub mod config;
pub mod domain;
pub mod http;
pub mod origin;
pub mod store;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use leptos::config::LeptosOptions;
use socketioxide::SocketIo;
use tokio::net::TcpListener;

pub use config::Config;
use store::sqlite::{Durability, SessionPolicy, SqliteStore};
use store::Store;
use transport::{Limits, SocketState};

/// A built application: the router to serve and the Socket.IO handle behind it.
pub struct App {
    pub router: Router,
    pub io: SocketIo,
}

/// Builds the whole application from its configuration: store, Socket.IO layer, HTTP routes.
pub fn build_app(config: &Config) -> anyhow::Result<App> {
    http::metrics_handle();
    let durability = match config.sqlite_sync {
        config::SqliteSync::Full => Durability::Full,
        config::SqliteSync::Normal => Durability::Normal,
    };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_with(
        &config.data_dir,
        SessionPolicy {
            idle: config.session_idle(),
            max_age: config.session_max_age(),
        },
        durability,
    )?);
    let state = SocketState {
        store,
        limits: Arc::new(Limits {
            max_message_chars: config.max_message_chars,
            roster_messages_per_peer: config.roster_messages_per_peer,
            restore_page: 500,
            history_page_max: 200,
            max_sockets_per_user: config.max_sockets_per_user,
            roster_full_max: config.roster_full_max,
            tab_policy: config.tab_policy,
        }),
        rate: Arc::new(transport::RateLimiter::new(
            config.messages_per_sec,
            config.message_burst,
        )),
    };
    let (layer, io) = SocketIo::builder()
        .with_state(state)
        .ping_interval(Duration::from_millis(config.ping_interval_ms))
        .ping_timeout(Duration::from_millis(config.ping_timeout_ms))
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .max_payload(config.max_payload_bytes)
        .ws_max_message_size(config.max_payload_bytes as usize)
        .ws_max_frame_size(config.max_payload_bytes as usize)
        .build_layer();
    transport::register(&io);

    let leptos_options = LeptosOptions::builder()
        .output_name(config.output_name.clone())
        .site_root(config.site_root.clone())
        .site_pkg_dir("pkg")
        .site_addr(config.listen_addr())
        .build();
    // The origin check wraps the Socket.IO layer, so it runs before any handshake.
    let origins = Arc::new(origin::OriginPolicy::new(&config.allowed_origins));
    let router =
        http::router(leptos_options)
            .layer(layer)
            .layer(axum::middleware::from_fn_with_state(
                origins,
                origin::check_origin,
            ));
    Ok(App { router, io })
}

/// A server bound to its socket, ready to run.
pub struct Server {
    listener: TcpListener,
    app: App,
}

impl Server {
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let app = build_app(config)?;
        let listener = TcpListener::bind(config.listen_addr()).await?;
        Ok(Self { listener, app })
    }

    /// The Socket.IO handle, for embedding programs and tests that inspect rooms.
    pub fn io(&self) -> SocketIo {
        self.app.io.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then closes every socket and drains requests.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let io = self.app.io.clone();
        axum::serve(self.listener, self.app.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: closing sockets");
                io.close().await;
            })
            .await?;
        Ok(())
    }
}

/// Crates whose verbose logs carry raw frames or bodies (and so session ids and messages):
/// capped at `info` whatever the operator's filter says.
const WIRE_LEVEL_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "h2",
    "engineioxide",
    "socketioxide",
];

/// The operator's log filter, with wire-level crates capped so secrets never reach the logs.
pub fn log_filter(spec: &str) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    let mut filter = tracing_subscriber::EnvFilter::try_new(spec)?;
    for krate in WIRE_LEVEL_CRATES {
        filter = filter.add_directive(format!("{krate}=info").parse()?);
    }
    Ok(filter)
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
