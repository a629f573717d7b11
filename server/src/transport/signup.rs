//! Sign-ups (handshakes that create an account) are limited per client address and overall:
//! two token buckets, both taken at once under one lock, so concurrent handshakes cannot pass
//! together on the last token. A refused sign-up creates nothing.
//!
//! The client address is resolved once per socket request by [`resolve_client_addr`], before
//! [`super::request_head`] drops the headers: the TCP peer, or with `--trust-forwarded-for N`
//! the entry N hops from the right of `X-Forwarded-For` followed by the peer. It travels as a
//! [`ClientAddr`] in the request's extensions, which socketioxide keeps with the socket. It is
//! never logged: its `Debug` is redacted like a session id's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The client's address as the server trusts it (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl std::fmt::Debug for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientAddr(<redacted>)")
    }
}

/// How many proxies in front of the server append to `X-Forwarded-For` (0: trust none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrustedProxies(pub u8);

/// Middleware: a Socket.IO request, or one of the passkey sign-in routes (`/api/`), gets its
/// [`ClientAddr`]; every other request passes as is.
/// Without a TCP peer in the extensions (a router served without connect info) the address
/// is unknown, and only the overall sign-up limit applies.
pub async fn resolve_client_addr(
    State(trusted): State<TrustedProxies>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if super::is_socket_path(path) || crate::identity::http::is_api_path(path) {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let forwarded = request.headers().get_all("x-forwarded-for");
        if let Some(ip) = client_ip(peer, forwarded.iter(), trusted.0) {
            request.extensions_mut().insert(ClientAddr(ip));
        }
    }
    next.run(request).await
}

/// The address `hops` trusted proxies vouch for: walking `X-Forwarded-For` (all its headers,
/// in order, then the peer) from the right, each trusted hop names the one before it. An entry
/// that is missing or not an address stops the walk at the last address a trusted hop gave,
/// so a client can never claim more than what the nearest trusted proxy saw.
fn client_ip<'a>(
    peer: Option<IpAddr>,
    forwarded: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    hops: u8,
) -> Option<IpAddr> {
    if hops == 0 {
        return peer;
    }
    let mut current = peer;
    let mut entries = forwarded
        .rev()
        .flat_map(|value| value.to_str().unwrap_or("").rsplit(','));
    for _ in 0..hops {
        match entries.next().and_then(parse_entry) {
            Some(ip) => current = Some(ip),
            None => break,
        }
    }
    current
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`[v6]:port`, `v4:port`).
fn parse_entry(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// What one bucket of the per-address map stands for: an IPv4 address, or an IPv6 /64 (one
/// subscriber's prefix: a client gets 2^64 addresses, so counting them one by one would limit
/// nothing). IPv4-mapped IPv6 counts as the IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddrKey {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl AddrKey {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddrKey::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let octets = v6.octets();
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&octets[..8]);
                AddrKey::V6(prefix)
            }
        }
    }
}

/// A bucket's shape: `burst` tokens, refilled at `per_sec`.
#[derive(Debug, Clone, Copy)]
pub struct SignupRate {
    pub per_sec: f64,
    pub burst: f64,
}

impl SignupRate {
    pub fn new(per_sec: f64, burst: f64) -> Self {
        Self {
            per_sec: per_sec.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
        }
    }

    /// The tokens a bucket last left at `tokens` at `at` holds at `now`.
    fn level(&self, bucket: Bucket, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_sec;
        (bucket.tokens + refill).min(self.burst)
    }

    /// How long a bucket at `level` takes to hold a whole token (zero when it does).
    fn wait_from(&self, level: f64) -> Duration {
        if level >= 1.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64((1.0 - level) / self.per_sec).unwrap_or(Duration::MAX)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Why a sign-up was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupRefusal {
    /// This address (or /64) used up its sign-ups.
    Address,
    /// The server's sign-ups, all addresses together, are used up.
    Overall,
}

impl SignupRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            SignupRefusal::Address => "address",
            SignupRefusal::Overall => "overall",
        }
    }
}

/// The most addresses the limiter tracks at once. A bucket is only added when a sign-up is
/// admitted, so new entries come at most at the overall rate, and a bucket that refilled is
/// dropped: at the defaults (20/s, an address refilled within a minute) ~1,300 entries are
/// ever live. The cap holds whatever the flags say: 65,536 entries of ~40 bytes, ~3 MiB.
const MAX_TRACKED_ADDRESSES: usize = 65_536;
/// A full map is swept for refilled buckets at most this often (a sweep walks every entry).
const SWEEP_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// A refusal and how long until the same request would be admitted (if nothing else takes
/// the tokens first): what `Retry-After` says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refused {
    pub why: SignupRefusal,
    pub wait: Duration,
}

