//! A native adapter: drives a [`Session`] over tokio-tungstenite. Used by the conformance tests
//! and by tools (the load generator); the browser has its own adapter in `app`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use protocol::HandshakeAuth;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};

use crate::chat::{ChatState, Outbox};
use crate::core::{Core, CoreConfig, Proof};
use crate::session::{Input, Session, SessionEvent, SessionOutput};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Call = Box<dyn FnOnce(&mut Session, u64) + Send>;
/// Where the driver hands the session's events.
type EventSink = Box<dyn FnMut(SessionEvent) + Send>;

/// A key a native client proves possession of its session with (issue #25): a P-256 key in
/// memory, as the browser keeps a non-extractable one in IndexedDB. Clone it to give two clients
/// the same "browser".
#[derive(Clone)]
pub struct NativeKey(SigningKey);

impl NativeKey {
    /// A new key from the OS CSPRNG.
    pub fn generate() -> Self {
        loop {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).expect("the OS has randomness");
            // Almost every 32 bytes is a valid scalar; the rest are drawn again.
            if let Ok(key) = SigningKey::from_slice(&secret) {
                return Self(key);
            }
        }
    }

    /// The proof for the connection whose sid is `challenge`, as Tether's browser client sends
    /// it: the signature over [`protocol::pop_challenge`] and the public key.
    pub fn prove(&self, challenge: &str) -> Proof {
        let signature: Signature = self.0.sign(protocol::pop_challenge(challenge).as_bytes());
        Proof {
            pop: URL_SAFE_NO_PAD.encode(signature.to_bytes()),
            pop_key: self.public_key(),
        }
    }

    /// The public key as `auth.popKey` carries it.
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.verifying_key().to_sec1_bytes())
    }
}

/// A client running in its own task. Dropping it stops the task and closes the connection.
pub struct NativeClient {
    calls: mpsc::UnboundedSender<Call>,
    events: mpsc::UnboundedReceiver<SessionEvent>,
}

/// A cloneable way to act on a [`NativeClient`]'s session from other tasks.
#[derive(Clone)]
pub struct ClientHandle {
    calls: mpsc::UnboundedSender<Call>,
}

impl ClientHandle {
    /// Runs `f` on the session inside the driver task; `None` once the client is gone.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session, u64) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |session, now| {
            let _ = tx.send(f(session, now));
        });
        self.calls.send(call).ok()?;
        rx.await.ok()
    }

    /// Runs `f` on the session inside the driver task without waiting for it; `false` once the
    /// client is gone. Calls run in the order they were made.
    pub fn cast(&self, f: impl FnOnce(&mut Session, u64) + Send + 'static) -> bool {
        self.calls.send(Box::new(f)).is_ok()
    }
}

impl NativeClient {
    /// Connects to `origin` (`http://host:port`); `auth` is asked for the handshake auth on
    /// every (re)connect.
    pub fn spawn(
        origin: &str,
        config: CoreConfig,
        auth: impl FnMut() -> HandshakeAuth + Send + 'static,
    ) -> Self {
        let (event_tx, events) = mpsc::unbounded_channel();
        let handle = Self::spawn_with_handler(origin, config, auth, move |event| {
            let _ = event_tx.send(event);
        });
        Self {
            calls: handle.calls,
            events,
        }
    }

    /// Like [`NativeClient::spawn`], proving possession of its session with `key` on every
    /// handshake (and binding a new or unbound session to it), as Tether's browser client does.
    pub fn spawn_with_key(
        origin: &str,
        config: CoreConfig,
        auth: impl FnMut() -> HandshakeAuth + Send + 'static,
        key: NativeKey,
    ) -> Self {
        let (event_tx, events) = mpsc::unbounded_channel();
        let config = CoreConfig {
            proves: true,
            ..config
        };
        let handle = Self::spawn_inner(origin, config, auth, Some(key), move |event| {
            let _ = event_tx.send(event);
        });
        Self {
            calls: handle.calls,
            events,
        }
    }

    /// Like [`NativeClient::spawn`], but every session event goes to `handler`, which runs in
    /// the driver task as the event happens (it must not block). Without a channel and a task
    /// of its own per event, this is what a tool driving thousands of clients uses.
    pub fn spawn_with_handler(
        origin: &str,
        config: CoreConfig,
        auth: impl FnMut() -> HandshakeAuth + Send + 'static,
        handler: impl FnMut(SessionEvent) + Send + 'static,
    ) -> ClientHandle {
        Self::spawn_inner(origin, config, auth, None, handler)
    }

