//! Long-polling in a cluster without sticky sessions (issue 27): a request whose Engine.IO
//! session lives on another node is forwarded to that node.
//!
//! - **The sid names its node.** Each node claims a tag of two base64url characters in Redis
//!   (`<prefix>:sid-tag:<tag>` = `<node> <advertise url>`, kept alive with the heartbeat TTL)
//!   and every session id it makes starts with it (the vendored engineioxide's patch 0007). The
//!   opening request (no sid) is served by whichever node receives it.
//! - **Forwarding.** A socket request with a `sid` whose tag is another node's goes to the URL
//!   that node advertised (never a URL from the request), with only what engineioxide reads:
//!   method, path and query, `Content-Type`, `Origin`, the body (at most `--max-payload-bytes`),
//!   and `X-Tether-Forwarded: 1`. A request that already carries that header is never forwarded
//!   again (one hop at most), and an unknown tag gets Engine.IO's own "Session ID unknown", so
//!   the client opens a new session. The Origin check runs before this layer: a refused page is
//!   never forwarded.
//! - **The upgrade.** socket.io-client probes a WebSocket with its polling sid; through another
//!   node the upgrade is forwarded too and, once the owner answers 101, the two connections are
//!   relayed byte for byte until either side closes.
//! - **Bounds.** At most `--max-forwarded-requests` in flight (beyond: 503) and
//!   `--max-relayed-sockets` relayed WebSockets (beyond: the upgrade is refused and the client
//!   stays on polling, every request forwarded). A held-open polling GET waits at most the
//!   heartbeat (ping interval + timeout) plus 5 s, anything else the header-read timeout.
//! - **Every Redis node forwards**, even one that has no address to advertise (it serves
//!   WebSocket only, so no polling session is its own, but a load balancer may still send it
//!   another node's polling requests). Only claiming a tag needs the address.
//! - **Redis unavailable**: a tag read before is still forwarded where it was last seen; one
//!   never read is answered 503 (the client retries), not "Session ID unknown", which would
//!   end a live session.
//! - **Logs** name the tag, never a sid, URI or address.
//!
//! The tag is process-wide (socketioxide builds engineioxide's config itself): one process is
//! one node here, as it is in production and in the cluster tests (child processes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use redis::Script;
use tokio::sync::Semaphore;

use crate::store::redis::RedisConn;

/// The header a forwarded request carries; a request with it is never forwarded again.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-tether-forwarded");

/// How many tags a node tries before giving up (there are 4,096).
const CLAIM_TRIES: usize = 64;

/// How long a tag nobody holds is remembered as unknown (a request with a made-up sid costs
/// a Redis read at most this often per tag).
const UNKNOWN_FOR: Duration = Duration::from_secs(1);

/// How long a tag's lookup may wait for Redis (reconnecting, say) before the request is
/// answered without it.
const LOOKUP_WAIT: Duration = Duration::from_secs(1);

/// A held-open polling GET may wait this long past the heartbeat before it is given up.
const POLL_SLACK: Duration = Duration::from_secs(5);

/// Engine.IO's answer to a sid it does not know (as engineioxide words it).
const SID_UNKNOWN: &str = r#"{"code":"1","message":"Session ID unknown"}"#;

/// Keeps our claim (`ARGV[1]` = `<node> <url>`) on a tag alive, or takes a free one: 1 when
/// the tag is ours, 0 when another node holds it.
const CLAIM: &str = r#"
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// What a forwarding node needs: where it is reached, its limits and timings.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// `http://host:port`, how other nodes reach this one; `None`: it serves WebSocket only,
    /// claims no tag and only forwards.
    pub advertise: Option<Uri>,
    /// How long a tag outlives its last refresh (the node TTL).
    pub ttl: Duration,
    pub max_forwarded: usize,
    pub max_relayed: usize,
    pub max_body: usize,
    /// A polling GET's longest wait at the owner: the heartbeat (ping interval + timeout).
    pub heartbeat: Duration,
    /// Any other request's: the header-read timeout.
    pub request_timeout: Duration,
    /// How long a connection to another node is kept for reuse: shorter than that node's idle
    /// timeout, so this side closes it first and never sends on one the owner is closing.
    pub pool_idle: Duration,
}

