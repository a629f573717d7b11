//! The HTTP/1.1 serve loop (in place of `axum::serve`, which has no timeouts): every connection
//! has a bounded time to send a request head and to stay idle between requests, and only so
//! many connections may wait for their first request head at once.
//!
//! - Header-read timeout: hyper's own timer. It runs from the moment a connection can read a
//!   request head — when it opens, and again when the previous response is done — until the
//!   head is complete; past it, the connection is closed. So a keep-alive connection waiting for
//!   its next request is also closed at this timeout (the idle timeout below can only shorten
//!   that wait).
//! - Idle timeout: a connection with no request in flight for this long is shut down
//!   gracefully (hyper closes it at once when it is between requests; a head being sent is left
//!   to the header-read timeout).
//! - Pending bound: a connection counts as pending from accept until hyper hands its first
//!   request to the router (or it closes). At the bound the loop accepts nothing (the kernel's
//!   backlog holds new connections) until a slot comes back; when none does for
//!   [`FULL_GRACE`], it closes new connections at once until one does, counted in
//!   `tether_connections_refused_total{reason="pending_limit"}` and logged with the other
//!   refusals (a line per kind with its count, [`crate::refusals`]). Their clients get a
//!   quick failure to retry on rather than a wait in the backlog for as long as the
//!   header-read timeout. Header-read timeouts are logged with the refusals too.
//! - A request in flight is never cut by either timeout: a long-polling GET held open until the
//!   next ping, or a response body still being written, keeps its connection. Upgraded
//!   WebSockets leave hyper (and these timers) once the upgrade is answered; their own heartbeat
//!   bounds them.
//!
//! Every request carries the connection's peer address as `ConnectInfo<SocketAddr>` in its
//! extensions, for limits per client address. No address is ever logged.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

/// The limits every connection is held to (flags in [`crate::Config`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_pending: usize,
    pub max_header_bytes: usize,
}

