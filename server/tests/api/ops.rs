//! What operators ask the server (issue 22, item 4): `/readyz` says whether the store can
//! write, on SQLite and on Redis, and turns 503 when it cannot; `/metrics` can live on an
//! address of its own, with the process's CPU, memory and descriptors.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use server::{Config, Server};
use tokio::sync::oneshot;

use crate::helpers::{http_get, RedisServer, WAIT};

/// A server of this process, stopped by [`Running::stop`].
struct Running {
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(config: Config) -> Running {
        let server = Server::bind(&config).await.expect("server binds");
        let addr = server.local_addr().expect("bound");
        let metrics = server.metrics_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        Running {
            addr,
            metrics,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the server stops")
            .expect("joined");
    }

    async fn ready(&self) -> (u16, String) {
        http_get(self.addr, "/readyz").await
    }

    /// Waits (bounded) for `/readyz` to answer `status`; returns its body.
    async fn until_ready_is(&self, status: u16, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (now, body) = self.ready().await;
            if now == status {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz still {now} ({body}) after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn config(data_dir: &Path) -> Config {
    let mut config = Config::for_data_dir(data_dir);
    config.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config
}

/// A 503's body says what is wrong and nothing about where.
fn assert_plain_reason(body: &str) {
    assert_eq!(body, "store unavailable");
}

#[tokio::test]
async fn readyz_is_ready_on_sqlite_and_unavailable_once_the_database_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Running::start(config(&data)).await;
    assert_eq!(server.ready().await, (200, "ready".to_owned()));
    // An operator's `rm -rf data`: SQLite (WAL) would go on committing into unlinked files.
    std::fs::remove_dir_all(&data).unwrap();
    let body = server.until_ready_is(503, Duration::from_secs(3)).await;
    assert_plain_reason(&body);
    assert_eq!(
        http_get(server.addr, "/healthz").await.0,
        200,
        "still alive"
    );
    server.stop().await;
}

#[tokio::test]
async fn readyz_is_unavailable_within_its_timeout_while_another_process_holds_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.ready_timeout_ms = 500;
    let server = Running::start(config).await;
    assert_eq!(server.ready().await.0, 200);
    // A `sqlite3` shell (or a backup tool) left inside a write transaction.
    let other = rusqlite::Connection::open(dir.path().join("tether.db")).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the last verdict
    let started = Instant::now();
    let (status, body) = server.ready().await;
    assert_eq!(status, 503, "{body}");
    assert_plain_reason(&body);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "answered within the timeout: {:?}",
        started.elapsed()
    );
    other.execute_batch("COMMIT").unwrap();
    server.until_ready_is(200, Duration::from_secs(8)).await;
    server.stop().await;
}

#[tokio::test]
async fn readyz_is_ready_on_redis() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.redis_url = Some(redis.url());
    config.redis_prefix = redis.prefix.clone();
    let server = Running::start(config).await;
    assert_eq!(server.ready().await, (200, "ready".to_owned()));
    server.stop().await;
}

#[tokio::test]
async fn readyz_is_unavailable_once_redis_is_gone_and_names_nothing_of_it() {
    let redis = RedisServer::start_own().await;
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.redis_url = Some(url.clone());
    config.redis_prefix = redis.prefix.clone();
    config.ready_timeout_ms = 500;
    let server = Running::start(config).await;
    assert_eq!(server.ready().await.0, 200);
    drop(redis); // killed
    let body = server.until_ready_is(503, Duration::from_secs(5)).await;
    assert_plain_reason(&body);
    assert!(!body.contains("127.0.0.1") && !body.contains(&url));
    server.stop().await;
}

/// The value of the sample `name` (without labels) in Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test]
async fn metrics_move_to_their_own_address_with_the_process_figures() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = Running::start(config).await;
    let metrics = server.metrics.expect("a metrics address");
    assert_ne!(metrics, server.addr);

    assert_eq!(http_get(server.addr, "/metrics").await.0, 404, "not public");
    assert_eq!(http_get(server.addr, "/readyz").await.0, 200);
    assert_eq!(http_get(metrics, "/healthz").await, (200, "ok".to_owned()));
    assert_eq!(
        http_get(metrics, "/readyz").await,
        (200, "ready".to_owned())
    );
    assert_eq!(
        http_get(metrics, "/").await.0,
        404,
        "only the operator's routes"
    );

    let (status, text) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );
    let rss = sample(&text, "process_resident_memory_bytes");
    let virtual_size = sample(&text, "process_virtual_memory_bytes");
    let open = sample(&text, "process_open_fds");
    let max = sample(&text, "process_max_fds");
    let threads = sample(&text, "process_threads");
    let cpu = sample(&text, "process_cpu_seconds_total");
    let started = sample(&text, "process_start_time_seconds");
    assert!(rss > f64::from(1 << 20), "RSS {rss}");
    assert!(virtual_size >= rss, "virtual {virtual_size} < RSS {rss}");
    assert!(open > 3.0 && open <= max, "open fds {open}, max {max}");
    assert!(threads >= 2.0, "threads {threads}");
    assert!(cpu > 0.0, "cpu {cpu}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // This test's own process: started before now, within the last day.
    assert!(
        started <= now && started > now - 86_400.0,
        "started {started}, now {now}"
    );

    server.stop().await;
    assert!(
        tokio::net::TcpStream::connect(metrics).await.is_err(),
        "the metrics address closes with the server"
    );
}

#[tokio::test]
async fn without_a_metrics_address_metrics_stay_public_with_the_process_figures() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(config(dir.path())).await;
    assert_eq!(server.metrics, None);
    let (status, text) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(sample(&text, "process_open_fds") > 3.0);
    server.stop().await;
}
