//! Tether patch: one heartbeat task per engine instead of one per socket (see TETHER-PATCH.md).
//!
//! Upstream spawns a task for every socket that sleeps until its next ping and then waits for
//! the pong. That task, its timer and its pong channel cost ~1.5 KiB per socket, most of an
//! idle socket's footprint after its buffers. Here each socket keeps three atomics and the
//! engine's one task walks the sockets every `tick` (a quarter of the shorter of ping interval
//! and ping timeout, at least 10 ms and at most 1 s): pings go out at most one tick late, and
//! a missing pong is noticed at most one tick after `ping_timeout`. The client allows
//! `ping_interval + ping_timeout` between pings, far more than a tick.
//!
//! The semantics are upstream's: (v4) a ping every `ping_interval` from the handshake, the
//! socket closed with `HeartbeatTimeout` when its pong does not come within `ping_timeout` or
//! the ping cannot be queued, no new ping while the transport is upgrading, and a pong that
//! arrives before its ping is ignored; (v3) the client pings, the server answers each ping with
//! a pong and closes the socket when no ping comes within `ping_interval + ping_timeout`.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use engineioxide_core::{Packet, ProtocolVersion};
use tokio::time::Instant;

use crate::{
    engine::EngineIo,
    handler::EngineIoHandler,
    socket::{DisconnectReason, Queued, Socket},
};

/// Not set (no deadline yet, no ping outstanding).
const NONE: u64 = u64::MAX;

/// One socket's heartbeat, in milliseconds since the engine's `epoch`.
#[derive(Debug)]
pub(crate) struct HeartbeatState {
    /// When the next ping is due (v4) or the client's ping is overdue (v3); `NONE` until the
    /// handshake starts the heartbeat.
    due: AtomicU64,
    /// When the outstanding ping was sent (v4), `NONE` when no ping is outstanding.
    ping_sent: AtomicU64,
    /// A pong (v4) or ping (v3) arrived since the last look.
    heard: AtomicBool,
}

impl HeartbeatState {
    pub(crate) fn new() -> Self {
        Self {
            due: AtomicU64::new(NONE),
            ping_sent: AtomicU64::new(NONE),
            heard: AtomicBool::new(false),
        }
    }

    /// The client answered (v4 pong) or pinged (v3).
    pub(crate) fn heard(&self) {
        self.heard.store(true, Ordering::Release);
    }
}

/// The engine-wide part: when the engine started and whether its task runs.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    epoch: Instant,
    running: AtomicBool,
}

