//! The application built from its configuration, in the order [`build_app`] takes the steps:
//! the store (SQLite, or Redis for a cluster), the Socket.IO layer with its limits, the HTTP
//! routes (the Leptos site, `/healthz`, `/readyz`, `/metrics`), the layers every request passes
//! (Origin check first), and the background tasks that end with the app.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use leptos::config::LeptosOptions;
use socketioxide::{SocketIo, SocketIoBuilder};
use tokio::task::JoinHandle;

use crate::config::{self, Config};
use crate::identity::passkeys::{Passkeys, RelyingParty};
use crate::io::{ClusterAdapter, Io};
use crate::store::redis::{NodeOptions, RedisFiles, RedisStore, RedisTarget, ReplicaAcks};
use crate::store::sqlite::{Durability, Gather, SessionPolicy, SqliteStore};
use crate::store::Store;
use crate::transport::{self, Limits, SocketState};
use crate::{assets, expiry, forward, http, identity, memory, ops, origin, refusals};

/// A built application: the router to serve, the Socket.IO handle behind it, and the
/// background tasks (the memory trim, the cluster heartbeat) that end with it.
pub struct App {
    pub router: Router,
    pub io: Io,
    /// `/healthz`, `/readyz` and `/metrics`, for the `--metrics-listen` address.
    pub ops: Router,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

/// Each WebSocket's read buffer is allocated at connect and held for the socket's life. Client
/// frames are small (an event is a few hundred bytes); a larger frame grows the buffer to its
/// size while it is read. engineioxide's default is 4 KiB.
const WS_READ_BUFFER: usize = 1024;

/// Builds the whole application from its configuration: store, Socket.IO layer, HTTP routes,
/// behind the Origin check of `origins`.
/// `bound` is the address the listener got (port 0 picks one): a cluster node advertises it to
/// the others unless `--advertise-url` says otherwise.
pub async fn build_app(
    config: &Config,
    origins: origin::OriginPolicy,
    bound: std::net::SocketAddr,
) -> anyhow::Result<App> {
    http::metrics_handle();
    // One definition of how this node reaches Redis, for the store and the adapter alike.
    let redis = redis_target(config).await?;
    let store = open_store(config, redis.as_ref().map(|r| &r.target)).await?;
    let passkeys = passkeys(config, &origins)?;
    let state = socket_state(config, store.clone(), passkeys.clone());
    state
        .reads
        .check(state.limits.largest_read())
        .map_err(anyhow::Error::msg)?;
    let builder = socket_builder(config, state.clone());
    let (routes, ops) = routes(config, &store, passkeys);
    let mut tasks = vec![
        tokio::spawn(memory::trim_loop(Duration::from_millis(
            config.memory_trim_ms,
        ))),
        tokio::spawn(refusals::report_loop(Duration::from_millis(
            config.refusal_log_ms,
        ))),
    ];
    let routing = match &redis {
        Some(redis) => sid_routing(config, redis, bound).await?,
        None => None,
    };
    if let Some(routing) = &routing {
        tasks.push(tokio::spawn(routing.clone().refresh_loop()));
    }
    let polling = routing.as_ref().is_some_and(|r| r.serves_polling());
    let (routes, io, reconnected) =
        attach_socket_io(config, redis.as_ref(), polling, builder, routes).await?;
    if let (Io::Cluster(io), Some(reconnected)) = (&io, reconnected) {
        tasks.push(tokio::spawn(transport::resync_after_reconnects(
            io.clone(),
            reconnected,
        )));
    }
    if let Io::Cluster(io) = &io {
        tasks.push(tokio::spawn(transport::presence::heartbeat_loop(
            io.clone(),
            state,
        )));
    }
    tasks.push(expiry_task(config, &io, store));
    let router = http_layers(config, routes, origins, routing);
    Ok(App {
        router,
        io,
        ops,
        tasks,
    })
}

/// This node's Redis: how it is reached, and whether it is a Redis Cluster (the node then runs
/// on the whole cluster: the store through [`RedisStore::connect_to`], which asks the same, the
/// sid routing and the adapter's sharded pub/sub).
struct Redis {
    target: RedisTarget,
    cluster: bool,
}

/// How this node reaches Redis (`--redis-url` and its TLS and password files), checked to
/// answer; `None` without `--redis-url`.
async fn redis_target(config: &Config) -> anyhow::Result<Option<Redis>> {
    Ok(match &config.redis_url {
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
            let cluster = target.is_cluster().await?;
            if cluster {
                tracing::info!(
                    "the Redis at --redis-url is a Redis Cluster node: running on the cluster"
                );
            }
            Some(Redis { target, cluster })
        }
        None => None,
    })
}

