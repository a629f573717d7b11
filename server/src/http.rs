//! HTTP routes: the server-rendered Leptos app and the built site's files; the Prometheus
//! recorder. `/healthz`, `/readyz` and `/metrics` are in [`crate::ops`].

use std::sync::OnceLock;

use app::router::PATHS;
use app::{shell, ClientConfig};
use axum::routing::get;
use axum::Router;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The app's pages are rendered (streamed) for the paths `app::router` knows; any other path is
/// a file of the built site or, failing that, the app's "Page not found" with a 404.
pub fn router(leptos_options: LeptosOptions, client: ClientConfig) -> Router {
    // Rendering spawns onto Leptos' executor (already set when a second app is built).
    let _ = any_spawner::Executor::init_tokio();
    let page = leptos_axum::render_app_to_stream_with_context(move || provide_context(client), {
        let options = leptos_options.clone();
        move || shell(options.clone())
    });
    let pages = PATHS.into_iter().fold(Router::new(), |pages, path| {
        pages.route(path, get(page.clone()))
    });
    pages
        .fallback(leptos_axum::file_and_error_handler(shell))
        .with_state(leptos_options)
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
