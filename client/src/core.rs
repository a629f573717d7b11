//! The sans-IO client: frames and time go in, frames, transport commands and events come out.
//!
//! One [`Core`] lives as long as the page (or the tool) and spans every reconnect. The adapter
//! around it (a browser `WebSocket`, or tokio-tungstenite natively) does only I/O: it opens and
//! closes the transport when told, feeds text frames and transport closes in, calls
//! [`Core::handle_timer`] at [`Core::next_deadline`], and acts on [`Core::poll_output`].
//! Times are milliseconds on any monotonic clock the adapter likes.

use std::collections::VecDeque;

use protocol::{HandshakeAuth, Json};

use crate::backoff::{Backoff, BackoffPolicy};
use crate::packet::{self, Arg, Frame, Incoming, RawJson};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoreConfig {
    pub backoff: BackoffPolicy,
    /// How long opening the transport plus the Socket.IO handshake may take (signing a proof
    /// of possession included).
    pub connect_timeout_ms: u64,
    /// Prove possession of the session (issue #25): after OPEN, ask the adapter to sign the
    /// connection's sid ([`Output::Prove`]) and send the proof in the handshake's auth.
    pub proves: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            backoff: BackoffPolicy::default(),
            connect_timeout_ms: 10_000,
            proves: false,
        }
    }
}

/// A proof of possession, as the adapter's key made it ([`Core::handle_proof`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// base64url (no padding) of the signature, 64 bytes r‖s, over
    /// [`protocol::pop_challenge`] of the challenge.
    pub pop: String,
    /// base64url (no padding) of the key's 65-byte uncompressed SEC1 point.
    pub pop_key: String,
}

