//! The shared connection's owner: one [`Core`] for every tab of the browser (run inside a
//! SharedWorker), sans-IO like the core itself.
//!
//! Tabs join and leave in any order; the connection lives as long as the hub. Every tab gets
//! every server event and the state of the connection; acks go back to the tab that asked
//! (request ids are the tab's own, mapped to the core's). A server event asking for an ack is
//! answered once by the hub. The auth of every reconnect is the session the server last
//! confirmed, so a reconnect never signs in twice. A tab that joins a connection already up
//! gets that connection's `users` again, so that it need not restore the whole history.
//!
//! A message one tab sent is shown in the others by the hub itself: the server sends it to the
//! sender's *other* sockets, and here all tabs are one socket. A moved read cursor and a changed
//! setting need nothing of the kind: the server sends `read` and `settings` to the requesting
//! socket too, so every tab hears them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use protocol::events;
use protocol::payloads::{Message, MessageReceipt, OutgoingMessage, SessionInfo};
use protocol::{Ack, HandshakeAuth};

use crate::core::{ConnState, Core, CoreConfig, CoreEvent, Output, Proof};
use crate::link::{HubToTab, SharedState, TabToHub};
use crate::packet::{Arg, RawJson};

/// A tab, as the adapter numbers its ports.
pub type TabId = u64;

#[derive(Debug, Clone, PartialEq)]
pub enum HubOutput {
    OpenTransport,
    Send(String),
    CloseTransport,
    /// Sign this challenge with the browser's key, then [`Hub::handle_proof`] (see
    /// [`Output::Prove`]).
    Prove {
        challenge: String,
    },
    /// Post this to one tab.
    ToTab(TabId, HubToTab),
}

/// A tab's request in flight. A sent message is kept so that, once stored, it can be shown
/// in the sender's other tabs.
struct Request {
    tab: TabId,
    id: u64,
    message: Option<OutgoingMessage>,
}

pub struct Hub {
    core: Core,
    auth: Arc<Mutex<HandshakeAuth>>,
    /// The tabs joined, in id order (a sorted list: a set type would be code of its own in the
    /// wasm).
    tabs: Vec<TabId>,
    /// Core ack id → the tab's request.
    requests: HashMap<u64, Request>,
    /// The signed-in user, once the server said (to tell tabs what another tab sent).
    me: Option<String>,
    outputs: VecDeque<HubOutput>,
    /// Whether the core was told to connect and has not stopped since.
    started: bool,
    /// The current connection's `users`, for tabs that join later.
    roster: Option<Vec<Arg>>,
    /// The session's earlier secrets this hub held, newest last (at most [`PREVIOUS_KEPT`]): a
    /// tab that joins with one of them (it read its storage before the rotation was saved) is
    /// the same session, not a new sign-in; restarting with it would present a rotated-out
    /// secret (issue #25, rotation).
    previous: Vec<String>,
}

/// How many earlier secrets of its session a hub remembers.
const PREVIOUS_KEPT: usize = 4;

impl Hub {
    pub fn new(config: CoreConfig, random: impl FnMut() -> f64 + Send + 'static) -> Self {
        let auth = Arc::new(Mutex::new(HandshakeAuth::default()));
        let source = auth.clone();
        let core = Core::new(
            config,
            move || source.lock().map(|a| a.clone()).unwrap_or_default(),
            random,
        );
        Self {
            core,
            auth,
            tabs: Vec::new(),
            requests: HashMap::new(),
            me: None,
            outputs: VecDeque::new(),
            started: false,
            roster: None,
            previous: Vec::new(),
        }
    }

    pub fn tabs(&self) -> usize {
        self.tabs.len()
    }

    pub fn state(&self) -> ConnState {
        self.core.state()
    }

    pub fn poll_output(&mut self) -> Option<HubOutput> {
        self.outputs.pop_front()
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.core.next_deadline()
    }

    pub fn handle_frame(&mut self, text: &str, now: u64) {
        self.core.handle_frame(text, now);
        self.drain(now);
    }

