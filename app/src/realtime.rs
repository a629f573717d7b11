//! The one socket of the page, shared through context.
//!
//! [`Realtime`] is created once, above the router, so navigating never opens another
//! WebSocket. On the server it is inert (the session lives in the browser's localStorage); in
//! the hydrate build it owns a [`client::session::Session`] driven by a thin `web_sys::WebSocket`
//! adapter, and mirrors what the UI needs into signals.

use client::session::Input;
use leptos::prelude::*;

use crate::storage::Account;

/// Connection state as the UI shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not started (no session, or before hydration).
    Idle,
    Connecting,
    Online,
    /// Lost; the next try is at this wall-clock time (ms since the epoch).
    Offline {
        retry_at: i64,
    },
    /// The session ended: this tab signed out, or the server refused the session when the tab
    /// reconnected after a disconnect (signed out from another tab, or expired).
    SignedOut,
    /// The tab policy refused this tab: the session is open in another tab.
    Elsewhere,
    /// Another tab took the session over.
    Moved,
}

#[derive(Clone, Copy)]
pub struct Realtime {
    pub status: RwSignal<Status>,
    pub socket_id: RwSignal<Option<String>>,
    pub reconnects: RwSignal<u32>,
    pub account: RwSignal<Option<Account>>,
    /// The hydrated page has read localStorage: `account` is now meaningful.
    pub ready: RwSignal<bool>,
    /// Bumped whenever chat data or the outbox changed; views re-read through [`Realtime::with`].
    pub version: RwSignal<u64>,
    /// The latest incoming message, phrased for screen readers.
    pub announcement: RwSignal<String>,
    /// Why the last sign-in failed, if it did.
    pub sign_in_error: RwSignal<Option<String>>,
    /// Protecting the name with a passkey ([`crate::passkeys`]).
    pub protecting: RwSignal<crate::passkeys::Protecting>,
    /// The account's passkeys ([`crate::passkeys::load`]).
    pub passkeys: RwSignal<crate::passkeys::Listed>,
    #[cfg(feature = "hydrate")]
    driver: StoredValue<Option<driver::Handle>, LocalStorage>,
}

impl Realtime {
    fn new() -> Self {
        Self {
            status: RwSignal::new(Status::Idle),
            socket_id: RwSignal::new(None),
            reconnects: RwSignal::new(0),
            account: RwSignal::new(None),
            ready: RwSignal::new(false),
            version: RwSignal::new(0),
            announcement: RwSignal::new(String::new()),
            sign_in_error: RwSignal::new(None),
            protecting: RwSignal::new(crate::passkeys::Protecting::Idle),
            passkeys: RwSignal::new(Default::default()),
            #[cfg(feature = "hydrate")]
            driver: StoredValue::new_local(None),
        }
    }

    /// Reads the session data; `None` before hydration and on the server.
    pub fn with<R>(&self, f: impl FnOnce(&client::session::Session) -> R) -> Option<R> {
        self.version.track();
        #[cfg(feature = "hydrate")]
        {
            self.driver
                .with_value(|d| d.as_ref().map(|h| f(&h.borrow().session)))
        }
        #[cfg(not(feature = "hydrate"))]
        {
            let _ = f;
            None
        }
    }

    pub fn sign_in(&self, username: &str) {
        #[cfg(feature = "hydrate")]
        driver::sign_in(*self, username);
        #[cfg(not(feature = "hydrate"))]
        let _ = username;
    }

    pub fn send(&self, to: &str, content: &str) {
        #[cfg(feature = "hydrate")]
        self.step(Input::Send {
            to,
            content,
            wall_ms: js_sys::Date::now() as i64,
        });
        #[cfg(not(feature = "hydrate"))]
        let _ = (to, content);
    }

    pub fn retry(&self, client_id: &str) {
        self.step(Input::Retry { client_id });
    }

    pub fn discard(&self, client_id: &str) {
        self.step(Input::Discard { client_id });
    }

    pub fn load_history(&self, peer: &str) {
        self.step(Input::LoadHistory { peer });
    }

    /// The open conversation with `peer` has been seen: only while the page is visible (a tab
    /// shown again re-runs whoever calls this, see `driver::start`). The server hears of it.
    pub fn mark_read(&self, peer: &str) {
        #[cfg(feature = "hydrate")]
        if document().hidden() {
            return;
        }
        self.step(Input::MarkRead { peer });
    }

