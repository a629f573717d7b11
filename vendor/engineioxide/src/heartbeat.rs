//! Tether patch: one heartbeat task per engine instead of one per socket (see TETHER-PATCH.md).
//!
//! Upstream spawns a task for every socket that sleeps until its next ping and then waits for
//! the pong. That task, its timer and its pong channel cost ~1.5 KiB per socket, most of an
//! idle socket's footprint after its buffers. Here a socket keeps one flag (`heard`, set by the
//! transport when a pong or ping arrives) and the engine's one task keeps every socket's next
//! deadline in a heap: it wakes at the earliest, sends the pings that are due, checks the pongs
//! whose time is up, and sleeps again. Pings go out on time, spread as the handshakes were; no
//! pass over all sockets.
//!
//! The semantics are upstream's: (v4) a ping every `ping_interval` from the handshake, the
//! socket closed with `HeartbeatTimeout` when its pong does not come within `ping_timeout` or
//! the ping cannot be queued, no new ping while a pong is awaited or the transport upgrades,
//! and a pong that arrives before its ping is ignored; (v3) the client pings, the server
//! answers each ping with a pong (in the transport) and closes the socket when no ping came in
//! `ping_interval + ping_timeout` (counted from the last look that saw one, so up to twice
//! that in the worst case).
//!
//! Tether patch 5: a socket whose queue has had something waiting, with nothing taken from it,
//! for `ping_interval + ping_timeout` is closed too (`socket::NOT_READING`), pongs or not. A
//! pong answers a ping that was queued, not one that was read: a polling client that posts
//! pongs but never polls would otherwise be kept, its queue filling slowly up to its budget.
//! The websocket writer has its own deadline on each write (`transport::ws`).

use std::{
    cmp::Ordering as CmpOrdering,
    collections::BinaryHeap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use engineioxide_core::{Packet, ProtocolVersion, Sid};
use tokio::{sync::Notify, time::Instant};

use crate::{
    engine::EngineIo,
    handler::EngineIoHandler,
    socket::{DisconnectReason, NOT_READING, Queued, Socket},
};

/// No ping outstanding.
const NONE: u64 = u64::MAX;

/// The longest the task sleeps without looking whether its engine still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A socket's part: whether the client was heard from since the task last looked.
#[derive(Debug, Default)]
pub(crate) struct HeartbeatState {
    heard: AtomicBool,
}

impl HeartbeatState {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The client answered (v4 pong) or pinged (v3).
    pub(crate) fn heard(&self) {
        self.heard.store(true, Ordering::Release);
    }

    fn take_heard(&self) -> bool {
        self.heard.swap(false, Ordering::AcqRel)
    }
}

/// The engine-wide part: the clock, the sockets whose heartbeat starts, and the task's wake-up.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    epoch: Instant,
    running: AtomicBool,
    /// Sockets whose handshake is done, with their first deadline, for the task to take.
    started: Mutex<Vec<(Sid, u64)>>,
    wake: Arc<Notify>,
}

