//! `spawn_app()` starts the real server on port 0 with its own temporary store; `TestClient`
//! wraps `rust_socketio` (a client nobody here wrote) and turns its callbacks into a stream of
//! events the tests wait on, never sleeping "for the server to process".

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::{json, Value};
use server::{Config, Server};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};

pub const WAIT: Duration = Duration::from_secs(10);

fn test_config(data_dir: &Path, addr: SocketAddr) -> Config {
    let mut config = Config::for_data_dir(data_dir);
    config.listen = Some(addr);
    config.ping_interval_ms = 300;
    // Short heartbeats, with enough slack that a loaded CI machine does not drop sockets.
    config.ping_timeout_ms = 1000;
    // Tests send fast on purpose; the rate limit has its own test.
    config.messages_per_sec = 10_000.0;
    config.message_burst = 10_000.0;
    // Every test signs up from 127.0.0.1; the sign-up limits have their own tests.
    config.signups_per_ip_per_min = 1_000_000;
    config.signup_burst_per_ip = 100_000;
    config.signups_per_sec = 100_000;
    config.signup_burst = 100_000;
    config
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub io: socketioxide::SocketIo,
    _dir: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The real server, in this process, on a free port with a fresh data directory.
pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut app = spawn_app_in(dir.path()).await;
    app._dir = Some(dir);
    app
}

/// The real server on an existing data directory (for restarts).
pub async fn spawn_app_in(data_dir: &Path) -> TestApp {
    spawn_app_at(data_dir, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// The real server on a given address (to come back on the same port after a restart).
pub async fn spawn_app_at(data_dir: &Path, addr: SocketAddr) -> TestApp {
    spawn_app_configured(data_dir, addr, |_| {}).await
}

/// The real server with a fresh data directory and a configuration adjusted by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut app =
        spawn_app_configured(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0)), adjust).await;
    app._dir = Some(dir);
    app
}

async fn spawn_app_configured(
    data_dir: &Path,
    addr: SocketAddr,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let mut config = test_config(data_dir, addr);
    adjust(&mut config);
    let server = Server::bind(&config).await.expect("server binds");
    let addr = server.local_addr().expect("bound address");
    let io = server.io().local().cloned().expect("a single-node server");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
    });
    TestApp {
        addr,
        io,
        _dir: None,
        shutdown: Some(tx),
        task: Some(task),
    }
}

impl TestApp {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Opens a socket with this `auth` and returns it with what the handshake produced.
    pub async fn connect(&self, auth: Value) -> TestClient {
        TestClient::connect(&self.url(), auth).await
    }

    /// A new user named `name`, after its `session` and `users` arrived.
    pub async fn connect_as(&self, name: &str) -> TestClient {
        let mut client = self.connect(json!({ "username": name })).await;
        client.expect_session().await;
        client
    }

    /// Another tab of the same session.
    pub async fn resume(&self, session_id: &str) -> TestClient {
        let mut client = self.connect(json!({ "sessionID": session_id })).await;
        client.expect_session().await;
        client
    }

    /// The CONNECT_ERROR message the server answers this `auth` with.
    pub async fn refusal(&self, auth: Value) -> String {
        let mut client = self.connect(auth).await;
        let error = client.next("error").await;
        error.as_str().unwrap_or_default().to_owned()
    }

    /// Stops the server gracefully and waits until it is down.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Waits (bounded) until no socket of `user_id` is left on the server.
    pub async fn until_room_is_empty(&self, user_id: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.io.within(user_id.to_owned()).sockets().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "sockets of {user_id} did not close"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }
}

/// A minimal HTTP/1.1 GET, enough for /healthz and /metrics.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_request(addr, path, &[]).await;
    (status, body)
}

/// A GET with extra header lines; returns status, raw head and body.
pub async fn http_request(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, String, String) {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    // An upgraded (101) connection stays open: read what arrives within a moment.
    http_exchange(addr, &request, Duration::from_secs(2)).await
}

/// Writes one raw HTTP/1.1 `request` and reads its answer until the server closes or `wait`
/// passes; returns status (0 when none came), raw head and body.
pub async fn http_exchange(
    addr: SocketAddr,
    request: &str,
    wait: Duration,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_owned(), b.to_owned()))
        .unwrap_or_default();
    (status, head, body)
}