    /// The composer for `peer` has input: they see "… is typing" (sent at most every 3 s).
    pub fn typing_to(&self, peer: &str) {
        self.step(Input::Typing { to: peer });
    }

    /// Searches the directory for `query` once it rests (empty: no results).
    pub fn search(&self, query: &str) {
        self.step(Input::Search { query });
    }

    /// Asks for the next page of older conversations.
    pub fn load_conversations(&self) {
        self.step(Input::LoadConversations);
    }

    /// Shares read receipts, or stops (then nobody's are shown).
    pub fn set_read_receipts(&self, on: bool) {
        self.step(Input::SetReadReceipts { on });
    }

    /// Asks for the account's devices (every session of it; read through [`Realtime::with`]).
    pub fn load_devices(&self) {
        self.step(Input::LoadDevices);
    }

    /// Ends another device's session: its tabs are disconnected and land on sign-in.
    pub fn revoke_device(&self, device_id: &str) {
        self.step(Input::RevokeDevice { device_id });
    }

    /// Sends `event` with `data` (JSON text) and an ack; the answer comes back to
    /// [`crate::passkeys::on_reply`] with `tag`.
    #[allow(unused_variables)]
    pub fn request(&self, tag: u64, event: &str, data: &str) {
        #[cfg(feature = "hydrate")]
        match protocol::json::RawJson::new(data) {
            Ok(data) => self.step(Input::Request {
                tag,
                event,
                data: &data,
            }),
            Err(_) => crate::passkeys::on_reply(*self, tag, None),
        }
    }

    /// Holds `account` (a session made elsewhere: a passkey sign-in) and connects with it.
    #[allow(unused_variables)]
    pub fn resume_with(&self, account: crate::storage::Account) {
        #[cfg(feature = "hydrate")]
        driver::resume_with(*self, account);
    }

    /// Ends the session on the server; every tab of it is disconnected and lands on sign-in.
    /// With `everywhere`, every session of this user ends.
    pub fn sign_out(&self, everywhere: bool) {
        self.step(Input::Logout { everywhere });
    }

    /// "Use here": connects this tab, asking the server to end the session's other tab.
    pub fn take_over(&self) {
        #[cfg(feature = "hydrate")]
        crate::storage::request_takeover(true);
        self.step(Input::Connect);
    }

    /// Reconnects after the server ended the socket (e.g. it was restarted by an operator).
    pub fn reconnect(&self) {
        self.step(Input::Connect);
    }

    #[allow(unused_variables)]
    fn step(&self, input: Input<'_>) {
        #[cfg(feature = "hydrate")]
        driver::step(*self, input);
    }
}

/// Creates the page's [`Realtime`] and provides it; in the browser, starts it once hydrated.
pub fn provide_realtime() -> Realtime {
    let realtime = Realtime::new();
    provide_context(realtime);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| driver::start(realtime));
    realtime
}

pub fn use_realtime() -> Realtime {
    expect_context::<Realtime>()
}

#[cfg(feature = "hydrate")]
mod driver {
    //! The browser adapter: the tab's own `WebSocket` and one `setTimeout` for the core's next
    //! deadline, or — in shared mode — a port to the SharedWorker that holds the browser's one
    //! connection; everything else is the shared sans-IO session.

    use std::cell::RefCell;
    use std::rc::Rc;

    use client::chat::{ChatState, Outbox};
    use client::core::{ConnState, Core, CoreConfig, StopReason};
    use client::link::{HubToTab, SharedLink, TabToHub};
    use client::session::{Input, Session, SessionEvent, SessionOutput};
    use leptos::prelude::*;
    use protocol::json;
    use protocol::HandshakeAuth;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use web_sys::{MessageEvent, MessagePort, SharedWorker};

    use super::{Realtime, Status};
    use crate::browser_io::{now, Socket, Timer};
    use crate::storage::{self, Account};

    /// What the person is told when this browser cannot prove its stored session.
    const PROOF_REQUIRED_TEXT: &str =
        "This browser can no longer prove this session is its own. Sign in again.";

    /// A hub that has not answered a connect within this long is taken as broken: the tab falls
    /// back to its own connection.
    const HUB_ANSWER_MS: u64 = 5_000;