    pub fn handle_transport_closed(&mut self, now: u64) {
        self.core.handle_transport_closed(now);
        self.drain(now);
    }

    /// The key's answer to [`HubOutput::Prove`] ([`Core::handle_proof`]).
    pub fn handle_proof(&mut self, challenge: &str, proof: Option<Proof>, now: u64) {
        self.core.handle_proof(challenge, proof);
        self.drain(now);
    }

    pub fn handle_timer(&mut self, now: u64) {
        self.core.handle_timer(now);
        self.drain(now);
    }

    /// One message from tab `tab` (which joins on its first message).
    pub fn handle_tab(&mut self, tab: TabId, message: TabToHub, now: u64) {
        if let Err(at) = self.tabs.binary_search(&tab) {
            self.tabs.insert(at, tab);
        }
        match message {
            TabToHub::Connect { auth } => self.connect_tab(tab, auth, now),
            TabToHub::Disconnect => {
                self.started = false;
                self.core.disconnect();
            }
            TabToHub::Emit { event, data } => {
                let _ = self.core.emit(&event, &data);
            }
            TabToHub::Request {
                id,
                event,
                data,
                timeout_ms,
            } => match self.core.emit_with_ack(&event, &data, timeout_ms, now) {
                Ok(core_id) => {
                    let message = (event == events::PRIVATE_MESSAGE)
                        .then(|| data.parse())
                        .flatten();
                    self.requests.insert(core_id, Request { tab, id, message });
                }
                Err(_) => self.outputs.push_back(HubOutput::ToTab(
                    tab,
                    HubToTab::AckFailed {
                        id,
                        reason: crate::core::AckFailure::Disconnected,
                    },
                )),
            },
            TabToHub::Bye => self.tab_left(tab),
        }
        self.drain(now);
    }

    /// The tab is gone (closed, or its port failed): its pending answers are dropped. The
    /// connection stays for the others.
    pub fn tab_left(&mut self, tab: TabId) {
        self.tabs.retain(|t| *t != tab);
        self.requests.retain(|_, request| request.tab != tab);
    }

    fn connect_tab(&mut self, tab: TabId, auth: HandshakeAuth, now: u64) {
        let current = self.auth.lock().map(|a| a.clone()).unwrap_or_default();
        let same_session = current == auth
            || (current.session_id.is_some() && current.session_id == auth.session_id)
            || auth
                .session_id
                .as_ref()
                .is_some_and(|id| self.previous.contains(id));
        let active = self.started && !matches!(self.core.state(), ConnState::Stopped(_));
        if same_session && active {
            // Already connected (or on the way) for this session: tell the newcomer where
            // things stand; once online it restores its own state like after any connect.
            let state = self.core.state();
            self.tell(tab, self.state_message(&state, now));
            if let ConnState::Online { sid } = state {
                self.tell(
                    tab,
                    HubToTab::Connected {
                        sid,
                        reconnect: false,
                    },
                );
                // It may be old; the tab's restore from its newest message brings it up to
                // date (everyone's presence, and what came since).
                if let Some(args) = self.roster.clone() {
                    self.tell(
                        tab,
                        HubToTab::Message {
                            event: events::USERS.to_owned(),
                            args,
                        },
                    );
                }
            }
            return;
        }
        if let Ok(mut stored) = self.auth.lock() {
            *stored = auth;
        }
        self.previous.clear();
        if active {
            // Another session (a new sign-in): start over with it.
            self.core.disconnect();
        }
        self.started = true;
        self.core.connect(now);
    }

    fn state_message(&self, state: &ConnState, now: u64) -> HubToTab {
        HubToTab::State {
            state: SharedState::from_conn(state, now),
            reconnects: self.core.reconnects(),
        }
    }

    fn tell(&mut self, tab: TabId, message: HubToTab) {
        self.outputs.push_back(HubOutput::ToTab(tab, message));
    }

    fn tell_all(&mut self, message: HubToTab) {
        let tabs: Vec<TabId> = self.tabs.clone();
        for tab in tabs {
            self.tell(tab, message.clone());
        }
    }

