//! `typing`: "the viewer is typing to you", relayed to every socket of the recipient as
//! `typing { from }`, at most once per `--typing-every-ms` per (sender, recipient) on each node.
//! Volatile: never stored, never replayed, and sent as Socket.IO volatile packets, which a
//! socket takes only when its connection can take them now (nothing queued or unflushed for it,
//! vendor/engineioxide patch 6) and are dropped otherwise, never queued nor held: a recipient
//! that reads nothing loses typing events, and is never closed (nor told to `resync`) for them.
//!
//! What it costs is bounded twice: every `typing` a user sends takes a token of their bucket
//! before its payload is read, well-formed or not (`--typing-per-sec`, `--typing-burst`; past
//! it the event is refused and counts against the socket like a refused request, see
//! `rate::Penalties`), and of those, one per conversation and interval is relayed. The throttle's map holds only the pairs relayed within the last
//! interval (older ones are swept as it grows), so it is bounded by the tokens spent in one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use protocol::events;
use protocol::payloads::{Typing, TypingRequest};
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::rate::{Buckets, Rate};
use super::{judge, object, SocketState, Viewer};
use crate::domain::UserId;

/// What a `typing` from a user to another, within the sender's budget, may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on.
    Relay,
    /// Dropped: this pair was relayed less than an interval ago.
    Throttled,
}

/// The `typing` budget per user and the throttle per (sender, recipient), on this node.
#[derive(Debug)]
pub struct TypingGate {
    every: Duration,
    users: Buckets<UserId>,
    relayed: Mutex<Relayed>,
}

#[derive(Debug, Default)]
struct Relayed {
    /// When each pair was last relayed.
    at: HashMap<(UserId, UserId), Instant>,
    /// Past this many entries, those older than an interval are swept (then it doubles the
    /// size left, so a sweep's cost is spread over as many inserts).
    sweep_above: usize,
}

/// The map is never swept below this size.
const SWEEP_FLOOR: usize = 1024;

impl TypingGate {
    pub fn new(every: Duration, per_user: Rate) -> Self {
        Self {
            every,
            users: Buckets::new(per_user),
            relayed: Mutex::new(Relayed {
                at: HashMap::new(),
                sweep_above: SWEEP_FLOOR,
            }),
        }
    }

    /// The first step of every `typing`, before its payload is read: a token of the sender's
    /// budget. `false`: over it, refused.
    pub fn take(&self, from: &UserId) -> bool {
        self.take_at(from, Instant::now())
    }

    fn take_at(&self, from: &UserId, now: Instant) -> bool {
        self.users.try_take_at(from, 1.0, now)
    }

    /// The second step, once a `typing` that took its token names its recipient: whether this
    /// conversation's interval lets it through.
    pub fn throttle(&self, from: &UserId, to: &UserId) -> Verdict {
        self.throttle_at(from, to, Instant::now())
    }

    fn throttle_at(&self, from: &UserId, to: &UserId, now: Instant) -> Verdict {
        let mut relayed = self.relayed.lock().unwrap_or_else(|e| e.into_inner());
        let key = (from.clone(), to.clone());
        if let Some(last) = relayed.at.get(&key) {
            if now.saturating_duration_since(*last) < self.every {
                return Verdict::Throttled;
            }
        }
        if relayed.at.len() >= relayed.sweep_above {
            let every = self.every;
            relayed
                .at
                .retain(|_, last| now.saturating_duration_since(*last) < every);
            relayed.sweep_above = (relayed.at.len() * 2).max(SWEEP_FLOOR);
        }
        relayed.at.insert(key, now);
        Verdict::Relay
    }

    /// How many pairs the throttle holds now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.relayed.lock().unwrap().at.len()
    }
}

/// The edge of `typing`: the recipient, if the payload names one.
pub fn parse_typing(payload: Option<Value>) -> Option<UserId> {
    let request: TypingRequest = object(payload).ok()?;
    UserId::parse(&request.to)
}