    pub struct Driver {
        pub session: Session,
        socket: Socket,
        timer: Timer,
        hub: Option<HubPort>,
        /// Messages from people not known here yet, told once the session learns their name
        /// (it asks for the newest conversations); at most [`UNNAMED_MOST`].
        unnamed: Vec<protocol::payloads::Message>,
    }

    /// Messages held for their sender's name; past this the oldest is told without it.
    const UNNAMED_MOST: usize = 16;

    /// The port to the shared worker, and what must live as long as it.
    struct HubPort {
        port: MessagePort,
        _worker: SharedWorker,
        _on_message: Closure<dyn FnMut(JsValue)>,
        _on_error: Closure<dyn FnMut(JsValue)>,
        watchdog: Timer,
    }

    pub type Handle = Rc<RefCell<Driver>>;

    /// The auth of every (re)connect, from what is stored now: the session if there is one,
    /// else the name being signed in with.
    fn auth() -> HandshakeAuth {
        if let Some(account) = storage::load_account() {
            HandshakeAuth {
                takeover: storage::takeover_requested(),
                ..HandshakeAuth::resume(account.session_id)
            }
        } else if let Some(username) = storage::pending_username() {
            HandshakeAuth::sign_up(username)
        } else {
            HandshakeAuth::default()
        }
    }

    fn own_core() -> Core {
        // Tether's client always proves possession of its session (issue #25).
        let config = CoreConfig {
            proves: true,
            ..CoreConfig::default()
        };
        Core::new(config, auth, js_sys::Math::random)
    }

    /// Where the site's build is, when the server asks pages to share one connection.
    fn shared_connection_pkg() -> Option<String> {
        let meta = document()
            .query_selector("meta[name=tether-connection]")
            .ok()??;
        (meta.get_attribute("content").as_deref() == Some("shared"))
            .then(|| meta.get_attribute("data-pkg"))
            .flatten()
    }

    /// The browser's shared worker, or `None` where SharedWorker is unavailable (e.g. Chrome
    /// on Android) or refused.
    fn open_shared_worker(pkg: &str) -> Option<SharedWorker> {
        let supported =
            js_sys::Reflect::has(&js_sys::global(), &"SharedWorker".into()).unwrap_or(false);
        if !supported {
            return None;
        }
        let options = web_sys::WorkerOptions::new();
        options.set_type(web_sys::WorkerType::Module);
        options.set_name("tether");
        let url = format!("/tether-worker.js?pkg={pkg}");
        SharedWorker::new_with_worker_options(&url, &options).ok()
    }

    fn handle(rt: Realtime) -> Option<Handle> {
        rt.driver.with_value(|d| d.clone())
    }

    /// Runs once after hydration: loads what the browser remembers and connects if signed in.
    pub fn start(rt: Realtime) {
        if handle(rt).is_some() {
            return;
        }
        let account = storage::load_account();
        rt.account.set(account.clone());
        let me = account.as_ref().map(|a| a.user_id.clone());

        let outbox = Outbox::from_entries(storage::load_outbox());
        let mut chat = ChatState::new(me);
        chat.read_up_to = storage::load_read_markers();
        let worker = shared_connection_pkg().and_then(|pkg| open_shared_worker(&pkg));
        let session = match worker {
            Some(_) => Session::shared(SharedLink::new(auth), chat, outbox),
            None => Session::new(own_core(), chat, outbox),
        };
        let driver = Rc::new(RefCell::new(Driver {
            session,
            socket: Socket::default(),
            timer: Timer::default(),
            hub: None,
            unnamed: Vec::new(),
        }));
        if let Some(worker) = worker {
            attach_hub(rt, &driver, worker);
        }
        rt.driver.set_value(Some(driver.clone()));
        // A tab shown again: views re-read, and an open conversation is marked read then.
        let shown = Closure::<dyn FnMut(JsValue)>::new(move |_: JsValue| {
            if !document().hidden() {
                rt.version.update(|v| *v += 1);
            }
        });
        let _ = document()
            .add_event_listener_with_callback("visibilitychange", shown.as_ref().unchecked_ref());
        // It lives as long as the page.
        shown.forget();
        rt.ready.set(true);
        if account.is_some() {
            step(rt, Input::Connect);
        }
    }

