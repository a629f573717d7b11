//! How a [`crate::session::Session`] reaches the server: its own connection ([`Core`]), or a
//! connection shared by every tab of the browser and held by a [`crate::hub::Hub`] in a
//! SharedWorker ([`SharedLink`]).
//!
//! Both look the same to the session: connection states, server events, acks. With a shared
//! link the tab speaks [`TabToHub`] messages to the hub (over a `MessagePort`, as JSON:
//! `"variant"` or `{"variant": {fields}}`, the variant's name in camelCase, as serde spells an
//! enum; `derive(Json)` writes it from the `#[serde]` attributes, and the tests check it against
//! serde's own derive) and the hub answers with [`HubToTab`]; the hub owns the Engine.IO
//! connection, its heartbeat, ack timeouts and reconnects.

use std::collections::VecDeque;

use protocol::{HandshakeAuth, Json};

use crate::core::{AckFailure, ConnState, Core, CoreEvent, NotConnected, Output, StopReason};
use crate::packet::{Arg, RawJson};

/// A tab's request to the hub.
#[derive(Debug, Clone, PartialEq, Json)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
#[serde(rename_all = "camelCase")]
pub enum TabToHub {
    /// Be connected with this auth (the tab's stored session, or a name to sign in with).
    Connect { auth: HandshakeAuth },
    /// Disconnect the shared connection (signing in anew).
    Disconnect,
    /// Emit without an ack.
    Emit { event: String, data: RawJson },
    /// Emit with an ack; the answer names the tab's own `id`.
    Request {
        id: u64,
        event: String,
        data: RawJson,
        timeout_ms: u64,
    },
    /// The tab is going away (pagehide): forget it and its pending requests.
    Bye,
}

/// The hub's news for one tab.
#[derive(Debug, Clone, PartialEq, Json)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
#[serde(rename_all = "camelCase")]
pub enum HubToTab {
    /// The shared connection's state. Clocks differ between a worker and a tab, so an offline
    /// state carries the delay until the next try instead of a time.
    State {
        state: SharedState,
        reconnects: u32,
    },
    Connected {
        sid: String,
        reconnect: bool,
    },
    ConnectError {
        message: String,
    },
    /// A server event, to every tab.
    Message {
        event: String,
        args: Vec<Arg>,
    },
    /// The answer to this tab's request `id`.
    Ack {
        id: u64,
        args: Vec<Arg>,
    },
    AckFailed {
        id: u64,
        reason: AckFailure,
    },
}

/// [`ConnState`] without clock values, for crossing from the worker to a tab.
#[derive(Debug, Clone, PartialEq, Eq, Json)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
#[serde(rename_all = "camelCase")]
pub enum SharedState {
    Connecting,
    Online { sid: String },
    Offline { retry_in: u64 },
    Stopped { reason: StopReason },
}

impl SharedState {
    pub fn from_conn(state: &ConnState, now: u64) -> Self {
        match state {
            ConnState::Connecting => SharedState::Connecting,
            ConnState::Online { sid } => SharedState::Online { sid: sid.clone() },
            ConnState::Offline { retry_at } => SharedState::Offline {
                retry_in: retry_at.saturating_sub(now),
            },
            ConnState::Stopped(reason) => SharedState::Stopped { reason: *reason },
        }
    }

    pub fn into_conn(self, now: u64) -> ConnState {
        match self {
            SharedState::Connecting => ConnState::Connecting,
            SharedState::Online { sid } => ConnState::Online { sid },
            SharedState::Offline { retry_in } => ConnState::Offline {
                retry_at: now + retry_in,
            },
            SharedState::Stopped { reason } => ConnState::Stopped(reason),
        }
    }
}

/// What a session sends acked emits through (the outbox does not care which link it is).
pub trait Emitter {
    fn emit_with_ack(
        &mut self,
        event: &str,
        data: &RawJson,
        timeout_ms: u64,
        now: u64,
    ) -> Result<u64, NotConnected>;
}

