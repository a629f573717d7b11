//! The WASM entry points: [`hydrate`] for pages (hydrates the server-rendered [`app::App`]) and
//! [`worker_accept`] for the SharedWorker that holds the shared connection
//! (`public/tether-worker.js` loads this same module there).

use wasm_bindgen::prelude::wasm_bindgen;

#[wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}

/// A tab connected to the shared worker: serve it on this port.
#[wasm_bindgen]
pub fn worker_accept(port: web_sys::MessagePort) {
    console_error_panic_hook::set_once();
    app::worker::accept(port);
}
