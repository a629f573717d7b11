//! The SharedWorker side of the shared connection: one [`client::hub::Hub`], one WebSocket and
//! one timer for every tab of the origin; each tab is a `MessagePort` speaking JSON
//! ([`client::link::TabToHub`] in, [`client::link::HubToTab`] out).
//!
//! `public/tether-worker.js` loads the site's wasm in the worker and hands every connecting
//! port to [`accept`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use client::core::CoreConfig;
use client::hub::{Hub, HubOutput, TabId};
use client::link::TabToHub;
use protocol::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, MessagePort};

use crate::browser_io::{self, Socket, Timer};

/// A tab's port and the callback that must live as long as it.
type TabPort = (MessagePort, Closure<dyn FnMut(JsValue)>);

struct Worker {
    hub: Hub,
    socket: Socket,
    timer: Timer,
    ports: HashMap<TabId, TabPort>,
    next_tab: TabId,
}

type Handle = Rc<RefCell<Worker>>;

thread_local! {
    static WORKER: Handle = Rc::new(RefCell::new(Worker {
        // The shared connection proves possession of the session like a tab's own (issue #25).
        hub: Hub::new(
            CoreConfig {
                proves: true,
                ..CoreConfig::default()
            },
            js_sys::Math::random,
        ),
        socket: Socket::default(),
        timer: Timer::default(),
        ports: HashMap::new(),
        next_tab: 0,
    }));
}

/// A tab connected: listen to its port.
pub fn accept(port: MessagePort) {
    WORKER.with(|w| {
        let tab = {
            let mut worker = w.borrow_mut();
            worker.next_tab += 1;
            worker.next_tab
        };
        let on_message = {
            let w = w.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                let text = event
                    .dyn_into::<MessageEvent>()
                    .ok()
                    .and_then(|e| e.data().as_string());
                let Some(message) = text.and_then(|t| json::from_str::<TabToHub>(&t).ok()) else {
                    return;
                };
                let leaving = message == TabToHub::Bye;
                w.borrow_mut()
                    .hub
                    .handle_tab(tab, message, browser_io::now());
                if leaving {
                    // Dropping the port's callback from inside it is deferred by wasm-bindgen.
                    if let Some((port, _callback)) = w.borrow_mut().ports.remove(&tab) {
                        port.close();
                    }
                }
                pump(&w);
            })
        };
        // Setting `onmessage` starts the port.
        port.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        w.borrow_mut().ports.insert(tab, (port, on_message));
    });
}

/// Carries out what the hub asked for, then re-arms the timer.
fn pump(w: &Handle) {
    loop {
        let output = w.borrow_mut().hub.poll_output();
        let Some(output) = output else { break };
        match output {
            HubOutput::OpenTransport => open_socket(w),
            HubOutput::Send(frame) => {
                let sent = w.borrow().socket.send(&frame);
                if !sent {
                    w.borrow_mut()
                        .hub
                        .handle_transport_closed(browser_io::now());
                }
            }
            HubOutput::CloseTransport => w.borrow_mut().socket.close(),
            HubOutput::Prove { challenge } => {
                let w = w.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let proof = crate::pop::prove(&challenge).await;
                    w.borrow_mut()
                        .hub
                        .handle_proof(&challenge, proof, browser_io::now());
                    pump(&w);
                });
            }
            HubOutput::ToTab(tab, message) => {
                let text = json::to_string(&message);
                let worker = w.borrow();
                if let Some((port, _)) = worker.ports.get(&tab) {
                    let _ = port.post_message(&JsValue::from_str(&text));
                }
            }
        }
    }
    arm_timer(w);
}

fn open_socket(w: &Handle) {
    let Some(origin) = browser_io::origin() else {
        return;
    };
    let url = client::websocket_url(&origin);
    let on_frame = {
        let w = w.clone();
        move |text: String| {
            w.borrow_mut().hub.handle_frame(&text, browser_io::now());
            pump(&w);
        }
    };
    let on_close = {
        let w = w.clone();
        move || {
            w.borrow_mut()
                .hub
                .handle_transport_closed(browser_io::now());
            pump(&w);
        }
    };
    let opened = w.borrow_mut().socket.open(&url, on_frame, on_close);
    if opened.is_err() {
        w.borrow_mut()
            .hub
            .handle_transport_closed(browser_io::now());
    }
}

fn arm_timer(w: &Handle) {
    let deadline = w.borrow().hub.next_deadline();
    let mut worker = w.borrow_mut();
    let Some(deadline) = deadline else {
        worker.timer.cancel();
        return;
    };
    let delay = deadline.saturating_sub(browser_io::now());
    let w2 = w.clone();
    worker.timer.arm(delay, move || {
        w2.borrow_mut().hub.handle_timer(browser_io::now());
        pump(&w2);
    });
}