    fn spawn_inner(
        origin: &str,
        config: CoreConfig,
        auth: impl FnMut() -> HandshakeAuth + Send + 'static,
        key: Option<NativeKey>,
        handler: impl FnMut(SessionEvent) + Send + 'static,
    ) -> ClientHandle {
        let url = crate::websocket_url(origin);
        let mut seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9)
            | 1;
        let random = move || {
            // xorshift64*: jitter needs spread, not secrecy.
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        };
        let session = Session::new(
            Core::new(config, auth, random),
            ChatState::new(None),
            Outbox::default(),
        );
        let (calls, call_rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(url, config, key, session, call_rx, Box::new(handler)));
        ClientHandle { calls }
    }

    pub fn handle(&self) -> ClientHandle {
        ClientHandle {
            calls: self.calls.clone(),
        }
    }

    /// Runs `f` on the session inside the driver task and returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session, u64) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |session, now| {
            let _ = tx.send(f(session, now));
        });
        self.calls.send(call).expect("client task is running");
        rx.await.expect("client task answered")
    }

    /// The next session event, if the task is still running.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// Waits for the first event `pick` accepts, dropping the others.
    pub async fn wait_for<T>(&mut self, mut pick: impl FnMut(&SessionEvent) -> Option<T>) -> T {
        loop {
            let event = self.next_event().await.expect("client task is running");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn next_frame(ws: &mut Option<Ws>) -> Option<Result<WsMessage, ()>> {
    match ws {
        Some(ws) => Some(
            ws.next()
                .await
                .unwrap_or(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed))
                .map_err(|_| ()),
        ),
        None => std::future::pending().await,
    }
}

/// tungstenite zero-fills up to `read_buffer_size` bytes before every read (default 128 KiB):
/// with thousands of sockets receiving small frames that memset was most of the load
/// generator's CPU. Frames larger than this still arrive whole (the buffer grows for them).
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

async fn drive(
    url: String,
    config: CoreConfig,
    key: Option<NativeKey>,
    mut session: Session,
    mut calls: mpsc::UnboundedReceiver<Call>,
    mut events: EventSink,
) {
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    let mut ws: Option<Ws> = None;
    // One timer for the session's whole life, moved only when its deadline changes: a new
    // timer per frame was a timer-wheel insert and removal per received packet.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<u64> = None;
    session.step(Input::Connect, now());
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                SessionOutput::OpenTransport => {
                    ws = None;
                    let opened = tokio::time::timeout(
                        Duration::from_millis(config.connect_timeout_ms),
                        // TCP_NODELAY, as browsers set it: a frame sent while the one before
                        // is unacknowledged must not wait for the server's delayed ACK.
                        tokio_tungstenite::connect_async_with_config(
                            url.as_str(),
                            Some(ws_config()),
                            true,
                        ),
                    )
                    .await;
                    match opened {
                        Ok(Ok((stream, _))) => ws = Some(stream),
                        _ => session.step(Input::TransportClosed, now()),
                    }
                }
                SessionOutput::Send(frame) => {
                    if let Some(stream) = ws.as_mut() {
                        if stream.send(WsMessage::text(frame)).await.is_err() {
                            ws = None;
                            session.step(Input::TransportClosed, now());
                        }
                    }
                }
                SessionOutput::CloseTransport => {
                    if let Some(mut stream) = ws.take() {
                        let _ = stream.close(None).await;
                    }
                }
                SessionOutput::Prove { challenge } => {
                    let proof = key.as_ref().map(|key| key.prove(&challenge));
                    session.step(
                        Input::Proof {
                            challenge: &challenge,
                            proof,
                        },
                        now(),
                    );
                }
                SessionOutput::Event(event) => {
                    events(event);
                }
            }
        }
        let deadline = session.next_deadline();
        if deadline != armed {
            if let Some(at) = deadline {
                let at = start + Duration::from_millis(at);
                timer.as_mut().reset(tokio::time::Instant::from_std(at));
            }
            armed = deadline;
        }
        tokio::select! {
            frame = next_frame(&mut ws) => match frame {
                Some(Ok(WsMessage::Text(text))) => session.step(Input::Frame(text.as_str()), now()),
                Some(Ok(WsMessage::Close(_))) | Some(Err(())) | None => {
                    ws = None;
                    session.step(Input::TransportClosed, now());
                }
                Some(Ok(_)) => {}
            },
            call = calls.recv() => match call {
                Some(call) => call(&mut session, now()),
                None => {
                    if let Some(mut stream) = ws.take() {
                        let _ = stream.close(None).await;
                    }
                    return;
                }
            },
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                session.step(Input::Timer, now());
            }
        }
    }
}

/// Wall-clock milliseconds, for [`Input::Send`]'s `wall_ms`.
pub fn now_wall_ms() -> i64 {
    wall_ms()
}
