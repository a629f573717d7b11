//! Origin allowlist for `/socket.io/` and the passkey sign-in routes (`/api/`): every polling
//! request, websocket upgrade (with or without `sid`) and API call is checked before its
//! handler sees it.
//!
//! - no `Origin` header: a non-browser client (browsers always send one on websocket upgrades
//!   and cross-origin requests), allowed;
//! - exactly one `Origin` whose scheme, host and port equal those of the server's public origin
//!   (`--public-origin`; by default `http://<bound address>`, and also `http://localhost:<port>`
//!   when that address is a loopback one) or of an origin in `--allowed-origins`: allowed.
//!   Compared as origins, not as text: scheme and host case and an explicit default port
//!   (`:80`, `:443`) make no difference.
//! - anything else (an unknown origin, `null`, `https` where the server is `http`, several
//!   `Origin` headers): 403.
//!
//! The request's `Host` header plays no part: a page that a DNS rebinding points at the server
//! sends its own origin (`http://evil.example:3000`) with a `Host` the attacker chooses.
//!
//! An allowed origin also gets CORS, as socket.io's `cors` option (the npm `cors` package)
//! answers with a list of origins, so a page on another origin can use the official client's
//! default transports (polling, then the upgrade):
//!
//! - `OPTIONS` (a preflight) is answered here with 204: `Access-Control-Allow-Origin` is the
//!   request's own `Origin` (never `*`), `Access-Control-Allow-Methods: GET, POST` (what
//!   Engine.IO uses), the requested headers reflected, `Access-Control-Max-Age`, and
//!   `Vary: Origin, Access-Control-Request-Headers`;
//! - every other answer carries `Access-Control-Allow-Origin` and `Vary: Origin`;
//! - both carry `Access-Control-Allow-Credentials: true` with `--cors-allow-credentials`.
//!
//! A refused origin gets its 403 without any of these (a preflight too); a request without
//! `Origin` and a websocket upgrade (browsers apply no CORS to websockets) get none either.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    CONTENT_LENGTH, ORIGIN, UPGRADE, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use url::{Host, Origin, Url};

use crate::refusals::{refused, Refusal};

/// Why a configured origin is not one.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("`{value}` is not a URL")]
    NotAUrl {
        value: String,
        #[source]
        source: url::ParseError,
    },
    #[error("`{value}` is not an http or https origin")]
    Scheme { value: String },
    #[error("`{value}` is not an origin: it has a path, query, fragment or credentials")]
    NotAnOrigin { value: String },
}