/// Why the client stopped reconnecting by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Json)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
#[serde(rename_all = "camelCase")]
pub enum StopReason {
    /// The server refused the session (`invalid username`): sign in again.
    Unauthorized,
    /// The server ended this socket, and the client knows why: it announced a takeover
    /// (`session moved`), or this client asked to log out. A DISCONNECT without either does not
    /// say why (the session may still exist: a socket limit, an abuse cooldown, a store
    /// failure), so it is not a stop: the client reconnects with the session after the backoff,
    /// and the handshake tells (`invalid username` stops with [`StopReason::Unauthorized`]).
    ServerDisconnect,
    /// The application asked to disconnect.
    ClientDisconnect,
    /// The tab policy refused a second connection of this session (`session already active`).
    SessionActive,
    /// A sign-up with a name a passkey protects (`name protected`): sign in with the passkey,
    /// or choose another name. Trying again would be refused again.
    NameProtected,
    /// The session is bound to a key this client cannot prove it holds (`proof required`):
    /// its id was copied here, or this browser lost its key. Sign in again.
    ProofRequired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// Opening the transport or waiting for the handshake.
    Connecting,
    Online {
        sid: String,
    },
    /// Lost; the next attempt is at `retry_at`.
    Offline {
        retry_at: u64,
    },
    Stopped(StopReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Json)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
#[serde(rename_all = "camelCase")]
pub enum AckFailure {
    Timeout,
    Disconnected,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CoreEvent {
    State(ConnState),
    /// The namespace accepted the handshake (first time or after a reconnect).
    Connected {
        sid: String,
        reconnect: bool,
    },
    ConnectError {
        message: String,
    },
    Message {
        event: String,
        args: Vec<Arg>,
        ack: Option<i64>,
    },
    Ack {
        id: u64,
        args: Vec<Arg>,
    },
    AckFailed {
        id: u64,
        reason: AckFailure,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a new transport (a websocket to `/socket.io/?EIO=4&transport=websocket`).
    OpenTransport,
    /// Send this text frame on the open transport.
    Send(String),
    /// Close the current transport, if any.
    CloseTransport,
    /// Sign this challenge (the connection's Engine.IO sid) with the client's key and hand the
    /// result to [`Core::handle_proof`] (`None` when it cannot: no key store, no key). Only with
    /// [`CoreConfig::proves`].
    Prove {
        challenge: String,
    },
    Event(CoreEvent),
}

/// Emits need a live connection; offline work belongs in an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not connected")]
pub struct NotConnected;

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Idle,
    Opening {
        deadline: u64,
    },
    Online {
        sid: String,
        heartbeat_deadline: u64,
    },
    Waiting {
        retry_at: u64,
    },
    Stopped(StopReason),
}

type AuthSource = Box<dyn FnMut() -> HandshakeAuth + Send>;
type RandomSource = Box<dyn FnMut() -> f64 + Send>;

pub struct Core {
    config: CoreConfig,
    phase: Phase,
    backoff: Backoff,
    auth: AuthSource,
    random: RandomSource,
    heartbeat_ms: u64,
    next_ack_id: u64,
    /// Acks awaited: (id, deadline), in the order sent (ids only grow). A list, not a map: a
    /// connection has a few in flight, and each map type is code of its own in the wasm.
    acks: Vec<(u64, u64)>,
    outputs: VecDeque<Output>,
    has_connected: bool,
    reconnects: u32,
    /// A DISCONNECT on this connection ends it for good: the server announced a takeover
    /// (`session moved`) or this client emitted `logout`.
    disconnect_expected: bool,
    /// The session the client's chat state came from, and the newest message id it holds.
    held: Option<(String, i64)>,
    /// The handshake waiting for its proof: the challenge (this connection's sid) and the auth.
    /// Boxed: most cores never prove, and a `Core` is moved by value (`Link::Own`).
    proving: Option<Box<(String, HandshakeAuth)>>,
}

impl Core {
    /// `auth` is called on every (re)connect, so it always sends the session as stored now;
    /// `random` yields uniform numbers in [0, 1) for the reconnect jitter.
    pub fn new(
        config: CoreConfig,
        auth: impl FnMut() -> HandshakeAuth + Send + 'static,
        random: impl FnMut() -> f64 + Send + 'static,
    ) -> Self {
        Self {
            config,
            phase: Phase::Idle,
            backoff: Backoff::new(config.backoff),
            auth: Box::new(auth),
            random: Box::new(random),
            heartbeat_ms: 0,
            next_ack_id: 0,
            acks: Vec::new(),
            outputs: VecDeque::new(),
            has_connected: false,
            reconnects: 0,
            disconnect_expected: false,
            held: None,
            proving: None,
        }
    }

    /// The adapter's answer to [`Output::Prove`]: sends the handshake, with the proof if there
    /// is one. An answer for another connection's challenge (one lost meanwhile) is dropped.
    pub fn handle_proof(&mut self, challenge: &str, proof: Option<Proof>) {
        if !matches!(self.phase, Phase::Opening { .. }) {
            return;
        }
        let Some(waiting) = self.proving.take_if(|waiting| waiting.0 == challenge) else {
            return;
        };
        let (_, mut auth) = *waiting;
        if let Some(proof) = proof {
            auth.pop = Some(proof.pop);
            auth.pop_key = Some(proof.pop_key);
        }
        self.send(packet::connect_frame(&auth));
    }

    /// What the client holds: messages up to `newest_id`, received on the session
    /// `session_id`. A later connect that resumes that same session sends it as `auth.since`
    /// (when positive), and the server's `users` then carries only newer messages. Only for a
    /// client whose chat state outlives its connections.
    pub fn set_held(&mut self, session_id: &str, newest_id: i64) {
        match &mut self.held {
            Some((held_session, held_id)) if held_session == session_id => *held_id = newest_id,
            held => *held = Some((session_id.to_owned(), newest_id)),
        }
    }

    pub fn state(&self) -> ConnState {
        match &self.phase {
            Phase::Idle | Phase::Opening { .. } => ConnState::Connecting,
            Phase::Online { sid, .. } => ConnState::Online { sid: sid.clone() },
            Phase::Waiting { retry_at } => ConnState::Offline {
                retry_at: *retry_at,
            },
            Phase::Stopped(reason) => ConnState::Stopped(*reason),
        }
    }