/// The store: Redis when this node has a Redis target, else SQLite in `--data-dir` with
/// `--sqlite-sync`'s durability.
async fn open_store(
    config: &Config,
    redis: Option<&RedisTarget>,
) -> anyhow::Result<Arc<dyn Store>> {
    let policy = SessionPolicy {
        idle: config.session_idle(),
        max_age: config.session_max_age(),
    };
    Ok(match redis {
        Some(target) => Arc::new(
            RedisStore::connect_to(
                target,
                &config.redis_prefix,
                policy,
                NodeOptions {
                    heartbeat_ttl: Duration::from_millis(config.node_ttl_ms.max(300)),
                    replica_acks: (config.redis_wait_replicas > 0).then(|| ReplicaAcks {
                        replicas: config.redis_wait_replicas,
                        timeout: Duration::from_millis(config.redis_wait_timeout_ms),
                    }),
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
                Gather {
                    window: Duration::from_micros(config.sqlite_commit_gather_us),
                },
            )?)
        }
    })
}

/// The passkey ceremonies of this server's relying party (issue #25), or `None` (with a line
/// saying why) when there is none ([`RelyingParty::derive`]).
fn passkeys(
    config: &Config,
    origins: &origin::OriginPolicy,
) -> anyhow::Result<Option<Arc<Passkeys>>> {
    if !config.passkeys {
        tracing::info!("passkeys are off (--passkeys=false)");
        return Ok(None);
    }
    let own = origins.own_origins();
    let rp = match RelyingParty::derive(
        config.passkey_rp_id.as_deref(),
        &own,
        &config.passkey_origins,
    ) {
        Ok(rp) => rp,
        Err(why) => {
            // Said once, plainly, at start: a warning when passkeys were configured (a relying
            // party or origins named), else information (a server reached by IP address, on by
            // default, simply has none).
            if config.passkey_rp_id.is_some() || !config.passkey_origins.is_empty() {
                tracing::warn!("{why}");
            } else {
                tracing::info!("{why}");
            }
            return Ok(None);
        }
    };
    // Origins named for passkeys that are not at or below the RP's, or plain http (but
    // localhost), or no origin at all.
    let left_out = config
        .passkey_origins
        .iter()
        .filter(|o| !url::Url::parse(o).is_ok_and(|u| rp.origins.contains(&u)))
        .count();
    if left_out > 0 {
        tracing::warn!(rp.id = %rp.id, left_out, "--passkey-origins entries outside the passkey domain, plain http (but localhost) or not origins cannot use passkeys");
    }
    // A page elsewhere reaches the server only if it is allowed (CORS, sockets) too.
    let allowed = origins.origins();
    let unreachable = rp
        .origins
        .iter()
        .filter(|o| !allowed.contains(&o.origin().ascii_serialization()))
        .count();
    if unreachable > 0 {
        tracing::warn!(unreachable, "--passkey-origins entries not in --allowed-origins: their pages cannot reach this server");
    }
    let passkeys = Passkeys::new(
        &rp,
        &config.passkey_rp_name,
        Duration::from_secs(config.passkey_ceremony_secs),
    )
    .map_err(anyhow::Error::msg)?;
    tracing::info!(rp.id = %rp.id, "passkeys on");
    Ok(Some(Arc::new(passkeys)))
}

/// The ceremony limits of passkey sign-ins: per client address and overall.
fn ceremony_limiter(config: &Config) -> transport::signup::SignupLimiter {
    transport::signup::SignupLimiter::new(
        transport::signup::SignupRate::new(
            f64::from(config.passkey_ceremonies_per_ip_per_min) / 60.0,
            f64::from(config.passkey_ceremony_burst_per_ip),
        ),
        transport::signup::SignupRate::new(
            f64::from(config.passkey_ceremonies_per_sec),
            f64::from(config.passkey_ceremony_burst),
        ),
    )
    .counting_table_full_as(crate::refusals::Refusal::PasskeyTableFull)
}

