//! Cluster mode against a Redis that wants TLS and a password, as managed Redis does: a real
//! `redis-server` listening only on a TLS port (`--port 0`), its certificate signed by a
//! throwaway CA made with the `openssl` CLI, `--requirepass` set. Two real nodes reach it with
//! `rediss://` and `--redis-ca-file`; what they cannot use (a wrong password, an untrusted
//! certificate) stops them at start with a message that names no credential.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{refused_start, ChildServer, TestClient, WAIT};

const PASSWORD: &str = "s3cret-Tether-pw";

/// An ACL user allowed only this test's keys and the adapter's channels, as an operator sharing
/// a Redis would set it up, with its own password.
const ACL_USER: &str = "tether";
const ACL_PASSWORD: &str = "acl-S3cret-pw";

/// A start refused for a reason no retry fixes takes one attempt, not the store connection's
/// retries (about 6 s of backoff).
const REFUSED_WITHIN: Duration = Duration::from_secs(4);

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA (`{name}.pem`, `{name}.key`).
fn make_ca(dir: &Path, name: &str) {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN=Tether test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A leaf certificate `{name}.pem` with key `{name}.key`, signed by the CA `ca`.
fn make_leaf(dir: &Path, ca: &str, name: &str, usage: &str) {
    let (pem, key, csr, ext) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    std::fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

/// A `redis-server` reachable only over TLS, with a password; killed when dropped.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
    prefix: String,
}

impl TlsRedis {
    /// `verify_clients`: the server asks for a client certificate signed by its CA (mutual TLS).
    async fn start(verify_clients: bool) -> TlsRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        make_ca(dir.path(), "ca");
        make_ca(dir.path(), "other-ca");
        make_leaf(dir.path(), "ca", "server", "serverAuth");
        make_leaf(dir.path(), "ca", "client", "clientAuth");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        let path = |name: &str| dir.path().join(name).display().to_string();
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &path("server.pem")])
            .args(["--tls-key-file", &path("server.key")])
            .args(["--tls-ca-cert-file", &path("ca.pem")])
            .args([
                "--tls-auth-clients",
                if verify_clients { "yes" } else { "no" },
            ])
            .args(["--requirepass", PASSWORD])
            .args([
                "--user",
                ACL_USER,
                "on",
                &format!(">{ACL_PASSWORD}"),
                &format!("~{prefix}:*"),
                &format!("&{prefix}:sio-*"),
                "+@all",
                "-@dangerous",
            ])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it from apt)");
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        TlsRedis {
            child,
            port,
            dir,
            prefix,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url_with(&self, password: &str) -> String {
        format!("rediss://:{password}@127.0.0.1:{}/", self.port)
    }

    /// A node's flags: the URL with `password` and, when given, the CA file to trust.
    fn node_args(&self, password: &str, ca: Option<&str>) -> Vec<String> {
        let mut args = vec![
            "--redis-url".to_owned(),
            self.url_with(password),
            "--redis-prefix".to_owned(),
            self.prefix.clone(),
        ];
        if let Some(ca) = ca {
            args.push("--redis-ca-file".to_owned());
            args.push(self.file(ca).display().to_string());
        }
        args
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect_as(node: &ChildServer, name: &str) -> TestClient {
    let mut client = TestClient::connect(&node.url(), json!({ "username": name })).await;
    client.expect_session().await;
    client
}

#[tokio::test]
async fn two_nodes_on_a_tls_redis_with_a_password_carry_a_message_between_them() {
    let redis = TlsRedis::start(false).await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // Node A: the default user's password in its URL. Node B: an ACL user limited to this
    // prefix's keys and channels, its password read from a file (kept out of `ps`).
    let node_a =
        ChildServer::start_with(dirs[0].path(), &redis.node_args(PASSWORD, Some("ca.pem"))).await;
    let password_file = redis.file("password");
    std::fs::write(&password_file, format!("{ACL_PASSWORD}\n")).unwrap();
    let args_b = [
        "--redis-url".to_owned(),
        format!("rediss://{ACL_USER}@127.0.0.1:{}/", redis.port),
        "--redis-prefix".to_owned(),
        redis.prefix.clone(),
        "--redis-password-file".to_owned(),
        password_file.display().to_string(),
        "--redis-ca-file".to_owned(),
        redis.file("ca.pem").display().to_string(),
    ];
    let node_b = ChildServer::start_with(dirs[1].path(), &args_b).await;

    let mut ada = connect_as(&node_a, "ada").await;
    let mut bob = connect_as(&node_b, "bob").await;
    // Presence crosses nodes through the adapter's pub/sub, over TLS.
    assert_eq!(
        ada.next("user connected").await["userID"],
        bob.user_id.as_str()
    );
    let ack = ada.send(&bob.user_id, "over TLS").await;
    assert!(ack["ok"]["id"].is_i64(), "stored and acked: {ack}");
    let got = bob.next("private message").await;
    assert_eq!(got["content"], "over TLS");
    assert_eq!(got["from"], ada.user_id.as_str());
    assert_eq!(got["id"], ack["ok"]["id"]);

    // And back: node B's ACL user writes the message and publishes to node A.
    let ack = bob.send(&ada.user_id, "and back").await;
    assert!(ack["ok"]["id"].is_i64(), "stored and acked: {ack}");
    let got = ada.next("private message").await;
    assert_eq!(got["content"], "and back");
    assert_eq!(got["id"], ack["ok"]["id"]);
}

#[tokio::test]
async fn a_wrong_password_stops_the_start_without_showing_either_password() {
    let redis = TlsRedis::start(false).await;
    let wrong = "not-the-Right-pw";
    let (status, printed, took) = refused_start(&redis.node_args(wrong, Some("ca.pem"))).await;
    assert!(!status.success(), "refused: {printed}");
    assert!(
        printed.contains("refused the credentials"),
        "says what is wrong: {printed}"
    );
    assert!(
        printed.contains(&format!("rediss://<credentials>@127.0.0.1:{}/", redis.port)),
        "names the Redis: {printed}"
    );
    assert!(
        !printed.contains(wrong) && !printed.contains(PASSWORD),
        "no password in what it printed: {printed}"
    );
    assert!(
        took < REFUSED_WITHIN,
        "refused at once, not retried: {took:?}"
    );

    // No password at all: Redis asks for one.
    let url = format!("rediss://127.0.0.1:{}/", redis.port);
    let args = ["--redis-url".to_owned(), url, "--redis-ca-file".to_owned()]
        .into_iter()
        .chain([redis.file("ca.pem").display().to_string()])
        .collect::<Vec<_>>();
    let (status, printed, _) = refused_start(&args).await;
    assert!(!status.success(), "refused: {printed}");
    assert!(printed.contains("wants a password"), "{printed}");
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_stops_the_start() {
    let redis = TlsRedis::start(false).await;
    // Trusting another CA, and trusting only the system's CA store (no --redis-ca-file): the
    // throwaway CA is in neither.
    for ca in [Some("other-ca.pem"), None] {
        let (status, printed, took) = refused_start(&redis.node_args(PASSWORD, ca)).await;
        assert!(!status.success(), "refused: {printed}");
        assert!(
            printed.contains("certificate is not trusted"),
            "says what is wrong: {printed}"
        );
        assert!(
            printed.contains("UnknownIssuer"),
            "names rustls' reason: {printed}"
        );
        assert!(!printed.contains(PASSWORD), "no password: {printed}");
        assert!(
            took < REFUSED_WITHIN,
            "refused at once, not retried: {took:?}"
        );
    }
}

#[tokio::test]
async fn the_wrong_scheme_for_the_port_stops_the_start_with_a_hint() {
    let tls = TlsRedis::start(false).await;
    let plain = crate::helpers::RedisServer::start_own().await;
    let plain_port = plain
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    for (url, hint) in [
        (
            format!("redis://:{PASSWORD}@127.0.0.1:{}/", tls.port),
            "is the scheme right for this port",
        ),
        (
            format!("rediss://:{PASSWORD}@127.0.0.1:{plain_port}/"),
            "is the scheme right for this port",
        ),
    ] {
        let (status, printed, took) = refused_start(&["--redis-url".to_owned(), url]).await;
        assert!(!status.success(), "refused: {printed}");
        assert!(printed.contains(hint), "says what is wrong: {printed}");
        assert!(!printed.contains(PASSWORD), "no password: {printed}");
        assert!(
            took < REFUSED_WITHIN,
            "refused at once, not retried: {took:?}"
        );
    }
}

#[tokio::test]
async fn a_redis_that_is_not_there_stops_the_start_after_the_retries() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{closed}/");
    let (status, printed, took) = refused_start(&["--redis-url".to_owned(), url]).await;
    assert!(!status.success(), "refused: {printed}");
    assert!(
        printed.contains(&format!("rediss://<credentials>@127.0.0.1:{closed}/")),
        "names the Redis: {printed}"
    );
    assert!(printed.contains("refused"), "says what is wrong: {printed}");
    assert!(!printed.contains(PASSWORD), "no password: {printed}");
    // The store's connection retries with backoff (0.1 s doubling, six times): a Redis
    // started together with the node gets a few seconds to listen.
    assert!(took > Duration::from_secs(3), "retried first: {took:?}");
}

#[tokio::test]
async fn a_redis_that_verifies_clients_takes_a_node_with_a_client_certificate() {
    let redis = TlsRedis::start(true).await;
    let mut args = redis.node_args(PASSWORD, Some("ca.pem"));
    let (status, printed, _) = refused_start(&args).await;
    assert!(
        !status.success(),
        "no client certificate, refused: {printed}"
    );
    assert!(
        printed.contains("does it want a client certificate"),
        "says what is wrong: {printed}"
    );
    assert!(!printed.contains(PASSWORD), "no password: {printed}");

    args.extend([
        "--redis-client-cert".to_owned(),
        redis.file("client.pem").display().to_string(),
        "--redis-client-key".to_owned(),
        redis.file("client.key").display().to_string(),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let node = ChildServer::start_with(dir.path(), &args).await;
    connect_as(&node, "ada").await;
}
