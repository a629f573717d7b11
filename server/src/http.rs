//! HTTP routes: the server-rendered Leptos app and the built site's files; the Prometheus
//! recorder. `/healthz`, `/readyz` and `/metrics` are in [`crate::ops`].

use std::sync::{Arc, OnceLock};

use app::router::PATHS;
use app::{shell, ClientConfig};
use axum::body::Body;
use axum::http::{header, HeaderValue, Request};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use leptos::config::LeptosOptions;
use leptos::prelude::{provide_context, use_context};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::assets::{Assets, HTML_CACHE, REVALIDATE};
use crate::identity::passkeys::Passkeys;

/// The app's pages are rendered (streamed) for the paths `app::router` knows; any other path is
/// a file of the built site (`assets`, embedded in the binary, or else `leptos_options.site_root`
/// on disk) or, failing that, the app's "Page not found" with a 404.
///
/// Pages offer passkeys (`client.passkeys`) only when `passkeys` are on and the page was
/// requested at an origin that may use them ([`Passkeys::serves_host`]).
pub fn router(
    leptos_options: LeptosOptions,
    client: ClientConfig,
    passkeys: Option<Arc<Passkeys>>,
    assets: Option<Arc<Assets>>,
) -> Router {
    // Rendering spawns onto Leptos' executor (already set when a second app is built).
    let _ = any_spawner::Executor::init_tokio();
    let context = move || {
        let host = use_context::<axum::http::request::Parts>().and_then(|parts| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
        let passkeys = passkeys
            .as_ref()
            .zip(host)
            .is_some_and(|(p, host)| p.serves_host(&host));
        provide_context(ClientConfig { passkeys, ..client })
    };
    let page = leptos_axum::render_app_to_stream_with_context(context, {
        let options = leptos_options.clone();
        move || shell(options.clone())
    });
    let pages = PATHS.into_iter().fold(Router::new(), |pages, path| {
        pages.route(path, get(page.clone()))
    });
    let routes = pages;
    let routes = match assets {
        Some(assets) => routes.fallback(move |request: Request<Body>| {
            let page = page.clone();
            let assets = assets.clone();
            async move {
                let (method, path) = (request.method(), request.uri().path());
                match assets.respond(method, path, request.headers()) {
                    Some(file) => file,
                    None => page(request).await,
                }
            }
        }),
        None => routes.fallback(leptos_axum::file_and_error_handler(shell)),
    };
    routes
        .layer(axum::middleware::map_response(default_cache_control))
        .layer(page_compression())
        .with_state(leptos_options)
}

/// Rendered pages (and any file without a precompressed form) are gzipped on the way out when
/// the browser accepts it: a page of ~2.5 KB goes out as ~1.2 KB. Files that already carry a
/// `Content-Encoding` (the build's precompressed forms) pass untouched, as do bodies under
/// 32 bytes and images. Pages hold no secret (the session lives in the browser's storage), so
/// compressing them beside reflected input gives a BREACH-style attacker nothing to recover.
fn page_compression() -> tower_http::compression::CompressionLayer {
    tower_http::compression::CompressionLayer::new()
        .gzip(true)
        .quality(tower_http::CompressionLevel::Fastest)
}

/// Pages are cached briefly in the browser ([`HTML_CACHE`]); anything else that did not say
/// (files read from disk, health and metrics answers) is revalidated on each use.
async fn default_cache_control(mut response: Response) -> Response {
    if !response.headers().contains_key(header::CACHE_CONTROL) {
        let html = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
        let policy = if html { HTML_CACHE } else { REVALIDATE };
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    }
    response
}

/// The process-wide Prometheus recorder (the `metrics` facade has one global recorder; every
/// app built in this process reports into it).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ])
            .expect("static bucket list is non-empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's); then ours only
        // renders what it was given, which is still well-formed output.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
