//! Refused connections and requests in the log: one line per kind of refusal with its count,
//! at most once per `--refusal-log-ms` and only for the kinds that had some, instead of a line
//! per refusal. A flood of refusals is exactly when a line each would bury the log (and cost a
//! write each); the counts say as much.
//!
//! ```text
//! WARN server::refusals: refused class=origin count=37 total=40 since_last=10s
//! ```
//!
//! `count` is how many since the line before (`since_last` ago), `total` how many since the
//! process started. The Prometheus counters (`tether_connections_refused_total`,
//! `tether_origin_refused_total`, …) count the same refusals, at the places that refuse.
//!
//! The counts are the process's (as the `metrics` recorder is): refusals happen in places
//! that share no state (the accept loop, an HTTP middleware, a Socket.IO handshake), and a
//! log line describes the process anyway.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A kind of refusal (its `class` in the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A new connection closed at once: too many had not sent a request yet
    /// (`--max-pending-connections`).
    PendingLimit,
    /// A connection closed for not sending a whole request head in time
    /// (`--header-read-timeout-ms`).
    HeaderTimeout,
    /// A Socket.IO request from an origin not allowed (403).
    Origin,
    /// A handshake with neither a live session nor a valid username.
    InvalidUsername,
    /// A sign-up with a name a passkey protects.
    NameProtected,
    /// A handshake of a session bound to a key, without a valid proof of possession (or a key
    /// offered without a valid proof of it).
    ProofRequired,
    /// A handshake presenting a rotated-out secret of an unbound session after its grace
    /// (reuse, issue #25 §5): the session was ended.
    SessionReused,
    /// A handshake whose session's secret rotated `--session-rotate-reissues` times within its
    /// grace window already.
    Reissues,
    /// A second connection of a session under `--tab-policy reject`.
    SessionActive,
    /// A socket over `--max-sockets-per-user` (refused at its handshake, or closed at connect
    /// when handshakes raced).
    TooManySockets,
    /// A sign-up over its address's limit.
    SignupAddress,
    /// A sign-up over the server's overall limit.
    SignupOverall,
    /// A sign-up from an address the limiter had no room to track (also counted as
    /// [`Refusal::SignupAddress`]).
    SignupTableFull,
    /// A handshake of a session in its flooding cooldown, or of a user who owes reads.
    Cooldown,
    /// A request (event) refused `rate_limited`.
    RateLimited,
    /// A request (event) refused as malformed or invalid.
    InvalidRequest,
    /// A socket disconnected for sending past its limits (`--max-refused-requests`).
    Flooding,
    /// A passkey sign-in over its address's or the overall ceremony limit.
    PasskeyRate,
    /// A passkey sign-in from an address the ceremony limiter had no room to track (also
    /// counted as [`Refusal::PasskeyRate`]).
    PasskeyTableFull,
    /// A polling request or upgrade for another node's session not forwarded: over
    /// `--max-forwarded-requests` or `--max-relayed-sockets`, too large, or its node did not
    /// answer in time.
    Forward,
}

