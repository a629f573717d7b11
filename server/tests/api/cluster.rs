//! Two real server processes sharing one real `redis-server` (started on a free port for each
//! test): messages, tabs, presence, restore and sign-out across nodes, and a node killed -9.
//! The scenarios listed in `on_redis_and_cluster!` run twice: on a standalone Redis and on a Redis Cluster of
//! three primaries (issue #27 item 1), whose nodes are given one node's URL and learn the rest.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{
    on_redis_and_cluster, refused_start, ChildServer, RedisCluster, RedisServer, SharedRedis,
    TestClient,
};

/// Short heartbeats so a dead node is noticed quickly; the bound is TTL + TTL/3.
const NODE_TTL_MS: u64 = 1500;

struct Cluster {
    backing: SharedRedis,
    nodes: Vec<ChildServer>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Two nodes on `backing` (a Redis Cluster's nodes are given one of its nodes' URL).
    async fn two(backing: SharedRedis) -> Cluster {
        Self::start_with(backing, 2, &[]).await
    }

    async fn start_with(backing: SharedRedis, nodes: usize, extra: &[&str]) -> Cluster {
        let mut cluster = Cluster {
            backing,
            nodes: Vec::new(),
            _dirs: Vec::new(),
        };
        for _ in 0..nodes {
            cluster.add_node_with("127.0.0.1:0", extra).await;
        }
        cluster
    }

    /// `redis-cli` on every node of a Redis of the test's own: their outputs.
    fn redis_cli(&self, args: &[&str]) -> Vec<String> {
        match &self.backing {
            SharedRedis::Redis(redis) => vec![redis.cli(args)],
            SharedRedis::Cluster(redis) => redis.cli_each(args),
        }
    }

