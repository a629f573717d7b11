//! CORS for `/socket.io/`: a page on an allowed origin can poll (the official client's default
//! transport before it upgrades), as socket.io's own `cors` option allows; a refused origin gets
//! its 403 and nothing that would let a browser read it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app_with, TestApp};

/// The tutorial's setup: the page on :8080, the server elsewhere.
const PAGE: &str = "http://localhost:8080";
const POLLING: &str = "/socket.io/?EIO=4&transport=polling";

struct Answer {
    status: u16,
    /// Header names lower-cased, in the order they came.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `Vary` entries, however they were split over header lines.
    fn vary(&self) -> Vec<String> {
        self.all("vary")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_ascii_lowercase())
            .collect()
    }

    fn cors_headers(&self) -> Vec<&str> {
        self.headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("access-control-"))
            .collect()
    }
}

/// One HTTP/1.1 request on its own connection; reads the head and a `Content-Length` body (an
/// upgraded connection's 101 has none), within two seconds.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let length = if method == "POST" {
        format!("Content-Length: {}\r\n", body.len())
    } else {
        String::new()
    };
    let close = if headers.iter().any(|h| h.starts_with("Connection:")) {
        ""
    } else {
        "Connection: close\r\n"
    };
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}{length}{close}\r\n{body}");
    stream.write_all(request.as_bytes()).await.expect("write");
    let read = async {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.expect("read");
            bytes.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let answer = parse(head, rest);
                let expected: usize = answer
                    .all("content-length")
                    .first()
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                if answer.body.len() >= expected || n == 0 {
                    return answer;
                }
            } else if n == 0 {
                return parse(&text, "");
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .expect("an answer within 2 s")
}

fn parse(head: &str, body: &str) -> Answer {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn server(credentials: bool) -> TestApp {
    spawn_app_with(|c| {
        c.allowed_origins = vec![PAGE.into()];
        c.cors_allow_credentials = credentials;
    })
    .await
}

fn origin(origin: &str) -> String {
    format!("Origin: {origin}")
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_with_its_origin_never_a_wildcard() {
    let app = server(false).await;
    let page = origin(PAGE);
    let answer = request(
        app.addr,
        "OPTIONS",
        POLLING,
        &[
            &page,
            "Access-Control-Request-Method: POST",
            "Access-Control-Request-Headers: content-type",
        ],
        "",
    )
    .await;
    assert_eq!(answer.status, 204, "{:?}", answer.headers);
    assert_eq!(answer.all("access-control-allow-origin"), [PAGE]);
    assert_eq!(answer.all("access-control-allow-methods"), ["GET, POST"]);
    assert_eq!(answer.all("access-control-allow-headers"), ["content-type"]);
    assert_eq!(answer.all("access-control-max-age"), ["7200"]);
    assert!(answer.all("access-control-allow-credentials").is_empty());
    let vary = answer.vary();
    assert!(
        vary.contains(&"origin".to_owned())
            && vary.contains(&"access-control-request-headers".to_owned()),
        "{vary:?}"
    );
}

#[tokio::test]
async fn a_page_on_an_allowed_origin_signs_in_over_polling_and_may_read_every_answer() {
    let app = server(false).await;
    let page = origin(PAGE);
    let open = request(app.addr, "GET", POLLING, &[&page], "").await;
    assert_eq!(open.status, 200, "{}", open.body);
    assert_eq!(open.all("access-control-allow-origin"), [PAGE]);
    assert!(open.vary().contains(&"origin".to_owned()));
    assert!(open.all("access-control-allow-credentials").is_empty());
    let sid = open
        .body
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an Engine.IO open packet with a sid");
    let polling = format!("{POLLING}&sid={sid}");

    let sent = request(
        app.addr,
        "POST",
        &polling,
        &[&page, "Content-Type: text/plain;charset=UTF-8"],
        r#"40{"username":"alice"}"#,
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(sent.all("access-control-allow-origin"), [PAGE]);
    assert!(sent.vary().contains(&"origin".to_owned()));

    // The CONNECT answer, then `session` (each poll answers what is waiting, or a ping).
    let mut bodies = String::new();
    for _ in 0..5 {
        let received = request(app.addr, "GET", &polling, &[&page], "").await;
        assert_eq!(received.status, 200, "{}", received.body);
        assert_eq!(received.all("access-control-allow-origin"), [PAGE]);
        bodies.push_str(&received.body);
        if bodies.contains("\"session\"") {
            return;
        }
    }
    panic!("no `session` in five polls: {bodies}");
}

#[tokio::test]
async fn credentials_are_allowed_only_with_cors_allow_credentials() {
    let app = server(true).await;
    let page = origin(PAGE);
    let preflight = request(
        app.addr,
        "OPTIONS",
        POLLING,
        &[&page, "Access-Control-Request-Method: GET"],
        "",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.all("access-control-allow-credentials"), ["true"]);
    assert_eq!(preflight.all("access-control-allow-origin"), [PAGE]);
    let open = request(app.addr, "GET", POLLING, &[&page], "").await;
    assert_eq!(open.status, 200);
    assert_eq!(open.all("access-control-allow-credentials"), ["true"]);
    assert_eq!(open.all("access-control-allow-origin"), [PAGE]);
}

#[tokio::test]
async fn a_disallowed_origin_gets_403_and_no_cors_headers_even_on_a_preflight() {
    let app = server(true).await;
    for foreign in [
        "http://evil.example",
        "http://localhost:8081",
        "https://localhost:8080",
        "null",
    ] {
        let foreign = origin(foreign);
        let preflight = request(
            app.addr,
            "OPTIONS",
            POLLING,
            &[
                &foreign,
                "Access-Control-Request-Method: POST",
                "Access-Control-Request-Headers: content-type",
            ],
            "",
        )
        .await;
        let plain = request(app.addr, "GET", POLLING, &[&foreign], "").await;
        let post = request(
            app.addr,
            "POST",
            &format!("{POLLING}&sid=x"),
            &[&foreign],
            "40",
        )
        .await;
        for answer in [preflight, plain, post] {
            assert_eq!(answer.status, 403, "{foreign}");
            assert!(
                answer.cors_headers().is_empty(),
                "{foreign}: {:?}",
                answer.headers
            );
            assert!(answer.vary().is_empty(), "{foreign}: {:?}", answer.headers);
        }
    }
}

#[tokio::test]
async fn requests_without_origin_and_websocket_upgrades_get_no_cors_headers() {
    let app = server(true).await;
    let open = request(app.addr, "GET", POLLING, &[], "").await;
    assert_eq!(open.status, 200);
    assert!(open.cors_headers().is_empty(), "{:?}", open.headers);
    let page = origin(PAGE);
    let upgrade = request(
        app.addr,
        "GET",
        "/socket.io/?EIO=4&transport=websocket",
        &[
            &page,
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ],
        "",
    )
    .await;
    assert_eq!(upgrade.status, 101, "{:?}", upgrade.headers);
    assert!(upgrade.cors_headers().is_empty(), "{:?}", upgrade.headers);
}
