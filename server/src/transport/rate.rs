//! Token buckets: what a user (or a socket) may spend, refilled at a steady rate.
//!
//! Two things are priced this way:
//! - sending messages: one token a message, per user ([`RateLimiter`]);
//! - reading: bytes of the answer, per user and per socket ([`ReadLimits`]). A read's price is
//!   only known once it has been read, so the most it can cost is reserved first and what it did
//!   not cost is refunded after. Reserving first is what makes the limit hold when a client fires
//!   a hundred requests at once: none of them can pass a check that the others have not paid for
//!   yet.
//!
//! A client over a limit gets `rate_limited`; other users are unaffected.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::UserId;

/// One bucket's parameters: `burst` tokens at most, refilled at `per_sec`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

impl Rate {
    pub fn new(per_sec: f64, burst: f64) -> Self {
        Self {
            per_sec: per_sec.max(0.0),
            burst: burst.max(1.0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_sec;
        self.tokens = (self.tokens + refill).min(rate.burst);
        self.at = now;
    }

    fn try_take(&mut self, rate: Rate, cost: f64, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    fn give_back(&mut self, rate: Rate, amount: f64) {
        self.tokens = (self.tokens + amount).min(rate.burst);
    }

    /// Whether the bucket would be full by `now`: it then carries no information.
    fn is_full_at(&self, rate: Rate, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate.per_sec
            >= rate.burst
    }
}

/// Buckets by key. The map holds only buckets that are not full: a full one is the same as
/// none, so once it passes `max_keys` the full ones are dropped, and it cannot grow past the
/// number of keys that spent something within one refill time.
#[derive(Debug)]
pub struct Buckets<K> {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
    /// When the map was last swept of full buckets.
    swept: Mutex<Option<Instant>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            max_keys: 10_000,
            buckets: Mutex::new(HashMap::new()),
            swept: Mutex::new(None),
        }
    }

    /// Takes `cost` tokens from `key`'s bucket if it has them.
    pub fn try_take(&self, key: &K, cost: f64) -> bool {
        self.try_take_at(key, cost, Instant::now())
    }

    pub(super) fn try_take_at(&self, key: &K, cost: f64, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > self.max_keys {
            // At most once a second: above the mark every call would otherwise walk the map.
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            if swept.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1)) {
                *swept = Some(now);
                let rate = self.rate;
                buckets.retain(|_, b| !b.is_full_at(rate, now));
            }
        }
        let rate = self.rate;
        buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(rate, now))
            .try_take(rate, cost, now)
    }

    /// Returns tokens taken and not spent (never above the burst).
    pub fn give_back(&self, key: &K, amount: f64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.give_back(self.rate, amount);
        }
    }

    /// Takes `amount` tokens that were already spent, going into debt if need be. A bucket
    /// swept meanwhile (it had refilled) is made again, so the debt is never lost.
    fn owe_at(&self, key: &K, amount: f64, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.rate;
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(rate, now));
        bucket.refill(rate, now);
        bucket.tokens -= amount;
    }
}

/// Per-user buckets for sending messages: one token a message.
#[derive(Debug)]
pub struct RateLimiter(Buckets<UserId>);

impl RateLimiter {
    pub fn new(per_sec: f64, burst: f64) -> Self {
        Self(Buckets::new(Rate::new(per_sec, burst)))
    }

    /// Takes one token for `user` if there is one.
    pub fn try_take(&self, user: &UserId) -> bool {
        self.0.try_take(user, 1.0)
    }
}

/// One socket's read bucket, and how many of its requests were refused lately (a socket
/// extension: it lives and dies with the socket).
#[derive(Debug, Clone)]
pub struct SocketReadBucket(Arc<SocketBudget>);

#[derive(Debug)]
struct SocketBudget {
    bucket: Mutex<Bucket>,
    /// A read of this socket is waiting for its tokens ([`ReadLimits::wait_turn`]).
    waiting: AtomicBool,
    /// Refusals counted since the instant, within [`PENALTY_WINDOW`].
    refusals: Mutex<(u32, Instant)>,
}

/// Refusals are counted over this long: served requests in between do not clear them, so
/// mixing in a cheap request now and then does not keep a flood going.
pub const PENALTY_WINDOW: Duration = Duration::from_secs(10);