    /// Successful reconnects so far (the first connect is not one).
    pub fn reconnects(&self) -> u32 {
        self.reconnects
    }

    /// Starts connecting (or starts again after a stop, e.g. after signing in anew).
    pub fn connect(&mut self, now: u64) {
        if matches!(self.phase, Phase::Opening { .. } | Phase::Online { .. }) {
            return;
        }
        self.backoff.reset();
        self.open(now);
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next time [`Core::handle_timer`] must run, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        let phase = match &self.phase {
            Phase::Opening { deadline } => Some(*deadline),
            Phase::Online {
                heartbeat_deadline, ..
            } => Some(*heartbeat_deadline),
            Phase::Waiting { retry_at } => Some(*retry_at),
            Phase::Idle | Phase::Stopped(_) => None,
        };
        let ack = self.acks.iter().map(|(_, deadline)| *deadline).min();
        match (phase, ack) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timer(&mut self, now: u64) {
        let expired: Vec<u64> = self
            .acks
            .iter()
            .filter(|(_, deadline)| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        self.acks.retain(|(_, deadline)| *deadline > now);
        for id in expired {
            self.event(CoreEvent::AckFailed {
                id,
                reason: AckFailure::Timeout,
            });
        }
        match self.phase {
            Phase::Waiting { retry_at } if retry_at <= now => self.open(now),
            Phase::Opening { deadline } if deadline <= now => self.lose(now, true),
            // The server stopped pinging: treat it as gone.
            Phase::Online {
                heartbeat_deadline, ..
            } if heartbeat_deadline <= now => self.lose(now, true),
            _ => {}
        }
    }

    /// A text frame from the transport.
    pub fn handle_frame(&mut self, text: &str, now: u64) {
        let Ok(frame) = packet::decode_frame(text) else {
            // Like the reference client: a frame we cannot parse ends the connection.
            self.lose(now, true);
            return;
        };
        match frame {
            Frame::Open(open) => {
                if matches!(self.phase, Phase::Opening { .. }) {
                    self.heartbeat_ms = open.ping_interval + open.ping_timeout;
                    let mut auth = (self.auth)();
                    if let Some((session_id, newest_id)) = &self.held {
                        // Only for the session the state came from: the stored session may
                        // have changed since (signed in anew, in another tab).
                        let same = auth.session_id.as_ref() == Some(session_id);
                        if same && *newest_id > 0 {
                            auth.since = Some(*newest_id);
                        }
                    }
                    if self.config.proves {
                        self.proving = Some(Box::new((open.sid.clone(), auth)));
                        self.outputs.push_back(Output::Prove {
                            challenge: open.sid,
                        });
                    } else {
                        self.send(packet::connect_frame(&auth));
                    }
                }
            }
            Frame::Ping => {
                self.send(packet::PONG.to_owned());
                if let Phase::Online {
                    heartbeat_deadline, ..
                } = &mut self.phase
                {
                    *heartbeat_deadline = now + self.heartbeat_ms;
                    // Online for a whole ping interval: this connection held.
                    self.backoff.reset();
                }
            }
            Frame::Pong | Frame::Noop => {}
            Frame::Close => self.lose(now, true),
            Frame::Message(packet) => self.handle_packet(packet, now),
        }
    }

    /// The transport closed (by either side, or failed to open).
    pub fn handle_transport_closed(&mut self, now: u64) {
        match self.phase {
            Phase::Opening { .. } | Phase::Online { .. } => self.lose(now, false),
            Phase::Idle | Phase::Waiting { .. } | Phase::Stopped(_) => {}
        }
    }

    pub fn emit(&mut self, event: &str, data: &RawJson) -> Result<(), NotConnected> {
        self.ensure_online()?;
        self.note_emit(event);
        self.send(packet::event_frame(event, data, None));
        Ok(())
    }

    /// Emits asking for an ack; the answer comes as [`CoreEvent::Ack`] with the returned id, or
    /// as [`CoreEvent::AckFailed`] after `timeout_ms` or when the connection drops.
    pub fn emit_with_ack(
        &mut self,
        event: &str,
        data: &RawJson,
        timeout_ms: u64,
        now: u64,
    ) -> Result<u64, NotConnected> {
        self.ensure_online()?;
        self.note_emit(event);
        let id = self.next_ack_id;
        self.next_ack_id += 1;
        self.acks.push((id, now + timeout_ms));
        self.send(packet::event_frame(event, data, Some(id as i64)));
        Ok(id)
    }

    /// Answers a server event that asked for an ack.
    pub fn ack(&mut self, id: i64, data: &RawJson) -> Result<(), NotConnected> {
        self.ensure_online()?;
        self.send(packet::ack_frame(id, data));
        Ok(())
    }

    /// Leaves for good (until [`Core::connect`]).
    pub fn disconnect(&mut self) {
        if matches!(self.phase, Phase::Online { .. }) {
            self.send(packet::disconnect_frame());
        }
        self.outputs.push_back(Output::CloseTransport);
        self.stop(StopReason::ClientDisconnect);
    }

    fn handle_packet(&mut self, packet: Incoming, now: u64) {
        match packet {
            Incoming::Connect { sid } => {
                if !matches!(self.phase, Phase::Opening { .. }) {
                    return;
                }
                // The backoff is not reset here but once the connection holds (its `users`, or
                // a ping): a server that accepts and then disconnects at once, every time (a
                // user at its socket limit, a roster it cannot read), is retried ever more
                // slowly, not every second.
                let reconnect = self.has_connected;
                if reconnect {
                    self.reconnects += 1;
                }
                self.has_connected = true;
                self.phase = Phase::Online {
                    sid: sid.clone(),
                    heartbeat_deadline: now + self.heartbeat_ms,
                };
                self.event(CoreEvent::State(self.state()));
                self.event(CoreEvent::Connected { sid, reconnect });
            }
            Incoming::ConnectError { message } => {
                let stop = match message.as_str() {
                    protocol::events::INVALID_USERNAME => Some(StopReason::Unauthorized),
                    // The session was ended (a rotated-out copy of it was used): as gone as
                    // an unknown one.
                    protocol::events::SESSION_REUSED => Some(StopReason::Unauthorized),
                    protocol::events::SESSION_ALREADY_ACTIVE => Some(StopReason::SessionActive),
                    protocol::events::NAME_PROTECTED => Some(StopReason::NameProtected),
                    protocol::events::PROOF_REQUIRED => Some(StopReason::ProofRequired),
                    _ => None,
                };
                self.event(CoreEvent::ConnectError { message });
                self.outputs.push_back(Output::CloseTransport);
                match stop {
                    Some(reason) => self.stop(reason),
                    None => self.lose(now, false),
                }
            }
            Incoming::Disconnect => {
                if self.disconnect_expected {
                    self.outputs.push_back(Output::CloseTransport);
                    self.stop(StopReason::ServerDisconnect);
                } else {
                    // Why is not said (PROTOCOL.md, "Server disconnects"): reconnect with the
                    // session after the backoff, like after a lost transport, and let the
                    // handshake tell whether the session still exists.
                    self.lose(now, true);
                }
            }
            Incoming::Event { event, args, ack } => {
                match event.as_str() {
                    protocol::events::SESSION_MOVED => self.disconnect_expected = true,
                    protocol::events::USERS => self.backoff.reset(),
                    _ => {}
                }
                self.event(CoreEvent::Message { event, args, ack });
            }
            Incoming::Ack { id, args } => {
                let Ok(id) = u64::try_from(id) else { return };
                if let Some(at) = self.acks.iter().position(|(pending, _)| *pending == id) {
                    self.acks.remove(at);
                    self.event(CoreEvent::Ack { id, args });
                }
            }
        }
    }

    fn open(&mut self, now: u64) {
        self.disconnect_expected = false;
        self.proving = None;
        self.phase = Phase::Opening {
            deadline: now + self.config.connect_timeout_ms,
        };
        self.outputs.push_back(Output::OpenTransport);
        self.event(CoreEvent::State(ConnState::Connecting));
    }

    /// The connection is gone: fail pending acks and schedule the next attempt.
    fn lose(&mut self, now: u64, close_transport: bool) {
        if close_transport {
            self.outputs.push_back(Output::CloseTransport);
        }
        self.fail_acks();
        let delay = self.backoff.next_delay((self.random)());
        self.phase = Phase::Waiting {
            retry_at: now + delay,
        };
        self.event(CoreEvent::State(self.state()));
    }

    fn stop(&mut self, reason: StopReason) {
        self.fail_acks();
        self.phase = Phase::Stopped(reason);
        self.event(CoreEvent::State(self.state()));
    }

    fn fail_acks(&mut self) {
        for (id, _) in std::mem::take(&mut self.acks) {
            self.event(CoreEvent::AckFailed {
                id,
                reason: AckFailure::Disconnected,
            });
        }
    }

    /// A `logout` sent: the DISCONNECT that follows is the one asked for.
    fn note_emit(&mut self, event: &str) {
        if event == protocol::events::LOGOUT {
            self.disconnect_expected = true;
        }
    }

    fn ensure_online(&self) -> Result<(), NotConnected> {
        match self.phase {
            Phase::Online { .. } => Ok(()),
            _ => Err(NotConnected),
        }
    }

    fn send(&mut self, frame: String) {
        self.outputs.push_back(Output::Send(frame));
    }

    fn event(&mut self, event: CoreEvent) {
        self.outputs.push_back(Output::Event(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{auth, raw};
    use serde_json::json;

    const OPEN: &str =
        r#"0{"sid":"e1","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000}"#;

    fn core() -> Core {
        let mut n = 0;
        Core::new(
            CoreConfig {
                backoff: BackoffPolicy {
                    jitter: 0.0,
                    ..Default::default()
                },
                connect_timeout_ms: 1000,
                proves: false,
            },
            move || {
                n += 1;
                auth(json!({ "sessionID": format!("s{n}") }))
            },
            || 0.0,
        )
    }

    fn drain(core: &mut Core) -> Vec<Output> {
        std::iter::from_fn(|| core.poll_output()).collect()
    }

    fn online(core: &mut Core, now: u64) -> Vec<Output> {
        core.connect(now);
        core.handle_frame(OPEN, now);
        core.handle_frame(r#"40{"sid":"x"}"#, now);
        drain(core)
    }

    #[test]
    fn the_handshake_opens_then_connects_with_fresh_auth() {
        let mut c = core();
        let out = online(&mut c, 0);
        assert_eq!(out[0], Output::OpenTransport);
        assert!(out.contains(&Output::Send(r#"40{"sessionID":"s1"}"#.into())));
        assert!(out.contains(&Output::Event(CoreEvent::Connected {
            sid: "x".into(),
            reconnect: false
        })));
        assert_eq!(c.state(), ConnState::Online { sid: "x".into() });
    }

    #[test]
    fn a_resuming_connect_names_the_newest_message_held_of_that_session_only() {
        let mut c = core();
        c.set_held("s1", 41);
        let out = online(&mut c, 0);
        assert!(out.contains(&Output::Send(r#"40{"sessionID":"s1","since":41}"#.into())));
        // The stored session changed (the next connect resumes s2): that one holds nothing here.
        c.handle_transport_closed(10);
        c.handle_timer(1010);
        c.handle_frame(OPEN, 1010);
        assert!(drain(&mut c).contains(&Output::Send(r#"40{"sessionID":"s2"}"#.into())));
        // Signing in anew has nothing to resume: the tutorial's auth, unchanged.
        let mut c = Core::new(
            CoreConfig::default(),
            || auth(json!({ "username": "ada" })),
            || 0.5,
        );
        c.set_held("s1", 41);
        assert!(online(&mut c, 0).contains(&Output::Send(r#"40{"username":"ada"}"#.into())));
    }

    #[test]
    fn pings_are_answered_and_keep_the_connection() {
        let mut c = core();
        online(&mut c, 0);
        c.handle_frame("2", 400);
        assert_eq!(drain(&mut c), [Output::Send("3".into())]);
        c.handle_timer(600);
        assert!(matches!(c.state(), ConnState::Online { .. }));
        assert_eq!(c.next_deadline(), Some(900));
    }

    #[test]
    fn a_server_that_stops_pinging_is_treated_as_gone_and_retried_with_backoff() {
        let mut c = core();
        online(&mut c, 0);
        c.handle_timer(500);
        let out = drain(&mut c);
        assert!(out.contains(&Output::CloseTransport));
        assert_eq!(c.state(), ConnState::Offline { retry_at: 1500 });
        c.handle_timer(1500);
        assert_eq!(drain(&mut c)[0], Output::OpenTransport);
        // The next attempt fails too: the delay doubles.
        c.handle_transport_closed(1600);
        assert_eq!(c.state(), ConnState::Offline { retry_at: 3600 });
    }

    #[test]
    fn a_reconnect_rebuilds_auth_and_resets_the_backoff() {
        let mut c = core();
        online(&mut c, 0);
        c.handle_transport_closed(10);
        c.handle_timer(1010);
        c.handle_frame(OPEN, 1010);
        c.handle_frame(r#"40{"sid":"y"}"#, 1010);
        c.handle_frame(r#"42["users",[]]"#, 1010);
        let out = drain(&mut c);
        assert!(out.contains(&Output::Send(r#"40{"sessionID":"s2"}"#.into())));
        assert!(out.contains(&Output::Event(CoreEvent::Connected {
            sid: "y".into(),
            reconnect: true
        })));
        assert_eq!(c.reconnects(), 1);
        c.handle_transport_closed(2000);
        assert_eq!(c.state(), ConnState::Offline { retry_at: 3000 });
    }

    #[test]
    fn invalid_username_stops_without_a_reconnect_loop() {
        let mut c = core();
        c.connect(0);
        c.handle_frame(OPEN, 0);
        c.handle_frame(r#"44{"message":"invalid username"}"#, 0);
        assert_eq!(c.state(), ConnState::Stopped(StopReason::Unauthorized));
        assert_eq!(c.next_deadline(), None);
        c.handle_transport_closed(5);
        assert_eq!(c.state(), ConnState::Stopped(StopReason::Unauthorized));
    }

    #[test]
    fn a_protected_name_stops_without_a_reconnect_loop() {
        let mut c = core();
        c.connect(0);
        c.handle_frame(OPEN, 0);
        c.handle_frame(r#"44{"message":"name protected"}"#, 0);
        assert_eq!(c.state(), ConnState::Stopped(StopReason::NameProtected));
        assert_eq!(c.next_deadline(), None);
    }

    fn proving_core() -> Core {
        let config = CoreConfig {
            proves: true,
            ..CoreConfig::default()
        };
        Core::new(config, || auth(json!({ "sessionID": "s" })), || 0.0)
    }

    fn proof(tag: &str) -> Proof {
        Proof {
            pop: format!("pop-{tag}"),
            pop_key: "key".into(),
        }
    }

    #[test]
    fn a_proving_client_signs_this_connections_sid_before_it_connects() {
        let mut c = proving_core();
        c.connect(0);
        c.handle_frame(OPEN, 0);
        let out = drain(&mut c);
        assert!(out.contains(&Output::Prove {
            challenge: "e1".into()
        }));
        assert!(!out.iter().any(|o| matches!(o, Output::Send(_))), "{out:?}");
        // An answer for another connection's challenge is dropped.
        c.handle_proof("e0", Some(proof("old")));
        assert!(drain(&mut c).is_empty());
        c.handle_proof("e1", Some(proof("e1")));
        assert_eq!(
            drain(&mut c),
            [Output::Send(
                r#"40{"sessionID":"s","pop":"pop-e1","popKey":"key"}"#.into()
            )]
        );
        // Only once.
        c.handle_proof("e1", Some(proof("e1")));
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn without_a_key_the_handshake_goes_unproven_and_a_late_proof_is_dropped() {
        let mut c = proving_core();
        c.connect(0);
        c.handle_frame(OPEN, 0);
        drain(&mut c);
        c.handle_proof("e1", None);
        assert_eq!(
            drain(&mut c),
            [Output::Send(r#"40{"sessionID":"s"}"#.into())]
        );

        // Signing outlives the connection: its answer is dropped, the next OPEN asks again.
        let mut c = proving_core();
        c.connect(0);
        c.handle_frame(OPEN, 0);
        c.handle_transport_closed(5);
        c.handle_proof("e1", Some(proof("e1")));
        c.handle_timer(10_000);
        assert!(!drain(&mut c).iter().any(|o| matches!(o, Output::Send(_))));
        c.handle_frame(&OPEN.replace("e1", "e2"), 10_000);
        c.handle_proof("e1", Some(proof("e1")));
        assert!(!drain(&mut c).iter().any(|o| matches!(o, Output::Send(_))));
    }

    #[test]
    fn a_reused_session_stops_as_signed_out() {
        let mut c = core();
        c.connect(0);
        c.handle_frame(OPEN, 0);
        c.handle_frame(r#"44{"message":"session reused"}"#, 0);
        assert_eq!(c.state(), ConnState::Stopped(StopReason::Unauthorized));
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn a_refused_proof_stops_without_a_reconnect_loop() {
        let mut c = proving_core();
        c.connect(0);
        c.handle_frame(OPEN, 0);
        c.handle_proof("e1", Some(proof("e1")));
        c.handle_frame(r#"44{"message":"proof required"}"#, 0);
        assert_eq!(c.state(), ConnState::Stopped(StopReason::ProofRequired));
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn other_connect_errors_are_retried() {
        let mut c = core();
        c.connect(0);
        c.handle_frame(OPEN, 0);
        c.handle_frame(r#"44{"message":"server unavailable"}"#, 0);
        assert_eq!(c.state(), ConnState::Offline { retry_at: 1000 });
    }

    #[test]
    fn acks_are_matched_by_id_and_time_out() {
        let mut c = core();
        online(&mut c, 0);
        let a = c
            .emit_with_ack("restore_state", &raw(json!({})), 100, 0)
            .unwrap();
        let b = c.emit_with_ack("history", &raw(json!({})), 100, 0).unwrap();
        let out = drain(&mut c);
        assert_eq!(
            out[0],
            Output::Send(format!(r#"42{a}["restore_state",{{}}]"#))
        );
        c.handle_frame(&format!("43{b}[1]"), 50);
        assert_eq!(
            drain(&mut c),
            [Output::Event(CoreEvent::Ack {
                id: b,
                args: vec![raw(json!(1))]
            })]
        );
        c.handle_timer(100);
        assert_eq!(
            drain(&mut c),
            [Output::Event(CoreEvent::AckFailed {
                id: a,
                reason: AckFailure::Timeout
            })]
        );
    }

    #[test]
    fn pending_acks_fail_when_the_connection_drops_and_emits_need_a_connection() {
        let mut c = core();
        online(&mut c, 0);
        let id = c.emit_with_ack("x", &raw(json!(1)), 10_000, 0).unwrap();
        drain(&mut c);
        c.handle_transport_closed(1);
        assert!(drain(&mut c).contains(&Output::Event(CoreEvent::AckFailed {
            id,
            reason: AckFailure::Disconnected
        })));
        assert_eq!(c.emit("x", &raw(json!(1))), Err(NotConnected));
    }

    #[test]
    fn a_server_disconnect_that_says_nothing_reconnects_with_the_session_and_the_handshake_tells() {
        let mut c = core();
        online(&mut c, 0);
        c.handle_frame(r#"42["users",[]]"#, 0);
        drain(&mut c);
        c.handle_frame("41", 5);
        assert!(drain(&mut c).contains(&Output::CloseTransport));
        assert_eq!(c.state(), ConnState::Offline { retry_at: 1005 });
        c.handle_timer(1005);
        c.handle_frame(OPEN, 1005);
        assert!(drain(&mut c).contains(&Output::Send(r#"40{"sessionID":"s2"}"#.into())));
        // Still there (a socket limit, a store failure): carry on.
        c.handle_frame(r#"40{"sid":"y"}"#, 1010);
        assert!(drain(&mut c).contains(&Output::Event(CoreEvent::Connected {
            sid: "y".into(),
            reconnect: true
        })));
        // Gone (a logout elsewhere, an expiry): the probe is refused, and that is a stop.
        c.handle_frame("41", 1020);
        c.handle_timer(3020);
        c.handle_frame(OPEN, 3020);
        c.handle_frame(r#"44{"message":"invalid username"}"#, 3020);
        assert_eq!(c.state(), ConnState::Stopped(StopReason::Unauthorized));
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn a_server_that_accepts_then_disconnects_every_time_is_retried_ever_more_slowly() {
        let mut c = core();
        online(&mut c, 0);
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..5 {
            c.handle_frame("41", now);
            let ConnState::Offline { retry_at } = c.state() else {
                panic!("not waiting: {:?}", c.state())
            };
            delays.push(retry_at - now);
            now = retry_at;
            c.handle_timer(now);
            c.handle_frame(OPEN, now);
            c.handle_frame(r#"40{"sid":"x"}"#, now);
        }
        assert_eq!(delays, [1000, 2000, 4000, 5000, 5000]);
        // A connection that held (its `users` came) starts the backoff again.
        c.handle_frame(r#"42["users",[]]"#, now);
        c.handle_frame("41", now);
        assert_eq!(
            c.state(),
            ConnState::Offline {
                retry_at: now + 1000
            }
        );
    }

    #[test]
    fn a_server_disconnect_after_session_moved_or_after_logout_stops() {
        let mut c = core();
        online(&mut c, 0);
        c.handle_frame(r#"42["session moved"]"#, 5);
        c.handle_frame("41", 5);
        assert_eq!(c.state(), ConnState::Stopped(StopReason::ServerDisconnect));
        assert_eq!(c.next_deadline(), None);
        c.connect(10);
        assert_eq!(c.state(), ConnState::Connecting);

        let mut c = core();
        online(&mut c, 0);
        c.emit_with_ack("logout", &raw(json!({})), 10_000, 0)
            .unwrap();
        c.handle_frame("41", 5);
        assert_eq!(c.state(), ConnState::Stopped(StopReason::ServerDisconnect));

        // Announced on an earlier connection only: this one's DISCONNECT says nothing.
        let mut c = core();
        online(&mut c, 0);
        c.handle_frame(r#"42["session moved"]"#, 5);
        c.handle_transport_closed(5);
        c.handle_timer(1005);
        c.handle_frame(OPEN, 1005);
        c.handle_frame(r#"40{"sid":"y"}"#, 1005);
        c.handle_frame("41", 1010);
        assert!(matches!(c.state(), ConnState::Offline { .. }));
    }

    #[test]
    fn garbage_frames_drop_the_connection_without_panicking() {
        let mut c = core();
        online(&mut c, 0);
        c.handle_frame("zzz", 1);
        assert!(matches!(c.state(), ConnState::Offline { .. }));
    }

    #[test]
    fn a_handshake_that_hangs_times_out() {
        let mut c = core();
        c.connect(0);
        c.handle_timer(1000);
        assert!(matches!(c.state(), ConnState::Offline { .. }));
    }
}
