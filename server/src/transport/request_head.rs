//! Socket requests hand their head to socketioxide, which keeps it on the socket for the
//! socket's whole life (`Socket::req_parts`). hyper parses a request without copying: every
//! header value and the URI are slices of the connection's read buffer (8–16 KiB), and one
//! live slice keeps the whole buffer alive. Copying the head into allocations of its own
//! before it reaches socketioxide lets that buffer go once the upgrade is done, which
//! measured ~16 KB less memory per connected socket (BENCHMARKS.md, session 4).

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;

/// Middleware: Socket.IO requests continue with a head that shares nothing with hyper's
/// read buffer; every other request passes untouched.
pub async fn detach_socket_request_head(request: Request, next: Next) -> Response {
    if !super::is_socket_path(request.uri().path()) {
        return next.run(request).await;
    }
    next.run(detach(request)).await
}

/// The same request, its URI (also the copy axum keeps as [`OriginalUri`]) and header values
/// copied into fresh allocations. Method, version, header names and the other extensions do
/// not borrow the read buffer, and move as they are.
fn detach(request: Request) -> Request {
    let (mut parts, body) = request.into_parts();
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
    let mut copy = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        owned.set_sensitive(value.is_sensitive());
        copy.append(name.clone(), owned);
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
            b"/socket.io/?EIO=4&transport=websockethttp://app.example",
        );
        let uri = Uri::from_maybe_shared(buffer.slice(0..37)).unwrap();
        let origin = HeaderValue::from_maybe_shared(buffer.slice(37..)).unwrap();
        let request = Request::builder()
            .uri(uri.clone())
            .extension(OriginalUri(uri))
            .header("origin", origin)
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Body::empty())
            .unwrap();
        (buffer, request)
    }

    #[test]
    fn the_copied_head_has_the_same_uri_and_every_header_value_in_order() {
        let (_, request) = request_from_one_buffer();
        let copy = detach(request);
        assert_eq!(copy.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(copy.uri().query(), Some("EIO=4&transport=websocket"));
        assert_eq!(copy.headers()["origin"], "http://app.example");
        let cookies: Vec<_> = copy.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }

    #[test]
    fn the_copied_head_points_into_none_of_the_original_buffer() {
        let (buffer, request) = request_from_one_buffer();
        let range = buffer.as_ptr_range();
        let inside = |bytes: &[u8]| range.contains(&bytes.as_ptr());
        assert!(inside(request.headers()["origin"].as_bytes()));
        assert!(inside(request.uri().path().as_bytes()));
        let copy = detach(request);
        assert!(!inside(copy.headers()["origin"].as_bytes()));
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
        headers.insert("authorization", value);
        assert!(copy_headers(&headers)["authorization"].is_sensitive());
    }
}