    /// A node listening on `listen`, with extra flags.
    async fn add_node_with(&mut self, listen: &str, extra: &[&str]) -> usize {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args = self.backing.node_args();
        args.extend(["--node-ttl-ms".to_owned(), NODE_TTL_MS.to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let listen = listen.parse().expect("a socket address");
        self.nodes
            .push(ChildServer::start_on_with(dir.path(), listen, &args).await);
        self._dirs.push(dir);
        self.nodes.len() - 1
    }

    fn url(&self, node: usize) -> String {
        self.nodes[node].url()
    }

    async fn connect_as(&self, node: usize, name: &str) -> TestClient {
        let mut client = TestClient::connect(&self.url(node), json!({ "username": name })).await;
        client.expect_session().await;
        client
    }

    async fn resume(&self, node: usize, session_id: &str) -> TestClient {
        let mut client =
            TestClient::connect(&self.url(node), json!({ "sessionID": session_id })).await;
        client.expect_session().await;
        client
    }
}

fn presence_of(state: &Value, user_id: &str) -> Option<bool> {
    state["ok"]["users"]
        .as_array()?
        .iter()
        .find(|u| u["userID"] == user_id)
        .and_then(|u| u["connected"].as_bool())
}

async fn messages_flow_both_ways_between_users_on_different_nodes(redis: SharedRedis) {
    let cluster = Cluster::two(redis).await;
    let mut ada = cluster.connect_as(0, "ada").await;
    let mut bob = cluster.connect_as(1, "bob").await;
    assert_eq!(
        ada.next("user connected").await["userID"],
        bob.user_id.as_str()
    );

    let ack = ada.send(&bob.user_id, "hello from node 1").await;
    assert!(ack["ok"]["id"].is_i64(), "stored and acked: {ack}");
    let got = bob.next("private message").await;
    assert_eq!(got["content"], "hello from node 1");
    assert_eq!(got["from"], ada.user_id.as_str());
    assert_eq!(got["id"], ack["ok"]["id"]);

    let ack = bob.send(&ada.user_id, "hello from node 2").await;
    let got = ada.next("private message").await;
    assert_eq!(got["content"], "hello from node 2");
    assert_eq!(got["id"], ack["ok"]["id"]);
    assert!(
        got["id"].as_i64() > Some(0) && ack["ok"]["id"].as_i64() > Some(1),
        "ids come from one counter in Redis"
    );
}

/// socketioxide-redis's own driver never reconnected its pub/sub connection: once Redis dropped
/// it (a restart, a failover, a network cut), messages were still stored but no longer reached
/// sockets on other nodes. Tether's driver reconnects, subscribes again, and tells each node's
/// sockets to `resync` for what went by meanwhile; on a Redis Cluster every node of which drops
/// them too.
#[tokio::test]
async fn delivery_across_nodes_resumes_after_redis_drops_the_pub_sub_connections() {
    delivery_resumes_after_the_pub_sub_connections_are_cut(SharedRedis::Redis(
        RedisServer::start_own().await,
    ))
    .await;
}

#[tokio::test]
async fn delivery_across_nodes_resumes_after_a_redis_cluster_drops_the_pub_sub_connections() {
    delivery_resumes_after_the_pub_sub_connections_are_cut(SharedRedis::Cluster(
        RedisCluster::start_own().await,
    ))
    .await;
}

/// On a Redis of the test's own.
async fn delivery_resumes_after_the_pub_sub_connections_are_cut(own: SharedRedis) {
    let cluster = Cluster::two(own).await;
    let mut ada = cluster.connect_as(0, "ada").await;
    let mut bob = cluster.connect_as(1, "bob").await;
    ada.send(&bob.user_id, "before").await;
    assert_eq!(bob.next("private message").await["content"], "before");

    let kill = ["CLIENT", "KILL", "TYPE", "pubsub"];
    let killed = cluster.redis_cli(&kill);
    let count: u32 = killed
        .iter()
        .filter_map(|n| n.trim().parse::<u32>().ok())
        .sum();
    assert!(
        count >= 2,
        "each node's pub/sub connection was cut: {killed:?}"
    );
    // Both nodes notice, subscribe again and tell their sockets to restore.
    bob.next("resync").await;
    ada.next("resync").await;
    // On a cluster each shard's connection comes back on its own, and one that comes back
    // after a node subscribed again opens a gap of its own, closed by another `resync`: a
    // message sent meanwhile is then restored instead of received live, never lost.
    let ack = ada.send(&bob.user_id, "after").await;
    assert!(ack["ok"]["id"].is_i64(), "{ack}");
    received_or_restored(&mut bob, "after").await;
    bob.send(&ada.user_id, "and back").await;
    received_or_restored(&mut ada, "and back").await;
}

/// Waits for the private message `text`, live, or announced missed by a `resync` (after which
/// the client restores: the restore must hold it).
async fn received_or_restored(client: &mut TestClient, text: &str) {
    loop {
        let (event, value) = client.next_any().await;
        match event.as_str() {
            "private message" if value["content"] == text => return,
            "resync" => {
                let state = client.request("restore_state", json!({ "since": 0 })).await;
                let restored = state["ok"]["messages"].as_array().expect("messages");
                assert!(
                    restored.iter().any(|m| m["content"] == text),
                    "{text} restored after a resync: {state}"
                );
                return;
            }
            _ => {}
        }
    }
}

async fn a_second_tab_on_the_other_node_gets_what_the_first_sends(redis: SharedRedis) {
    let cluster = Cluster::two(redis).await;
    let ada = cluster.connect_as(0, "ada").await;
    let mut ada_tab2 = cluster.resume(1, &ada.session_id).await;
    assert_eq!(ada_tab2.user_id, ada.user_id, "one user, two nodes");
    let mut bob = cluster.connect_as(1, "bob").await;

    ada.send(&bob.user_id, "from tab 1").await;
    assert_eq!(
        ada_tab2.next("private message").await["content"],
        "from tab 1"
    );
    assert_eq!(bob.next("private message").await["content"], "from tab 1");
    // The `tabs` count is cluster-wide.
    let tabs = ada_tab2.next("tabs").await;
    assert_eq!(tabs["count"], 2);
}

async fn presence_is_the_same_on_both_nodes_and_offline_waits_for_the_last_tab(redis: SharedRedis) {
    let cluster = Cluster::two(redis).await;
    let ada = cluster.connect_as(0, "ada").await;
    let ada_tab2 = cluster.resume(1, &ada.session_id).await;
    let mut bob = cluster.connect_as(1, "bob").await;
    let mut cy = cluster.connect_as(0, "cy").await;

    let online_in_roster = |users: &[Value]| {
        users
            .iter()
            .find(|u| u["userID"] == ada.user_id.as_str())
            .map(|u| u["connected"] == true)
    };
    assert_eq!(online_in_roster(&bob.users), Some(true));
    assert_eq!(online_in_roster(&cy.users), Some(true));

    ada.close().await;
    // Still one tab on node 2: nobody hears "offline", and both nodes say online.
    let state = bob.sync().await;
    assert_eq!(presence_of(&state, &ada.user_id), Some(true));
    assert_eq!(presence_of(&cy.sync().await, &ada.user_id), Some(true));
    assert!(bob.drain("user disconnected").is_empty());

    ada_tab2.close().await;
    assert_eq!(bob.next("user disconnected").await, json!(ada.user_id));
    assert_eq!(cy.next("user disconnected").await, json!(ada.user_id));
    assert_eq!(presence_of(&bob.sync().await, &ada.user_id), Some(false));
    assert_eq!(presence_of(&cy.sync().await, &ada.user_id), Some(false));
}

async fn restore_state_after_moving_to_the_other_node_returns_what_was_missed(redis: SharedRedis) {
    let cluster = Cluster::two(redis).await;
    let ada = cluster.connect_as(0, "ada").await;
    let bob = cluster.connect_as(1, "bob").await;
    let first = bob.send(&ada.user_id, "before").await["ok"]["id"]
        .as_i64()
        .expect("acked id");
    ada.close().await;
    for n in 0..5 {
        bob.send(&ada.user_id, &format!("while away {n}")).await;
    }

    let ada = cluster.resume(1, &ada.session_id).await;
    let state = ada
        .request("restore_state", json!({ "since": first }))
        .await;
    let contents: Vec<&str> = state["ok"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        contents,
        (0..5)
            .map(|n| format!("while away {n}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(state["ok"]["hasMore"], false);
}

async fn sign_out_everywhere_closes_tabs_on_every_node(redis: SharedRedis) {
    let cluster = Cluster::two(redis).await;
    let ada = cluster.connect_as(0, "ada").await;
    let mut ada_tab2 = cluster.resume(1, &ada.session_id).await;

    let ack = ada.request("logout", json!({ "everywhere": true })).await;
    assert_eq!(ack["ok"], true);
    ada_tab2.next("close").await;
    let mut refused =
        TestClient::connect(&cluster.url(1), json!({ "sessionID": ada.session_id })).await;
    let refusal = refused.next("error").await;
    assert!(
        refusal
            .as_str()
            .unwrap_or_default()
            .contains("invalid username"),
        "the session is gone on every node: {refusal}"
    );
}

async fn a_killed_node_takes_its_users_offline_within_the_bound_and_nothing_is_lost(
    redis: SharedRedis,
) {
    let mut cluster = Cluster::two(redis).await;
    let ada = cluster.connect_as(0, "ada").await;
    let mut bob = cluster.connect_as(1, "bob").await;
    let mut sent = Vec::new();
    for n in 0..20 {
        let ack = ada.send(&bob.user_id, &format!("m{n}")).await;
        sent.push(ack["ok"]["id"].as_i64().expect("acked id"));
    }

    let node = cluster.nodes.remove(0);
    let killed_at = Instant::now();
    node.kill_9().await;
    assert_eq!(bob.next("user disconnected").await, json!(ada.user_id));
    let took = killed_at.elapsed();
    let bound = Duration::from_millis(NODE_TTL_MS + NODE_TTL_MS / 3);
    // Slack for a loaded CI machine (every test of this binary runs at once on two cores).
    assert!(
        took <= bound + Duration::from_millis(2000),
        "offline after {took:?}; the bound is {bound:?} (+2 s for scheduling)"
    );

    // Ada comes back on the surviving node: everything she sent is there, once, in order.
    let ada = cluster.resume(0, &ada.session_id).await;
    assert_eq!(
        bob.next("user connected").await["userID"],
        ada.user_id.as_str()
    );
    let state = ada.request("restore_state", json!({ "since": 0 })).await;
    let ids: Vec<i64> = state["ok"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_i64().unwrap_or_default())
        .collect();
    assert_eq!(ids, sent);
    let bob_has: Vec<i64> = bob
        .drain("private message")
        .iter()
        .map(|m| m["id"].as_i64().unwrap_or_default())
        .collect();
    assert_eq!(bob_has, sent, "bob got every message live, once");
}

// ---- long-polling without sticky sessions: a request for another node's session is
// forwarded to it (the sid's first two characters name the node) ----

/// One raw long-polling request (`Connection: close`): status and body.
async fn poll(
    addr: std::net::SocketAddr,
    sid: Option<&str>,
    post: Option<&str>,
    headers: &[&str],
) -> (u16, String) {
    let mut path = "/socket.io/?EIO=4&transport=polling".to_owned();
    if let Some(sid) = sid {
        path.push_str(&format!("&sid={sid}"));
    }
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = match post {
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain;charset=UTF-8\r\n\
             Content-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        ),
        None => format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"),
    };
    let (status, _, body) =
        crate::helpers::http_exchange(addr, &request, Duration::from_secs(5)).await;
    (status, body)
}

/// Opens a polling session on `addr`: its sid.
async fn open_polling(addr: std::net::SocketAddr) -> String {
    let (status, body) = poll(addr, None, None, &[]).await;
    assert_eq!(status, 200, "{body}");
    let open: Value = serde_json::from_str(body.trim_start_matches('0')).expect("open packet");
    open["sid"].as_str().expect("sid").to_owned()
}

/// Polls `addr` until the packets got contain `needle` (a few polls at most): all of them,
/// separated by the record separator.
async fn poll_until(addr: std::net::SocketAddr, sid: &str, needle: &str) -> String {
    let mut got = String::new();
    for _ in 0..5 {
        let (status, body) = poll(addr, Some(sid), None, &[]).await;
        assert_eq!(status, 200, "{body}");
        got.push_str(&body);
        got.push('\x1e');
        if got.contains(needle) {
            return got;
        }
    }
    panic!("no {needle:?} in {got:?}")
}

/// The user id in a polling session's `session` event.
fn session_user_id(packets: &str) -> String {
    packets
        .split('\x1e')
        .filter_map(|p| p.strip_prefix("42"))
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .find(|p| p[0] == "session")
        .and_then(|p| p[1]["userID"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no session event in {packets:?}"))
}

async fn a_polling_session_opened_on_one_node_is_served_through_the_other(redis: SharedRedis) {
    let cluster = Cluster::two(redis).await;
    let (a, b) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let sid = open_polling(a).await;
    let other = open_polling(b).await;
    assert_ne!(
        sid[..2],
        other[..2],
        "each node's sids start with its own tag"
    );

    // The Socket.IO CONNECT and everything after it go through node 1 to node 0.
    let (status, body) = poll(b, Some(&sid), Some(r#"40{"username":"pia"}"#), &[]).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let user_id = session_user_id(&poll_until(b, &sid, "\"session\"").await);

    // Node 0 holds the socket: a message sent on node 1's websocket reaches it there.
    let bob = cluster.connect_as(1, "bob").await;
    bob.send(&user_id, "through any node").await;
    poll_until(a, &sid, "through any node").await;
}

async fn a_polling_session_upgrades_to_a_websocket_through_the_other_node(redis: SharedRedis) {
    let cluster = Cluster::two(redis).await;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let (a, b) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let sid = open_polling(a).await;
    let (status, _) = poll(a, Some(&sid), Some(r#"40{"username":"pia"}"#), &[]).await;
    assert_eq!(status, 200);
    let user_id = session_user_id(&poll_until(a, &sid, "\"session\"").await);

    // socket.io-client's upgrade: probe, then switch, on node 1 (relayed to node 0).
    let url = format!("ws://{b}/socket.io/?EIO=4&transport=websocket&sid={sid}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade relayed");
    ws.send(WsMessage::text("2probe")).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("probe answered")
        .unwrap()
        .unwrap();
    assert_eq!(answer.to_text().unwrap(), "3probe");
    ws.send(WsMessage::text("5")).await.unwrap();

    let bob = cluster.connect_as(1, "bob").await;
    bob.send(&user_id, "over the relay").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .expect("the message over the relayed websocket")
            .unwrap()
            .unwrap();
        if frame.to_text().unwrap_or("").contains("over the relay") {
            break;
        }
    }
}

async fn a_forwarded_request_is_never_forwarded_again_and_an_unknown_tag_is_an_unknown_session(
    redis: SharedRedis,
) {
    let cluster = Cluster::two(redis).await;
    let (a, b) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let sid = open_polling(a).await;
    // What node 0 would answer for a sid it does not hold, from node 1 (one hop at most).
    let (status, body) = poll(b, Some(&sid), None, &["X-Tether-Forwarded: 1"]).await;
    assert_eq!(status, 400);
    assert!(body.contains("Session ID unknown"), "{body}");
    // The session is untouched: node 0 still serves it.
    let (status, _) = poll(a, Some(&sid), Some(r#"40{"username":"pia"}"#), &[]).await;
    assert_eq!(status, 200);

    // A tag no node holds.
    let tags = [sid[..2].to_owned(), open_polling(b).await[..2].to_owned()];
    let free = ["AA", "AB", "AC"]
        .into_iter()
        .find(|t| !tags.iter().any(|held| held == t))
        .unwrap();
    let made_up = format!("{free}0123456789abcd");
    for node in [a, b] {
        let (status, body) = poll(node, Some(&made_up), None, &[]).await;
        assert_eq!(status, 400);
        assert!(body.contains("Session ID unknown"), "{body}");
    }
}

/// Opens a polling session on `addr` and connects it as `name` there; its sid, once the
/// `session` event was read (the next GET waits for the heartbeat).
async fn connected_polling(addr: std::net::SocketAddr, name: &str) -> String {
    let sid = open_polling(addr).await;
    let connect = format!(r#"40{{"username":"{name}"}}"#);
    let (status, _) = poll(addr, Some(&sid), Some(&connect), &[]).await;
    assert_eq!(status, 200);
    poll_until(addr, &sid, "\"session\"").await;
    sid
}

async fn forwarding_is_bounded_in_body_bytes_body_time_requests_and_relays(redis: SharedRedis) {
    use futures_util::future::select;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut cluster = Cluster::start_with(redis, 1, &[]).await;
    let b = cluster
        .add_node_with(
            "127.0.0.1:0",
            &[
                "--max-forwarded-requests",
                "1",
                "--max-relayed-sockets",
                "1",
                "--max-payload-bytes",
                "2000",
                "--header-read-timeout-ms",
                "1000",
            ],
        )
        .await;
    let (a, b) = (cluster.nodes[0].addr, cluster.nodes[b].addr);
    let [one, two, three, four] = [
        connected_polling(a, "pia").await,
        connected_polling(a, "quinn").await,
        connected_polling(a, "ray").await,
        connected_polling(a, "sol").await,
    ];

    // A body past --max-payload-bytes is refused by the forwarding node, not carried.
    let (status, _) = poll(b, Some(&one), Some(&"3".repeat(2001)), &[]).await;
    assert_eq!(status, 413, "an oversized body");
    let (status, body) = poll(b, Some(&one), Some("3"), &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ok"),
        "a small one is forwarded"
    );

    // A body that stops arriving is given up after the header-read time: 408, not 413.
    let mut slow = tokio::net::TcpStream::connect(b).await.unwrap();
    slow.write_all(
        format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={one} HTTP/1.1\r\nHost: {b}\r\n\
             Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 100\r\n\r\n3"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), slow.read_exact(&mut head))
        .await
        .expect("answered within the header-read time")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 408", "{}", String::from_utf8_lossy(&head));

    // Two held-open polls through node 1 at once, with room for one: the second is 503. First
    // both queues are emptied (everyone was told of those who connected later), so that
    // neither poll is answered at once.
    for sid in [&one, &two] {
        poll_until(a, sid, "\"sol\"").await;
    }
    let held = |sid: String| Box::pin(async move { poll(b, Some(&sid), None, &[]).await });
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        select(held(one.clone()), held(two.clone())),
    )
    .await
    .expect("one of two held polls is refused at once");
    let (status, _) = match first {
        futures_util::future::Either::Left((answer, _)) => answer,
        futures_util::future::Either::Right((answer, _)) => answer,
    };
    assert_eq!(status, 503, "past --max-forwarded-requests");

    // One relayed WebSocket, with room for one: a second upgrade is refused, and that client
    // stays on polling.
    let upgrade = |sid: &str| {
        tokio_tungstenite::connect_async(format!(
            "ws://{b}/socket.io/?EIO=4&transport=websocket&sid={sid}"
        ))
    };
    let _relayed = upgrade(&three).await.expect("the first upgrade is relayed");
    match upgrade(&four).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            assert_eq!(answer.status(), 503, "past --max-relayed-sockets")
        }
        other => panic!(
            "the second upgrade was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    let (status, body) = poll(a, Some(&four), Some("3"), &[]).await;
    assert_eq!((status, body.as_str()), (200, "ok"), "still on polling");
}

async fn a_node_with_no_address_to_advertise_still_forwards_other_nodes_polling_requests(
    redis: SharedRedis,
) {
    let mut cluster = Cluster::start_with(redis, 1, &[]).await;
    let b = cluster.add_node_with("0.0.0.0:0", &[]).await;
    let (a, b) = (cluster.nodes[0].addr, cluster.nodes[b].addr);
    let b = std::net::SocketAddr::from(([127, 0, 0, 1], b.port()));
    // It serves WebSocket only: no polling session of its own.
    let (status, _) = poll(b, None, None, &[]).await;
    assert_eq!(status, 400, "no polling session opens on it");
    // But a polling session of node 0 is served through it.
    let sid = open_polling(a).await;
    let (status, body) = poll(b, Some(&sid), Some(r#"40{"username":"pia"}"#), &[]).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    poll_until(b, &sid, "\"session\"").await;
}

#[tokio::test]
async fn with_redis_gone_a_known_tag_is_still_forwarded_and_an_unknown_one_is_503_not_unknown() {
    with_redis_gone_a_known_tag_is_still_forwarded(SharedRedis::Redis(
        RedisServer::start_own().await,
    ))
    .await;
}

#[tokio::test]
async fn with_a_redis_cluster_gone_a_known_tag_is_still_forwarded_and_an_unknown_one_is_503() {
    with_redis_gone_a_known_tag_is_still_forwarded(SharedRedis::Cluster(
        RedisCluster::start_own().await,
    ))
    .await;
}

/// On a Redis of the test's own, killed midway (every node of a cluster).
async fn with_redis_gone_a_known_tag_is_still_forwarded(own: SharedRedis) {
    let cluster = Cluster::two(own).await;
    let (a, b) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let sid = open_polling(a).await;
    let (status, _) = poll(b, Some(&sid), Some(r#"40{"username":"pia"}"#), &[]).await;
    assert_eq!(status, 200, "node 1 has read node 0's tag");

    match &cluster.backing {
        SharedRedis::Redis(redis) => redis.signal("KILL"),
        SharedRedis::Cluster(redis) => redis.signal_each("KILL"),
    }
    // Past the time node 1 trusts what it read (a third of the node TTL) without asking again.
    tokio::time::sleep(Duration::from_millis(NODE_TTL_MS / 3 + 200)).await;
    let (status, body) = poll(b, Some(&sid), Some("3"), &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ok"),
        "forwarded where the tag was last seen"
    );
    let own = [sid[..2].to_owned(), open_polling(b).await[..2].to_owned()];
    let free = ["AA", "AB", "AC"]
        .into_iter()
        .find(|t| !own.iter().any(|held| held == t))
        .unwrap();
    let (status, body) = poll(b, Some(&format!("{free}0123456789abcd")), None, &[]).await;
    assert_eq!(
        status, 503,
        "a tag never read cannot be called unknown while Redis is away: {body}"
    );
}

/// A cluster beyond `--roster-full-max` users (2 here), with ada on node 0, her contact cat
/// and the stranger bob on node 1.
async fn large_cluster_with_ada_on_node_0(
    backing: SharedRedis,
) -> (Cluster, TestClient, TestClient, TestClient) {
    let cluster = Cluster::start_with(backing, 2, &["--roster-full-max", "2"]).await;
    let ada = cluster.connect_as(0, "ada").await;
    let mut cat = cluster.connect_as(1, "cat").await;
    let bob = cluster.connect_as(1, "bob").await;
    ada.send(&cat.user_id, "hi cat").await;
    cat.next("private message").await;
    (cluster, ada, cat, bob)
}

async fn beyond_the_full_roster_a_dead_nodes_users_go_offline_to_their_contacts_only(
    redis: SharedRedis,
) {
    let (mut cluster, ada, mut cat, mut bob) = large_cluster_with_ada_on_node_0(redis).await;

    cluster.nodes.remove(0).kill_9().await;
    assert_eq!(cat.next("user disconnected").await, json!(ada.user_id));
    // The sweep's announcements were queued before this round trip's answer.
    bob.sync().await;
    let heard: Vec<Value> = bob
        .drain("user disconnected")
        .into_iter()
        .filter(|id| id == &json!(ada.user_id))
        .collect();
    assert!(
        heard.is_empty(),
        "a stranger is not told, as a local disconnect would not tell them: {heard:?}"
    );
}

async fn beyond_the_full_roster_a_returning_nodes_users_come_online_to_their_contacts_only(
    redis: SharedRedis,
) {
    let (cluster, ada, mut cat, mut bob) = large_cluster_with_ada_on_node_0(redis).await;
    let pid = cluster.nodes[0].child.id().expect("node 0 runs");
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {name}");
    };

    // Node 0 stops answering for longer than its TTL: node 1 sweeps ada offline.
    signal("-STOP");
    let swept = tokio::time::timeout(Duration::from_secs(10), cat.next("user disconnected")).await;
    signal("-CONT");
    assert_eq!(swept.expect("swept in time"), json!(ada.user_id));
    // Node 0 wakes, finds it was swept, republishes ada: she is back, to her contacts only.
    assert_eq!(
        cat.next("user connected").await["userID"],
        ada.user_id.as_str()
    );
    // A round trip of bob's to node 1 says nothing of what node 0 publishes. Node 0 announced
    // ada's return in one publish, done once cat heard it; a message she sends now is
    // published by node 0 after it, on the same adapter channel, so it reaches bob after
    // anything that announcement (or node 1's sweep before it) would have told him.
    let after = ada.send(&bob.user_id, "after the return").await;
    let delivered = bob.next("private message").await;
    assert_eq!(delivered["id"], after["ok"]["id"], "{delivered}");
    let heard: Vec<Value> = bob
        .drain("user connected")
        .into_iter()
        .chain(bob.drain("user disconnected"))
        .filter(|e| e == &json!(ada.user_id) || e["userID"] == ada.user_id.as_str())
        .collect();
    assert!(heard.is_empty(), "a stranger is not told: {heard:?}");
}

async fn reads_receipts_settings_and_typing_reach_every_node(redis: SharedRedis) {
    let cluster = Cluster::two(redis).await;
    let mut ada = cluster.connect_as(0, "ada").await;
    let mut ada_tab2 = cluster.resume(1, &ada.session_id).await;
    let mut bob = cluster.connect_as(1, "bob").await;
    let sent = bob.send(&ada.user_id, "read me").await;
    let id = sent["ok"]["id"].as_i64().expect("stored");

    // A read on node 0 reaches the reader's tab on node 1, and the sender there.
    let answer = ada
        .request("read", json!({ "with": bob.user_id, "upTo": id }))
        .await;
    let state = json!({ "with": bob.user_id, "upTo": id, "unread": 0, "asOf": id });
    assert_eq!(answer, json!({ "ok": state }));
    assert_eq!(ada_tab2.next("read").await, state);
    assert_eq!(ada.next("read").await, state);
    let seen = bob.next("seen").await;
    assert_eq!(
        (&seen["by"], &seen["upTo"]),
        (&json!(ada.user_id), &json!(id))
    );
    // Both nodes list the same state.
    for (client, peer) in [(&ada_tab2, &bob.user_id), (&bob, &ada.user_id)] {
        let list = client.request("conversations", json!({})).await;
        let entry = &list["ok"]["conversations"][0];
        assert_eq!(entry["userID"], peer.as_str(), "{list}");
        assert_eq!(entry["unread"], 0, "{list}");
    }

    // Typing on node 0 to a user on node 1.
    ada.client
        .emit("typing", json!({ "to": bob.user_id }))
        .await
        .unwrap();
    assert_eq!(bob.next("typing").await, json!({ "from": ada.user_id }));

    // A settings change on node 1 reaches the tab on node 0.
    let off = ada_tab2
        .request("settings", json!({ "readReceipts": false }))
        .await;
    assert_eq!(off, json!({ "ok": { "readReceipts": false } }));
    assert_eq!(ada.next("settings").await, json!({ "readReceipts": false }));
    let again = bob.send(&ada.user_id, "and me").await;
    let id = again["ok"]["id"].as_i64().unwrap();
    ada.request("read", json!({ "with": bob.user_id, "upTo": id }))
        .await;
    assert_eq!(ada_tab2.next("read").await["upTo"], id);
    // A round trip of bob's to node 1 says nothing of what node 0 publishes. A `seen`, had
    // there been one, was published by node 0 before ada's read was answered; a message she
    // sends now is published after it, on the same channel, so it reaches bob after it.
    let after = ada.send(&bob.user_id, "after the read").await;
    let delivered = bob.next("private message").await;
    assert_eq!(delivered["id"], after["ok"]["id"], "{delivered}");
    assert!(bob.drain("seen").is_empty(), "receipts are off");
}

/// A node given the URL of one Redis Cluster node runs on the whole cluster (the scenarios run
/// `on_a_redis_cluster`); what a cluster cannot do is refused at start with a clear error: a
/// database other than 0 (a cluster has only 0).
#[tokio::test]
async fn on_a_redis_cluster_what_it_cannot_do_is_refused_at_start() {
    let cluster = RedisCluster::start().await;
    let mut args = cluster.node_args();
    args[1] = format!("{}/2", cluster.urls[0].trim_end_matches('/'));
    let (status, printed, _) = refused_start(&args).await;
    assert!(!status.success(), "{printed}");
    assert!(
        printed.contains("a Redis Cluster has only database 0"),
        "the reason is said: {printed}"
    );
}

on_redis_and_cluster!(
    messages_flow_both_ways_between_users_on_different_nodes,
    a_second_tab_on_the_other_node_gets_what_the_first_sends,
    presence_is_the_same_on_both_nodes_and_offline_waits_for_the_last_tab,
    restore_state_after_moving_to_the_other_node_returns_what_was_missed,
    sign_out_everywhere_closes_tabs_on_every_node,
    a_killed_node_takes_its_users_offline_within_the_bound_and_nothing_is_lost,
    a_polling_session_opened_on_one_node_is_served_through_the_other,
    a_polling_session_upgrades_to_a_websocket_through_the_other_node,
    reads_receipts_settings_and_typing_reach_every_node,
    a_forwarded_request_is_never_forwarded_again_and_an_unknown_tag_is_an_unknown_session,
    forwarding_is_bounded_in_body_bytes_body_time_requests_and_relays,
    a_node_with_no_address_to_advertise_still_forwards_other_nodes_polling_requests,
    beyond_the_full_roster_a_dead_nodes_users_go_offline_to_their_contacts_only,
    beyond_the_full_roster_a_returning_nodes_users_come_online_to_their_contacts_only,
);