pub struct TestClient {
    pub client: Client,
    events: mpsc::UnboundedReceiver<(String, Value)>,
    backlog: VecDeque<(String, Value)>,
    pub session_id: String,
    pub user_id: String,
    pub users: Vec<Value>,
}

fn first_arg(payload: Payload) -> Value {
    match payload {
        Payload::Text(mut values) if !values.is_empty() => values.swap_remove(0),
        #[allow(deprecated)]
        Payload::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        _ => Value::Null,
    }
}

/// Emits `event` with an ack on a rust_socketio client and returns the ack's first argument.
pub async fn request_on(client: &Client, event: &str, data: Value) -> Value {
    let (tx, rx) = oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    client
        .emit_with_ack(event, data, WAIT, move |payload, _| {
            // rust_socketio hands an ack's whole argument list over as one value.
            let first = match first_arg(payload) {
                Value::Array(mut args) if !args.is_empty() => args.swap_remove(0),
                other => other,
            };
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(first);
            }
            async {}.boxed()
        })
        .await
        .expect("emit");
    tokio::time::timeout(WAIT, rx)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for the ack of `{event}`"))
        .expect("ack callback dropped")
}

impl TestClient {
    pub async fn connect(url: &str, auth: Value) -> TestClient {
        let (tx, rx) = mpsc::unbounded_channel();
        let on_any = tx.clone();
        let on_error = tx.clone();
        let on_close = tx;
        let client = ClientBuilder::new(url)
            .transport_type(TransportType::Websocket)
            .reconnect(false)
            .auth(auth)
            .on_any(move |event, payload, _| {
                let _ = on_any.send((String::from(event.as_str()), first_arg(payload)));
                async {}.boxed()
            })
            .on(Event::Error, move |payload, _| {
                let text = match first_arg(payload) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let _ = on_error.send(("error".into(), Value::String(text)));
                async {}.boxed()
            })
            .on(Event::Close, move |_, _| {
                let _ = on_close.send(("close".into(), Value::Null));
                async {}.boxed()
            })
            .connect()
            .await
            .expect("transport opens");
        TestClient {
            client,
            events: rx,
            backlog: VecDeque::new(),
            session_id: String::new(),
            user_id: String::new(),
            users: Vec::new(),
        }
    }

    /// Waits for `session` then `users`, and keeps what they said.
    pub async fn expect_session(&mut self) {
        let session = self.next("session").await;
        self.session_id = session["sessionID"].as_str().expect("sessionID").to_owned();
        self.user_id = session["userID"].as_str().expect("userID").to_owned();
        let users = self.next("users").await;
        self.users = users.as_array().expect("users is an array").clone();
    }

    /// The next `event`, waiting for it; other events stay queued for later.
    pub async fn next(&mut self, event: &str) -> Value {
        if let Some(index) = self.backlog.iter().position(|(e, _)| e == event) {
            return self.backlog.remove(index).expect("index is valid").1;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let received = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("timed out waiting for `{event}`; saw {:?}", self.backlog)
                });
            let Some((name, value)) = received else {
                panic!("event stream ended while waiting for `{event}`");
            };
            if name == event {
                return value;
            }
            self.backlog.push_back((name, value));
        }
    }

    /// The next event, whatever it is, waiting for it.
    pub async fn next_any(&mut self) -> (String, Value) {
        if let Some(event) = self.backlog.pop_front() {
            return event;
        }
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an event in time")
            .expect("the event stream is open")
    }

    /// Every `event` received so far, without waiting.
    pub fn drain(&mut self, event: &str) -> Vec<Value> {
        while let Ok(item) = self.events.try_recv() {
            self.backlog.push_back(item);
        }
        let (matching, rest): (Vec<_>, Vec<_>) =
            self.backlog.drain(..).partition(|(e, _)| e == event);
        self.backlog = rest.into();
        matching.into_iter().map(|(_, v)| v).collect()
    }

    /// Emits with an ack and returns the ack's first argument.
    pub async fn request(&self, event: &str, data: Value) -> Value {
        request_on(&self.client, event, data).await
    }

    /// Sends a direct message and returns its ack.
    pub async fn send(&self, to: &str, content: &str) -> Value {
        self.request("private message", json!({ "to": to, "content": content }))
            .await
    }

    /// A round trip to the server: anything the server queued for this socket before now has
    /// arrived once this returns.
    pub async fn sync(&self) -> Value {
        self.request("restore_state", json!({ "since": 0 })).await
    }

    pub async fn close(&self) {
        let _ = self.client.disconnect().await;
    }
}