/// Another node's address, as its tag names it (or nobody's).
#[derive(Debug, Clone)]
struct Cached {
    target: Option<Uri>,
    until: Instant,
}

/// This node's tag and the other nodes', and the client that forwards to them.
pub struct SidRouting {
    conn: RedisConn,
    prefix: String,
    node: String,
    options: ForwardOptions,
    own: Mutex<Option<[u8; 2]>>,
    cache: Mutex<HashMap<[u8; 2], Cached>>,
    client: Client<HttpConnector, Body>,
    forwarded: Arc<Semaphore>,
    relayed: Arc<Semaphore>,
    claim: Script,
}

/// Whether a request's `sid` names another node: its tag, if so.
fn sid_tag(uri: &Uri) -> Option<[u8; 2]> {
    let query = uri.query()?;
    let sid = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("sid="))?
        .as_bytes();
    let valid = sid.len() == 16
        && sid
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
    valid.then(|| [sid[0], sid[1]])
}

/// A random tag (two base64url characters).
fn random_tag() -> [u8; 2] {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let n = uuid::Uuid::new_v4().as_u128();
    [
        ALPHABET[(n & 63) as usize],
        ALPHABET[((n >> 6) & 63) as usize],
    ]
}

fn shown(tag: [u8; 2]) -> String {
    String::from_utf8_lossy(&tag).into_owned()
}

impl SidRouting {
    /// Claims a tag for this node and makes every new session id start with it.
    pub async fn start(
        conn: RedisConn,
        prefix: &str,
        options: ForwardOptions,
    ) -> anyhow::Result<Arc<Self>> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.request_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(options.pool_idle)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let routing = Arc::new(Self {
            conn,
            prefix: prefix.to_owned(),
            node: uuid::Uuid::new_v4().to_string(),
            forwarded: Arc::new(Semaphore::new(options.max_forwarded)),
            relayed: Arc::new(Semaphore::new(options.max_relayed)),
            options,
            own: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            client,
            claim: crate::store::redis::lua(&[CLAIM]),
        });
        if routing.options.advertise.is_some() {
            let tag = routing.claim_new().await?;
            tracing::info!(tag = %shown(tag), "session ids of this node start with its tag");
        }
        Ok(routing)
    }

    fn key(&self, tag: [u8; 2]) -> String {
        format!("{}:sid-tag:{}", self.prefix, shown(tag))
    }

    /// Whether this node serves long-polling: only with an address, where other nodes forward
    /// its sessions' requests.
    pub fn serves_polling(&self) -> bool {
        self.options.advertise.is_some()
    }

    /// This node's tag (none without an address).
    pub fn own(&self) -> Option<[u8; 2]> {
        *self.own.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn try_claim(&self, tag: [u8; 2]) -> redis::RedisResult<bool> {
        let Some(advertise) = &self.options.advertise else {
            return Ok(false);
        };
        let held: i64 = self
            .claim
            .key(self.key(tag))
            .arg(format!("{} {advertise}", self.node))
            .arg(self.options.ttl.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(held == 1)
    }

    /// Takes a free tag and makes it this node's (and its new session ids').
    async fn claim_new(&self) -> anyhow::Result<[u8; 2]> {
        for _ in 0..CLAIM_TRIES {
            let tag = random_tag();
            if self.try_claim(tag).await? {
                *self.own.lock().unwrap_or_else(|e| e.into_inner()) = Some(tag);
                engineioxide::sid_tag::set(Some(tag));
                return Ok(tag);
            }
        }
        anyhow::bail!("no free session id tag after {CLAIM_TRIES} tries (4,096 exist)")
    }

    /// Keeps the tag alive (three times per TTL); a node that lost it (paused past the TTL
    /// while another took it) claims a new one, and its older sessions' polling requests
    /// reach the new holder, which answers "Session ID unknown": their clients reconnect.
    pub async fn refresh_loop(self: Arc<Self>) {
        let Some(mut tag) = self.own() else {
            return;
        };
        let mut tick = tokio::time::interval(self.options.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.try_claim(tag).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(lost = %shown(tag), "another node took this node's session id tag; claiming a new one");
                    match self.claim_new().await {
                        Ok(new) => tag = new,
                        Err(e) => {
                            tracing::warn!(error = %e, "no new session id tag yet: this node's new sessions' polling requests reach the tag's new holder until one is claimed")
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not refresh the session id tag"),
            }
        }
    }

    /// The node a tag names: from the cache, or one Redis read. Redis unavailable: where the
    /// tag was last seen, however long ago; `Err` when it was never read.
    async fn target(&self, tag: [u8; 2]) -> Result<Option<Uri>, String> {
        let now = Instant::now();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tag)
            .cloned();
        if let Some(hit) = cached.as_ref().filter(|c| c.until > now) {
            return Ok(hit.target.clone());
        }
        let mut conn = self.conn.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.key(tag));
        let read = get.query_async(&mut conn);
        let held: Option<String> = match tokio::time::timeout(LOOKUP_WAIT, read).await {
            Ok(Ok(held)) => held,
            failed => {
                // Only a node seen holding the tag is trusted while Redis cannot be asked: "no
                // node" might be out of date, and would end a live session.
                return match cached.and_then(|c| c.target) {
                    Some(stale) => Ok(Some(stale)),
                    None => Err(match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer in time".to_owned(),
                    }),
                };
            }
        };
        let target = held.and_then(|value| {
            let (node, url) = value.split_once(' ')?;
            (node != self.node)
                .then(|| url.parse::<Uri>().ok())
                .flatten()
        });
        let keep = if target.is_some() {
            self.options.ttl / 3
        } else {
            UNKNOWN_FOR
        };
        // At most one entry per tag: the map holds at most 4,096.
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
            tag,
            Cached {
                target: target.clone(),
                until: now + keep,
            },
        );
        Ok(target)
    }
}

