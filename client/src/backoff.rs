//! Reconnection delays as the official JavaScript client computes them: `min · 2^attempt`,
//! randomised by ±`jitter`, capped at `max`; reset after a successful connect.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub min_ms: u64,
    pub max_ms: u64,
    /// 0.5 means ±50 %.
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            min_ms: 1_000,
            max_ms: 5_000,
            jitter: 0.5,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self { policy, attempt: 0 }
    }

    /// The delay before the next attempt; `random` is uniform in [0, 1).
    pub fn next_delay(&mut self, random: f64) -> u64 {
        let base = self.policy.min_ms as f64 * 2f64.powi(self.attempt.min(30) as i32);
        self.attempt = self.attempt.saturating_add(1);
        let deviation = (random * self.policy.jitter * base).floor();
        // Like socket.io-client: the same random draw decides the sign.
        let delay = if ((random * 10.0).floor() as u64) & 1 == 0 {
            base - deviation
        } else {
            base + deviation
        };
        (delay.max(0.0) as u64).min(self.policy.max_ms)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_jitter_delays_double_from_one_second_to_the_five_second_cap() {
        let mut b = Backoff::new(BackoffPolicy {
            jitter: 0.0,
            ..Default::default()
        });
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay(0.3)).collect();
        assert_eq!(delays, [1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn jitter_stays_within_fifty_percent() {
        for i in 0..100 {
            let r = i as f64 / 100.0;
            let mut b = Backoff::new(BackoffPolicy::default());
            let d = b.next_delay(r);
            assert!((500..=1500).contains(&d), "{r} -> {d}");
        }
    }

    #[test]
    fn reset_starts_again_from_the_minimum() {
        let mut b = Backoff::new(BackoffPolicy {
            jitter: 0.0,
            ..Default::default()
        });
        b.next_delay(0.0);
        b.next_delay(0.0);
        b.reset();
        assert_eq!(b.next_delay(0.0), 1000);
    }
}
