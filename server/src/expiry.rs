//! Expiry, on every node, twice a second: sessions past their deadline end and their sockets
//! close (on every node: the disconnect goes through the adapter); accounts that never sent or
//! received a message are deleted once idle or left without a session; and the sessions of
//! this node's connected sockets are refreshed, so a session in use never idles out (and their
//! secrets rotated when due). Sockets close as a logout closes them
//! ([`crate::transport::logout::close_sockets`]).
//!
//! Each step reads only what is due, through an index (SQLite) or a sorted set (Redis), so a
//! quiet tick costs one small query.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use socketioxide::adapter::Adapter;
use socketioxide::SocketIo;

use crate::store::Store;
use crate::transport::logout::{close_sockets, Ended};
use crate::transport::rotation::{rotate_connected, Rotation};
use crate::transport::Viewer;

/// How often expired sessions are looked for, at most: a session's sockets close at most this
/// long (plus the time to reach them) after its deadline, well within the second promised.
/// Shorter when an idle time is short (see [`ExpiryOptions::tick`]).
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// The shortest tick, whatever the idle times.
const SHORTEST_TICK: Duration = Duration::from_millis(100);
/// The most sessions or accounts one store call ends; a full batch is followed by another.
const BATCH: usize = 500;
/// The account sweep runs at least this often: on Redis, each sweep that deletes accounts
/// makes every node read the directory again.
const ACCOUNT_SWEEP_AT_LEAST_EVERY: Duration = Duration::from_secs(60);
/// Connected sockets' sessions are refreshed at least this often.
const TOUCH_AT_LEAST_EVERY: Duration = Duration::from_secs(60);
/// The most session digests one refresh call carries.
const TOUCH_BATCH: usize = 1_000;

/// What the expiry task needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ExpiryOptions {
    /// `--session-idle-secs`.
    pub session_idle: Duration,
    /// `--idle-account-secs`.
    pub idle_account: Duration,
    /// `--session-rotate-*`: connected sessions' due secrets rotate with each refresh.
    pub rotation: Rotation,
}

impl ExpiryOptions {
    /// The shorter idle time: of a session, or of a message-less account.
    fn shortest_idle(&self) -> Duration {
        self.session_idle.min(self.idle_account)
    }

    /// The task's period: half a second, or a third of the shortest idle time when less,
    /// so that connected sockets can be refreshed three times per idle time.
    fn tick(&self) -> Duration {
        (self.shortest_idle() / 3).clamp(SHORTEST_TICK, SWEEP_EVERY)
    }

    /// Every how many ticks connected sockets refresh their sessions: three times per idle
    /// time, at least once a minute, so one late refresh never lets a connected session or
    /// account idle out.
    fn touch_every_ticks(&self) -> u64 {
        let every = (self.shortest_idle() / 3).min(TOUCH_AT_LEAST_EVERY);
        ticks_in(every, self.tick())
    }

    /// Every how many ticks the account sweep runs: as often as the account idle time, at
    /// least once a minute.
    fn account_sweep_every_ticks(&self) -> u64 {
        ticks_in(
            self.idle_account.min(ACCOUNT_SWEEP_AT_LEAST_EVERY),
            self.tick(),
        )
    }
}

/// Whole ticks in `span`, at least one.
fn ticks_in(span: Duration, tick: Duration) -> u64 {
    (span.as_millis() / tick.as_millis().max(1)).max(1) as u64
}

/// Runs until aborted (the server aborts it on shutdown).
pub async fn expiry_loop<A: Adapter>(
    io: SocketIo<A>,
    store: Arc<dyn Store>,
    options: ExpiryOptions,
) {
    let mut ticks = tokio::time::interval(options.tick());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (touch_every, account_sweep_every) = (
        options.touch_every_ticks(),
        options.account_sweep_every_ticks(),
    );
    for tick in 0u64.. {
        ticks.tick().await;
        // Refresh first: a session or account refreshed every tick (the shortest idle times)
        // is never found idle by the sweeps of that same tick.
        if tick % touch_every == 0 {
            let marked_due = touch_connected(&io, store.as_ref()).await;
            rotate_connected(&io, store.as_ref(), &options.rotation, &marked_due).await;
        }
        expire_sessions(&io, store.as_ref()).await;
        if tick % account_sweep_every == 0 {
            expire_accounts(&io, store.as_ref(), options.idle_account).await;
        }
    }
}