/// Engine.IO's "Session ID unknown": the client opens a new session.
fn sid_unknown() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        SID_UNKNOWN,
    )
        .into_response()
}

fn refused(reason: &'static str, status: StatusCode) -> Response {
    metrics::counter!("tether_forward_refused_total", "reason" => reason).increment(1);
    crate::refusals::refused(crate::refusals::Refusal::Forward);
    status.into_response()
}

/// Middleware: a socket request for another node's session goes to that node; every other
/// request passes untouched.
pub async fn forward_foreign_sid(
    State(routing): State<Arc<SidRouting>>,
    request: Request,
    next: Next,
) -> Response {
    if !crate::transport::is_socket_path(request.uri().path()) {
        return next.run(request).await;
    }
    let Some(tag) = sid_tag(request.uri()).filter(|tag| Some(*tag) != routing.own()) else {
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED) {
        // Forwarded once already (or a client pretending): never a second hop.
        return sid_unknown();
    }
    let target = match routing.target(tag).await {
        Ok(Some(target)) => target,
        Ok(None) => {
            metrics::counter!("tether_forward_refused_total", "reason" => "unknown_tag")
                .increment(1);
            return sid_unknown();
        }
        Err(e) => {
            tracing::debug!(tag = %shown(tag), error = %e, "could not read which node holds a session id tag");
            return refused("store_unavailable", StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    let upgrade = is_upgrade(request.headers());
    tracing::debug!(tag = %shown(tag), upgrade, "forwarding a request to the node that holds its session");
    if upgrade {
        relay_upgrade(&routing, target, request).await
    } else {
        forward(&routing, target, request).await
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// The request to send to `target`: the same method, path and query, the headers
/// engineioxide reads, and the forwarded mark.
fn outgoing(
    target: &Uri,
    request: &axum::http::request::Parts,
    body: Body,
    extra: &[HeaderName],
) -> Option<axum::http::Request<Body>> {
    let path = request.uri.path_and_query()?.as_str();
    let uri = format!("{}{}", target.to_string().trim_end_matches('/'), path);
    let mut builder = axum::http::Request::builder()
        .method(request.method.clone())
        .uri(uri);
    for name in [header::CONTENT_TYPE, header::ORIGIN]
        .iter()
        .chain(extra.iter())
    {
        if let Some(value) = request.headers.get(name) {
            builder = builder.header(name, value.clone());
        }
    }
    builder
        .header(FORWARDED, HeaderValue::from_static("1"))
        .body(body)
        .ok()
}

/// A polling GET or POST, answered by the owner. A GET that found its pooled connection
/// closed under it is sent once more (it carried nothing; a POST is never sent twice).
async fn forward(routing: &SidRouting, target: Uri, request: Request) -> Response {
    let Ok(_permit) = routing.forwarded.clone().try_acquire_owned() else {
        return refused("busy", StatusCode::SERVICE_UNAVAILABLE);
    };
    let get = request.method() == Method::GET;
    let wait = if get {
        routing.options.heartbeat + POLL_SLACK
    } else {
        routing.options.request_timeout
    };
    let (parts, body) = request.into_parts();
    // The whole body within the header-read time (the body timeout restarts at each chunk, and
    // a slow body would hold its forward slot for as long as it trickles).
    let read = axum::body::to_bytes(body, routing.options.max_body);
    let body = match tokio::time::timeout(routing.options.request_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return body_refused(&e),
        Err(_) => return refused("body_timeout", StatusCode::REQUEST_TIMEOUT),
    };
    let attempt = || async {
        let outgoing = outgoing(&target, &parts, Body::from(body.clone()), &[])?;
        Some(tokio::time::timeout(wait, routing.client.request(outgoing)).await)
    };
    let mut result = attempt().await;
    if get && matches!(&result, Some(Ok(Err(e))) if is_closed_pooled(e)) {
        result = attempt().await;
    }
    match result {
        None => sid_unknown(),
        Some(Ok(Ok(answer))) => {
            metrics::counter!("tether_forwarded_requests_total", "kind" => "poll").increment(1);
            let (parts, body) = answer.into_parts();
            let mut response = Response::new(Body::new(body));
            *response.status_mut() = parts.status;
            if let Some(kind) = parts.headers.get(header::CONTENT_TYPE) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, kind.clone());
            }
            response
        }
        // Counted (and reported in the periodic refusal summary), not logged one by one: an
        // unreachable node would otherwise write a line per request.
        Some(Ok(Err(_))) => refused("unreachable", StatusCode::BAD_GATEWAY),
        Some(Err(_)) => refused("timeout", StatusCode::GATEWAY_TIMEOUT),
    }
}

/// Whether a forwarded request failed because the pooled connection it went out on was closed
/// by the other side before any answer (hyper's "connection closed before message completed").
fn is_closed_pooled(e: &hyper_util::client::legacy::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<hyper::Error>())
        .is_some_and(|e| e.is_incomplete_message())
}

/// A request body that could not be read whole: over `--max-payload-bytes` (413), not in
/// within the header-read time (408), or cut off (400).
fn body_refused(e: &axum::Error) -> Response {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return refused("too_large", StatusCode::PAYLOAD_TOO_LARGE);
        }
        if error.is::<tower_http::timeout::TimeoutError>() {
            return refused("body_timeout", StatusCode::REQUEST_TIMEOUT);
        }
        source = error.source();
    }
    refused("body_unread", StatusCode::BAD_REQUEST)
}