    fn tell_others(&mut self, except: TabId, message: HubToTab) {
        let tabs: Vec<TabId> = self.tabs.iter().copied().filter(|t| *t != except).collect();
        for tab in tabs {
            self.tell(tab, message.clone());
        }
    }

    /// The `private message` event the sender's other tabs would have had on sockets of
    /// their own, built from the request and its successful ack.
    fn stored_message(&self, request: &Request, args: &[Arg]) -> Option<HubToTab> {
        let sent = request.message.as_ref()?;
        let from = self.me.clone()?;
        let receipt = match args.first()?.parse::<Ack<MessageReceipt>>() {
            Some(Ack::Ok(receipt)) => receipt,
            _ => return None,
        };
        let message = Message {
            id: receipt.id,
            ts: receipt.ts,
            content: sent.content.clone(),
            from,
            to: sent.to.clone(),
            client_id: sent.client_id.clone(),
        };
        Some(HubToTab::Message {
            event: events::PRIVATE_MESSAGE.to_owned(),
            args: vec![RawJson::of(&message)],
        })
    }

    fn drain(&mut self, now: u64) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::OpenTransport => self.outputs.push_back(HubOutput::OpenTransport),
                Output::Send(frame) => self.outputs.push_back(HubOutput::Send(frame)),
                Output::CloseTransport => self.outputs.push_back(HubOutput::CloseTransport),
                Output::Prove { challenge } => {
                    self.outputs.push_back(HubOutput::Prove { challenge })
                }
                Output::Event(event) => self.on_core_event(event, now),
            }
        }
    }

    fn on_core_event(&mut self, event: CoreEvent, now: u64) {
        match event {
            CoreEvent::State(state) => {
                let message = self.state_message(&state, now);
                self.tell_all(message);
            }
            CoreEvent::Connected { sid, reconnect } => {
                self.roster = None;
                self.tell_all(HubToTab::Connected { sid, reconnect })
            }
            CoreEvent::ConnectError { message } => {
                self.tell_all(HubToTab::ConnectError { message })
            }
            CoreEvent::Message { event, args, ack } => {
                if event == events::SESSION {
                    // Reconnect with the confirmed session, never with the sign-in name again.
                    let info = args.first().and_then(Arg::parse::<SessionInfo>);
                    if let Some(info) = info {
                        if let Ok(mut auth) = self.auth.lock() {
                            // A rotated secret (issue #25): the one it replaces still names
                            // this session for tabs that join with it.
                            if let Some(old) = auth.session_id.take() {
                                if old != info.session_id && !self.previous.contains(&old) {
                                    self.previous.push(old);
                                    if self.previous.len() > PREVIOUS_KEPT {
                                        self.previous.remove(0);
                                    }
                                }
                            }
                            *auth = HandshakeAuth::resume(info.session_id);
                        }
                        self.me = Some(info.user_id);
                    }
                }
                if event == events::USERS {
                    self.roster = Some(args.clone());
                }
                if let Some(id) = ack {
                    let _ = self.core.ack(id, &RawJson::null());
                }
                self.tell_all(HubToTab::Message { event, args });
            }
            CoreEvent::Ack { id, args } => {
                if let Some(request) = self.requests.remove(&id) {
                    let stored = self.stored_message(&request, &args);
                    self.tell(
                        request.tab,
                        HubToTab::Ack {
                            id: request.id,
                            args,
                        },
                    );
                    if let Some(message) = stored {
                        self.tell_others(request.tab, message);
                    }
                }
            }
            CoreEvent::AckFailed { id, reason } => {
                if let Some(request) = self.requests.remove(&id) {
                    self.tell(
                        request.tab,
                        HubToTab::AckFailed {
                            id: request.id,
                            reason,
                        },
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::StopReason;
    use crate::testing::{auth, raw};
    use serde_json::json;

    fn hub() -> Hub {
        Hub::new(CoreConfig::default(), || 0.5)
    }

    fn outputs(hub: &mut Hub) -> Vec<HubOutput> {
        std::iter::from_fn(|| hub.poll_output()).collect()
    }

    fn sent(outputs: &[HubOutput]) -> Vec<String> {
        outputs
            .iter()
            .filter_map(|o| match o {
                HubOutput::Send(frame) => Some(frame.clone()),
                _ => None,
            })
            .collect()
    }

    fn to(tab: TabId, outputs: &[HubOutput]) -> Vec<HubToTab> {
        outputs
            .iter()
            .filter_map(|o| match o {
                HubOutput::ToTab(t, m) if *t == tab => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// Another tab of the session already connected joins.
    fn join(hub: &mut Hub, tab: TabId, now: u64) {
        hub.handle_tab(
            tab,
            TabToHub::Connect {
                auth: auth(json!({ "sessionID": "secret" })),
            },
            now,
        );
    }

    /// Tab 1 connects; the server opens Engine.IO and accepts the namespace.
    fn online(hub: &mut Hub) -> Vec<HubOutput> {
        join(hub, 1, 0);
        hub.handle_frame(
            r#"0{"sid":"e1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#,
            1,
        );
        hub.handle_frame(r#"40{"sid":"s1"}"#, 2);
        outputs(hub)
    }

    #[test]
    fn the_first_tab_opens_the_connection_with_its_auth() {
        let mut hub = hub();
        let out = online(&mut hub);
        assert_eq!(out[0], HubOutput::OpenTransport);
        assert_eq!(sent(&out), [r#"40{"sessionID":"secret"}"#]);
        assert!(to(1, &out).contains(&HubToTab::Connected {
            sid: "s1".into(),
            reconnect: false
        }));
    }

    #[test]
    fn a_later_tab_of_the_same_session_joins_without_a_second_connection() {
        let mut hub = hub();
        online(&mut hub);
        join(&mut hub, 2, 5);
        let out = outputs(&mut hub);
        assert!(!out.contains(&HubOutput::OpenTransport));
        assert!(sent(&out).is_empty());
        assert_eq!(
            to(2, &out),
            [
                HubToTab::State {
                    state: SharedState::Online { sid: "s1".into() },
                    reconnects: 0
                },
                HubToTab::Connected {
                    sid: "s1".into(),
                    reconnect: false
                }
            ]
        );
    }

    #[test]
    fn a_tab_joining_with_the_sessions_previous_secret_is_the_same_session() {
        let mut hub = hub();
        online(&mut hub);
        // The server rotated the secret.
        hub.handle_frame(r#"42["session",{"sessionID":"newer","userID":"u"}]"#, 3);
        outputs(&mut hub);
        // A tab that read the old one from storage joins: no second connection, no restart.
        join(&mut hub, 2, 5);
        let out = outputs(&mut hub);
        assert!(!out.contains(&HubOutput::OpenTransport), "{out:?}");
        assert!(!out.contains(&HubOutput::CloseTransport), "{out:?}");
        // A reconnect uses the newest.
        hub.handle_transport_closed(6);
        hub.handle_timer(10_000);
        hub.handle_frame(
            r#"0{"sid":"e2","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#,
            10_000,
        );
        assert_eq!(sent(&outputs(&mut hub)), [r#"40{"sessionID":"newer"}"#]);
    }

    #[test]
    fn a_tab_that_joins_later_gets_the_connections_users_again() {
        let mut hub = hub();
        online(&mut hub);
        hub.handle_frame(
            r#"42["users",[{"userID":"u","username":"u","connected":true,"messages":[]}]]"#,
            3,
        );
        outputs(&mut hub);
        join(&mut hub, 2, 5);
        let told = to(2, &outputs(&mut hub));
        assert!(
            matches!(told.last(), Some(HubToTab::Message { event, args })
                if event == "users" && args.len() == 1),
            "{told:?}"
        );
        // A new connection forgets the old one's `users` until its own arrives.
        hub.handle_transport_closed(6);
        hub.handle_timer(10_000);
        hub.handle_frame(
            r#"0{"sid":"e2","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#,
            10_000,
        );
        hub.handle_frame(r#"40{"sid":"s2"}"#, 10_001);
        outputs(&mut hub);
        join(&mut hub, 3, 10_002);
        let told = to(3, &outputs(&mut hub));
        assert!(
            told.iter()
                .any(|m| matches!(m, HubToTab::Connected { sid, .. } if sid == "s2")),
            "{told:?}"
        );
        assert!(
            !told.iter().any(|m| matches!(m, HubToTab::Message { .. })),
            "{told:?}"
        );
    }

    #[test]
    fn every_tab_gets_server_events_and_only_the_asker_gets_its_ack() {
        let mut hub = hub();
        online(&mut hub);
        join(&mut hub, 2, 5);
        outputs(&mut hub);
        hub.handle_tab(
            2,
            TabToHub::Request {
                id: 7,
                event: "history".into(),
                data: raw(json!({})),
                timeout_ms: 1000,
            },
            6,
        );
        let out = outputs(&mut hub);
        assert_eq!(sent(&out), [r#"420["history",{}]"#]);
        hub.handle_frame(r#"430[{"ok":1}]"#, 7);
        hub.handle_frame(r#"42["private message",{"id":1}]"#, 8);
        let out = outputs(&mut hub);
        assert_eq!(
            to(2, &out),
            [
                HubToTab::Ack {
                    id: 7,
                    args: vec![raw(json!({"ok":1}))]
                },
                HubToTab::Message {
                    event: "private message".into(),
                    args: vec![raw(json!({"id":1}))]
                }
            ]
        );
        assert_eq!(
            to(1, &out),
            [HubToTab::Message {
                event: "private message".into(),
                args: vec![raw(json!({"id":1}))]
            }]
        );
    }

    #[test]
    fn a_tab_leaving_keeps_the_connection_and_drops_its_pending_answers() {
        let mut hub = hub();
        online(&mut hub);
        hub.handle_tab(
            1,
            TabToHub::Request {
                id: 1,
                event: "history".into(),
                data: raw(json!({})),
                timeout_ms: 1000,
            },
            3,
        );
        hub.handle_tab(2, TabToHub::Bye, 3);
        hub.handle_tab(1, TabToHub::Bye, 4);
        let out = outputs(&mut hub);
        assert!(!out.contains(&HubOutput::CloseTransport));
        assert!(matches!(hub.state(), ConnState::Online { .. }));
        hub.handle_frame(r#"430[{"ok":1}]"#, 5);
        assert!(to(1, &outputs(&mut hub)).is_empty());
    }

    #[test]
    fn reconnects_use_the_session_the_server_confirmed() {
        let mut hub = hub();
        hub.handle_tab(
            1,
            TabToHub::Connect {
                auth: auth(json!({ "username": "ada" })),
            },
            0,
        );
        hub.handle_frame(
            r#"0{"sid":"e1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#,
            1,
        );
        hub.handle_frame(r#"40{"sid":"s1"}"#, 2);
        hub.handle_frame(r#"42["session",{"sessionID":"fresh","userID":"u1"}]"#, 3);
        outputs(&mut hub);
        hub.handle_transport_closed(4);
        let retry_at = match hub.state() {
            ConnState::Offline { retry_at } => retry_at,
            other => panic!("expected offline, got {other:?}"),
        };
        hub.handle_timer(retry_at);
        hub.handle_frame(
            r#"0{"sid":"e2","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#,
            retry_at + 1,
        );
        let out = outputs(&mut hub);
        assert_eq!(sent(&out), [r#"40{"sessionID":"fresh"}"#]);
        // A tab of that session now joins without a reconnect.
        hub.handle_tab(
            2,
            TabToHub::Connect {
                auth: auth(json!({ "sessionID": "fresh" })),
            },
            retry_at + 2,
        );
        assert!(!outputs(&mut hub).contains(&HubOutput::CloseTransport));
    }

    #[test]
    fn a_message_one_tab_sent_reaches_the_other_tabs_once_stored() {
        let mut hub = hub();
        online(&mut hub);
        hub.handle_frame(r#"42["session",{"sessionID":"secret","userID":"me"}]"#, 3);
        join(&mut hub, 2, 4);
        outputs(&mut hub);
        hub.handle_tab(
            1,
            TabToHub::Request {
                id: 5,
                event: "private message".into(),
                data: raw(json!({ "to": "bob", "content": "hi", "clientId": "c" })),
                timeout_ms: 1000,
            },
            5,
        );
        outputs(&mut hub);
        hub.handle_frame(r#"430[{"ok":{"id":9,"ts":100}}]"#, 6);
        let out = outputs(&mut hub);
        assert_eq!(
            to(2, &out),
            [HubToTab::Message {
                event: "private message".into(),
                args: vec![RawJson::new(
                    r#"{"id":9,"ts":100,"content":"hi","from":"me","to":"bob","clientId":"c"}"#
                )
                .unwrap()]
            }]
        );
        assert_eq!(
            to(1, &out),
            [HubToTab::Ack {
                id: 5,
                args: vec![raw(json!({"ok":{"id":9,"ts":100}}))]
            }],
            "the sender gets its ack only"
        );
    }

    /// A DISCONNECT that says nothing is a reconnect for every tab (the session may still
    /// exist); after `session moved`, or after a tab's logout, it stops every tab.
    #[test]
    fn a_server_disconnect_reaches_every_tab() {
        let stopped = HubToTab::State {
            state: SharedState::Stopped {
                reason: StopReason::ServerDisconnect,
            },
            reconnects: 0,
        };
        let mut hub = hub();
        online(&mut hub);
        join(&mut hub, 2, 5);
        outputs(&mut hub);
        hub.handle_frame("41", 6);
        let out = outputs(&mut hub);
        for tab in [1, 2] {
            let told = to(tab, &out);
            assert!(
                told.iter().any(|m| matches!(
                    m,
                    HubToTab::State {
                        state: SharedState::Offline { .. },
                        ..
                    }
                )),
                "{told:?}"
            );
        }
        assert!(hub.next_deadline().is_some());

        let mut hub = hub_online_with_tabs();
        hub.handle_frame(r#"42["session moved"]"#, 6);
        hub.handle_frame("41", 6);
        let out = outputs(&mut hub);
        for tab in [1, 2] {
            assert!(to(tab, &out).contains(&stopped));
        }

        let mut hub = hub_online_with_tabs();
        hub.handle_tab(
            2,
            TabToHub::Request {
                id: 1,
                event: "logout".into(),
                data: raw(json!({ "everywhere": false })),
                timeout_ms: 1000,
            },
            6,
        );
        hub.handle_frame("41", 7);
        let out = outputs(&mut hub);
        for tab in [1, 2] {
            assert!(to(tab, &out).contains(&stopped));
        }
        assert_eq!(hub.next_deadline(), None);
    }

    fn hub_online_with_tabs() -> Hub {
        let mut hub = hub();
        online(&mut hub);
        join(&mut hub, 2, 5);
        outputs(&mut hub);
        hub
    }

    /// The server sends `read` and `settings` to the socket that asked too: through the hub
    /// every tab hears them, so one tab's read clears the count in all.
    #[test]
    fn typing_seen_and_read_events_reach_every_tab() {
        let mut hub = hub_online_with_tabs();
        for frame in [
            r#"42["typing",{"from":"u"}]"#,
            r#"42["seen",{"by":"u","upTo":3,"at":4}]"#,
            r#"42["read",{"with":"u","upTo":3,"unread":0,"asOf":3}]"#,
            r#"42["settings",{"readReceipts":true}]"#,
        ] {
            hub.handle_frame(frame, 6);
            let out = outputs(&mut hub);
            for tab in [1, 2] {
                assert_eq!(to(tab, &out).len(), 1, "{frame} to tab {tab}");
            }
        }
    }
}