/// A configuration flag that does not hold origins.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid --public-origin (e.g. `https://chat.example`)")]
    Public(#[source] OriginError),
    #[error("invalid --allowed-origins entry (comma-separated, e.g. `https://chat.example`)")]
    Allowed(#[source] OriginError),
}

/// Parses one `scheme://host[:port]` origin (a trailing `/` is tolerated).
pub fn parse_origin(value: &str) -> Result<Origin, OriginError> {
    let url = Url::parse(value).map_err(|source| OriginError::NotAUrl {
        value: value.to_owned(),
        source,
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(OriginError::Scheme {
            value: value.to_owned(),
        });
    }
    let bare = url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !bare {
        return Err(OriginError::NotAnOrigin {
            value: value.to_owned(),
        });
    }
    Ok(url.origin())
}

#[derive(Debug)]
pub struct OriginPolicy {
    allowed: Vec<Origin>,
    /// How many of `allowed`, from the first, are the server's own (the public origin, or
    /// those of the bound address); the rest are `--allowed-origins`.
    own: usize,
    /// Whether the public origin was derived from a wildcard listen address (0.0.0.0, ::),
    /// which no browser visits: the operator should say where users reach the server.
    unnamed: bool,
    /// `--cors-allow-credentials`: cross-origin answers say `Access-Control-Allow-Credentials`.
    credentials: bool,
}

/// The methods a preflight allows: Engine.IO polls with GET and sends with POST.
const ALLOWED_METHODS: &str = "GET, POST";

/// How long a browser may reuse a preflight's answer, in seconds (Chromium caps it at 7200).
const PREFLIGHT_MAX_AGE: &str = "7200";

impl OriginPolicy {
    /// The origins of `--public-origin` (or, without it, those of the address the server is
    /// bound to) and of `--allowed-origins`.
    pub fn new(
        public: Option<&str>,
        allowed: &[String],
        bound: SocketAddr,
    ) -> Result<Self, PolicyError> {
        let mut origins = match public.map(str::trim).filter(|p| !p.is_empty()) {
            Some(public) => vec![parse_origin(public).map_err(PolicyError::Public)?],
            None => derived_origins(bound),
        };
        let own = origins.len();
        for origin in allowed.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            origins.push(parse_origin(origin).map_err(PolicyError::Allowed)?);
        }
        Ok(Self {
            allowed: origins,
            own,
            unnamed: public.is_none() && bound.ip().is_unspecified(),
            credentials: false,
        })
    }

    /// With `yes`, cross-origin answers carry `Access-Control-Allow-Credentials: true`, as
    /// socket.io's `cors.credentials` (needed by a client with `withCredentials: true`).
    pub fn allow_credentials(mut self, yes: bool) -> Self {
        self.credentials = yes;
        self
    }

    /// Whether a browser page at `origin` (an `Origin` header's value) may open a socket.
    pub fn allows(&self, origin: &str) -> bool {
        // `null` and other opaque origins do not parse as an http(s) origin.
        parse_origin(origin).is_ok_and(|origin| self.allowed.contains(&origin))
    }

    /// The allowed origins, as browsers write them.
    pub fn origins(&self) -> Vec<String> {
        self.allowed
            .iter()
            .map(Origin::ascii_serialization)
            .collect()
    }

    /// The server's own origins, as browsers write them: `--public-origin`, or without it those
    /// of the bound address (never an `--allowed-origins` one).
    pub fn own_origins(&self) -> Vec<String> {
        self.allowed[..self.own]
            .iter()
            .map(Origin::ascii_serialization)
            .collect()
    }

    /// True when the server listens on every address without `--public-origin`: browsers
    /// reach it at an address it cannot know, and only `--allowed-origins` pass.
    pub fn lacks_a_public_origin(&self) -> bool {
        self.unnamed
    }
}

/// `http://<ip>:<port>` of the bound address, and `http://localhost:<port>` when it is a
/// loopback address.
fn derived_origins(bound: SocketAddr) -> Vec<Origin> {
    let http = |host| Origin::Tuple("http".to_owned(), host, bound.port());
    let ip = match bound.ip() {
        std::net::IpAddr::V4(ip) => Host::Ipv4(ip),
        std::net::IpAddr::V6(ip) => Host::Ipv6(ip),
    };
    let mut origins = vec![http(ip)];
    if bound.ip().is_loopback() {
        origins.push(http(Host::Domain("localhost".to_owned())));
    }
    origins
}

/// What the `Origin` headers of a `/socket.io/` request decide.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// No `Origin`: not a browser's cross-origin request; as it is.
    Absent,
    /// One allowed origin, as the request wrote it.
    Allowed(HeaderValue),
    Refused,
}

impl OriginPolicy {
    fn judge(&self, headers: &HeaderMap) -> Verdict {
        let mut origins = headers.get_all(ORIGIN).iter();
        match (origins.next(), origins.next()) {
            (None, _) => Verdict::Absent,
            (Some(origin), None) if origin.to_str().is_ok_and(|o| self.allows(o)) => {
                Verdict::Allowed(origin.clone())
            }
            _ => Verdict::Refused,
        }
    }