impl Refusal {
    const ALL: [Refusal; 20] = [
        Refusal::PendingLimit,
        Refusal::HeaderTimeout,
        Refusal::Origin,
        Refusal::InvalidUsername,
        Refusal::NameProtected,
        Refusal::ProofRequired,
        Refusal::SessionReused,
        Refusal::Reissues,
        Refusal::SessionActive,
        Refusal::TooManySockets,
        Refusal::SignupAddress,
        Refusal::SignupOverall,
        Refusal::SignupTableFull,
        Refusal::Cooldown,
        Refusal::RateLimited,
        Refusal::InvalidRequest,
        Refusal::Flooding,
        Refusal::PasskeyRate,
        Refusal::PasskeyTableFull,
        Refusal::Forward,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PendingLimit => "pending_limit",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::Origin => "origin",
            Refusal::InvalidUsername => "invalid_username",
            Refusal::NameProtected => "name_protected",
            Refusal::ProofRequired => "proof_required",
            Refusal::SessionReused => "session_reused",
            Refusal::Reissues => "session_reissues",
            Refusal::SessionActive => "session_active",
            Refusal::TooManySockets => "too_many_sockets",
            Refusal::SignupAddress => "signup_address",
            Refusal::SignupOverall => "signup_overall",
            Refusal::SignupTableFull => "signup_table_full",
            Refusal::Cooldown => "cooldown",
            Refusal::RateLimited => "rate_limited",
            Refusal::InvalidRequest => "invalid_request",
            Refusal::Flooding => "flooding",
            Refusal::PasskeyRate => "passkey_rate",
            Refusal::PasskeyTableFull => "passkey_table_full",
            Refusal::Forward => "forward",
        }
    }

    /// Warnings for what suggests an attack or a limit set too low; the rest are what clients
    /// meet in ordinary use (an expired session, a slow preconnect).
    fn warns(self) -> bool {
        matches!(
            self,
            Refusal::PendingLimit
                | Refusal::Origin
                | Refusal::ProofRequired
                | Refusal::SessionReused
                | Refusal::Reissues
                | Refusal::TooManySockets
                | Refusal::SignupOverall
                | Refusal::SignupTableFull
                | Refusal::PasskeyTableFull
                | Refusal::Forward
                | Refusal::Flooding
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const KINDS: usize = Refusal::ALL.len();

/// Refusals so far, by kind.
static COUNTS: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];

/// What the last report said, and when.
static REPORTED: Mutex<Reported> = Mutex::new(Reported {
    totals: [0; KINDS],
    at: None,
});

struct Reported {
    totals: [u64; KINDS],
    at: Option<Instant>,
}

/// Counts one refusal; it is logged with the next report.
pub fn refused(kind: Refusal) {
    COUNTS[index(kind)].fetch_add(1, Ordering::Relaxed);
}

/// How many refusals of this kind the process counted so far.
pub fn count(kind: Refusal) -> u64 {
    COUNTS[index(kind)].load(Ordering::Relaxed)
}

/// Its slot: `ALL` lists the kinds in their declared order (a test checks).
fn index(kind: Refusal) -> usize {
    kind as usize
}

/// Reports every `every` what was refused since the last report, until the task is aborted.
pub async fn report_loop(every: Duration) {
    reported().at.get_or_insert_with(Instant::now);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        report();
    }
}

fn reported() -> std::sync::MutexGuard<'static, Reported> {
    REPORTED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Logs one line for each kind refused since the last report (none when nothing was).
pub fn report() {
    let mut reported = reported();
    let now = Instant::now();
    let since_last = Seconds(now.duration_since(*reported.at.get_or_insert(now)));
    for (i, kind) in Refusal::ALL.into_iter().enumerate() {
        let total = COUNTS[i].load(Ordering::Relaxed);
        let count = total.saturating_sub(reported.totals[i]);
        if count == 0 {
            continue;
        }
        reported.totals[i] = total;
        if kind.warns() {
            tracing::warn!(class = %kind, count, total, %since_last, "refused");
        } else {
            tracing::info!(class = %kind, count, total, %since_last, "refused");
        }
    }
    reported.at = Some(now);
}

/// A duration as whole seconds with a unit (`10s`), or tenths under ten seconds (`0.5s`).
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs_f64();
        if secs < 10.0 {
            write!(f, "{secs:.1}s")
        } else {
            write!(f, "{secs:.0}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_slot_and_name() {
        let mut names: Vec<_> = Refusal::ALL.iter().map(|k| k.as_str()).collect();
        for (i, kind) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(index(kind), i);
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KINDS);
    }

    #[test]
    fn seconds_read_as_people_write_them() {
        assert_eq!(Seconds(Duration::from_millis(500)).to_string(), "0.5s");
        assert_eq!(Seconds(Duration::from_millis(10_020)).to_string(), "10s");
    }
}
