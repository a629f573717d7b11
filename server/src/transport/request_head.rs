//! Socket requests hand their head to socketioxide, which keeps it on the socket for the
//! socket's whole life (`Socket::req_parts`). hyper parses a request without copying: every
//! header value and the URI are slices of the connection's read buffer (8–16 KiB), and one
//! live slice keeps the whole buffer alive. Copying the head into allocations of its own
//! before it reaches socketioxide lets that buffer go once the upgrade is done, which
//! measured ~16 KB less memory per connected socket (BENCHMARKS.md, session 4).
//!
//! The copy keeps only the headers the Engine.IO layer reads after this middleware
//! ([`KEPT_HEADERS`]). Everything else a browser sends (user agent, cookies, languages, …)
//! was kept per socket for its whole life although nothing read it: the header map alone was
//! ~650 bytes for the load generator's five headers, ~110 now (heaptrack, BENCHMARKS.md
//! session 8), and a browser sends a dozen. The Origin is checked before this middleware.
//! The one thing taken from the dropped headers is the device's browser label
//! ([`DeviceLabel`], a two-byte extension classified from `User-Agent`); the header itself is
//! not kept.

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;

use crate::identity::device::DeviceLabel;

/// Middleware: Socket.IO requests continue with a head that shares nothing with hyper's
/// read buffer; every other request passes untouched.
pub async fn detach_socket_request_head(request: Request, next: Next) -> Response {
    if !super::is_socket_path(request.uri().path()) {
        return next.run(request).await;
    }
    next.run(detach(request)).await
}

/// What engineioxide reads from a socket request's headers: the WebSocket key (to answer the
/// upgrade) and the content type (of a polling request's body).
const KEPT_HEADERS: [axum::http::HeaderName; 2] = [
    axum::http::header::SEC_WEBSOCKET_KEY,
    axum::http::header::CONTENT_TYPE,
];

/// The same request, its URI (also the copy axum keeps as [`OriginalUri`]) and the
/// [`KEPT_HEADERS`] copied into fresh allocations; other headers are dropped, after the
/// `User-Agent` is classified into a [`DeviceLabel`] extension. Method, version and the
/// extensions do not borrow the read buffer, and move as they are.
fn detach(request: Request) -> Request {
    let (mut parts, body) = request.into_parts();
    let label = parts
        .headers
        .get(axum::http::header::USER_AGENT)
        .map_or(DeviceLabel::UNKNOWN, |ua| {
            DeviceLabel::from_user_agent(ua.as_bytes())
        });
    parts.extensions.insert(label);
    parts.uri = copy_uri(&parts.uri);
    if let Some(OriginalUri(original)) = parts.extensions.get_mut::<OriginalUri>() {
        *original = copy_uri(original);
    }
    parts.headers = copy_headers(&parts.headers);
    Request::from_parts(parts, body)
}

fn copy_uri(uri: &Uri) -> Uri {
    // Parsing a `&str` copies it; a URI that printed from a valid one always parses again.
    uri.to_string().parse().unwrap_or_else(|_| uri.clone())
}

fn copy_headers(headers: &HeaderMap) -> HeaderMap {
    // Sized to what it keeps (usually one value): a map grown from empty reserves room for
    // several entries.
    let kept = KEPT_HEADERS
        .iter()
        .map(|name| headers.get_all(name).iter().count());
    let mut copy = HeaderMap::with_capacity(kept.sum());
    for name in &KEPT_HEADERS {
        for value in headers.get_all(name) {
            let mut owned =
                HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
            owned.set_sensitive(value.is_sensitive());
            copy.append(name.clone(), owned);
        }
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request_from_one_buffer() -> (axum::body::Bytes, Request) {
        // What hyper hands over: URI and header values are slices of one shared buffer.
        let buffer = axum::body::Bytes::from_static(
            b"/socket.io/?EIO=4&transport=websocketdGhlIHNhbXBsZSBub25jZQ==",
        );
        let uri = Uri::from_maybe_shared(buffer.slice(0..37)).unwrap();
        let key = HeaderValue::from_maybe_shared(buffer.slice(37..)).unwrap();
        let request = Request::builder()
            .uri(uri.clone())
            .extension(OriginalUri(uri))
            .header("sec-websocket-key", key)
            .header("content-type", "text/plain; charset=UTF-8")
            .header("content-type", "application/octet-stream")
            .header("cookie", "a=1")
            .header("user-agent", "Mozilla/5.0")
            .body(Body::empty())
            .unwrap();
        (buffer, request)
    }

    #[test]
    fn the_copied_head_has_the_same_uri_and_only_the_headers_engine_io_reads() {
        let (_, request) = request_from_one_buffer();
        let copy = detach(request);
        assert_eq!(copy.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(copy.uri().query(), Some("EIO=4&transport=websocket"));
        assert_eq!(
            copy.headers()["sec-websocket-key"],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        let types: Vec<_> = copy.headers().get_all("content-type").iter().collect();
        assert_eq!(
            types,
            ["text/plain; charset=UTF-8", "application/octet-stream"]
        );
        assert_eq!(copy.headers().len(), 3, "{:?}", copy.headers());
        assert!(copy.headers().get("cookie").is_none());
        assert!(copy.headers().get("user-agent").is_none());
        assert_eq!(
            copy.extensions().get::<DeviceLabel>(),
            Some(&DeviceLabel::UNKNOWN),
            "\"Mozilla/5.0\" names no browser"
        );
    }

    #[test]
    fn the_browser_label_is_taken_before_the_user_agent_is_dropped() {
        let request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket")
            .header(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            )
            .body(Body::empty())
            .unwrap();
        let copy = detach(request);
        assert!(copy.headers().get("user-agent").is_none());
        let label = copy.extensions().get::<DeviceLabel>().copied().unwrap();
        assert_eq!(label.label(), "Firefox on Linux");
    }

    #[test]
    fn the_copied_head_points_into_none_of_the_original_buffer() {
        let (buffer, request) = request_from_one_buffer();
        let range = buffer.as_ptr_range();
        let inside = |bytes: &[u8]| range.contains(&bytes.as_ptr());
        assert!(inside(request.headers()["sec-websocket-key"].as_bytes()));
        assert!(inside(request.uri().path().as_bytes()));
        let copy = detach(request);
        assert!(!inside(copy.headers()["sec-websocket-key"].as_bytes()));
        assert!(!inside(copy.uri().path().as_bytes()));
        let OriginalUri(original) = copy.extensions().get::<OriginalUri>().unwrap();
        assert_eq!(original, copy.uri());
        assert!(!inside(original.path().as_bytes()));
    }

    #[test]
    fn sensitive_values_stay_sensitive() {
        let mut value = HeaderValue::from_static("secret");
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("sec-websocket-key", value);
        assert!(copy_headers(&headers)["sec-websocket-key"].is_sensitive());
    }
}