impl Emitter for Core {
    fn emit_with_ack(
        &mut self,
        event: &str,
        data: &RawJson,
        timeout_ms: u64,
        now: u64,
    ) -> Result<u64, NotConnected> {
        Core::emit_with_ack(self, event, data, timeout_ms, now)
    }
}

type AuthSource = Box<dyn FnMut() -> HandshakeAuth + Send>;

/// The tab's side of a shared connection: sans-IO like [`Core`]; its outputs are
/// [`Output::Event`]s and messages for the hub ([`SharedLink::poll_message`]).
pub struct SharedLink {
    auth: AuthSource,
    state: ConnState,
    reconnects: u32,
    next_id: u64,
    events: VecDeque<Output>,
    to_hub: VecDeque<TabToHub>,
    heard: bool,
}

impl SharedLink {
    pub fn new(auth: impl FnMut() -> HandshakeAuth + Send + 'static) -> Self {
        Self {
            auth: Box::new(auth),
            state: ConnState::Stopped(StopReason::ClientDisconnect),
            reconnects: 0,
            next_id: 0,
            events: VecDeque::new(),
            to_hub: VecDeque::new(),
            heard: false,
        }
    }

    /// The next message to post to the hub.
    pub fn poll_message(&mut self) -> Option<TabToHub> {
        self.to_hub.pop_front()
    }

    /// Whether the hub has answered anything since the link was created (a hub that never
    /// answers is not working: the adapter then falls back to an own connection).
    pub fn heard_from_hub(&self) -> bool {
        self.heard
    }

    pub fn connect(&mut self) {
        let auth = (self.auth)();
        self.to_hub.push_back(TabToHub::Connect { auth });
    }

    pub fn disconnect(&mut self) {
        self.to_hub.push_back(TabToHub::Disconnect);
        self.set_state(ConnState::Stopped(StopReason::ClientDisconnect));
    }

    pub fn emit(&mut self, event: &str, data: &RawJson) -> Result<(), NotConnected> {
        self.ensure_online()?;
        self.to_hub.push_back(TabToHub::Emit {
            event: event.to_owned(),
            data: data.clone(),
        });
        Ok(())
    }

    /// Feeds one message from the hub.
    pub fn handle_hub(&mut self, message: HubToTab, now: u64) {
        self.heard = true;
        let event = match message {
            HubToTab::State { state, reconnects } => {
                self.reconnects = reconnects;
                self.set_state(state.into_conn(now));
                return;
            }
            HubToTab::Connected { sid, reconnect } => CoreEvent::Connected { sid, reconnect },
            HubToTab::ConnectError { message } => CoreEvent::ConnectError { message },
            HubToTab::Message { event, args } => CoreEvent::Message {
                event,
                args,
                ack: None,
            },
            HubToTab::Ack { id, args } => CoreEvent::Ack { id, args },
            HubToTab::AckFailed { id, reason } => CoreEvent::AckFailed { id, reason },
        };
        self.events.push_back(Output::Event(event));
    }

    fn set_state(&mut self, state: ConnState) {
        if self.state != state {
            self.state = state.clone();
            self.events
                .push_back(Output::Event(CoreEvent::State(state)));
        }
    }

    fn ensure_online(&self) -> Result<(), NotConnected> {
        match self.state {
            ConnState::Online { .. } => Ok(()),
            _ => Err(NotConnected),
        }
    }
}

impl Emitter for SharedLink {
    fn emit_with_ack(
        &mut self,
        event: &str,
        data: &RawJson,
        timeout_ms: u64,
        _now: u64,
    ) -> Result<u64, NotConnected> {
        self.ensure_online()?;
        let id = self.next_id;
        self.next_id += 1;
        self.to_hub.push_back(TabToHub::Request {
            id,
            event: event.to_owned(),
            data: data.clone(),
            timeout_ms,
        });
        Ok(id)
    }
}

/// The session's connection: its own, or the browser's shared one.
pub enum Link {
    Own(Core),
    Shared(SharedLink),
}

