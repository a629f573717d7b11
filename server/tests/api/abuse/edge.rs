//! See `super`. The connection's edge: TCP connections that never send a request or send half
//! of one, the bound on connections still waiting for their first request, and the Origin
//! check against DNS rebinding.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::helpers::{http_get, spawn_app, spawn_app_with};

const POLLING: &str = "/socket.io/?EIO=4&transport=polling";

/// Waits until the server closes `stream` (EOF or reset), at most `within`; false if it is
/// still open then. Whatever the server sent before closing is ignored.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` from a kept-alive connection.
async fn read_response(stream: &mut TcpStream, within: Duration) -> (u16, String) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response");
        bytes.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("a Content-Length");
        if body.len() >= length {
            let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            return (status.unwrap_or(0), body.to_owned());
        }
    }
}

/// Sends `head` (a whole request head) and reads the status of the answer, on a connection of
/// its own.
async fn status_of(addr: SocketAddr, head: String) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed_within_the_header_timeout() {
    const EACH: usize = 300;
    let timeout = Duration::from_millis(500);
    let app = spawn_app_with(|c| {
        c.header_read_timeout_ms = timeout.as_millis() as u64;
        // The header-read timeout alone is under test.
        c.idle_timeout_ms = 60_000;
    })
    .await;
    let opened = Instant::now();
    let mut streams = Vec::with_capacity(2 * EACH);
    for i in 0..2 * EACH {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        if i % 2 == 1 {
            // Half a request head: the request line and one header, never the blank line.
            let half = format!("GET / HTTP/1.1\r\nHost: {}\r\n", app.addr);
            stream.write_all(half.as_bytes()).await.expect("write");
        }
        streams.push(stream);
    }
    let margin = Duration::from_millis(1500);
    let deadline = opened + timeout + margin;
    let closes = streams.into_iter().map(|mut stream| async move {
        closed_within(&mut stream, deadline - Instant::now()).await
    });
    let closed = futures_util::future::join_all(closes).await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(
        open,
        0,
        "{open} of {} connections still open {:?} after they opened",
        2 * EACH,
        opened.elapsed()
    );
    // The server still serves.
    assert_eq!(app.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_request_head_past_its_byte_bound_is_refused_with_431() {
    let app = spawn_app_with(|c| c.max_header_bytes = 4096).await;
    let padding = "a".repeat(8 * 1024);
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Padding: {padding}\r\nConnection: close\r\n\r\n",
        app.addr
    );
    assert_eq!(status_of(app.addr, big).await, 431);
    let small = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
        app.addr,
        &padding[..2048]
    );
    assert_eq!(status_of(app.addr, small).await, 200);
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let app = spawn_app_with(|c| {
        c.idle_timeout_ms = idle.as_millis() as u64;
        c.header_read_timeout_ms = 60_000;
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    stream.write_all(request.as_bytes()).await.expect("write");
    assert_eq!(
        read_response(&mut stream, Duration::from_secs(5)).await.0,
        200
    );
    let answered = Instant::now();
    // Kept alive for a second request within the idle timeout...
    stream.write_all(request.as_bytes()).await.expect("write");
    assert_eq!(
        read_response(&mut stream, Duration::from_secs(5)).await.0,
        200
    );
    // ...and closed once idle that long.
    assert!(closed_within(&mut stream, idle + Duration::from_secs(1)).await);
    assert!(answered.elapsed() >= idle);
}

#[tokio::test]
async fn the_header_timeout_also_bounds_the_wait_for_a_kept_alive_connections_next_request() {
    // hyper restarts its header-read timer once a response is written: a connection waiting
    // for its next request is closed at that timeout whatever the idle timeout says.
    let timeout = Duration::from_millis(300);
    let app = spawn_app_with(|c| {
        c.header_read_timeout_ms = timeout.as_millis() as u64;
        c.idle_timeout_ms = 60_000;
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    stream.write_all(request.as_bytes()).await.expect("write");
    assert_eq!(
        read_response(&mut stream, Duration::from_secs(5)).await.0,
        200
    );
    let answered = Instant::now();
    assert!(closed_within(&mut stream, timeout + Duration::from_secs(1)).await);
    assert!(answered.elapsed() >= timeout);
}

#[tokio::test]
async fn connections_past_the_pending_bound_are_closed_at_once() {
    const BOUND: usize = 50;
    const EXTRA: usize = 10;
    let app = spawn_app_with(|c| {
        c.max_pending_connections = BOUND as u32;
        c.header_read_timeout_ms = 10_000;
        c.idle_timeout_ms = 10_000;
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..BOUND + EXTRA {
        streams.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    // Which ones the server closes depends on the order it accepts them in; count them. Full,
    // it waits a second for a slot before it closes new connections.
    let checks = streams.into_iter().map(|mut stream| async move {
        let closed = closed_within(&mut stream, Duration::from_secs(3)).await;
        (closed, stream)
    });
    let (closed, open): (Vec<_>, Vec<_>) = futures_util::future::join_all(checks)
        .await
        .into_iter()
        .partition(|(closed, _)| *closed);
    assert_eq!(closed.len(), EXTRA, "closed past the bound of {BOUND}");
    // Full: a new connection is closed too, whatever it would have asked.
    let mut late = TcpStream::connect(app.addr).await.expect("connect");
    assert!(closed_within(&mut late, Duration::from_secs(1)).await);
    // Once the pending ones send their request, new connections are served again.
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    for (_, mut stream) in open {
        stream.write_all(request.as_bytes()).await.expect("write");
        assert_eq!(
            read_response(&mut stream, Duration::from_secs(5)).await.0,
            200
        );
    }
    let (status, metrics) = app.get("/metrics").await;
    assert_eq!(status, 200);
    let refused: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"tether_connections_refused_total{reason="pending_limit"} "#)
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("the refusals are counted");
    assert!(refused >= (EXTRA + 1) as f64, "{refused}");
}

#[tokio::test]
async fn an_honest_connect_storm_past_the_pending_bound_is_served_whole() {
    // Connections that send their request at once hold a slot only until the server reads it:
    // past the bound the server waits for slots instead of closing connections.
    const BOUND: usize = 20;
    const STORM: usize = 400;
    let app = spawn_app_with(|c| c.max_pending_connections = BOUND as u32).await;
    let addr = app.addr;
    let requests = (0..STORM).map(|_| async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {POLLING} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        read_response(&mut stream, Duration::from_secs(20)).await.0
    });
    let statuses = futures_util::future::join_all(requests).await;
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(served, STORM, "{statuses:?}");
}

#[tokio::test]
async fn a_websocket_and_a_long_poll_outlive_the_header_and_idle_timeouts() {
    let timeout = Duration::from_millis(300);
    let ping = Duration::from_millis(1500);
    let app = spawn_app_with(|c| {
        c.header_read_timeout_ms = timeout.as_millis() as u64;
        c.idle_timeout_ms = timeout.as_millis() as u64;
        c.ping_interval_ms = ping.as_millis() as u64;
        c.ping_timeout_ms = 1000;
    })
    .await;
    let ada = app.connect_as("ada").await;

    // A long poll: the handshake, then a GET the server holds until it has a packet to send
    // (the first ping, `ping` after the handshake), on one kept-alive connection.
    let mut poll = TcpStream::connect(app.addr).await.expect("connect");
    let get = |path: String| format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    poll.write_all(get(POLLING.to_owned()).as_bytes())
        .await
        .expect("write");
    let (status, open) = read_response(&mut poll, Duration::from_secs(5)).await;
    assert_eq!(status, 200, "{open}");
    let handshake: serde_json::Value =
        serde_json::from_str(open.strip_prefix('0').expect("an open packet")).expect("json");
    let sid = handshake["sid"].as_str().expect("sid");
    let held = Instant::now();
    poll.write_all(get(format!("{POLLING}&sid={sid}")).as_bytes())
        .await
        .expect("write");
    let (status, packets) = read_response(&mut poll, ping + Duration::from_secs(5)).await;
    assert_eq!(status, 200);
    assert_eq!(packets, "2", "the server's ping ended the poll");
    assert!(
        held.elapsed() >= timeout * 3,
        "held {:?}: longer than the timeouts",
        held.elapsed()
    );

    // The websocket opened before the poll lived through all of it.
    let restored = ada.sync().await;
    assert!(restored["ok"]["messages"].is_array(), "{restored}");
    assert!(!app.io.within(ada.user_id.clone()).sockets().is_empty());
}

#[tokio::test]
async fn a_rebinding_page_is_refused_whatever_host_it_names() {
    let app = spawn_app().await;
    let port = app.addr.port();
    let polling = |origin: &str, host: &str| {
        format!("GET {POLLING} HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n")
    };
    let evil = format!("http://evil.example:{port}");
    let own_host = app.addr.to_string();
    let evil_host = format!("evil.example:{port}");
    // DNS rebinding: the browser names the attacker's host in both headers.
    assert_eq!(status_of(app.addr, polling(&evil, &evil_host)).await, 403);
    assert_eq!(status_of(app.addr, polling(&evil, &own_host)).await, 403);
    // The server's own host and port under another scheme is another origin.
    let https = format!("https://{}", app.addr);
    assert_eq!(status_of(app.addr, polling(&https, &own_host)).await, 403);
    // A websocket upgrade from the rebinding page is refused too.
    let upgrade = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {evil_host}\r\n\
         Origin: {evil}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    assert_eq!(status_of(app.addr, upgrade).await, 403);
    // The page the server serves itself passes, whatever Host it was reached by.
    let own = format!("http://{}", app.addr);
    assert_eq!(status_of(app.addr, polling(&own, &own_host)).await, 200);
    let localhost = format!("http://localhost:{port}");
    assert_eq!(
        status_of(app.addr, polling(&localhost, &evil_host)).await,
        200
    );
    let (status, _) = http_get(app.addr, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_request_body_that_trickles_in_is_cut_off_at_the_header_timeout() {
    let timeout = Duration::from_millis(400);
    let app = spawn_app_with(|c| {
        c.header_read_timeout_ms = timeout.as_millis() as u64;
        c.idle_timeout_ms = 60_000;
    })
    .await;
    // A polling session (no sign-in needed for a sid), then a POST that promises a body and
    // sends a few bytes of it: before, it held its connection (and its buffer) for good.
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!("GET {POLLING} HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    stream.write_all(head.as_bytes()).await.expect("write");
    let (status, open) = read_response(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(status, 200, "{open}");
    let handshake: serde_json::Value =
        serde_json::from_str(open.strip_prefix('0').expect("an open packet")).expect("json");
    let sid = handshake["sid"].as_str().expect("sid");
    let post = format!(
        "POST {POLLING}&sid={sid} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\n\
         Content-Length: 1000\r\n\r\n40",
        app.addr
    );
    let sent = Instant::now();
    stream.write_all(post.as_bytes()).await.expect("write");
    // Answered (with an error) and the connection let go within the timeout and a margin.
    assert!(
        closed_within(&mut stream, timeout + Duration::from_millis(2500)).await,
        "the connection was still open {:?} after a body that stopped",
        sent.elapsed()
    );
}