/// The server binary as a child process (killed when dropped), for restart and crash tests.
pub struct ChildServer {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl ChildServer {
    pub async fn start(data_dir: &Path) -> ChildServer {
        Self::start_logging(data_dir, "warn", None).await
    }

    /// Starts the binary with this log filter; every line it prints after the address goes
    /// to `log` when given.
    /// Starts the binary on a given address (to come back on the same port).
    pub async fn start_on(data_dir: &Path, addr: SocketAddr) -> ChildServer {
        Self::spawn(data_dir, addr, "warn", None, &[]).await
    }

    /// Starts the binary on a free port with extra flags (e.g. a cluster node's Redis URL).
    pub async fn start_with(data_dir: &Path, args: &[String]) -> ChildServer {
        Self::spawn(
            data_dir,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "warn",
            None,
            args,
        )
        .await
    }

    /// Starts the binary on a given address with extra flags (a node listening on 0.0.0.0).
    pub async fn start_on_with(data_dir: &Path, addr: SocketAddr, args: &[String]) -> ChildServer {
        Self::spawn(data_dir, addr, "warn", None, args).await
    }

    pub async fn start_logging(
        data_dir: &Path,
        filter: &str,
        log: Option<mpsc::UnboundedSender<String>>,
    ) -> ChildServer {
        Self::start_logging_with(data_dir, filter, log, &[]).await
    }

    /// [`ChildServer::start_logging`] with extra flags (e.g. `--log-format json`).
    pub async fn start_logging_with(
        data_dir: &Path,
        filter: &str,
        log: Option<mpsc::UnboundedSender<String>>,
        args: &[String],
    ) -> ChildServer {
        Self::spawn(
            data_dir,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            filter,
            log,
            args,
        )
        .await
    }

    async fn spawn(
        data_dir: &Path,
        addr: SocketAddr,
        filter: &str,
        log: Option<mpsc::UnboundedSender<String>>,
        args: &[String],
    ) -> ChildServer {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("--listen")
            .arg(addr.to_string())
            .args(["--log", filter])
            .args(["--messages-per-sec", "10000", "--message-burst", "10000"])
            // As environment, so that a test's own flags (in `args`) override them.
            .env("TETHER_SIGNUPS_PER_IP_PER_MIN", "1000000")
            .env("TETHER_SIGNUP_BURST_PER_IP", "100000")
            .env("TETHER_SIGNUPS_PER_SEC", "100000")
            .env("TETHER_SIGNUP_BURST", "100000")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("server binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(rest) = line.strip_prefix("listening on http://") {
                    return rest.parse::<SocketAddr>().expect("address");
                }
            }
            panic!("server exited before listening");
        })
        .await
        .expect("server starts listening in time");
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(log) = &log {
                    let _ = log.send(line);
                }
            }
        });
        ChildServer { child, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no shutdown hook, no flush.
    pub async fn kill_9(mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }
}