/// What every socket handler shares: the store, and the limits and rate limiters of the flags.
fn socket_state(
    config: &Config,
    store: Arc<dyn Store>,
    passkeys: Option<Arc<Passkeys>>,
) -> SocketState {
    SocketState {
        store,
        limits: Arc::new(Limits {
            max_message_chars: config.max_message_chars,
            roster_messages_per_peer: config.roster_messages_per_peer,
            restore_page: 500,
            history_page_max: 200,
            max_answer_bytes: config.max_answer_bytes.max(1),
            roster_max_bytes: config.roster_max_bytes,
            unread_count_max: config.unread_count_max,
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
        penalties: Arc::new(
            transport::Penalties::new(
                config.max_refused_requests,
                Duration::from_secs(config.abuse_cooldown_secs),
            )
            .with_proof_failures(config.pop_failures_per_session),
        ),
        marks: Arc::new(transport::RateLimiter::new(
            config.read_marks_per_sec,
            config.read_mark_burst,
        )),
        typing: Arc::new(transport::typing::TypingGate::new(
            Duration::from_millis(config.typing_every_ms),
            transport::Rate::new(config.typing_per_sec, config.typing_burst),
        )),
        passkeys,
        passkey_registrations: Arc::new(transport::RateLimiter::new(
            f64::from(config.passkey_registrations_per_hour) / 3600.0,
            f64::from(config.passkey_registrations_per_hour),
        )),
        rotation: config.rotation(),
    }
}

/// The Socket.IO layer's settings: heartbeat and connect timing, payload and buffer bounds.
fn socket_builder(config: &Config, state: SocketState) -> SocketIoBuilder {
    SocketIo::builder()
        .with_state(state)
        .ping_interval(Duration::from_millis(config.ping_interval_ms))
        .ping_timeout(Duration::from_millis(config.ping_timeout_ms))
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .max_payload(config.max_payload_bytes)
        .max_buffer_size(config.socket_buffer_bytes)
        .ws_max_message_size(config.max_payload_bytes as usize)
        .ws_max_frame_size(config.max_payload_bytes as usize)
        .ws_read_buffer_size(WS_READ_BUFFER)
}

/// The HTTP routes: the Leptos site (with `/metrics` on the public address unless it has one of
/// its own), and the ops routes for `--metrics-listen`.
fn routes(
    config: &Config,
    store: &Arc<dyn Store>,
    passkeys: Option<Arc<Passkeys>>,
) -> (Router, Router) {
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
            passkeys: false,
        },
        passkeys.clone(),
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
    // Passkey sign-in (issue #25).
    let routes = routes.merge(identity::http::router(identity::http::PasskeyRoutes {
        store: store.clone(),
        passkeys,
        limiter: Arc::new(ceremony_limiter(config)),
        max_sessions_per_user: config.max_sessions_per_user,
    }));
    (routes, ops)
}

/// With Redis: the forwarding of other nodes' polling requests ([`forward`]) and, when this
/// node has an address to advertise, its own session id tag (without one it serves WebSocket
/// only).
async fn sid_routing(
    config: &Config,
    redis: &Redis,
    bound: std::net::SocketAddr,
) -> anyhow::Result<Option<Arc<forward::SidRouting>>> {
    let advertise = config.advertise_url(bound)?;
    if advertise.is_none() {
        tracing::warn!(
            "no --advertise-url and the listen address names none (0.0.0.0 or ::): this node \
             serves WebSocket only (it still forwards other nodes' polling requests), and \
             clients that reach only it and start with long-polling cannot connect"
        );
    }
    let conn = redis.target.connect(redis.cluster).await?;
    let options = forward::ForwardOptions {
        advertise,
        ttl: Duration::from_millis(config.node_ttl_ms.max(300)),
        max_forwarded: config.max_forwarded_requests,
        max_relayed: config.max_relayed_sockets,
        max_body: config.max_payload_bytes as usize,
        heartbeat: Duration::from_millis(config.ping_interval_ms + config.ping_timeout_ms),
        request_timeout: Duration::from_millis(config.header_read_timeout_ms),
        // Other nodes close an idle connection after the shorter of these (with the same
        // configuration as this one): this side lets it go at half that.
        pool_idle: Duration::from_millis(
            config.idle_timeout_ms.min(config.header_read_timeout_ms) / 2,
        ),
    };
    Ok(Some(
        forward::SidRouting::start(conn, &config.redis_prefix, options).await?,
    ))
}

/// Builds the Socket.IO layer onto `routes` and registers the event handlers: on its own, or
/// (with a Redis target) through the cluster adapter, over WebSocket only unless `polling`
/// (this node's polling requests reach it through whichever node they arrive at).
async fn attach_socket_io(
    config: &Config,
    redis: Option<&Redis>,
    polling: bool,
    builder: SocketIoBuilder,
    routes: Router,
) -> anyhow::Result<(Router, Io, Option<tokio::sync::watch::Receiver<u64>>)> {
    Ok(match redis {
        None => {
            let (layer, io) = builder.build_layer();
            transport::register(&io);
            (routes.layer(layer), Io::Local(io), None)
        }
        Some(Redis { target, cluster }) => {
            let driver = if *cluster {
                let nodes = target.cluster(redis::ProtocolVersion::RESP3)?;
                crate::pubsub::PubSub::connect_cluster(nodes).await
            } else {
                let client = target.client(redis::ProtocolVersion::RESP3)?;
                crate::pubsub::PubSub::connect(client).await
            }
            .map_err(|e| anyhow::anyhow!("redis adapter at {}: {e}", target.shown()))?;
            let reconnected = driver.reconnected();
            let adapter = socketioxide_redis::RedisAdapterCtr::new_with_driver(
                driver,
                socketioxide_redis::RedisAdapterConfig::new()
                    .with_prefix(format!("{}:sio", config.redis_prefix)),
            );
            // Either way a load balancer needs no sticky sessions: a polling request that
            // reaches another node is forwarded here, and without that, no polling at all.
            let builder = if polling {
                builder
            } else {
                builder.transports([socketioxide::TransportType::Websocket])
            };
            let (layer, io) = builder
                .with_adapter::<ClusterAdapter>(adapter)
                .build_layer();
            transport::register(&io)
                .await
                .map_err(|e| anyhow::anyhow!("redis adapter: {e}"))?;
            (routes.layer(layer), Io::Cluster(io), Some(reconnected))
        }
    })
}

/// This node's expiry sweep ([`expiry`]): ended sessions' sockets closed, idle accounts deleted.
fn expiry_task(config: &Config, io: &Io, store: Arc<dyn Store>) -> JoinHandle<()> {
    let expiry = expiry::ExpiryOptions {
        session_idle: config.session_idle(),
        idle_account: Duration::from_secs(config.idle_account_secs),
        rotation: config.rotation(),
    };
    match io {
        Io::Local(io) => tokio::spawn(expiry::expiry_loop(io.clone(), store, expiry)),
        Io::Cluster(io) => tokio::spawn(expiry::expiry_loop(io.clone(), store, expiry)),
    }
}

/// The layers around the routes and the Socket.IO layer, outermost first: the header-read time
/// for a request's body, the Origin check (and CORS), the client's address, and the copy of a
/// socket request's head.
fn http_layers(
    config: &Config,
    routes: Router,
    origins: origin::OriginPolicy,
    routing: Option<Arc<forward::SidRouting>>,
) -> Router {
    // Both wrap the Socket.IO layer; the origin check (and CORS) runs first, before any handshake.
    let origins = Arc::new(origins.allow_credentials(config.cors_allow_credentials));
    let routes = routes.layer(axum::middleware::from_fn(
        transport::request_head::detach_socket_request_head,
    ));
    // Another node's polling request leaves before its head is detached (it forwards headers
    // that the copy drops) and after the origin check (a refused page is never forwarded).
    let routes = match routing {
        Some(routing) => routes.layer(axum::middleware::from_fn_with_state(
            routing,
            forward::forward_foreign_sid,
        )),
        None => routes,
    };
    routes
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
        ))
}