impl Heartbeat {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            running: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// How often the engine's task looks at its sockets.
pub(crate) fn tick(interval: Duration, timeout: Duration) -> Duration {
    (interval.min(timeout) / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl<H: EngineIoHandler> EngineIo<H> {
    /// Starts `socket`'s heartbeat (after its handshake), and the engine's heartbeat task if
    /// it is not running yet. Must be called inside the tokio runtime.
    pub(crate) fn start_heartbeat(self: &Arc<Self>, socket: &Socket<H::Data>) {
        let now = self.heartbeat.now_ms();
        let first = if is_v3(socket) {
            millis(self.config.ping_interval + self.config.ping_timeout)
        } else {
            millis(self.config.ping_interval)
        };
        socket.heartbeat.due.store(now + first, Ordering::Release);
        if !self.heartbeat.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(run(Arc::downgrade(self)));
        }
    }

    /// One look at every socket: sends the pings that are due and closes the sockets whose
    /// client went quiet.
    pub(crate) fn heartbeat_pass(&self) {
        let now = self.heartbeat.now_ms();
        let interval = millis(self.config.ping_interval);
        let timeout = millis(self.config.ping_timeout);
        let mut dead = Vec::new();
        self.for_each_socket(|socket| {
            let alive = if is_v3(socket) {
                v3(socket, now, interval, timeout)
            } else {
                v4(socket, now, interval, timeout)
            };
            if !alive {
                dead.push(socket.clone());
            }
        });
        // Closing takes the socket map's write lock, so it happens after the walk.
        for socket in dead {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = ?socket.id, "heartbeat timeout");
            socket.close(DisconnectReason::HeartbeatTimeout);
        }
    }
}

/// v4: the server pings, the client answers. Returns false when the socket must close.
fn v4<D>(socket: &Arc<Socket<D>>, now: u64, interval: u64, timeout: u64) -> bool
where
    D: Default + Send + Sync + 'static,
{
    let hb = &socket.heartbeat;
    let due = hb.due.load(Ordering::Acquire);
    if due == NONE {
        return true; // handshake not done yet
    }
    let sent = hb.ping_sent.load(Ordering::Relaxed);
    if sent != NONE {
        if hb.heard.swap(false, Ordering::AcqRel) {
            hb.ping_sent.store(NONE, Ordering::Relaxed);
        } else {
            return now < sent.saturating_add(timeout);
        }
    }
    if now < due {
        return true;
    }
    // The next ping keeps the cadence from the handshake, unless this one is already late by
    // more than an interval.
    let next = (due + interval).max(now + 1);
    hb.due.store(next, Ordering::Release);
    if socket.is_upgrading() {
        return true; // no ping while the transport changes
    }
    // A pong that came before its ping answers nothing.
    hb.heard.store(false, Ordering::Release);
    #[cfg(feature = "tracing")]
    tracing::trace!(sid = ?socket.id, "emitting ping");
    if socket
        .internal_tx
        .try_send(Queued::one(Packet::Ping))
        .is_err()
    {
        return false;
    }
    hb.ping_sent.store(now, Ordering::Relaxed);
    true
}

/// Whether the client pings (v3) rather than the server (v4, and every socket without the
/// `v3` feature, which refuses v3 handshakes).
fn is_v3<D>(socket: &Socket<D>) -> bool
where
    D: Default + Send + Sync + 'static,
{
    cfg!(feature = "v3") && socket.protocol == ProtocolVersion::V3
}

/// v3: the client pings and the server answers (in the transport, as the ping arrives).
fn v3<D>(socket: &Arc<Socket<D>>, now: u64, interval: u64, timeout: u64) -> bool
where
    D: Default + Send + Sync + 'static,
{
    let hb = &socket.heartbeat;
    let due = hb.due.load(Ordering::Acquire);
    if due == NONE {
        return true;
    }
    if hb.heard.swap(false, Ordering::AcqRel) {
        hb.due.store(now + interval + timeout, Ordering::Release);
        return true;
    }
    now < due
}

/// The engine's heartbeat task: a pass every tick while the engine exists.
async fn run<H: EngineIoHandler>(engine: Weak<EngineIo<H>>) {
    let period = match engine.upgrade() {
        Some(engine) => tick(engine.config.ping_interval, engine.config.ping_timeout),
        None => return,
    };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        engine.heartbeat_pass();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineIoConfig;
    use bytes::Bytes;
    use engineioxide_core::{Str, TransportType};

    #[derive(Debug)]
    struct Quiet;

    impl EngineIoHandler for Quiet {
        type Data = ();
        fn on_connect(self: Arc<Self>, _: Arc<Socket<()>>) {}
        fn on_disconnect(&self, _: Arc<Socket<()>>, _: DisconnectReason) {}
        fn on_message(self: &Arc<Self>, _: Str, _: Arc<Socket<()>>) {}
        fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
    }

    fn engine(interval_ms: u64, timeout_ms: u64) -> Arc<EngineIo<Quiet>> {
        let config = EngineIoConfig::builder()
            .ping_interval(Duration::from_millis(interval_ms))
            .ping_timeout(Duration::from_millis(timeout_ms))
            .build();
        Arc::new(EngineIo::new(Arc::new(Quiet), config))
    }

    fn session(engine: &Arc<EngineIo<Quiet>>) -> Arc<Socket<()>> {
        let parts = http::Request::<()>::default().into_parts().0;
        let socket =
            engine.create_session(ProtocolVersion::V4, TransportType::Websocket, parts, true);
        engine.start_heartbeat(&socket);
        socket
    }

    /// The packets queued for the client so far.
    fn sent(socket: &Socket<()>) -> Vec<Packet> {
        let mut rx = socket.internal_rx.try_lock().unwrap();
        std::iter::from_fn(|| rx.buffered_rx.try_recv())
            .flat_map(Queued::into_packets)
            .collect()
    }

    async fn at(start: Instant, ms: u64) {
        tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn pings_keep_their_cadence_and_a_client_that_does_not_answer_is_closed() {
        let engine = engine(100, 50); // a tick of 12.5 ms
        let start = Instant::now();
        let answering = session(&engine);
        let quiet = session(&engine);

        at(start, 90).await;
        assert!(sent(&answering).is_empty(), "no ping before the interval");
        at(start, 115).await;
        assert!(matches!(sent(&answering)[..], [Packet::Ping]));
        assert!(matches!(sent(&quiet)[..], [Packet::Ping]));
        answering.on_heartbeat_packet(&Packet::Pong);

        // The quiet one's pong was due 50 ms after its ping (at ~100-113 ms).
        at(start, 140).await;
        assert!(
            engine.get_socket(quiet.id).is_some(),
            "closed before its timeout"
        );
        at(start, 180).await;
        assert!(
            engine.get_socket(quiet.id).is_none(),
            "not closed after its timeout"
        );
        assert!(engine.get_socket(answering.id).is_some());

        // The next ping comes one interval after the first, not one after the pong.
        assert!(sent(&answering).is_empty());
        at(start, 215).await;
        assert!(matches!(sent(&answering)[..], [Packet::Ping]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pong_before_its_ping_does_not_answer_it() {
        let engine = engine(100, 50);
        let start = Instant::now();
        let early = session(&engine);
        early.on_heartbeat_packet(&Packet::Pong);
        at(start, 115).await;
        assert!(matches!(sent(&early)[..], [Packet::Ping]));
        at(start, 180).await;
        assert!(engine.get_socket(early.id).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn no_ping_goes_out_while_the_transport_upgrades() {
        let engine = engine(100, 50);
        let start = Instant::now();
        let upgrading = session(&engine);
        upgrading.start_upgrade();
        at(start, 250).await;
        assert!(sent(&upgrading).is_empty());
        assert!(engine.get_socket(upgrading.id).is_some());
        upgrading.upgrade_to_websocket();
        at(start, 320).await;
        assert!(matches!(sent(&upgrading)[..], [Packet::Ping]));
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_shorter_period_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(tick(ms(25_000), ms(20_000)), ms(1_000));
        assert_eq!(tick(ms(300), ms(1_000)), ms(75));
        assert_eq!(tick(ms(20), ms(20)), ms(10));
    }
}