/// The headers of a WebSocket upgrade that go to the owner, and those of its answer that come
/// back.
const UPGRADE_REQUEST: [HeaderName; 5] = [
    header::UPGRADE,
    header::CONNECTION,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_EXTENSIONS,
];
const UPGRADE_ANSWER: [HeaderName; 4] = [
    header::UPGRADE,
    header::CONNECTION,
    header::SEC_WEBSOCKET_ACCEPT,
    header::SEC_WEBSOCKET_EXTENSIONS,
];

/// A WebSocket upgrade for another node's session: forwarded, then relayed byte for byte.
async fn relay_upgrade(routing: &SidRouting, target: Uri, mut request: Request) -> Response {
    let Ok(permit) = routing.relayed.clone().try_acquire_owned() else {
        // The client's upgrade probe fails and it stays on polling.
        return refused("relays_full", StatusCode::SERVICE_UNAVAILABLE);
    };
    let client_side = hyper::upgrade::on(&mut request);
    let (parts, _) = request.into_parts();
    let Some(outgoing) = outgoing(&target, &parts, Body::empty(), &UPGRADE_REQUEST) else {
        return sid_unknown();
    };
    let answer = match tokio::time::timeout(
        routing.options.request_timeout,
        routing.client.request(outgoing),
    )
    .await
    {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => return refused("unreachable", StatusCode::BAD_GATEWAY),
        Err(_) => return refused("timeout", StatusCode::GATEWAY_TIMEOUT),
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = answer.status();
    for name in UPGRADE_ANSWER {
        if let Some(value) = answer.headers().get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The owner refused (the session ended, say): its answer, with no upgrade.
        if let Some(kind) = answer.headers().get(header::CONTENT_TYPE) {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, kind.clone());
        }
        let body = answer.into_body();
        *response.body_mut() = Body::new(body);
        return response;
    }
    metrics::counter!("tether_forwarded_requests_total", "kind" => "upgrade").increment(1);
    let owner_side = hyper::upgrade::on(answer);
    tokio::spawn(async move {
        let _permit = permit;
        let gauge = metrics::gauge!("tether_relayed_sockets");
        gauge.increment(1.0);
        if let (Ok(client), Ok(owner)) = (client_side.await, owner_side.await) {
            relay(TokioIo::new(client), TokioIo::new(owner)).await;
        }
        gauge.decrement(1.0);
    });
    response
}