/// A Redis for one test: the one `scripts/test.sh` started (`TETHER_TEST_REDIS_URL`), or, when
/// run without it, a throwaway `redis-server` on a free port killed when dropped. Either way the
/// test gets its own key and channel prefix, so tests sharing one Redis never see each other.
pub struct RedisServer {
    child: Option<std::process::Child>,
    url: String,
    pub prefix: String,
    /// Its working directory, when it needs one (a cluster node's nodes.conf).
    _dir: Option<tempfile::TempDir>,
    /// The flags it was started with (after the port and the no-persistence ones).
    extra: Vec<String>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        if let Ok(url) = std::env::var("TETHER_TEST_REDIS_URL") {
            return RedisServer {
                child: None,
                url,
                prefix,
                _dir: None,
                extra: Vec::new(),
            };
        }
        Self::start_own().await
    }

    /// A redis-server of this test's own (even when a shared one is configured), stopped when
    /// dropped: for tests that take the store away.
    pub async fn start_own() -> RedisServer {
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        Self::spawn(prefix, &[]).await
    }

    /// A redis-server of this test's own in cluster mode (`--cluster-enabled yes`, its
    /// nodes.conf and whatever else it writes in a directory of its own, its cluster bus on a
    /// free port of its own): a node of a Redis Cluster, with `extra` flags.
    pub async fn start_cluster_node(extra: &[&str]) -> RedisServer {
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("nodes.conf");
        let bus = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
            .to_string();
        // Its directory for whatever it writes besides: a node that becomes a replica saves the
        // full copy it receives (dump.rdb), which every later redis-server started in the same
        // working directory would load.
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            conf.to_str().expect("a UTF-8 temp path"),
            "--cluster-port",
            &bus,
            "--dir",
            dir.path().to_str().expect("a UTF-8 temp path"),
        ];
        args.extend_from_slice(extra);
        let mut redis = Self::spawn(prefix, &args).await;
        redis._dir = Some(dir);
        redis
    }

    /// A replica of this (own) Redis, under the same prefix, once it holds a copy of it.
    pub async fn start_replica(&self) -> RedisServer {
        let primary_port = self.port().to_string();
        let replica = Self::spawn(
            self.prefix.clone(),
            &[
                "--replicaof",
                "127.0.0.1",
                &primary_port,
                // The copy is read from the socket, not from a dump.rdb in the test's directory.
                "--repl-diskless-load",
                "on-empty-db",
            ],
        )
        .await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !replica.info().contains("master_link_status:up") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replica did not sync"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        replica
    }

    /// `redis-cli` against this Redis, for what a test does to it from outside.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port().to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed with redis-server");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn info(&self) -> String {
        self.cli(&["info", "replication"])
    }

    /// Sends a signal (`STOP`, `CONT`, `KILL`) to this test's own redis-server.
    pub fn signal(&self, signal: &str) {
        let child = self
            .child
            .as_ref()
            .expect("a redis-server of this test's own");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    pub fn port(&self) -> u16 {
        self.url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("redis://127.0.0.1:<port>/")
    }

    async fn spawn(prefix: String, extra: &[&str]) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        RedisServer {
            child: Some(Self::launch(port, &extra).await),
            url: format!("redis://127.0.0.1:{port}/"),
            prefix,
            _dir: None,
            extra,
        }
    }

    /// Runs redis-server on `port` with `extra` flags; returns once it answers PING.
    async fn launch(port: u16, extra: &[String]) -> std::process::Child {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it from apt)");
        let deadline = tokio::time::Instant::now() + WAIT;
        while !ping(port).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child
    }

    /// Starts this (own) redis-server again, on its port with its flags, once it was killed:
    /// a cluster node comes back with its nodes.conf (a primary that was failed over rejoins as
    /// a replica), as a supervisor would restart it.
    pub async fn restart(&mut self) {
        let mut old = self
            .child
            .take()
            .expect("a redis-server of this test's own");
        let _ = old.kill();
        let _ = old.wait();
        self.child = Some(Self::launch(self.port(), &self.extra).await);
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The flags that put a server node on this Redis, under this test's prefix.
    pub fn node_args(&self) -> Vec<String> {
        vec![
            "--redis-url".to_owned(),
            self.url(),
            "--redis-prefix".to_owned(),
            self.prefix.clone(),
        ]
    }
}

/// What a test's nodes share: a standalone Redis, or a Redis Cluster (a node is given one of
/// its nodes' URL and learns the others).
pub enum SharedRedis {
    Redis(RedisServer),
    Cluster(RedisCluster),
}

impl SharedRedis {
    pub async fn standalone() -> SharedRedis {
        SharedRedis::Redis(RedisServer::start().await)
    }

    pub async fn cluster() -> SharedRedis {
        SharedRedis::Cluster(RedisCluster::start().await)
    }

