//! Passkey sign-in floods (issue #25): a finish pays a token before the store is asked
//! anything, and a ceremony id that is not 32 lowercase hex digits is refused at the edge. On
//! Redis, where taking a ceremony is a `GETDEL`, the commands the flood cost are counted.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{http_exchange, ChildServer, RedisServer};

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, String, Value) {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, head, body) = http_exchange(addr, &request, Duration::from_secs(5)).await;
    (
        status,
        head,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

/// Calls of `command` the Redis served so far.
async fn calls(conn: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A flood of finishes with guessed ceremony ids, well formed or not: the malformed ones are a
/// typed 400 that costs nothing, the well-formed ones take a token each before the store is
/// asked, so past the burst they are refused 429 without a take. The store serves at most the
/// burst's worth of takes, and the start route, out of tokens too, reads nothing. (Before, every
/// finish took first and paid only after a miss: the store served one `GETDEL` per request,
/// `{`, `:` and 64 characters included.)
#[tokio::test]
async fn a_flood_of_guessed_ceremonies_is_refused_before_the_store() {
    const BURST: u32 = 3;
    const SENT: usize = 120;
    let redis = RedisServer::start_own().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = redis.node_args();
    args.extend(
        [
            "--passkeys",
            "--passkey-ceremony-burst-per-ip",
            &BURST.to_string(),
            "--passkey-ceremonies-per-ip-per-min",
            "1",
        ]
        .map(str::to_owned),
    );
    let app = ChildServer::start_with(dir.path(), &args).await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let malformed = [
        "{x}".to_owned(),
        "a:b".to_owned(),
        "0123456789ABCDEF0123456789ABCDEF".to_owned(),
        "0123456789abcdef0123456789abcde".to_owned(),
        "f".repeat(64),
        "*".to_owned(),
    ];
    let before = calls(&mut conn, "getdel").await;
    let mut statuses = std::collections::BTreeMap::<(u16, String), usize>::new();
    for i in 0..SENT {
        let ceremony = if i % 2 == 0 {
            malformed[(i / 2) % malformed.len()].clone()
        } else {
            format!("{i:032x}")
        };
        let (status, head, body) = post(
            app.addr,
            "/api/passkey/signin",
            &json!({ "ceremony": ceremony, "credential": {} }),
        )
        .await;
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match (i % 2, status) {
            (0, _) => assert_eq!(
                (status, code.as_str()),
                (400, "invalid_payload"),
                "{ceremony}"
            ),
            (_, 410) => assert_eq!(code, "ceremony_expired"),
            (_, 429) => {
                assert_eq!(code, "rate_limited");
                assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
            }
            _ => panic!("{ceremony}: {status} {body}"),
        }
        *statuses.entry((status, code)).or_default() += 1;
    }
    let taken = calls(&mut conn, "getdel").await - before;
    assert_eq!(
        statuses.get(&(410, "ceremony_expired".to_owned())),
        Some(&(BURST as usize)),
        "{statuses:?}"
    );
    assert_eq!(taken, u64::from(BURST), "{statuses:?}");

    // The start route, out of tokens as well: refused before the account is looked up.
    let scripts = calls(&mut conn, "evalsha").await;
    for _ in 0..SENT {
        let (status, _, _) = post(
            app.addr,
            "/api/passkey/options",
            &json!({ "username": "nobody" }),
        )
        .await;
        assert_eq!(status, 429);
    }
    let run = calls(&mut conn, "evalsha").await - scripts;
    // The node's own heartbeat and expiry sweeps run scripts meanwhile; a lookup per start
    // would be SENT more.
    assert!(
        run < SENT as u64 / 4,
        "{run} scripts run for {SENT} refused starts"
    );
    // Counted apart from sign-ups.
    let (status, metrics) = crate::helpers::http_get(app.addr, "/metrics").await;
    assert_eq!(status, 200);
    let refused: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"tether_passkey_ceremonies_refused_total{limit="address"} "#)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("counted:\n{metrics}"));
    assert_eq!(
        refused as usize,
        SENT / 2 - BURST as usize + SENT,
        "{statuses:?}"
    );
    assert!(
        !metrics.contains("tether_signups_refused_total"),
        "no sign-up was refused"
    );
    eprintln!("guessed ceremony flood: {statuses:?}, {taken} takes");
}