impl Link {
    pub fn state(&self) -> ConnState {
        match self {
            Link::Own(core) => core.state(),
            Link::Shared(link) => link.state.clone(),
        }
    }

    pub fn reconnects(&self) -> u32 {
        match self {
            Link::Own(core) => core.reconnects(),
            Link::Shared(link) => link.reconnects,
        }
    }

    pub fn next_deadline(&self) -> Option<u64> {
        match self {
            Link::Own(core) => core.next_deadline(),
            // The hub keeps time for the shared connection (heartbeat, acks, backoff).
            Link::Shared(_) => None,
        }
    }

    pub fn connect(&mut self, now: u64) {
        match self {
            Link::Own(core) => core.connect(now),
            Link::Shared(link) => link.connect(),
        }
    }

    pub fn disconnect(&mut self) {
        match self {
            Link::Own(core) => core.disconnect(),
            Link::Shared(link) => link.disconnect(),
        }
    }

    pub fn handle_frame(&mut self, text: &str, now: u64) {
        if let Link::Own(core) = self {
            core.handle_frame(text, now);
        }
    }

    /// See [`Core::set_held`]. A hub serves tabs that hold different things (a new tab holds
    /// nothing), so through one the roster stays whole.
    pub fn set_held(&mut self, session_id: &str, newest_id: i64) {
        if let Link::Own(core) = self {
            core.set_held(session_id, newest_id);
        }
    }

    pub fn handle_transport_closed(&mut self, now: u64) {
        if let Link::Own(core) = self {
            core.handle_transport_closed(now);
        }
    }