    /// A node's flags for it: the URL and the test's prefix.
    pub fn node_args(&self) -> Vec<String> {
        match self {
            SharedRedis::Redis(redis) => redis.node_args(),
            SharedRedis::Cluster(cluster) => cluster.node_args(),
        }
    }

    /// The store on it, as a node opens it (beside the test's nodes).
    pub async fn store(
        &self,
        policy: server::store::sqlite::SessionPolicy,
    ) -> server::store::redis::RedisStore {
        use server::store::redis::{NodeOptions, RedisStore};
        let options = NodeOptions::new(Duration::from_secs(10));
        match self {
            SharedRedis::Redis(redis) => {
                RedisStore::connect(&redis.url(), &redis.prefix, policy, options).await
            }
            SharedRedis::Cluster(cluster) => {
                RedisStore::connect_cluster(&cluster.urls, &cluster.prefix, policy, options).await
            }
        }
        .expect("connects to redis")
    }
}

/// Runs each `scenario(redis: SharedRedis)` twice: `on_redis` and `on_a_redis_cluster`.
macro_rules! on_redis_and_cluster {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn on_redis() {
                super::$scenario(crate::helpers::SharedRedis::standalone().await).await;
            }

            #[tokio::test]
            async fn on_a_redis_cluster() {
                super::$scenario(crate::helpers::SharedRedis::cluster().await).await;
            }
        }
    )*};
}
pub(crate) use on_redis_and_cluster;

/// A Redis Cluster of three primaries for one test: the one `scripts/test.sh` started
/// (`TETHER_TEST_REDIS_CLUSTER`, its nodes' URLs separated by commas), or, when run without it,
/// three cluster-mode redis-servers of the test's own, joined into a cluster and killed when
/// dropped. Either way the test gets its own key prefix.
pub struct RedisCluster {
    _own: Vec<RedisServer>,
    pub urls: Vec<String>,
    pub prefix: String,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        if let Ok(urls) = std::env::var("TETHER_TEST_REDIS_CLUSTER") {
            return RedisCluster {
                _own: Vec::new(),
                urls: urls.split(',').map(str::to_owned).collect(),
                prefix: format!("test-{}", uuid::Uuid::new_v4().simple()),
            };
        }
        Self::start_own().await
    }

    /// A cluster of the test's own always, for a test that cuts its connections.
    pub async fn start_own() -> RedisCluster {
        Self::start_own_with(0, &[]).await
    }

    /// Three primaries with a replica each, of the test's own, for a test that fails one over:
    /// a primary unreachable for a second is taken over by its replica (about 2.5 s after a
    /// kill -9, measured), and the other shards serve meanwhile.
    pub async fn start_own_replicated() -> RedisCluster {
        let flags = [
            "--cluster-node-timeout",
            "1000",
            "--cluster-require-full-coverage",
            "no",
        ];
        let cluster = Self::start_own_with(1, &flags).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !cluster
            .replicas()
            .iter()
            .all(|r| r.info().contains("master_link_status:up"))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replicas did not sync"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster
    }

    async fn start_own_with(replicas: usize, flags: &[&str]) -> RedisCluster {
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        let mut own = Vec::new();
        for _ in 0..3 * (1 + replicas) {
            own.push(RedisServer::start_cluster_node(flags).await);
        }
        let nodes: Vec<String> = own
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli is installed with redis-server");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = tokio::time::Instant::now() + WAIT;
        while !own
            .iter()
            .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        RedisCluster {
            urls: own.iter().map(RedisServer::url).collect(),
            _own: own,
            prefix,
        }
    }

    /// A node's flags for this cluster: one of its nodes' URL (the node learns the others) and
    /// the test's prefix.
    pub fn node_args(&self) -> Vec<String> {
        vec![
            "--redis-url".to_owned(),
            self.urls[0].clone(),
            "--redis-prefix".to_owned(),
            self.prefix.clone(),
        ]
    }

    /// `redis-cli` on each node of a cluster of the test's own ([`Self::start_own`]): its outputs.
    pub fn cli_each(&self, args: &[&str]) -> Vec<String> {
        assert!(!self._own.is_empty(), "only on a cluster of the test's own");
        self._own.iter().map(|node| node.cli(args)).collect()
    }

    /// The nodes of a cluster of the test's own that are replicas now.
    pub fn replicas(&self) -> Vec<&RedisServer> {
        self._own
            .iter()
            .filter(|n| n.info().contains("role:slave"))
            .collect()
    }

    /// The primary that holds `key` now (asked of a node that answers), and its replicas;
    /// `None` while no primary that is not failing serves its slot (during a failover).
    pub fn shard_of(&self, key: &str) -> Option<(&RedisServer, Vec<&RedisServer>)> {
        let live = self
            ._own
            .iter()
            .find(|n| n.cli(&["ping"]).trim() == "PONG")
            .expect("a node of the cluster answers");
        let slot: u16 = live
            .cli(&["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a slot");
        let by_port = |port: &str| {
            self._own
                .iter()
                .find(|n| n.port().to_string() == port)
                .expect("a node of this cluster")
        };
        // CLUSTER NODES: `<id> <ip:port@bus> <flags> <primary id|-> … <slot ranges>`.
        let table = live.cli(&["cluster", "nodes"]);
        let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split(' ').collect()).collect();
        let port_of = |row: &Vec<&str>| row[1].split(['@', ':']).nth(1).unwrap_or("").to_owned();
        let primary = rows.iter().find(|row| {
            row[2].contains("master")
                && !row[2].contains("fail")
                && row[8..].iter().any(|range| {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    match (from.parse::<u16>(), to.parse::<u16>()) {
                        (Ok(from), Ok(to)) => (from..=to).contains(&slot),
                        _ => false,
                    }
                })
        })?;
        let replicas = rows
            .iter()
            .filter(|row| row[3] == primary[0] && !row[2].contains("fail"))
            .map(|row| by_port(&port_of(row)))
            .collect();
        Some((by_port(&port_of(primary)), replicas))
    }

    /// Starts the node on `port` of a cluster of the test's own again (see
    /// [`RedisServer::restart`]).
    pub async fn restart(&mut self, port: u16) {
        let node = self
            ._own
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("a node of this cluster");
        node.restart().await;
    }

    /// Sends `signal` (`KILL`, `STOP`, …) to every node of a cluster of the test's own.
    pub fn signal_each(&self, signal: &str) {
        assert!(!self._own.is_empty(), "only on a cluster of the test's own");
        for node in &self._own {
            node.signal(signal);
        }
    }

    /// A connection to the cluster, routing each command by its key's slot.
    pub async fn connection(&self) -> server::store::redis::RedisConn {
        let client = redis::cluster::ClusterClient::new(self.urls.clone()).expect("cluster URLs");
        server::store::redis::RedisConn::Cluster(
            client
                .get_async_connection()
                .await
                .expect("connects to the cluster"),
        )
    }
}