    pub fn sign_in(rt: Realtime, username: &str) {
        if handle(rt).is_none() {
            return;
        }
        storage::clear_all();
        rt.account.set(None);
        rt.passkeys.set(Default::default());
        rt.sign_in_error.set(None);
        storage::set_pending_username(Some(username));
        step(rt, Input::Reset);
        step(rt, Input::Connect);
    }

    /// Holds a session made by a passkey sign-in, and connects with it.
    pub fn resume_with(rt: Realtime, account: Account) {
        if handle(rt).is_none() {
            return;
        }
        storage::clear_all();
        storage::set_pending_username(None);
        storage::save_account(&account);
        rt.sign_in_error.set(None);
        rt.protecting.set(crate::passkeys::Protecting::Idle);
        rt.passkeys.set(Default::default());
        rt.account.set(Some(account));
        step(rt, Input::Reset);
        step(rt, Input::Connect);
    }

    /// Steps the session, then performs what it asked for.
    pub fn step(rt: Realtime, input: Input<'_>) {
        let Some(h) = handle(rt) else { return };
        h.borrow_mut().session.step(input, now());
        pump(rt, &h);
    }

    /// Carries out the session's outputs, then re-arms the timer. Signals are updated only
    /// after the driver is released, so reactive effects never see it borrowed.
    fn pump(rt: Realtime, h: &Handle) {
        let mut events = Vec::new();
        loop {
            let output = h.borrow_mut().session.poll_output();
            let Some(output) = output else { break };
            match output {
                SessionOutput::OpenTransport => open_socket(rt, h),
                SessionOutput::Send(frame) => {
                    let sent = h.borrow().socket.send(&frame);
                    if !sent {
                        h.borrow_mut().session.step(Input::TransportClosed, now());
                    }
                }
                SessionOutput::CloseTransport => h.borrow_mut().socket.close(),
                SessionOutput::Prove { challenge } => {
                    // The key signs asynchronously; the core waits (its connect timeout runs)
                    // and drops an answer for a connection that is gone by then.
                    wasm_bindgen_futures::spawn_local(async move {
                        let proof = crate::pop::prove(&challenge).await;
                        step(
                            rt,
                            Input::Proof {
                                challenge: &challenge,
                                proof,
                            },
                        );
                    });
                }
                SessionOutput::Event(event) => events.push(event),
            }
        }
        post_to_hub(rt, h);
        arm_timer(rt, h);
        let mut changed = false;
        for event in events {
            changed |= apply(rt, h, event);
        }
        if changed {
            rt.version.update(|v| *v += 1);
        }
    }

