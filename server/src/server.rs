//! The running server: binds its listening sockets (the public address, and `--metrics-listen`
//! if set), builds the app, serves it with [`crate::serve`]'s loop until shutdown, then closes
//! every socket and drains requests.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::io::Io;
use crate::startup::{build_app, App};
use crate::{origin, refusals, serve};

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
        let app = build_app(config, origins, listener.local_addr()?).await?;
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