async fn ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").await.is_ok()
        && stream.read_exact(&mut answer).await.is_ok()
        && &answer == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `json!` value as the Rust client's handshake auth.
pub fn auth(value: Value) -> protocol::HandshakeAuth {
    protocol::json::from_str(&value.to_string()).expect("json! writes JSON")
}

/// A `json!` value as an argument for the Rust client to send.
pub fn raw(value: Value) -> protocol::json::RawJson {
    protocol::json::RawJson::new(&value.to_string()).expect("json! writes JSON")
}

/// What the Rust client received, as a `serde_json` value to compare.
pub fn value(raw: &protocol::json::RawJson) -> Value {
    serde_json::from_str(raw.get()).expect("the client checked it is JSON")
}

/// A duplicate of the TCP socket of this process (the test's, with its servers and clients)
/// whose local and peer addresses `wanted` accepts, if there is one.
#[allow(unsafe_code)] // test-only: a socket of this process found by its descriptor
pub fn tcp_socket_in_this_process(
    wanted: impl Fn(SocketAddr, SocketAddr) -> bool,
) -> Option<std::net::TcpStream> {
    use std::os::fd::{BorrowedFd, RawFd};
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let fd: RawFd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            if !target.to_string_lossy().starts_with("socket:") {
                return None;
            }
            // SAFETY: the descriptor is borrowed only to duplicate it at once. If another test
            // closed it meanwhile, the duplicate fails or is some other file, which has no
            // addresses to match (only the duplicate is closed).
            let owned = unsafe { BorrowedFd::borrow_raw(fd) }
                .try_clone_to_owned()
                .ok()?;
            let stream = std::net::TcpStream::from(owned);
            wanted(stream.local_addr().ok()?, stream.peer_addr().ok()?).then_some(stream)
        })
}