    /// The headers every answer to an allowed origin carries.
    fn allow(&self, origin: HeaderValue, headers: &mut HeaderMap) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(VARY, HeaderValue::from_name(ORIGIN));
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// The answer to a preflight from an allowed origin.
    fn preflight(&self, origin: HeaderValue, request: &HeaderMap) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        self.allow(origin, headers);
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        for requested in request.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            headers.append(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        headers.append(VARY, HeaderValue::from_name(ACCESS_CONTROL_REQUEST_HEADERS));
        headers.insert(
            ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        // Safari waits for a body on a 204 without it (what the npm `cors` package says).
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        response
    }
}

/// The Origin check and CORS of `/socket.io/` requests and of the passkey sign-in routes
/// (`/api/`, see the module doc).
pub async fn check_origin(
    State(policy): State<Arc<OriginPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !crate::transport::is_socket_path(path) && !crate::identity::http::is_api_path(path) {
        return next.run(request).await;
    }
    match policy.judge(request.headers()) {
        Verdict::Absent => next.run(request).await,
        Verdict::Refused => {
            metrics::counter!("tether_origin_refused_total").increment(1);
            refused(Refusal::Origin);
            (StatusCode::FORBIDDEN, "origin not allowed").into_response()
        }
        Verdict::Allowed(_) if request.headers().contains_key(UPGRADE) => next.run(request).await,
        Verdict::Allowed(origin) if request.method() == Method::OPTIONS => {
            policy.preflight(origin, request.headers())
        }
        Verdict::Allowed(origin) => {
            let mut response = next.run(request).await;
            policy.allow(origin, response.headers_mut());
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(public: Option<&str>, allowed: &[&str], bound: &str) -> OriginPolicy {
        let allowed: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
        OriginPolicy::new(public, &allowed, bound.parse().unwrap()).expect("valid origins")
    }

    #[test]
    fn by_default_the_bound_address_is_the_origin_and_loopback_is_also_localhost() {
        let p = policy(None, &[], "127.0.0.1:3000");
        assert!(p.allows("http://127.0.0.1:3000"));
        assert!(p.allows("http://localhost:3000"));
        assert!(
            p.allows("HTTP://LocalHost:3000"),
            "scheme and host case do not matter"
        );
        assert!(!p.allows("http://127.0.0.1:3001"));
        assert!(!p.allows("https://127.0.0.1:3000"), "the scheme counts");
        assert!(!p.allows("http://evil.example:3000"));
        assert_eq!(
            p.origins(),
            ["http://127.0.0.1:3000", "http://localhost:3000"]
        );
        let v6 = policy(None, &[], "[::1]:8080");
        assert!(v6.allows("http://[::1]:8080"));
        assert!(v6.allows("http://localhost:8080"));
        let lan = policy(None, &[], "192.168.1.5:3000");
        assert!(lan.allows("http://192.168.1.5:3000"));
        assert!(
            !lan.allows("http://localhost:3000"),
            "not a loopback address"
        );
        assert!(!lan.lacks_a_public_origin());
    }

    #[test]
    fn default_ports_are_the_same_origin_as_no_port() {
        let p = policy(None, &[], "127.0.0.1:80");
        assert!(p.allows("http://127.0.0.1"));
        assert!(p.allows("http://127.0.0.1:80"));
        let p = policy(Some("https://chat.example:443/"), &[], "0.0.0.0:8080");
        assert!(p.allows("https://chat.example"));
        assert!(p.allows("https://Chat.Example:443"));
        assert!(!p.allows("http://chat.example"));
        assert!(!p.allows("https://chat.example:8443"));
    }

    #[test]
    fn own_origins_are_the_public_or_bound_ones_never_the_allowed_ones() {
        let extra = vec!["https://partner.example".to_owned()];
        let bound = SocketAddr::from(([127, 0, 0, 1], 3000));
        let p = OriginPolicy::new(None, &extra, bound).unwrap();
        assert_eq!(
            p.own_origins(),
            ["http://127.0.0.1:3000", "http://localhost:3000"]
        );
        let p = OriginPolicy::new(Some("https://chat.example"), &extra, bound).unwrap();
        assert_eq!(p.own_origins(), ["https://chat.example"]);
        assert_eq!(p.origins().len(), 2);
    }

    #[test]
    fn a_public_origin_replaces_the_derived_one() {
        let p = policy(Some("https://chat.example"), &[], "127.0.0.1:3000");
        assert!(p.allows("https://chat.example"));
        assert!(!p.allows("http://127.0.0.1:3000"));
        assert!(!p.allows("http://localhost:3000"));
    }

    #[test]
    fn foreign_opaque_and_malformed_origins_are_refused() {
        let p = policy(None, &[], "127.0.0.1:3000");
        for origin in [
            "null",
            "",
            "127.0.0.1:3000",
            "http://127.0.0.1:3000/path",
            "http://user@127.0.0.1:3000",
            "ws://127.0.0.1:3000",
            "file:///etc/passwd",
            "http://127.0.0.1.evil.example:3000",
        ] {
            assert!(!p.allows(origin), "{origin:?}");
        }
    }

    #[test]
    fn listed_origins_pass() {
        let p = policy(
            None,
            &["https://app.example/", " http://b.example:8080"],
            "0.0.0.0:1",
        );
        assert!(p.allows("https://app.example"));
        assert!(p.allows("http://b.example:8080"));
        assert!(!p.allows("https://other.example"));
        assert!(p.lacks_a_public_origin());
    }

    mod cors {
        use super::*;
        use axum::body::Body;
        use axum::routing::any;
        use axum::Router;
        use tower::ServiceExt;

        const ALLOWED: &str = "http://localhost:8080";

        /// The middleware in front of a stand-in for Engine.IO that answers 200 with a `Vary`
        /// of its own, for `/socket.io/` and for other paths.
        async fn answer(policy: OriginPolicy, request: Request) -> Response {
            let inner = || async { ([(VARY, "Accept-Encoding")], "inner").into_response() };
            Router::new()
                .route("/socket.io/", any(inner))
                .route("/page", any(inner))
                .layer(axum::middleware::from_fn_with_state(
                    Arc::new(policy),
                    check_origin,
                ))
                .oneshot(request)
                .await
                .expect("infallible")
        }

        fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> Request {
            let mut builder = Request::builder().method(method).uri(path);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.body(Body::empty()).expect("a request")
        }

        fn server() -> OriginPolicy {
            policy(None, &[ALLOWED], "127.0.0.1:3000")
        }

        fn values(response: &Response, name: &str) -> Vec<String> {
            response
                .headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().expect("ascii").to_owned())
                .collect()
        }

        fn cors_headers(response: &Response) -> Vec<String> {
            response
                .headers()
                .keys()
                .map(|name| name.as_str().to_owned())
                .filter(|name| name.starts_with("access-control-"))
                .collect()
        }

        #[tokio::test]
        async fn a_preflight_from_an_allowed_origin_is_answered_as_the_cors_package_does() {
            let preflight = request(
                Method::OPTIONS,
                "/socket.io/?EIO=4&transport=polling",
                &[
                    ("Origin", ALLOWED),
                    ("Access-Control-Request-Method", "POST"),
                    ("Access-Control-Request-Headers", "content-type, x-custom"),
                ],
            );
            let response = answer(server(), preflight).await;
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
            assert_eq!(values(&response, "access-control-allow-origin"), [ALLOWED]);
            assert_eq!(
                values(&response, "vary"),
                ["origin", "access-control-request-headers"]
            );
            assert_eq!(
                values(&response, "access-control-allow-methods"),
                ["GET, POST"]
            );
            assert_eq!(
                values(&response, "access-control-allow-headers"),
                ["content-type, x-custom"]
            );
            assert_eq!(values(&response, "access-control-max-age"), ["7200"]);
            assert_eq!(values(&response, "content-length"), ["0"]);
            assert!(
                values(&response, "access-control-allow-credentials").is_empty(),
                "credentials are off by default"
            );
        }

        #[tokio::test]
        async fn an_answer_to_an_allowed_origin_names_it_and_keeps_engine_ios_own_headers() {
            for method in [Method::GET, Method::POST] {
                let response = answer(
                    server(),
                    request(method, "/socket.io/?EIO=4", &[("Origin", ALLOWED)]),
                )
                .await;
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(values(&response, "access-control-allow-origin"), [ALLOWED]);
                assert_eq!(values(&response, "vary"), ["Accept-Encoding", "origin"]);
                assert_eq!(cors_headers(&response), ["access-control-allow-origin"]);
            }
            // The public origin is answered the same way (`localhost` and `127.0.0.1` are two
            // origins of the same server, so a page on one reaching the other is cross-origin).
            let response = answer(
                server(),
                request(
                    Method::GET,
                    "/socket.io/?EIO=4",
                    &[("Origin", "http://LOCALHOST:3000")],
                ),
            )
            .await;
            assert_eq!(
                values(&response, "access-control-allow-origin"),
                ["http://LOCALHOST:3000"],
                "the request's own spelling, as browsers compare it"
            );
        }

        #[tokio::test]
        async fn credentials_are_allowed_only_with_the_flag() {
            let on = || server().allow_credentials(true);
            let response = answer(
                on(),
                request(Method::GET, "/socket.io/", &[("Origin", ALLOWED)]),
            )
            .await;
            assert_eq!(
                values(&response, "access-control-allow-credentials"),
                ["true"]
            );
            let response = answer(
                on(),
                request(
                    Method::OPTIONS,
                    "/socket.io/",
                    &[
                        ("Origin", ALLOWED),
                        ("Access-Control-Request-Method", "GET"),
                    ],
                ),
            )
            .await;
            assert_eq!(
                values(&response, "access-control-allow-credentials"),
                ["true"]
            );
            let refused = answer(
                on(),
                request(
                    Method::GET,
                    "/socket.io/",
                    &[("Origin", "http://evil.example")],
                ),
            )
            .await;
            assert!(cors_headers(&refused).is_empty());
        }

        #[tokio::test]
        async fn a_refused_origin_gets_403_and_no_cors_header_even_on_a_preflight() {
            let refused: [&[(&str, &str)]; 3] = [
                &[("Origin", "http://evil.example")],
                &[("Origin", "http://localhost:8081")],
                &[("Origin", ALLOWED), ("Origin", "http://evil.example")],
            ];
            for headers in refused {
                for method in [Method::OPTIONS, Method::GET, Method::POST] {
                    let mut headers = headers.to_vec();
                    headers.push(("Access-Control-Request-Method", "POST"));
                    let response =
                        answer(server(), request(method.clone(), "/socket.io/", &headers)).await;
                    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{headers:?}");
                    assert!(cors_headers(&response).is_empty(), "{headers:?}");
                    assert!(values(&response, "vary").is_empty(), "{headers:?}");
                }
            }
        }

        #[tokio::test]
        async fn no_origin_a_websocket_upgrade_and_other_paths_get_no_cors() {
            let cases = [
                request(Method::OPTIONS, "/socket.io/", &[]),
                request(Method::GET, "/socket.io/", &[]),
                request(
                    Method::GET,
                    "/socket.io/?EIO=4&transport=websocket",
                    &[
                        ("Origin", ALLOWED),
                        ("Upgrade", "websocket"),
                        ("Connection", "Upgrade"),
                    ],
                ),
                request(Method::OPTIONS, "/page", &[("Origin", ALLOWED)]),
                request(Method::GET, "/page", &[("Origin", "http://evil.example")]),
            ];
            for request in cases {
                let (method, uri) = (request.method().clone(), request.uri().clone());
                let response = answer(server(), request).await;
                assert_eq!(response.status(), StatusCode::OK, "{method} {uri}");
                assert_eq!(
                    values(&response, "vary"),
                    ["Accept-Encoding"],
                    "{method} {uri}"
                );
                assert!(cors_headers(&response).is_empty(), "{method} {uri}");
            }
        }
    }

    #[test]
    fn invalid_flags_are_errors_naming_the_flag_and_the_value() {
        let bound: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let cases = [
            (Some("chat.example"), vec![], "--public-origin", "not a URL"),
            (
                Some("ftp://chat.example"),
                vec![],
                "--public-origin",
                "http or https",
            ),
            (
                None,
                vec!["https://a.example/app".to_owned()],
                "--allowed-origins",
                "path",
            ),
            (
                None,
                vec!["null".to_owned()],
                "--allowed-origins",
                "not a URL",
            ),
        ];
        for (public, allowed, flag, reason) in cases {
            let error = OriginPolicy::new(public, &allowed, bound).expect_err("invalid");
            let chain = format!("{:#}", anyhow::Error::from(error));
            assert!(chain.contains(flag) && chain.contains(reason), "{chain}");
        }
    }
}