/// The sign-up limiter of one node (the passkey ceremonies have one of their own).
#[derive(Debug)]
pub struct SignupLimiter {
    per_addr: SignupRate,
    overall_rate: SignupRate,
    /// What a refusal for want of room in the address table is counted as.
    table_full: crate::refusals::Refusal,
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    overall: Bucket,
    addrs: HashMap<AddrKey, Bucket>,
    swept_at: Option<Instant>,
}

impl SignupLimiter {
    pub fn new(per_addr: SignupRate, overall: SignupRate) -> Self {
        Self {
            per_addr,
            overall_rate: overall,
            table_full: crate::refusals::Refusal::SignupTableFull,
            state: Mutex::new(LimiterState {
                overall: Bucket {
                    tokens: overall.burst,
                    at: Instant::now(),
                },
                addrs: HashMap::new(),
                swept_at: None,
            }),
        }
    }

    /// This limiter counts a refusal for want of room in its address table as `kind` (the
    /// sign-up limiter's are [`crate::refusals::Refusal::SignupTableFull`]).
    pub fn counting_table_full_as(mut self, kind: crate::refusals::Refusal) -> Self {
        self.table_full = kind;
        self
    }

    /// Takes a sign-up for `addr` (unknown: only the overall limit applies), or says why not.
    /// Both buckets are checked before either is taken, so a refusal costs nothing.
    pub fn try_admit(&self, addr: Option<ClientAddr>) -> Result<(), SignupRefusal> {
        self.try_admit_or_wait(addr).map_err(|refused| refused.why)
    }

    /// [`SignupLimiter::try_admit`], saying on a refusal how long until the buckets it needs
    /// hold a token again (for a full address table, until the next sweep may make room).
    pub fn try_admit_or_wait(&self, addr: Option<ClientAddr>) -> Result<(), Refused> {
        self.try_admit_at(addr, Instant::now())
    }