/// A client that proves possession of its session (issue #25), as Tether's browser client does:
/// Tether's own Rust client with an in-memory key. For what only a bound connection may do
/// (adding a passkey), and for resuming a bound session.
pub struct BoundClient {
    client: tokio::sync::Mutex<client::native::NativeClient>,
    pub key: client::native::NativeKey,
    pub session_id: String,
    pub user_id: String,
}

impl BoundClient {
    /// Connects with `auth`, proving with `key`, and waits for `session`.
    pub async fn connect(url: &str, auth_value: Value, key: client::native::NativeKey) -> Self {
        use client::core::{ConnState, CoreConfig};
        use client::session::SessionEvent;
        let fixed = auth(auth_value);
        let mut client = client::native::NativeClient::spawn_with_key(
            url,
            CoreConfig::default(),
            move || fixed.clone(),
            key.clone(),
        );
        let info = tokio::time::timeout(
            WAIT,
            client.wait_for(|e| match e {
                SessionEvent::Session(info) => Some(info.clone()),
                SessionEvent::State(ConnState::Stopped(reason)) => {
                    panic!("the handshake was refused: {reason:?}")
                }
                _ => None,
            }),
        )
        .await
        .expect("session in time");
        Self {
            client: tokio::sync::Mutex::new(client),
            key,
            session_id: info.session_id,
            user_id: info.user_id,
        }
    }

    /// The `sessionID` of the next `session` this connection is sent (a rotation) within
    /// `within`, or `None`.
    pub async fn next_session(&self, within: Duration) -> Option<String> {
        use client::session::SessionEvent;
        let mut client = self.client.lock().await;
        tokio::time::timeout(
            within,
            client.wait_for(|e| match e {
                SessionEvent::Session(info) => Some(info.session_id.clone()),
                _ => None,
            }),
        )
        .await
        .ok()
    }

    /// Emits with an ack and returns the ack's first argument.
    pub async fn request(&self, event: &str, data: Value) -> Value {
        use client::session::{Input, SessionEvent};
        static TAGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);
        let tag = TAGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut client = self.client.lock().await;
        let (event, data) = (event.to_owned(), raw(data));
        client
            .call(move |session, now| {
                session.step(
                    Input::Request {
                        tag,
                        event: &event,
                        data: &data,
                    },
                    now,
                )
            })
            .await;
        let result = tokio::time::timeout(
            WAIT,
            client.wait_for(|e| match e {
                SessionEvent::Reply { tag: t, result } if *t == tag => Some(result.clone()),
                _ => None,
            }),
        )
        .await
        .expect("an answer in time");
        value(&result.expect("answered"))
    }
}

impl TestApp {
    /// A new user `name` signed up by a client that proves possession (its session is bound).
    pub async fn connect_bound(&self, name: &str) -> BoundClient {
        let key = client::native::NativeKey::generate();
        BoundClient::connect(&self.url(), json!({ "username": name }), key).await
    }

    /// Another connection of the bound session `of`, proving with its key.
    pub async fn resume_bound(&self, of: &BoundClient) -> BoundClient {
        BoundClient::connect(
            &self.url(),
            json!({ "sessionID": of.session_id }),
            of.key.clone(),
        )
        .await
    }
}

/// Starts a node expected to refuse to start: its exit status, what it printed (stdout and
/// stderr), and how long it took.
pub async fn refused_start(args: &[String]) -> (std::process::ExitStatus, String, Duration) {
    let data = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    // Room for the store connection's retries (up to about 13 s with their jitter).
    let out = tokio::time::timeout(
        2 * WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["--listen", "127.0.0.1:0", "--log", "debug"])
            .arg("--data-dir")
            .arg(data.path())
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the node gives up in time")
    .expect("the node runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, printed, started.elapsed())
}
