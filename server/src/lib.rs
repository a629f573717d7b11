//! Tether's server: the axum host that renders the Leptos app, serves the built site, and
//! carries Socket.IO on the same port.
//!
//! What starts it: `main.rs` parses the [`Config`] (flags with env fallbacks) and sets up
//! [`telemetry`]; [`Server::bind`] binds the listening sockets and calls [`build_app`], which
//! assembles the store, the Socket.IO layer and the HTTP routes; [`Server::run`] serves them
//! until [`shutdown_signal`], then closes every socket and drains requests.
//!
//! Errors: `anyhow` is used for start-up and background tasks only; request and event paths use
//! typed errors (`transport::EventError`, `store::StoreError`) mapped explicitly to the wire.

// The built site's static files, embedded in the binary (or `--site-root` from disk).
pub mod assets;
// `tether backup`: a consistent copy of the SQLite store, beside the running server.
pub mod backup;
// Every flag, with its env fallback (`Config`).
pub mod config;
// Server identifiers (`UserId`, `SessionId`) and the input rules from `protocol`.
pub mod domain;
// Who holds a session: devices (issue #25), their browser labels and public ids.
pub mod identity;
// The per-node sweep: expired sessions' sockets closed, idle accounts deleted.
pub mod expiry;
// Long-polling in a cluster without sticky sessions: requests forwarded to their node.
pub mod forward;
// The server-rendered Leptos app, the site's files, the Prometheus recorder.
pub mod http;
// The Socket.IO handle (`Io`): one node, or one node of a Redis cluster.
pub mod io;
// Handing freed memory back to the system after bursts.
pub mod memory;
// `/healthz`, `/readyz` and `/metrics`.
pub mod ops;
// The Origin allowlist (and CORS) checked before any Socket.IO handshake.
pub mod origin;
// The cluster adapter's pub/sub connection: reconnects and subscribes again by itself.
pub mod pubsub;
// `/proc/<pid>`, read in one place (`/metrics`, the memory trim, bench/).
pub mod process;
// Refused connections and requests, counted and logged one line per kind.
pub mod refusals;
// The HTTP/1.1 accept loop: header-read and idle timeouts, pending bound, drain.
pub mod serve;
// `Server`: binds the sockets, runs the app until shutdown, then drains.
pub mod server;
// `build_app`: the store, Socket.IO layer, routes and background tasks from `Config`.
pub mod startup;
// Storage behind one trait: SQLite by default, Redis for a cluster.
pub mod store;
// Logging: the operator's filter, a cap no directive lifts, `conn` ids.
pub mod telemetry;
// Socket.IO event handlers, one file per event group; presence, limits.
pub mod transport;

pub use config::Config;
pub use io::{ClusterAdapter, Io};
pub use server::{shutdown_signal, Server};
pub use startup::{build_app, App};