/// How long the other direction of a relay may still drain once one side ended.
const RELAY_DRAIN: Duration = Duration::from_secs(2);

/// Copies bytes both ways. When one side ends (end of stream or an error), its end is passed
/// on (the other side's write half is shut down, so what was sent arrives, then the end), and
/// the other direction has [`RELAY_DRAIN`] to finish before both connections are dropped.
/// Waiting for both directions without a bound would hold the relay slot for a client that
/// vanished until the kernel gave up on its connection (minutes): once the owner closed the
/// session (its heartbeat unanswered), nothing else would end the other direction.
async fn relay<C, O>(client: C, owner: O)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    O: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    use tokio::io::AsyncWriteExt;
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_owner, mut to_owner) = tokio::io::split(owner);
    let upstream = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_owner).await;
        let _ = to_owner.shutdown().await;
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut from_owner, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        _ = &mut upstream => {
            let _ = tokio::time::timeout(RELAY_DRAIN, downstream).await;
        }
        _ = &mut downstream => {
            let _ = tokio::time::timeout(RELAY_DRAIN, upstream).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_sid_has_a_tag() {
        let tag = |uri: &str| sid_tag(&uri.parse().unwrap());
        assert_eq!(
            tag("/socket.io/?EIO=4&transport=polling&sid=Qz0123456789abcd"),
            Some(*b"Qz")
        );
        assert_eq!(
            tag("/socket.io/?sid=Qz0123456789abcd&EIO=4&transport=websocket"),
            Some(*b"Qz")
        );
        assert_eq!(tag("/socket.io/?EIO=4&transport=polling"), None, "the open");
        assert_eq!(tag("/socket.io/?EIO=4&sid=short"), None);
        assert_eq!(tag("/socket.io/?EIO=4&sid=Qz0123456789abc%"), None);
        assert_eq!(tag("/socket.io/?EIO=4&xsid=Qz0123456789abcd"), None);
    }

    /// The relay ends as soon as one side ends, though the other never does (a client that
    /// vanished without closing).
    #[tokio::test]
    async fn the_relay_ends_when_either_side_ends() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut silent_client) = tokio::io::duplex(64);
        let (owner, mut closing_owner) = tokio::io::duplex(64);
        let relay = tokio::spawn(relay(client, owner));
        closing_owner.write_all(b"bye").await.unwrap();
        let mut got = [0; 3];
        silent_client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"bye", "bytes pass through");
        drop(closing_owner);
        tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .expect("the relay ended with the owner's side")
            .unwrap();
    }

    /// What a side wrote just before it closed arrives, and then the end.
    #[tokio::test]
    async fn the_last_bytes_before_a_close_arrive_and_then_the_end() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut reader) = tokio::io::duplex(64);
        let (owner, mut closing_owner) = tokio::io::duplex(64);
        let relay = tokio::spawn(relay(client, owner));
        closing_owner.write_all(b"last frame").await.unwrap();
        drop(closing_owner);
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut got))
            .await
            .expect("the end reaches the client")
            .unwrap();
        assert_eq!(got, b"last frame");
        drop(reader);
        tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .expect("the relay ended")
            .unwrap();
    }

    #[test]
    fn tags_are_base64url() {
        for _ in 0..256 {
            assert!(random_tag()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'));
        }
    }
}