    /// Mirrors one session event into signals and storage; true when chat data changed.
    fn apply(rt: Realtime, h: &Handle, event: SessionEvent) -> bool {
        match event {
            SessionEvent::State(state) => {
                let status = match state {
                    ConnState::Connecting => Status::Connecting,
                    ConnState::Online { sid } => {
                        rt.socket_id.set(Some(sid));
                        Status::Online
                    }
                    ConnState::Offline { retry_at } => Status::Offline {
                        retry_at: js_sys::Date::now() as i64
                            + retry_at.saturating_sub(now()) as i64,
                    },
                    ConnState::Stopped(StopReason::ServerDisconnect)
                        if h.borrow().session.moved() =>
                    {
                        Status::Moved
                    }
                    ConnState::Stopped(StopReason::ServerDisconnect) => {
                        // This tab's own logout (on the shared connection, any tab's): forget
                        // the session. A DISCONNECT the tab did not ask for is no stop (the
                        // session may still exist): the core reconnects with it, and a session
                        // that is gone is refused, which lands below.
                        storage::clear_all();
                        rt.account.set(None);
                        rt.passkeys.set(Default::default());
                        Status::SignedOut
                    }
                    // The stored session was refused (`SessionEvent::SignedOut` has forgotten
                    // it): a sign-in that failed says why on its own.
                    ConnState::Stopped(StopReason::Unauthorized)
                        if rt.sign_in_error.get_untracked().is_none() =>
                    {
                        Status::SignedOut
                    }
                    ConnState::Stopped(StopReason::SessionActive) => Status::Elsewhere,
                    // The session is bound to a key this browser does not hold (its id was
                    // copied here, or the key was lost): it is no use here; sign in anew.
                    ConnState::Stopped(StopReason::ProofRequired) => {
                        storage::clear_all();
                        rt.account.set(None);
                        rt.passkeys.set(Default::default());
                        rt.sign_in_error.set(Some(PROOF_REQUIRED_TEXT.into()));
                        Status::SignedOut
                    }
                    // A sign-up with a name a passkey protects: nothing was stored.
                    ConnState::Stopped(StopReason::NameProtected) => {
                        storage::set_pending_username(None);
                        rt.sign_in_error.set(Some(
                            "That name is protected by a passkey. Sign in with the passkey, or choose another name."
                                .into(),
                        ));
                        Status::Idle
                    }
                    ConnState::Stopped(_) => Status::Idle,
                };
                if !matches!(status, Status::Online) {
                    rt.socket_id.set(None);
                }
                rt.reconnects.set(h.borrow().session.reconnects());
                rt.status.set(status);
                false
            }
            SessionEvent::Session(info) => {
                let username = storage::pending_username()
                    .or_else(|| rt.account.get_untracked().map(|a| a.username))
                    .unwrap_or_default();
                storage::set_pending_username(None);
                let account = Account {
                    session_id: info.session_id,
                    user_id: info.user_id,
                    username,
                };
                storage::save_account(&account);
                storage::request_takeover(false);
                rt.account.set(Some(account));
                true
            }
            SessionEvent::SignedOut => {
                let was_signing_in = storage::pending_username().is_some();
                storage::set_pending_username(None);
                storage::forget_account();
                rt.account.set(None);
                rt.passkeys.set(Default::default());
                if was_signing_in {
                    rt.sign_in_error
                        .set(Some("That name cannot be used. Try another.".into()));
                }
                rt.status.set(Status::Idle);
                true
            }
            SessionEvent::ChatChanged => {
                // Senders named now (a conversations page): their messages are told.
                let named: Vec<_> = {
                    let mut d = h.borrow_mut();
                    let d = &mut *d;
                    let chat = d.session.chat();
                    let mut named = Vec::new();
                    d.unnamed.retain(|m| match chat.peer(&m.from) {
                        Some(p) => {
                            named.push((p.username.clone(), m.clone()));
                            false
                        }
                        None => true,
                    });
                    named
                };
                for (from, message) in named {
                    tell_arrived(rt, &from, &message);
                }
                // The roster carries names: keep the stored username current.
                let name = {
                    let d = h.borrow();
                    let chat = d.session.chat();
                    chat.me
                        .as_ref()
                        .and_then(|me| chat.peer(me).map(|p| p.username.clone()))
                };
                if let (Some(name), Some(mut account)) = (name, rt.account.get_untracked()) {
                    if account.username != name {
                        account.username = name;
                        storage::save_account(&account);
                        rt.account.set(Some(account));
                    }
                }
                true
            }
            SessionEvent::Arrived(message) => {
                let name = h
                    .borrow()
                    .session
                    .chat()
                    .peer(&message.from)
                    .map(|p| p.username.clone());
                match name {
                    Some(from) => tell_arrived(rt, &from, &message),
                    None => {
                        let mut d = h.borrow_mut();
                        d.unnamed.push(message);
                        if d.unnamed.len() > UNNAMED_MOST {
                            let oldest = d.unnamed.remove(0);
                            drop(d);
                            tell_arrived(rt, "someone", &oldest);
                        }
                    }
                }
                true
            }
            SessionEvent::OutboxChanged => {
                storage::save_outbox(h.borrow().session.outbox().entries());
                true
            }
            SessionEvent::ReadChanged => {
                storage::save_read_markers(&h.borrow().session.chat().read_up_to);
                true
            }
            SessionEvent::Reply { tag, result } => {
                crate::passkeys::on_reply(rt, tag, result.ok().map(|ack| ack.get().to_owned()));
                false
            }
            SessionEvent::Moved | SessionEvent::Restored | SessionEvent::ServerEvent { .. } => {
                false
            }
        }
    }

    /// A message from `from` arrived: a notification (when hidden) and the live log, which
    /// says who wrote it and when.
    fn tell_arrived(rt: Realtime, from: &str, message: &protocol::payloads::Message) {
        crate::notify::arrived(from, message);
        rt.announcement.set(format!(
            "New message from {from}, {}: {}",
            crate::pages::clock_time(message.ts),
            message.content
        ));
    }

