use crate::helpers::{http_request, spawn_app, tcp_socket_in_this_process};

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await, (200, "ok".to_owned()));
}

#[tokio::test]
async fn pages_are_rendered_on_the_server() {
    let app = spawn_app().await;
    let (status, body) = app.get("/signin").await;
    assert_eq!(status, 200);
    assert!(body.contains("<h1>Tether</h1>"), "{body}");
    assert!(body.contains("Your name"));
    assert!(body.contains("<title>Sign in · Tether</title>"), "{body}");
    // The session lives in the browser: the server renders a placeholder the client replaces.
    let (status, body) = app.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("Loading your session"), "{body}");
    let (status, body) = app.get("/about").await;
    assert_eq!(status, 200);
    assert!(body.contains("About Tether"));
    assert!(body.contains("<title>About · Tether</title>"));
}

#[tokio::test]
async fn pages_are_gzipped_for_browsers_that_accept_it() {
    let app = spawn_app().await;
    let (status, head, _) = http_request(app.addr, "/signin", &["Accept-Encoding: gzip, br"]).await;
    assert_eq!(status, 200);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    assert!(head.contains("vary: cookie"), "{head}");
    // Not asked for: the page as it is.
    let (status, head, body) = http_request(app.addr, "/signin", &[]).await;
    assert_eq!(status, 200);
    assert!(
        !head.to_ascii_lowercase().contains("content-encoding"),
        "{head}"
    );
    assert!(body.contains("<h1>Tether</h1>"), "{body}");
}

#[tokio::test]
async fn unknown_pages_are_404() {
    let app = spawn_app().await;
    let (status, _) = app.get("/no/such/page").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn metrics_report_sockets_users_and_messages() {
    let app = spawn_app().await;
    let ada = app.connect_as("ada").await;
    ada.send(&ada.user_id, "count me").await;
    let (status, body) = app.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "tether_sockets_connected",
        "tether_users_online",
        "tether_messages_stored_total",
        "tether_store_latency_seconds",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
}

#[tokio::test]
async fn the_servers_connections_send_small_frames_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let mut client = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // An answered request: the server has accepted (and set up) this connection.
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: tether\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 256];
    let n = client.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    let client_addr = client.local_addr().unwrap();
    let server_end =
        tcp_socket_in_this_process(|_, peer| peer == client_addr).expect("the server's socket");
    // Without TCP_NODELAY a frame written while the previous one is unacknowledged waits for
    // the peer's (delayed) ACK: up to 40 ms on Linux, per message.
    assert!(server_end.nodelay().unwrap(), "TCP_NODELAY is not set");
}
