//! The I/O a sans-IO client needs in a browser, for a page and a worker alike: one WebSocket at
//! a time, one timer, a monotonic clock, and the origin. Only globals both scopes have are used
//! (`setTimeout`, `performance`, `location`), never `window`.

use std::cell::Cell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, WebSocket};

#[wasm_bindgen]
extern "C" {
    // The id as a JS number: a browser's fit in an i32, but a replaced clock's (tests) may
    // not, and an id cut short would leave a cancelled callback to run after its closure went.
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, timeout: i32) -> f64;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: f64);
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Milliseconds on this scope's monotonic clock.
pub fn now() -> u64 {
    performance_now() as u64
}

/// This page's or worker's origin (`https://host[:port]`).
pub fn origin() -> Option<String> {
    let location = js_sys::Reflect::get(&js_sys::global(), &"location".into()).ok()?;
    js_sys::Reflect::get(&location, &"origin".into())
        .ok()?
        .as_string()
}

/// One WebSocket at a time; events of a socket that was replaced or closed are dropped.
#[derive(Default)]
pub struct Socket {
    socket: Option<WebSocket>,
    generation: Rc<Cell<u64>>,
    // The JS callbacks must live as long as the socket.
    callbacks: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl Socket {
    /// Opens a socket to `url` (closing any previous one). `Err` when the browser refused to
    /// even create it; the caller treats that like a transport that closed at once.
    pub fn open(
        &mut self,
        url: &str,
        mut on_frame: impl FnMut(String) + 'static,
        mut on_close: impl FnMut() + 'static,
    ) -> Result<(), ()> {
        self.close();
        let socket = WebSocket::new(url).map_err(|_| ())?;
        let generation = self.generation.get();
        let current = self.generation.clone();
        let on_message = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            if current.get() != generation {
                return;
            }
            let text = event
                .dyn_into::<MessageEvent>()
                .ok()
                .and_then(|e| e.data().as_string());
            if let Some(text) = text {
                on_frame(text);
            }
        });
        let current = self.generation.clone();
        let on_closed = Closure::<dyn FnMut(JsValue)>::new(move |_event: JsValue| {
            if current.get() != generation {
                return;
            }
            // This socket is over: later events of it are stale.
            current.set(generation + 1);
            on_close();
        });
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(on_closed.as_ref().unchecked_ref()));
        self.socket = Some(socket);
        self.callbacks = vec![on_message, on_closed];
        Ok(())
    }

    /// Sends a text frame; false when there is no open socket to take it.
    pub fn send(&self, frame: &str) -> bool {
        self.socket
            .as_ref()
            .is_some_and(|s| s.send_with_str(frame).is_ok())
    }

    pub fn close(&mut self) {
        self.generation.set(self.generation.get() + 1);
        if let Some(socket) = self.socket.take() {
            socket.set_onmessage(None);
            socket.set_onclose(None);
            let _ = socket.close();
        }
    }
}

/// One pending `setTimeout` at a time.
#[derive(Default)]
pub struct Timer {
    id: Option<f64>,
    callback: Option<Closure<dyn FnMut()>>,
}

impl Timer {
    /// Replaces the pending timeout (if any) with `f` after `delay_ms`.
    pub fn arm(&mut self, delay_ms: u64, f: impl FnOnce() + 'static) {
        self.cancel();
        let mut f = Some(f);
        let callback = Closure::<dyn FnMut()>::new(move || {
            if let Some(f) = f.take() {
                f();
            }
        });
        let delay = delay_ms.min(i32::MAX as u64) as i32;
        self.id = Some(set_timeout(callback.as_ref().unchecked_ref(), delay));
        self.callback = Some(callback);
    }

    pub fn cancel(&mut self) {
        if let Some(id) = self.id.take() {
            clear_timeout(id);
        }
    }
}