    fn try_admit_at(&self, addr: Option<ClientAddr>, now: Instant) -> Result<(), Refused> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let overall = self.overall_rate.level(state.overall, now);
        let key = addr.map(|ClientAddr(ip)| AddrKey::of(ip));
        let addr_level = match key {
            None => None,
            Some(key) => Some(match state.addrs.get(&key) {
                Some(bucket) => self.per_addr.level(*bucket, now),
                None => {
                    if state.addrs.len() >= MAX_TRACKED_ADDRESSES && !self.sweep(&mut state, now) {
                        crate::refusals::refused(self.table_full);
                        let swept = state.swept_at.unwrap_or(now);
                        return Err(Refused {
                            why: SignupRefusal::Address,
                            wait: (swept + SWEEP_AT_MOST_EVERY).saturating_duration_since(now),
                        });
                    }
                    self.per_addr.burst
                }
            }),
        };
        // The request needs both buckets: it waits for the slower.
        let wait = addr_level
            .map_or(Duration::ZERO, |level| self.per_addr.wait_from(level))
            .max(self.overall_rate.wait_from(overall));
        if addr_level.is_some_and(|level| level < 1.0) {
            return Err(Refused {
                why: SignupRefusal::Address,
                wait,
            });
        }
        if overall < 1.0 {
            return Err(Refused {
                why: SignupRefusal::Overall,
                wait,
            });
        }
        state.overall = Bucket {
            tokens: overall - 1.0,
            at: now,
        };
        if let (Some(key), Some(level)) = (key, addr_level) {
            state.addrs.insert(
                key,
                Bucket {
                    tokens: level - 1.0,
                    at: now,
                },
            );
        }
        Ok(())
    }

    /// Drops the buckets that refilled (they say nothing a missing entry does not). Returns
    /// whether there is room for a new entry; sweeps at most once per
    /// [`SWEEP_AT_MOST_EVERY`], so a map full of busy addresses costs one walk a second.
    fn sweep(&self, state: &mut LimiterState, now: Instant) -> bool {
        let due = state
            .swept_at
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_AT_MOST_EVERY);
        if due {
            state.swept_at = Some(now);
            let rate = self.per_addr;
            state
                .addrs
                .retain(|_, bucket| rate.level(*bucket, now) < rate.burst);
        }
        state.addrs.len() < MAX_TRACKED_ADDRESSES
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .addrs
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> Option<ClientAddr> {
        Some(ClientAddr(ip(s)))
    }

    impl SignupLimiter {
        fn admit_at(&self, addr: Option<ClientAddr>, now: Instant) -> Result<(), SignupRefusal> {
            self.try_admit_at(addr, now).map_err(|refused| refused.why)
        }
    }

    #[test]
    fn a_refusal_says_how_long_until_both_buckets_hold_a_token() {
        // One token every six seconds per address, one every two seconds overall.
        let limiter =
            SignupLimiter::new(SignupRate::new(10.0 / 60.0, 2.0), SignupRate::new(0.5, 3.0));
        let t0 = Instant::now();
        let a = addr("192.0.2.1");
        assert!(limiter.try_admit_at(a, t0).is_ok());
        assert!(limiter.try_admit_at(a, t0).is_ok());
        let refused = limiter.try_admit_at(a, t0).unwrap_err();
        assert_eq!(refused.why, SignupRefusal::Address);
        assert!(
            (refused.wait.as_secs_f64() - 6.0).abs() < 0.01,
            "{refused:?}"
        );
        let later = t0 + Duration::from_secs(4);
        let refused = limiter.try_admit_at(a, later).unwrap_err();
        assert!(
            (refused.wait.as_secs_f64() - 2.0).abs() < 0.01,
            "{refused:?}"
        );
        // The overall bucket is the slower one here: its wait is the one said.
        assert!(limiter.try_admit_at(addr("192.0.2.2"), t0).is_ok());
        let refused = limiter.try_admit_at(addr("192.0.2.3"), t0).unwrap_err();
        assert_eq!(refused.why, SignupRefusal::Overall);
        assert!(
            (refused.wait.as_secs_f64() - 2.0).abs() < 0.01,
            "{refused:?}"
        );
    }

    #[test]
    fn a_full_address_table_is_counted_as_the_limiter_says() {
        use crate::refusals::{count, Refusal};
        let limiter = SignupLimiter::new(
            SignupRate::new(1.0, 1.0),
            SignupRate::new(1e9, MAX_TRACKED_ADDRESSES as f64 * 2.0),
        )
        .counting_table_full_as(Refusal::PasskeyTableFull);
        let t0 = Instant::now();
        let nth = |n: usize| Some(ClientAddr(IpAddr::from((n as u32 + 1).to_be_bytes())));
        for n in 0..MAX_TRACKED_ADDRESSES {
            assert!(limiter.try_admit_at(nth(n), t0).is_ok());
        }
        let before = count(Refusal::PasskeyTableFull);
        let refused = limiter
            .try_admit_at(nth(MAX_TRACKED_ADDRESSES), t0)
            .unwrap_err();
        assert_eq!(count(Refusal::PasskeyTableFull), before + 1);
        assert_eq!(refused.why, SignupRefusal::Address);
        assert!(
            refused.wait > Duration::ZERO && refused.wait <= SWEEP_AT_MOST_EVERY,
            "{refused:?}"
        );
    }

    fn headers(values: &[&str]) -> Vec<HeaderValue> {
        values
            .iter()
            .map(|v| HeaderValue::from_str(v).unwrap())
            .collect()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() {
        let xff = headers(&["203.0.113.9"]);
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), xff.iter(), 0),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn each_trusted_hop_names_the_address_before_it() {
        let xff = headers(&["1.1.1.1, 203.0.113.9", "198.51.100.7"]);
        let peer = Some(ip("10.0.0.1"));
        assert_eq!(client_ip(peer, xff.iter(), 1), Some(ip("198.51.100.7")));
        assert_eq!(client_ip(peer, xff.iter(), 2), Some(ip("203.0.113.9")));
        assert_eq!(client_ip(peer, xff.iter(), 3), Some(ip("1.1.1.1")));
        // More trusted hops than entries: the leftmost address any trusted hop gave.
        assert_eq!(client_ip(peer, xff.iter(), 9), Some(ip("1.1.1.1")));
        assert_eq!(client_ip(peer, [].iter(), 1), Some(ip("10.0.0.1")));
    }

    #[test]
    fn a_forged_entry_stops_the_walk_at_the_last_trusted_address() {
        let xff = headers(&["203.0.113.9, not-an-ip, 198.51.100.7"]);
        let peer = Some(ip("10.0.0.1"));
        assert_eq!(client_ip(peer, xff.iter(), 3), Some(ip("198.51.100.7")));
    }

    #[test]
    fn entries_with_ports_and_mapped_addresses_are_read() {
        let xff = headers(&["[2001:db8::1]:443", "192.0.2.4:80", "::ffff:192.0.2.5"]);
        let peer = Some(ip("10.0.0.1"));
        assert_eq!(client_ip(peer, xff.iter(), 1), Some(ip("192.0.2.5")));
        assert_eq!(client_ip(peer, xff.iter(), 2), Some(ip("192.0.2.4")));
        assert_eq!(client_ip(peer, xff.iter(), 3), Some(ip("2001:db8::1")));
    }

    #[test]
    fn an_address_gets_its_burst_then_refills_and_others_are_unaffected() {
        let limiter = SignupLimiter::new(
            SignupRate::new(10.0 / 60.0, 3.0),
            SignupRate::new(1000.0, 1000.0),
        );
        let t0 = Instant::now();
        let a = addr("192.0.2.1");
        assert!((0..3).all(|_| limiter.admit_at(a, t0).is_ok()));
        assert_eq!(limiter.admit_at(a, t0), Err(SignupRefusal::Address));
        assert!(limiter.admit_at(addr("192.0.2.2"), t0).is_ok());
        // One token every six seconds.
        assert!(limiter
            .try_admit_at(a, t0 + Duration::from_secs(5))
            .is_err());
        assert!(limiter.admit_at(a, t0 + Duration::from_secs(7)).is_ok());
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_bucket() {
        let limiter =
            SignupLimiter::new(SignupRate::new(0.01, 2.0), SignupRate::new(1000.0, 1000.0));
        let t0 = Instant::now();
        assert!(limiter.admit_at(addr("2001:db8:1:2::1"), t0).is_ok());
        assert!(limiter.admit_at(addr("2001:db8:1:2::ffff"), t0).is_ok());
        assert_eq!(
            limiter.admit_at(addr("2001:db8:1:2:abcd::9"), t0),
            Err(SignupRefusal::Address)
        );
        assert!(limiter.admit_at(addr("2001:db8:1:3::1"), t0).is_ok());
        // A mapped IPv4 address is that IPv4 address.
        assert!(limiter.admit_at(addr("192.0.2.1"), t0).is_ok());
        assert!(limiter.admit_at(addr("::ffff:192.0.2.1"), t0).is_ok());
        assert!(limiter.admit_at(addr("192.0.2.1"), t0).is_err());
    }

    #[test]
    fn the_overall_limit_holds_across_addresses_and_a_refusal_takes_nothing() {
        let limiter = SignupLimiter::new(SignupRate::new(1.0, 2.0), SignupRate::new(1.0, 3.0));
        let t0 = Instant::now();
        let admitted = (0..50)
            .filter(|n| {
                limiter
                    .try_admit_at(Some(ClientAddr(IpAddr::from([10, 0, 0, *n as u8]))), t0)
                    .is_ok()
            })
            .count();
        assert_eq!(admitted, 3);
        assert_eq!(
            limiter.admit_at(None, t0),
            Err(SignupRefusal::Overall),
            "no address: the overall limit still applies"
        );
        // The refused addresses were not charged: each gets its whole burst once the
        // overall bucket refills.
        let later = t0 + Duration::from_secs(2);
        assert!(limiter.admit_at(addr("10.0.0.40"), later).is_ok());
        assert!(limiter.admit_at(addr("10.0.0.40"), later).is_ok());
        assert_eq!(limiter.tracked(), 4);
    }

    #[test]
    fn the_map_is_bounded_and_refilled_buckets_are_dropped() {
        let limiter = SignupLimiter::new(
            SignupRate::new(1.0, 1.0),
            SignupRate::new(1e9, MAX_TRACKED_ADDRESSES as f64 * 2.0),
        );
        let t0 = Instant::now();
        let nth = |n: usize| Some(ClientAddr(IpAddr::from((n as u32 + 1).to_be_bytes())));
        for n in 0..MAX_TRACKED_ADDRESSES {
            assert!(limiter.admit_at(nth(n), t0).is_ok());
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED_ADDRESSES);
        // Full of buckets still refilling: a new address is refused, the map does not grow.
        let fresh = nth(MAX_TRACKED_ADDRESSES);
        assert_eq!(limiter.admit_at(fresh, t0), Err(SignupRefusal::Address));
        assert_eq!(limiter.tracked(), MAX_TRACKED_ADDRESSES);
        // Once they refilled they are swept away and the new address gets in.
        let later = t0 + Duration::from_secs(2);
        assert!(limiter.admit_at(fresh, later).is_ok());
        assert_eq!(limiter.tracked(), 1);
    }
}