    fn open_socket(rt: Realtime, h: &Handle) {
        let Some(origin) = crate::browser_io::origin() else {
            return;
        };
        let url = client::websocket_url(&origin);
        let on_frame = {
            let h = h.clone();
            move |text: String| {
                h.borrow_mut().session.step(Input::Frame(&text), now());
                pump(rt, &h);
            }
        };
        let on_close = {
            let h = h.clone();
            move || {
                h.borrow_mut().session.step(Input::TransportClosed, now());
                pump(rt, &h);
            }
        };
        let opened = h.borrow_mut().socket.open(&url, on_frame, on_close);
        if opened.is_err() {
            h.borrow_mut().session.step(Input::TransportClosed, now());
        }
    }

    fn arm_timer(rt: Realtime, h: &Handle) {
        let deadline = h.borrow().session.next_deadline();
        let mut d = h.borrow_mut();
        let Some(deadline) = deadline else {
            d.timer.cancel();
            return;
        };
        let h2 = h.clone();
        d.timer.arm(deadline.saturating_sub(now()), move || {
            h2.borrow_mut().session.step(Input::Timer, now());
            pump(rt, &h2);
        });
    }

    /// Joins the shared connection: news from the hub goes into the session; the tab says
    /// goodbye when the page goes away.
    fn attach_hub(rt: Realtime, h: &Handle, worker: SharedWorker) {
        let port = worker.port();
        let on_message = {
            let h = h.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                let text = event
                    .dyn_into::<MessageEvent>()
                    .ok()
                    .and_then(|e| e.data().as_string());
                let Some(message) = text.and_then(|t| json::from_str::<HubToTab>(&t).ok()) else {
                    return;
                };
                h.borrow_mut().session.step(Input::Hub(message), now());
                pump(rt, &h);
            })
        };
        let on_error = {
            let h = h.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |_| fall_back(rt, &h))
        };
        port.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let bye = {
            let port = port.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |_| post(&port, &TabToHub::Bye))
        };
        // Back from the back/forward cache the hub has forgotten this tab: start afresh.
        let back = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let persisted = event
                .dyn_into::<web_sys::PageTransitionEvent>()
                .is_ok_and(|e| e.persisted());
            if persisted {
                let _ = window().location().reload();
            }
        });
        let _ = window().add_event_listener_with_callback("pagehide", bye.as_ref().unchecked_ref());
        let _ =
            window().add_event_listener_with_callback("pageshow", back.as_ref().unchecked_ref());
        // Both listeners live as long as the page.
        bye.forget();
        back.forget();
        h.borrow_mut().hub = Some(HubPort {
            port,
            _worker: worker,
            _on_message: on_message,
            _on_error: on_error,
            watchdog: Timer::default(),
        });
    }

    fn post(port: &MessagePort, message: &TabToHub) {
        let _ = port.post_message(&JsValue::from_str(&json::to_string(message)));
    }

    /// Posts what the session has for the hub; a connect that gets no answer in time makes the
    /// tab fall back to its own connection.
    fn post_to_hub(rt: Realtime, h: &Handle) {
        loop {
            let message = h.borrow_mut().session.poll_hub_message();
            let Some(message) = message else { break };
            let mut d = h.borrow_mut();
            let Some(hub) = d.hub.as_mut() else { continue };
            post(&hub.port, &message);
            if matches!(message, TabToHub::Connect { .. }) {
                let h2 = h.clone();
                hub.watchdog.arm(HUB_ANSWER_MS, move || {
                    let silent = !h2.borrow().session.heard_from_hub();
                    if silent {
                        fall_back(rt, &h2);
                    }
                });
            }
        }
    }

    /// The shared worker failed or never answered: this tab gets its own connection, keeping
    /// its chat state and outbox.
    fn fall_back(rt: Realtime, h: &Handle) {
        {
            let mut d = h.borrow_mut();
            if !d.session.is_shared() {
                return;
            }
            leptos::logging::warn!(
                "tether: the shared connection is unavailable; this tab connects on its own"
            );
            if let Some(hub) = d.hub.take() {
                post(&hub.port, &TabToHub::Bye);
                hub.port.close();
            }
            d.session.step(Input::UseOwnConnection(own_core()), now());
        }
        pump(rt, h);
    }
}