/// `typing` (no ack): relayed to `to`'s sockets, or dropped (malformed, to oneself, throttled);
/// over the sender's budget it is refused, and counted against the socket.
pub async fn typing<A: Adapter>(
    socket: SocketRef<A>,
    State(state): State<SocketState>,
    TryData(payload): TryData<Value>,
) {
    let Some(viewer) = socket.extensions.get::<Viewer>() else {
        return;
    };
    // The token first, before the payload is read: a flood of malformed `typing`s spends the
    // budget as well-formed ones do.
    if !state.typing.take(&viewer.user_id) {
        metrics::counter!("tether_typing_dropped_total", "reason" => "rate_limited").increment(1);
        crate::refusals::refused(crate::refusals::Refusal::RateLimited);
        judge(&socket, &state, &viewer, true);
        return;
    }
    // A recipient nobody is: its room is empty, and the event reaches no one.
    let Some(to) = parse_typing(payload.ok()) else {
        return;
    };
    if to == viewer.user_id {
        return;
    }
    match state.typing.throttle(&viewer.user_id, &to) {
        Verdict::Relay => {
            let typing = Typing {
                from: viewer.user_id.to_string(),
            };
            // Volatile: dropped for a recipient whose connection is busy, never queued, so
            // never a reason to close one.
            let _ = socket
                .to(to.to_string())
                .volatile()
                .emit(events::TYPING, &typing)
                .await;
            metrics::counter!("tether_typing_relayed_total").increment(1);
        }
        Verdict::Throttled => {
            metrics::counter!("tether_typing_dropped_total", "reason" => "throttled").increment(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Both steps, as the handler takes them for a well-formed `typing`: `None` when refused.
    fn admit_at(gate: &TypingGate, from: &UserId, to: &UserId, now: Instant) -> Option<Verdict> {
        gate.take_at(from, now)
            .then(|| gate.throttle_at(from, to, now))
    }

    #[test]
    fn one_typing_per_pair_and_interval_is_relayed() {
        let gate = TypingGate::new(Duration::from_secs(3), Rate::new(1000.0, 1000.0));
        let (ada, bob, cy) = (UserId::random(), UserId::random(), UserId::random());
        let t0 = Instant::now();
        assert_eq!(gate.throttle_at(&ada, &bob, t0), Verdict::Relay);
        assert_eq!(
            gate.throttle_at(&ada, &bob, t0 + Duration::from_secs(2)),
            Verdict::Throttled
        );
        // Another conversation, and the other direction, are their own.
        assert_eq!(gate.throttle_at(&ada, &cy, t0), Verdict::Relay);
        assert_eq!(gate.throttle_at(&bob, &ada, t0), Verdict::Relay);
        assert_eq!(
            gate.throttle_at(&ada, &bob, t0 + Duration::from_secs(3)),
            Verdict::Relay
        );
    }

    #[test]
    fn past_the_budget_typing_is_refused_throttled_or_not() {
        let gate = TypingGate::new(Duration::from_secs(3), Rate::new(0.0, 3.0));
        let (ada, bob) = (UserId::random(), UserId::random());
        let t0 = Instant::now();
        assert_eq!(admit_at(&gate, &ada, &bob, t0), Some(Verdict::Relay));
        assert_eq!(admit_at(&gate, &ada, &bob, t0), Some(Verdict::Throttled));
        let cy = UserId::random();
        assert_eq!(admit_at(&gate, &ada, &cy, t0), Some(Verdict::Relay));
        assert_eq!(admit_at(&gate, &ada, &bob, t0), None);
        assert_eq!(
            admit_at(&gate, &bob, &ada, t0),
            Some(Verdict::Relay),
            "per user"
        );
    }

    #[test]
    fn the_token_is_taken_before_the_payload_is_read_so_malformed_typing_spends_the_budget() {
        let gate = TypingGate::new(Duration::from_secs(3), Rate::new(0.0, 3.0));
        let (ada, bob) = (UserId::random(), UserId::random());
        let t0 = Instant::now();
        // Three that name nobody (the handler reads them after their token, and drops them).
        for _ in 0..3 {
            assert!(gate.take_at(&ada, t0));
            assert_eq!(parse_typing(Some(json!({ "to": "not-a-user" }))), None);
        }
        // The budget is spent: a well-formed one is refused before anything else, and the
        // throttle never saw any of them.
        assert!(!gate.take_at(&ada, t0));
        assert_eq!(gate.tracked(), 0);
        assert!(gate.take_at(&bob, t0), "per user");
        assert_eq!(gate.throttle_at(&bob, &ada, t0), Verdict::Relay);
    }

    #[test]
    fn the_throttle_forgets_pairs_older_than_an_interval() {
        let gate = TypingGate::new(Duration::from_millis(100), Rate::new(1e9, 1e9));
        let ada = UserId::random();
        let t0 = Instant::now();
        for _ in 0..5000 {
            gate.throttle_at(&ada, &UserId::random(), t0);
        }
        assert_eq!(gate.tracked(), 5000);
        // An interval later the old pairs go at the next sweep (once the map has doubled
        // since the last), leaving only the recent ones.
        let later = t0 + Duration::from_millis(200);
        for _ in 0..4000 {
            gate.throttle_at(&ada, &UserId::random(), later);
        }
        assert_eq!(gate.tracked(), 4000);
    }

    #[test]
    fn a_typing_payload_names_a_recipient_or_nothing() {
        let bob = UserId::random();
        assert_eq!(
            parse_typing(Some(json!({ "to": bob.as_str() }))),
            Some(bob.clone())
        );
        for payload in [
            None,
            Some(json!(null)),
            Some(json!("x")),
            Some(json!({ "to": 5 })),
            Some(json!([bob.as_str()])),
            Some(json!({ "to": "not-a-user" })),
            Some(json!({ "to": "x".repeat(10_000) })),
        ] {
            assert_eq!(parse_typing(payload.clone()), None, "{payload:?}");
        }
    }
}
