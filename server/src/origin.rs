//! Origin allowlist for `/socket.io/`: every polling request and websocket upgrade (with or
//! without `sid`) is checked before socketioxide sees it.
//!
//! - no `Origin` header: a non-browser client (browsers always send one on websocket upgrades
//!   and cross-origin requests), allowed;
//! - exactly one `Origin`, equal to the request's own host (same origin) or listed in
//!   `--allowed-origins`: allowed;
//! - anything else (an unknown origin, `null`, several `Origin` headers): 403.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    pub fn new(allowed: &[String]) -> Self {
        Self {
            allowed: allowed.iter().map(|o| normalize(o)).collect(),
        }
    }

    /// Whether a browser page at `origin` may open a socket on the server reached as `host`.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = normalize(origin);
        let Some((_, authority)) = origin.split_once("://") else {
            return false; // `null` and other opaque origins
        };
        let same_origin = host.is_some_and(|h| h.eq_ignore_ascii_case(authority));
        same_origin || self.allowed.contains(&origin)
    }
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
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
        (Some(origin), None) => {
            let host = request.headers().get(HOST).and_then(|h| h.to_str().ok());
            origin.to_str().is_ok_and(|o| policy.allows(o, host))
        }
        (Some(_), Some(_)) => false,
    };
    if verdict {
        next.run(request).await
    } else {
        metrics::counter!("tether_origin_refused_total").increment(1);
        tracing::warn!(
            path = request.uri().path(),
            "refused a socket request from a foreign origin"
        );
        (StatusCode::FORBIDDEN, "origin not allowed").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_own_origin_passes() {
        let p = OriginPolicy::default();
        assert!(p.allows("http://127.0.0.1:3000", Some("127.0.0.1:3000")));
        assert!(p.allows("https://Chat.Example", Some("chat.example")));
    }

    #[test]
    fn foreign_and_opaque_origins_are_refused() {
        let p = OriginPolicy::default();
        assert!(!p.allows("http://evil.example", Some("127.0.0.1:3000")));
        assert!(!p.allows("null", Some("127.0.0.1:3000")));
        assert!(!p.allows("http://127.0.0.1:3001", Some("127.0.0.1:3000")));
        assert!(!p.allows("http://127.0.0.1:3000", None));
    }

    #[test]
    fn listed_origins_pass() {
        let p = OriginPolicy::new(&["https://app.example/".into()]);
        assert!(p.allows("https://app.example", Some("api.example")));
        assert!(!p.allows("https://other.example", Some("api.example")));
    }
}
