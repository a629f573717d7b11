//! Origin allowlist for `/socket.io/`: every polling request and websocket upgrade (with or
//! without `sid`) is checked before socketioxide sees it.
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

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::ORIGIN;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use url::{Host, Origin, Url};

use crate::serve::RefusalLog;

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
    /// Whether the public origin was derived from a wildcard listen address (0.0.0.0, ::),
    /// which no browser visits: the operator should say where users reach the server.
    unnamed: bool,
    refusals: RefusalLog,
}

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
        for origin in allowed.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            origins.push(parse_origin(origin).map_err(PolicyError::Allowed)?);
        }
        Ok(Self {
            allowed: origins,
            unnamed: public.is_none() && bound.ip().is_unspecified(),
            refusals: RefusalLog::new("refused socket requests from a foreign origin (403)"),
        })
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

pub async fn check_origin(
    State(policy): State<Arc<OriginPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    if !crate::transport::is_socket_path(request.uri().path()) {
        return next.run(request).await;
    }
    let mut origins = request.headers().get_all(ORIGIN).iter();
    let verdict = match (origins.next(), origins.next()) {
        (None, _) => true,
        (Some(origin), None) => origin.to_str().is_ok_and(|o| policy.allows(o)),
        (Some(_), Some(_)) => false,
    };
    if verdict {
        next.run(request).await
    } else {
        metrics::counter!("tether_origin_refused_total").increment(1);
        policy.refusals.refused();
        (StatusCode::FORBIDDEN, "origin not allowed").into_response()
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