impl SocketReadBucket {
    pub fn new(rate: Rate) -> Self {
        Self(Arc::new(SocketBudget {
            bucket: Mutex::new(Bucket::full(rate, Instant::now())),
            waiting: AtomicBool::new(false),
            refusals: Mutex::new((0, Instant::now())),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.0.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What happens to a socket that keeps sending past its limits. A refused request is cheap,
/// but not free: a client that answers each `rate_limited` with a new request (7,900 a second
/// from one socket, measured in the abuse suite) takes the CPU honest users need. After
/// `max_refused` refusals within [`PENALTY_WINDOW`] the socket is disconnected, and its
/// session may not connect again for `cooldown`.
#[derive(Debug)]
pub struct Penalties {
    max_refused: u32,
    cooldown: Duration,
    /// Session digests barred from connecting, until when. Entries past their time are
    /// dropped once the map is large.
    barred: Mutex<HashMap<String, Instant>>,
    /// Failed proofs of possession (issue #25) a session digest may see within
    /// [`PENALTY_WINDOW`] before it is barred, and the failures counted so far.
    proof_failures: u32,
    failed_proofs: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Penalties {
    pub fn new(max_refused: u32, cooldown: Duration) -> Self {
        Self {
            max_refused: max_refused.max(1),
            cooldown,
            barred: Mutex::new(HashMap::new()),
            proof_failures: 5,
            failed_proofs: Mutex::new(HashMap::new()),
        }
    }

    /// After this many handshakes of one session without a valid proof of possession within
    /// [`PENALTY_WINDOW`], the session is barred for the cooldown (at least 1; 5 unless set).
    pub fn with_proof_failures(mut self, proof_failures: u32) -> Self {
        self.proof_failures = proof_failures.max(1);
        self
    }

    /// A handshake presented this session (by its digest) without a valid proof. On the
    /// `--pop-failures-per-session`th within the window the digest is barred: until the cooldown
    /// ends its handshakes are refused before the store is asked or a signature checked. The
    /// session itself is not ended (a thief must not be able to sign its owner out).
    pub fn proof_failed(&self, session_digest: &str) {
        let now = Instant::now();
        let mut failed = self.failed_proofs.lock().unwrap_or_else(|e| e.into_inner());
        if failed.len() >= 10_000 {
            failed.retain(|_, (_, since)| now.saturating_duration_since(*since) <= PENALTY_WINDOW);
        }
        let entry = failed.entry(session_digest.to_owned()).or_insert((0, now));
        if now.saturating_duration_since(entry.1) > PENALTY_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        if entry.0 >= self.proof_failures {
            failed.remove(session_digest);
            drop(failed);
            self.bar(session_digest.to_owned());
        }
    }

    /// A request of this socket was refused; true when that was one too many and the socket
    /// must go.
    pub fn refused(&self, socket: &SocketReadBucket) -> bool {
        self.refused_at(socket, Instant::now())
    }

    fn refused_at(&self, socket: &SocketReadBucket, now: Instant) -> bool {
        let mut refusals = socket.0.refusals.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(refusals.1) > PENALTY_WINDOW {
            *refusals = (0, now);
        }
        refusals.0 += 1;
        refusals.0 >= self.max_refused
    }

    /// Bars a session (by its digest) from connecting for the cooldown.
    pub fn bar(&self, session_digest: String) {
        let now = Instant::now();
        let mut barred = self.barred.lock().unwrap_or_else(|e| e.into_inner());
        if barred.len() >= 10_000 {
            barred.retain(|_, until| *until > now);
        }
        barred.insert(session_digest, now + self.cooldown);
    }

    pub fn is_barred(&self, session_digest: &str) -> bool {
        let barred = self.barred.lock().unwrap_or_else(|e| e.into_inner());
        barred
            .get(session_digest)
            .is_some_and(|until| *until > Instant::now())
    }
}

/// What reads cost: bytes of answer, from a per-user and a per-socket bucket.
#[derive(Debug)]
pub struct ReadLimits {
    users: Buckets<UserId>,
    socket: Rate,
}

/// A socket's one read that may wait for its tokens; the turn ends when this is dropped.
#[derive(Debug)]
pub struct WaitTurn(SocketReadBucket);

impl Drop for WaitTurn {
    fn drop(&mut self) {
        self.0 .0.waiting.store(false, Ordering::Release);
    }
}

/// Bytes reserved for a read that is under way; [`ReadLimits::settle`] refunds what it did not
/// cost. Dropped unsettled (the read failed), it costs nothing more than was reserved.
#[must_use = "settle the reservation with what the answer cost"]
#[derive(Debug)]
pub struct Reservation {
    user: UserId,
    socket: SocketReadBucket,
    reserved: f64,
}

impl ReadLimits {
    pub fn new(per_user: Rate, per_socket: Rate) -> Self {
        Self {
            users: Buckets::new(per_user),
            socket: per_socket,
        }
    }

    /// Whether a read that may return up to `largest` bytes can ever be granted: both bursts
    /// must hold it.
    pub fn check(&self, largest: usize) -> Result<(), String> {
        let largest_f = largest as f64;
        if self.users.rate.burst < largest_f || self.socket.burst < largest_f {
            return Err(format!(
                "the read bursts (--read-burst-bytes {}, --socket-read-burst-bytes {}) must \
                 each hold the largest answer a read may return ({largest} bytes: \
                 --max-answer-bytes, one message and a presence list of --roster-full-max \
                 users); raise them or lower those limits",
                self.users.rate.burst, self.socket.burst
            ));
        }
        Ok(())
    }

    /// Whether the user owes reads (a bucket below zero, after what it has refilled): what
    /// connects cost is charged afterwards, so a client that reconnects in a loop ends up here
    /// and is refused until it has paid.
    pub fn in_debt(&self, user: &UserId) -> bool {
        let now = Instant::now();
        let mut buckets = self.users.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.users.rate;
        buckets.get_mut(user).is_some_and(|bucket| {
            bucket.refill(rate, now);
            bucket.tokens < 0.0
        })
    }

    /// When a read of `most` bytes does not fit now: how long until both buckets will hold
    /// it, if that is at most `longest` and no other read of this socket is waiting already.
    /// The caller waits that long (holding the returned turn) and tries once more: an honest
    /// client paging through a long catch-up, one request at a time, is slowed to the refill
    /// rate instead of refused, while a client with many requests in flight has all but one
    /// refused at once.
    pub fn wait_turn(
        &self,
        user: &UserId,
        socket: &SocketReadBucket,
        most: usize,
        longest: Duration,
    ) -> Option<(Duration, WaitTurn)> {
        let now = Instant::now();
        let most = most as f64;
        let owed = |tokens: f64, rate: Rate| {
            let short = (most - tokens).max(0.0);
            (short > 0.0).then(|| short / rate.per_sec)
        };
        let socket_wait = {
            let mut own = socket.lock();
            own.refill(self.socket, now);
            owed(own.tokens, self.socket).unwrap_or(0.0)
        };
        let user_wait = {
            let mut buckets = self.users.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let rate = self.users.rate;
            buckets.get_mut(user).map_or(0.0, |bucket| {
                bucket.refill(rate, now);
                owed(bucket.tokens, rate).unwrap_or(0.0)
            })
        };
        let wait = socket_wait.max(user_wait);
        if !wait.is_finite() || wait > longest.as_secs_f64() {
            return None;
        }
        socket
            .0
            .waiting
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some((Duration::from_secs_f64(wait), WaitTurn(socket.clone())))
    }

    /// A fresh bucket for a new socket.
    pub fn socket_bucket(&self) -> SocketReadBucket {
        SocketReadBucket::new(self.socket)
    }

    /// Reserves `most` bytes from both the user's and the socket's bucket, or neither.
    pub fn reserve(
        &self,
        user: &UserId,
        socket: &SocketReadBucket,
        most: usize,
    ) -> Option<Reservation> {
        self.reserve_at(user, socket, most, Instant::now())
    }

    fn reserve_at(
        &self,
        user: &UserId,
        socket: &SocketReadBucket,
        most: usize,
        now: Instant,
    ) -> Option<Reservation> {
        // (A reservation larger than a bucket is never granted: the configuration is checked
        // at start, see `ReadLimits::check`.)
        let most = most as f64;
        // The socket's bucket is locked across both takes, so a refusal by the user's bucket
        // can put the socket's tokens back before anyone else sees them.
        let mut own = socket.lock();
        if !own.try_take(self.socket, most, now) {
            return None;
        }
        if !self.users.try_take_at(user, most, now) {
            own.give_back(self.socket, most);
            return None;
        }
        Some(Reservation {
            user: user.clone(),
            socket: socket.clone(),
            reserved: most,
        })
    }

    /// The read is done and its answer cost `spent` bytes: refunds the rest of the
    /// reservation (or charges what it cost beyond it).
    pub fn settle(&self, reservation: Reservation, spent: usize) {
        self.settle_at(reservation, spent, Instant::now());
    }

    fn settle_at(&self, reservation: Reservation, spent: usize, now: Instant) {
        let unspent = reservation.reserved - spent as f64;
        if unspent > 0.0 {
            reservation.socket.lock().give_back(self.socket, unspent);
            self.users.give_back(&reservation.user, unspent);
        } else if unspent < 0.0 {
            // Beyond the reservation: owed, even if the user's bucket refilled and was swept
            // while the read ran (a refund to a missing bucket is rightly nothing; a debt is not).
            reservation.socket.lock().give_back(self.socket, unspent);
            self.users.owe_at(&reservation.user, -unspent, now);
        }
    }

    /// Charges bytes already sent (a connect's roster): never refused, but what it cost is
    /// owed by the user's next reads.
    pub fn charge(&self, user: &UserId, socket: &SocketReadBucket, spent: usize) {
        let now = Instant::now();
        let spent = spent as f64;
        {
            let mut own = socket.lock();
            own.refill(self.socket, now);
            own.tokens -= spent;
        }
        self.users.owe_at(user, spent, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_then_refilled() {
        let limiter = Buckets::new(Rate::new(2.0, 3.0));
        let user = UserId::random();
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.try_take_at(&user, 1.0, t0)));
        assert!(!limiter.try_take_at(&user, 1.0, t0));
        assert!(limiter.try_take_at(&user, 1.0, t0 + Duration::from_millis(500)));
        assert!(!limiter.try_take_at(&user, 1.0, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn one_users_flood_does_not_limit_another() {
        let limiter = Buckets::new(Rate::new(1.0, 1.0));
        let (a, b) = (UserId::random(), UserId::random());
        let t0 = Instant::now();
        assert!(limiter.try_take_at(&a, 1.0, t0));
        assert!(!limiter.try_take_at(&a, 1.0, t0));
        assert!(limiter.try_take_at(&b, 1.0, t0));
    }

    #[test]
    fn the_map_forgets_full_buckets_once_it_is_large() {
        let limiter = Buckets::new(Rate::new(1000.0, 1.0));
        let t0 = Instant::now();
        for _ in 0..25_000 {
            assert!(limiter.try_take_at(&UserId::random(), 1.0, t0));
        }
        // A second later every bucket is full again: the next take sweeps them all.
        assert!(limiter.try_take_at(&UserId::random(), 1.0, t0 + Duration::from_secs(1)));
        assert!(limiter.buckets.lock().unwrap().len() <= 2);
    }

    #[test]
    fn a_read_reserves_its_most_and_refunds_the_rest() {
        let limits = ReadLimits::new(Rate::new(0.0, 1000.0), Rate::new(0.0, 1000.0));
        let user = UserId::random();
        let socket = limits.socket_bucket();
        let t0 = Instant::now();
        let first = limits
            .reserve_at(&user, &socket, 600, t0)
            .expect("in budget");
        // Reserved, not yet settled: a second large read does not fit.
        assert!(limits.reserve_at(&user, &socket, 600, t0).is_none());
        limits.settle(first, 100);
        // 900 left.
        let second = limits
            .reserve_at(&user, &socket, 900, t0)
            .expect("refunded");
        limits.settle(second, 900);
        assert!(limits.reserve_at(&user, &socket, 1, t0).is_none());
    }

    #[test]
    fn what_a_read_cost_beyond_its_reservation_is_owed_even_if_the_bucket_was_swept() {
        let mut limits = ReadLimits::new(Rate::new(1000.0, 1000.0), Rate::new(1000.0, 1000.0));
        limits.users.max_keys = 0;
        let (ada, bob) = (UserId::random(), UserId::random());
        let t0 = Instant::now();
        let read = limits
            .reserve_at(&ada, &limits.socket_bucket(), 500, t0)
            .expect("in budget");
        // While the read runs, ada's bucket refills, and another user's read sweeps it away.
        let t1 = t0 + Duration::from_secs(1);
        let other = limits
            .reserve_at(&bob, &limits.socket_bucket(), 1, t1)
            .expect("fits");
        limits.settle_at(other, 1, t1);
        // The read cost 1000 more than it reserved: ada owes it, on any socket.
        limits.settle_at(read, 1500, t1);
        assert!(limits
            .reserve_at(&ada, &limits.socket_bucket(), 1, t1)
            .is_none());
    }

    #[test]
    fn concurrent_reads_cannot_spend_more_than_the_burst() {
        let limits = Arc::new(ReadLimits::new(
            Rate::new(0.0, 10_000.0),
            Rate::new(0.0, 1e9),
        ));
        let user = UserId::random();
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        let (limits, user, admitted_ref) = (&limits, &user, &admitted);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let socket = limits.socket_bucket();
                scope.spawn(move || {
                    for _ in 0..100 {
                        if let Some(r) = limits.reserve(user, &socket, 1000) {
                            admitted_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            std::mem::forget(r);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 10);
    }

    #[test]
    fn a_refusal_by_the_user_bucket_costs_the_socket_nothing() {
        let limits = ReadLimits::new(Rate::new(0.0, 100.0), Rate::new(0.0, 1000.0));
        let (a, b) = (UserId::random(), UserId::random());
        let socket = limits.socket_bucket();
        let t0 = Instant::now();
        assert!(limits.reserve_at(&a, &socket, 500, t0).is_none());
        // The socket still has its 1000 (b's user bucket allows 100).
        let r = limits.reserve_at(&b, &socket, 100, t0).expect("fits");
        limits.settle(r, 100);
        assert!(limits.reserve_at(&b, &socket, 1, t0).is_none());
    }

    #[test]
    fn a_socket_is_let_go_after_too_many_refusals_in_a_row_and_its_session_barred() {
        let penalties = Penalties::new(3, Duration::from_secs(60));
        let socket = SocketReadBucket::new(Rate::new(1.0, 1.0));
        let t0 = Instant::now();
        assert!(!penalties.refused_at(&socket, t0));
        assert!(!penalties.refused_at(&socket, t0));
        // A window later the count starts over.
        let t1 = t0 + PENALTY_WINDOW + Duration::from_millis(1);
        assert!(!penalties.refused_at(&socket, t1));
        assert!(!penalties.refused_at(&socket, t1));
        assert!(penalties.refused_at(&socket, t1));
        assert!(!penalties.is_barred("digest"));
        penalties.bar("digest".into());
        assert!(penalties.is_barred("digest"));
        let short = Penalties::new(1, Duration::ZERO);
        short.bar("digest".into());
        assert!(!short.is_barred("digest"), "the cooldown ends");
    }

    #[test]
    fn one_read_per_socket_may_wait_for_its_tokens() {
        let limits = ReadLimits::new(Rate::new(1000.0, 1000.0), Rate::new(1000.0, 1000.0));
        let user = UserId::random();
        let socket = limits.socket_bucket();
        let r = limits.reserve(&user, &socket, 1000).expect("a full bucket");
        limits.settle(r, 1000);
        let longest = Duration::from_secs(2);
        let (wait, turn) = limits
            .wait_turn(&user, &socket, 500, longest)
            .expect("half a second away");
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert!(
            limits.wait_turn(&user, &socket, 500, longest).is_none(),
            "one at a time"
        );
        drop(turn);
        assert!(limits.wait_turn(&user, &socket, 500, longest).is_some());
        assert!(
            limits.wait_turn(&user, &socket, 5000, longest).is_none(),
            "more than the burst never fits"
        );
    }

    #[test]
    fn a_charge_is_owed_by_the_next_reads() {
        let limits = ReadLimits::new(Rate::new(1000.0, 1000.0), Rate::new(1000.0, 1000.0));
        let user = UserId::random();
        let socket = limits.socket_bucket();
        assert!(!limits.in_debt(&user));
        limits.charge(&user, &socket, 3000);
        assert!(limits.reserve(&user, &socket, 1).is_none());
        assert!(limits.in_debt(&user));
        assert!(!limits.in_debt(&UserId::random()));
    }
}