    pub fn handle_timer(&mut self, now: u64) {
        if let Link::Own(core) = self {
            core.handle_timer(now);
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        match self {
            Link::Own(core) => core.poll_output(),
            Link::Shared(link) => link.events.pop_front(),
        }
    }

    pub fn emit(&mut self, event: &str, data: &RawJson) -> Result<(), NotConnected> {
        match self {
            Link::Own(core) => core.emit(event, data),
            Link::Shared(link) => link.emit(event, data),
        }
    }

    /// Acks a server event that asked for one. Through a hub this never happens: the hub
    /// answers such events itself, once, before fanning them out.
    pub fn ack(&mut self, id: i64, data: &RawJson) -> Result<(), NotConnected> {
        match self {
            Link::Own(core) => core.ack(id, data),
            Link::Shared(_) => Ok(()),
        }
    }
}

impl Emitter for Link {
    fn emit_with_ack(
        &mut self,
        event: &str,
        data: &RawJson,
        timeout_ms: u64,
        now: u64,
    ) -> Result<u64, NotConnected> {
        match self {
            Link::Own(core) => core.emit_with_ack(event, data, timeout_ms, now),
            Link::Shared(link) => link.emit_with_ack(event, data, timeout_ms, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{auth, raw};
    use protocol::json;
    use serde_json::json;

    /// Every message survives the trip, spelled as the previous release's serde derive spelled
    /// it (a worker from before an update may be talking to a tab from after it).
    #[test]
    fn wire_messages_round_trip_as_json() {
        let tab_messages = [
            (
                TabToHub::Connect {
                    auth: auth(json!({ "sessionID": "s" })),
                },
                r#"{"connect":{"auth":{"sessionID":"s"}}}"#,
            ),
            (TabToHub::Disconnect, r#""disconnect""#),
            (
                TabToHub::Emit {
                    event: "e".into(),
                    data: raw(json!([1, "é\n"])),
                },
                r#"{"emit":{"event":"e","data":[1,"é\n"]}}"#,
            ),
            (
                TabToHub::Request {
                    id: 3,
                    event: "history".into(),
                    data: raw(json!({ "with": "u" })),
                    timeout_ms: 10_000,
                },
                r#"{"request":{"id":3,"event":"history","data":{"with":"u"},"timeout_ms":10000}}"#,
            ),
            (TabToHub::Bye, r#""bye""#),
        ];
        for (message, text) in tab_messages {
            assert_eq!(json::to_string(&message), text);
            assert_eq!(json::from_str::<TabToHub>(text), Ok(message));
        }
        let state = |state| HubToTab::State {
            state,
            reconnects: 2,
        };
        let hub_messages = [
            (
                state(SharedState::Connecting),
                r#"{"state":{"state":"connecting","reconnects":2}}"#,
            ),
            (
                state(SharedState::Online { sid: "x".into() }),
                r#"{"state":{"state":{"online":{"sid":"x"}},"reconnects":2}}"#,
            ),
            (
                state(SharedState::Offline { retry_in: 1500 }),
                r#"{"state":{"state":{"offline":{"retry_in":1500}},"reconnects":2}}"#,
            ),
            (
                state(SharedState::Stopped {
                    reason: StopReason::SessionActive,
                }),
                r#"{"state":{"state":{"stopped":{"reason":"sessionActive"}},"reconnects":2}}"#,
            ),
            (
                HubToTab::Connected {
                    sid: "x".into(),
                    reconnect: true,
                },
                r#"{"connected":{"sid":"x","reconnect":true}}"#,
            ),
            (
                HubToTab::ConnectError {
                    message: "invalid username".into(),
                },
                r#"{"connectError":{"message":"invalid username"}}"#,
            ),
            (
                HubToTab::Message {
                    event: "users".into(),
                    args: vec![raw(json!([])), raw(json!(null))],
                },
                r#"{"message":{"event":"users","args":[[],null]}}"#,
            ),
            (
                HubToTab::Ack {
                    id: 4,
                    args: vec![],
                },
                r#"{"ack":{"id":4,"args":[]}}"#,
            ),
            (
                HubToTab::AckFailed {
                    id: 5,
                    reason: AckFailure::Timeout,
                },
                r#"{"ackFailed":{"id":5,"reason":"timeout"}}"#,
            ),
        ];
        for (message, text) in hub_messages {
            assert_eq!(json::to_string(&message), text);
            assert_eq!(json::from_str::<HubToTab>(text), Ok(message));
        }
    }

    #[test]
    fn malformed_link_messages_are_refused() {
        for bad in [
            r#""connect""#,
            r#"{"bye":{}}"#,
            r#"{"emit":{"event":"e"}}"#,
            r#"{"emit":{"event":"e","data":1},"bye":null}"#,
            r#"{"nope":{}}"#,
            r#"{"ackFailed":{"id":1,"reason":"later"}}"#,
            "[]",
        ] {
            assert!(json::from_str::<TabToHub>(bad).is_err(), "{bad}");
            assert!(json::from_str::<HubToTab>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offline_crosses_clocks_as_a_delay() {
        let state = SharedState::from_conn(&ConnState::Offline { retry_at: 10_500 }, 10_000);
        assert_eq!(state, SharedState::Offline { retry_in: 500 });
        assert_eq!(
            state.into_conn(7),
            ConnState::Offline { retry_at: 507 },
            "the tab's clock"
        );
    }

    #[test]
    fn a_shared_link_emits_only_online_and_names_requests_itself() {
        let mut link = SharedLink::new(|| auth(json!({ "sessionID": "s" })));
        assert!(!link.heard_from_hub());
        assert_eq!(
            link.emit_with_ack("e", &raw(json!(1)), 100, 0),
            Err(NotConnected)
        );
        link.connect();
        assert_eq!(
            link.poll_message(),
            Some(TabToHub::Connect {
                auth: auth(json!({ "sessionID": "s" }))
            })
        );
        link.handle_hub(
            HubToTab::State {
                state: SharedState::Online { sid: "x".into() },
                reconnects: 0,
            },
            0,
        );
        assert!(link.heard_from_hub());
        assert_eq!(link.emit_with_ack("e", &raw(json!(1)), 100, 0), Ok(0));
        assert_eq!(link.emit_with_ack("e", &raw(json!(2)), 100, 0), Ok(1));
        assert!(matches!(
            link.poll_message(),
            Some(TabToHub::Request { id: 0, .. })
        ));
    }
}