impl ConnectionLimits {
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            max_pending: config.max_pending_connections as usize,
            max_header_bytes: config.max_header_bytes as usize,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets every
/// request in flight finish, closes idle connections, and returns once all have closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let pending = Arc::new(PendingCount::new(limits.max_pending));
    // Connections hold a receiver: a change asks them to shut down gracefully, and once all are
    // dropped every connection has closed.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut listener = listener;
    let mut shutdown = pin!(shutdown);
    // When the bound was first found reached, while it still is.
    let mut full_since: Option<Instant> = None;
    loop {
        let slot = PendingSlot::reserve(&pending);
        let full_until = match slot {
            Some(_) => {
                full_since = None;
                Instant::now()
            }
            None => *full_since.get_or_insert_with(Instant::now) + FULL_GRACE,
        };
        let refusing = slot.is_none() && Instant::now() >= full_until;
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = axum::serve::Listener::accept(&mut listener), if slot.is_some() || refusing => accepted,
            // Full: accept nothing (the kernel's backlog holds new connections) until a slot
            // comes back or the grace period ends.
            () = pending.freed.notified(), if slot.is_none() && !refusing => continue,
            () = tokio::time::sleep_until(full_until), if slot.is_none() && !refusing => continue,
        };
        let Some(slot) = slot.or_else(|| PendingSlot::reserve(&pending)) else {
            drop(tcp);
            metrics::counter!("tether_connections_refused_total", "reason" => "pending_limit")
                .increment(1);
            crate::refusals::refused(crate::refusals::Refusal::PendingLimit);
            continue;
        };
        // Every frame is a message someone waits for: without TCP_NODELAY a frame written
        // while the one before is unacknowledged waits for the peer's (possibly delayed) ACK.
        // Browsers set it on their side, as does Node's http server.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
        let state = Arc::new(ConnectionState::new(slot));
        let service = ConnectionService {
            router: router.clone(),
            peer,
            state: state.clone(),
        };
        let connection = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        tokio::spawn(drive(
            connection,
            state,
            limits.idle_timeout,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(());
    drop(stop_rx);
    stop_tx.closed().await;
}

/// Runs one connection to its end: shut down gracefully when the server stops or when it has
/// been idle too long.
async fn drive(
    connection: http1::UpgradeableConnection<TokioIo<tokio::net::TcpStream>, ConnectionService>,
    state: Arc<ConnectionState>,
    idle_timeout: Duration,
    mut stop: watch::Receiver<()>,
) {
    let mut connection = pin!(connection);
    let mut closing = false;
    let mut idled = false;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = stop.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = state.idle_for(idle_timeout), if !closing => {
                closing = true;
                idled = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    };
    match result {
        Err(e) if e.is_timeout() => {
            metrics::counter!("tether_connections_closed_total", "reason" => "header_timeout")
                .increment(1);
            crate::refusals::refused(crate::refusals::Refusal::HeaderTimeout);
        }
        Err(e) => tracing::trace!(error = %e, "connection ended with an error"),
        Ok(()) if idled => {
            metrics::counter!("tether_connections_closed_total", "reason" => "idle_timeout")
                .increment(1);
        }
        Ok(()) => {}
    }
}

/// Connections accepted that have not had a request head read yet.
struct PendingCount {
    now: AtomicUsize,
    max: usize,
    /// Woken whenever one is given back (the accept loop waits on it while full).
    freed: tokio::sync::Notify,
}

impl PendingCount {
    fn new(max: usize) -> Self {
        Self {
            now: AtomicUsize::new(0),
            max,
            freed: tokio::sync::Notify::new(),
        }
    }
}

/// How long the accept loop waits for a pending connection to send its head (or close) once
/// the bound is reached, before it closes new connections at once. An honest connect storm
/// frees slots within milliseconds (its clients send their request at once; they only wait
/// for the server to read it); connections that send nothing hold theirs until the
/// header-read timeout.
const FULL_GRACE: Duration = Duration::from_secs(1);

/// One connection's place among the pending ones, given back once (first request, or close).
struct PendingSlot {
    count: Arc<PendingCount>,
    held: AtomicBool,
}

impl PendingSlot {
    fn reserve(count: &Arc<PendingCount>) -> Option<Self> {
        count
            .now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < count.max).then_some(n + 1)
            })
            .ok()?;
        Some(Self {
            count: count.clone(),
            held: AtomicBool::new(true),
        })
    }

    fn release(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            self.count.now.fetch_sub(1, Ordering::AcqRel);
            self.count.freed.notify_one();
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// What one connection's timers read: its pending slot, the requests in flight and when it
/// was last busy.
struct ConnectionState {
    slot: PendingSlot,
    in_flight: AtomicUsize,
    opened: Instant,
    /// Milliseconds after `opened` when a request last started or ended.
    last_busy_ms: AtomicU64,
}

impl ConnectionState {
    fn new(slot: PendingSlot) -> Self {
        Self {
            slot,
            in_flight: AtomicUsize::new(0),
            opened: Instant::now(),
            last_busy_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis();
        self.last_busy_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.slot.release();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let busy_until =
                self.opened + Duration::from_millis(self.last_busy_ms.load(Ordering::Acquire));
            let deadline = busy_until + limit;
            if self.in_flight.load(Ordering::Acquire) > 0 {
                // Look again a whole `limit` later (a long poll is held for a ping interval).
                tokio::time::sleep(limit).await;
            } else if Instant::now() < deadline {
                tokio::time::sleep_until(deadline).await;
            } else {
                return;
            }
        }
    }
}

/// One request in flight, from the router's call until its response body is written (or
/// dropped).
struct InFlight(Arc<ConnectionState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router as one connection's hyper service.
struct ConnectionService {
    router: Router,
    peer: SocketAddr,
    state: Arc<ConnectionState>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnectionService {
    type Response = hyper::Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.state.request_started();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let response = self.router.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request in flight until it is written or dropped.
pub struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    #[test]
    fn pending_slots_stop_at_the_bound_and_come_back_once() {
        let count = Arc::new(PendingCount::new(2));
        let a = PendingSlot::reserve(&count).expect("first");
        let b = PendingSlot::reserve(&count).expect("second");
        assert!(PendingSlot::reserve(&count).is_none());
        a.release();
        a.release();
        assert_eq!(count.now.load(Ordering::Acquire), 1);
        drop(a);
        assert_eq!(count.now.load(Ordering::Acquire), 1, "released once only");
        let c = PendingSlot::reserve(&count).expect("a slot came back");
        drop((b, c));
        assert_eq!(count.now.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_connection_is_idle_only_with_no_request_in_flight() {
        let count = Arc::new(PendingCount::new(1));
        let state = Arc::new(ConnectionState::new(
            PendingSlot::reserve(&count).expect("slot"),
        ));
        let limit = Duration::from_millis(100);
        let request = state.request_started();
        assert_eq!(
            count.now.load(Ordering::Acquire),
            0,
            "the first request frees the slot"
        );
        let idle = tokio::time::timeout(limit * 4, state.idle_for(limit));
        assert!(idle.await.is_err(), "a request in flight is not idle");
        drop(request);
        let ended = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), state.idle_for(limit))
            .await
            .expect("idle once the request ended");
        assert!(ended.elapsed() >= limit);
    }

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            max_pending: 16,
            max_header_bytes: 16 * 1024,
        }
    }

    /// Serves `router` on a free loopback port until the returned sender fires.
    async fn serving(
        router: Router,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router, limits(), async {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    }

    async fn get(stream: &mut tokio::net::TcpStream, path: &str, close: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let connection = if close { "close" } else { "keep-alive" };
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        let mut chunk = [0u8; 1024];
        // Enough for these tests' short bodies: read until the head and the body's length.
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .expect("a response in time")
                .expect("read");
            response.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&response).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|l| l.trim().parse::<usize>().ok());
                if n == 0 || length.is_some_and(|l| body.len() >= l) {
                    return text;
                }
            }
            assert!(n > 0, "closed before a whole response: {text:?}");
        }
    }

    #[tokio::test]
    async fn every_request_carries_its_peer_address() {
        let router = Router::new().route(
            "/peer",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.to_string()
            }),
        );
        let (addr, stop, task) = serving(router).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let local = stream.local_addr().expect("local");
        let response = get(&mut stream, "/peer", true).await;
        assert!(
            response.ends_with(&format!("\r\n\r\n{local}")),
            "{response}"
        );
        let _ = stop.send(());
        task.await.expect("serve ends");
    }

    #[tokio::test]
    async fn shutdown_lets_a_request_in_flight_finish_and_closes_idle_connections() {
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let entered = Arc::new(std::sync::Mutex::new(Some(entered_tx)));
        let router = Router::new()
            .route("/fast", axum::routing::get(|| async { "fast" }))
            .route(
                "/slow",
                axum::routing::get(move || {
                    let entered = entered.clone();
                    async move {
                        if let Some(tx) = entered.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        "slow"
                    }
                }),
            );
        let (addr, stop, task) = serving(router).await;
        let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert!(get(&mut idle, "/fast", false).await.ends_with("fast"));
        let slow = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            get(&mut stream, "/slow", false).await
        });
        entered_rx.await.expect("the slow request started");
        let _ = stop.send(());
        assert!(
            slow.await.expect("joined").ends_with("slow"),
            "finished after the signal"
        );
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("serve returns once its connections closed")
            .expect("joined");
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(1), idle.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the idle connection was closed"
        );
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );
    }
}