impl Heartbeat {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            running: AtomicBool::new(false),
            started: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn take_started(&self) -> Vec<(Sid, u64)> {
        std::mem::take(&mut *self.started.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// One socket's place in the task's heap: when to look at it next, and its v4 schedule.
struct Entry {
    at: u64,
    sid: Sid,
    /// When the next ping is due (v4) or the client's ping is overdue (v3).
    due: u64,
    /// When the outstanding ping was sent (v4), `NONE` if none is.
    ping_sent: u64,
}

// Ordered for a min-heap on `at` (entries due at the same time may come out in any order).
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.at.cmp(&self.at)
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Entry {}

impl<H: EngineIoHandler> EngineIo<H> {
    /// Starts `socket`'s heartbeat (after its handshake), and the engine's heartbeat task if
    /// it is not running yet. Must be called inside the tokio runtime.
    pub(crate) fn start_heartbeat(self: &Arc<Self>, socket: &Socket<H::Data>) {
        let first = if is_v3(socket) {
            self.config.ping_interval + self.config.ping_timeout
        } else {
            self.config.ping_interval
        };
        let due = self.heartbeat.now_ms() + millis(first);
        self.heartbeat
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((socket.id, due));
        self.heartbeat.wake.notify_one();
        if !self.heartbeat.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(run(Arc::downgrade(self), self.heartbeat.wake.clone()));
        }
    }
}

/// Whether the client pings (v3) rather than the server (v4, and every socket without the
/// `v3` feature, which refuses v3 handshakes).
fn is_v3<D>(socket: &Socket<D>) -> bool
where
    D: Default + Send + Sync + 'static,
{
    cfg!(feature = "v3") && socket.protocol == ProtocolVersion::V3
}

/// v4: the server pings, the client answers. Updates `entry` and returns when to look next,
/// or `None` when the socket must close.
fn v4<D>(
    socket: &Socket<D>,
    entry: &mut Entry,
    now: u64,
    interval: u64,
    timeout: u64,
) -> Option<u64>
where
    D: Default + Send + Sync + 'static,
{
    let hb = &socket.heartbeat;
    if entry.ping_sent != NONE {
        if hb.take_heard() {
            entry.ping_sent = NONE;
        } else {
            let deadline = entry.ping_sent.saturating_add(timeout);
            return (now < deadline).then_some(deadline);
        }
    }
    if now < entry.due {
        return Some(entry.due);
    }
    // The next ping keeps the cadence from the handshake, unless this one is already late by
    // more than an interval.
    entry.due = (entry.due + interval).max(now + 1);
    if socket.is_upgrading() {
        return Some(entry.due); // no ping while the transport changes
    }
    // A pong that came before its ping answers nothing.
    hb.take_heard();
    #[cfg(feature = "tracing")]
    tracing::trace!(sid = ?socket.id, "emitting ping");
    if socket
        .internal_tx
        .try_send(Queued::one(Packet::Ping))
        .is_err()
    {
        return None;
    }
    entry.ping_sent = now;
    Some((now + timeout).min(entry.due))
}

/// Tether patch 5: whether something has waited in `socket`'s queue for `limit` with nothing
/// taken (not while the transport upgrades: the upgrade has its own timeout).
fn not_reading<D>(socket: &Socket<D>, now: Instant, limit: Duration) -> bool
where
    D: Default + Send + Sync + 'static,
{
    !socket.is_upgrading()
        && socket
            .internal_tx
            .waiting_since()
            .is_some_and(|since| now.saturating_duration_since(since) >= limit)
}

/// v3: the client pings and the server answers (in the transport, as the ping arrives).
fn v3<D>(
    socket: &Socket<D>,
    entry: &mut Entry,
    now: u64,
    interval: u64,
    timeout: u64,
) -> Option<u64>
where
    D: Default + Send + Sync + 'static,
{
    if socket.heartbeat.take_heard() {
        entry.due = now + interval + timeout;
        return Some(entry.due);
    }
    (now < entry.due).then_some(entry.due)
}

/// The engine's heartbeat task: sleeps until the earliest deadline (or a new socket), looks
/// at the sockets that are due, and stops when the engine is gone.
async fn run<H: EngineIoHandler>(engine: Weak<EngineIo<H>>, wake: Arc<Notify>) {
    let mut heap = BinaryHeap::<Entry>::new();
    let mut dead = Vec::new();
    loop {
        let sleep_until = {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let hb = &engine.heartbeat;
            for (sid, due) in hb.take_started() {
                heap.push(Entry {
                    at: due,
                    sid,
                    due,
                    ping_sent: NONE,
                });
            }
            let now = hb.now_ms();
            let interval = millis(engine.config.ping_interval);
            let timeout = millis(engine.config.ping_timeout);
            let unread_for = engine.config.ping_interval + engine.config.ping_timeout;
            let now_instant = Instant::now();
            while heap.peek().is_some_and(|entry| entry.at <= now) {
                let mut entry = heap.pop().expect("peeked");
                let Some(socket) = engine.get_socket(entry.sid) else {
                    continue; // closed: its entry goes with it
                };
                if not_reading(&socket, now_instant, unread_for) {
                    #[cfg(feature = "tracing")]
                    tracing::debug!("nothing taken from a socket's queue in time, closing it");
                    socket.close_now(NOT_READING);
                    continue;
                }
                let next = if is_v3(&socket) {
                    v3(&socket, &mut entry, now, interval, timeout)
                } else {
                    v4(&socket, &mut entry, now, interval, timeout)
                };
                match next {
                    Some(at) => {
                        // Always later than now, or this loop would not end (a zero timeout).
                        entry.at = at.max(now + 1);
                        heap.push(entry);
                    }
                    None => dead.push(socket),
                }
            }
            for socket in dead.drain(..) {
                #[cfg(feature = "tracing")]
                tracing::debug!(sid = ?socket.id, "heartbeat timeout");
                socket.close(DisconnectReason::HeartbeatTimeout);
            }
            let idle_check = hb.epoch.elapsed() + IDLE_CHECK;
            let next = heap
                .peek()
                .map_or(idle_check, |entry| Duration::from_millis(entry.at))
                .min(idle_check);
            hb.epoch + next
        };
        tokio::select! {
            _ = tokio::time::sleep_until(sleep_until) => {}
            _ = wake.notified() => {}
        }
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
        let engine = engine(100, 50);
        let start = Instant::now();
        let answering = session(&engine);
        let quiet = session(&engine);

        at(start, 99).await;
        assert!(sent(&answering).is_empty(), "no ping before the interval");
        at(start, 101).await;
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
        at(start, 101).await;
        assert!(matches!(sent(&early)[..], [Packet::Ping]));
        at(start, 151).await;
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
        at(start, 301).await;
        assert!(matches!(sent(&upgrading)[..], [Packet::Ping]));
    }

    /// Tether patch 5: pongs answer pings that were queued, not read; a client that pongs but
    /// takes nothing (a polling client that never polls) is closed all the same.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_pongs_but_takes_nothing_is_closed() {
        let engine = engine(100, 50);
        let start = Instant::now();
        let reading = session(&engine);
        let not_reading = session(&engine);
        for ms in [110, 210, 310, 410] {
            at(start, ms).await;
            reading.on_heartbeat_packet(&Packet::Pong);
            assert!(matches!(sent(&reading)[..], [Packet::Ping]));
            not_reading.on_heartbeat_packet(&Packet::Pong);
            if ms == 210 {
                assert!(
                    engine.get_socket(not_reading.id).is_some(),
                    "its first ping has waited 110 ms of 150"
                );
            }
        }
        assert!(
            engine.get_socket(not_reading.id).is_none(),
            "its pings waited past interval + timeout"
        );
        assert!(engine.get_socket(reading.id).is_some());
    }
}
