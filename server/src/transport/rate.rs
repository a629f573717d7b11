//! Per-user token buckets for sending messages: `burst` tokens, refilled at `per_sec`. A user
//! over the limit gets `rate_limited`; other users are unaffected.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::domain::UserId;

#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<UserId, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_sec: f64, burst: f64) -> Self {
        Self {
            per_sec: per_sec.max(0.0),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `user` if there is one.
    pub fn try_take(&self, user: &UserId) -> bool {
        self.try_take_at(user, Instant::now())
    }

    fn try_take_at(&self, user: &UserId, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // Full buckets carry no information: drop them now and then so the map stays small.
        if buckets.len() > 10_000 {
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
        }
        let bucket = buckets.entry(user.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_sec;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_allowed_then_refused_then_refilled() {
        let limiter = RateLimiter::new(2.0, 3.0);
        let user = UserId::random();
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.try_take_at(&user, t0)));
        assert!(!limiter.try_take_at(&user, t0));
        assert!(limiter.try_take_at(&user, t0 + Duration::from_millis(500)));
        assert!(!limiter.try_take_at(&user, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn one_users_flood_does_not_limit_another() {
        let limiter = RateLimiter::new(1.0, 1.0);
        let (a, b) = (UserId::random(), UserId::random());
        let t0 = Instant::now();
        assert!(limiter.try_take_at(&a, t0));
        assert!(!limiter.try_take_at(&a, t0));
        assert!(limiter.try_take_at(&b, t0));
    }
}