async fn expire_sessions<A: Adapter>(io: &SocketIo<A>, store: &dyn Store) {
    loop {
        match store.expire_sessions(BATCH).await {
            Ok(ended) => {
                let more = ended.len() >= BATCH;
                if !ended.is_empty() {
                    tracing::info!(
                        sessions = ended.len(),
                        "sessions expired; closing their sockets"
                    );
                    metrics::counter!("tether_sessions_expired_total")
                        .increment(ended.len() as u64);
                    close_sockets(io, Ended::Sessions(ended)).await;
                }
                if !more {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %format_args!("{e:#}"), "session expiry failed; retrying next second");
                return;
            }
        }
    }
}

async fn expire_accounts<A: Adapter>(io: &SocketIo<A>, store: &dyn Store, idle: Duration) {
    loop {
        match store.expire_accounts(idle, BATCH).await {
            Ok(expired) => {
                if expired.users > 0 {
                    tracing::info!(
                        users = expired.users,
                        "deleted accounts that never sent or received a message"
                    );
                    metrics::counter!("tether_accounts_expired_total")
                        .increment(expired.users as u64);
                }
                let more = expired.users >= BATCH;
                close_sockets(io, Ended::Sessions(expired.sessions)).await;
                if !more {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %format_args!("{e:#}"), "account expiry failed; retrying later");
                return;
            }
        }
    }
}

/// Refreshes the sessions of this node's connected sockets, and closes the sockets whose
/// session turned out to be gone (one that ended while its socket was still joining its room,
/// and so missed the disconnect). Returns the sessions (families) whose secret the store has
/// marked due (a sign-in from another device), whatever their age.
async fn touch_connected<A: Adapter>(io: &SocketIo<A>, store: &dyn Store) -> HashSet<String> {
    let mut marked_due = HashSet::new();
    let Some(sockets) = io.of("/").map(|ns| ns.sockets()) else {
        return marked_due;
    };
    let mut digests: Vec<String> = sockets
        .iter()
        .filter_map(|socket| socket.extensions.get::<Viewer>())
        .map(|viewer| viewer.family.clone())
        .collect();
    drop(sockets);
    digests.sort_unstable();
    digests.dedup();
    let mut gone = Vec::new();
    while !digests.is_empty() {
        let batch = digests.split_off(digests.len().saturating_sub(TOUCH_BATCH));
        match store.touch_sessions(batch).await {
            Ok(touched) => {
                gone.extend(touched.gone);
                marked_due.extend(touched.due);
            }
            Err(e) => {
                tracing::warn!(error = %format_args!("{e:#}"), "refreshing connected sessions failed; retrying later");
                return marked_due;
            }
        }
    }
    if !gone.is_empty() {
        tracing::info!(sessions = gone.len(), "closing sockets whose session ended");
        close_sockets(io, Ended::Sessions(gone)).await;
    }
    marked_due
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_sessions_are_refreshed_three_times_per_idle_time() {
        let options = |session_idle: u64, idle_account: u64| ExpiryOptions {
            session_idle: Duration::from_millis(session_idle),
            idle_account: Duration::from_millis(idle_account),
            rotation: Rotation::default(),
        };
        let day = 24 * 3600 * 1000;
        // The defaults: a sweep each half second, refreshes and account sweeps once a minute.
        let defaults = options(30 * day, 7 * day);
        assert_eq!(defaults.tick(), Duration::from_millis(500));
        assert_eq!(defaults.touch_every_ticks(), 120);
        assert_eq!(defaults.account_sweep_every_ticks(), 120);
        assert_eq!(options(90_000, day).touch_every_ticks(), 60);
        assert_eq!(options(day, 6_000).touch_every_ticks(), 4);
        assert_eq!(options(day, 6_000).account_sweep_every_ticks(), 12);
        // Short idle times tick faster, refreshing every tick.
        let short = options(1_000, day);
        assert_eq!(short.tick().as_millis(), 333);
        assert_eq!(short.touch_every_ticks(), 1);
        assert_eq!(options(0, 0).tick(), SHORTEST_TICK);
        assert_eq!(options(0, 0).touch_every_ticks(), 1);
    }
}
