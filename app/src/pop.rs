//! Proof of possession (issue #25): the browser's key (a non-extractable WebCrypto P-256 key in
//! IndexedDB, `app/js/identity.js`) signs each connection's Engine.IO sid. The tab's own
//! connection (`realtime`) and the SharedWorker's (`worker`) both answer the core's
//! `Prove` with [`prove`].

use client::core::Proof;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/js/identity.js")]
extern "C" {
    #[wasm_bindgen(catch, js_name = prove)]
    async fn js_prove(sid: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = publicKey)]
    async fn js_public_key() -> Result<JsValue, JsValue>;
}

/// This browser's proof for the connection whose sid is `challenge`; `None` where the browser
/// cannot keep a key (no IndexedDB or WebCrypto): the handshake then goes without one.
pub async fn prove(challenge: &str) -> Option<Proof> {
    let pop_key = js_public_key().await.ok()?.as_string()?;
    let pop = js_prove(challenge).await.ok()?.as_string()?;
    Some(Proof { pop, pop_key })
}
