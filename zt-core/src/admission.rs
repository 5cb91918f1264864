//! Admission of handshake initiations: what a responder checks before it spends
//! asymmetric crypto (a Noise IK message 1 costs two X25519 operations to read and two to
//! answer, and an unknown identity one Argon2id run to verify) on a HANDSHAKE_INIT.
//!
//! The model is WireGuard's (its paper, section 5.3, and `ratelimiter.c`): crypto is cheap
//! enough to answer every initiation until someone floods, so
//!
//! 1. while fewer than [`LOAD_BURST`] initiations without a cookie arrived recently
//!    (a token bucket refilled at [`LOAD_RATE`] per second), each one is answered at once;
//! 2. otherwise the responder is **under load** (until [`LOAD_HOLD`] after the last
//!    initiation that found the bucket empty) and answers an initiation that carries no
//!    valid cookie with a COOKIE_REPLY and nothing else: one keyed BLAKE2s hash, no state,
//!    a reply smaller than the request (no amplification);
//! 3. an initiation that echoes a valid cookie proves that its sender receives at the
//!    source address it claims; it is admitted if that source's own token bucket
//!    ([`SOURCE_RATE`] per second, [`SOURCE_BURST`] at once) has a token. So a flood from
//!    some addresses, spoofed or not, delays a node at another address by one round trip,
//!    and a flooder that does echo cookies gets at most its own budget.
//!
//! A cookie is `BLAKE2s-128(key = secret, source IP ‖ source port ‖ claimed node
//! address)`. The secret is random (drawn from the node's generator) and replaced every
//! [`SECRET_LIFETIME`]; cookies made under the current or the previous secret are valid.
//! A "source" for the buckets is the IPv4 address or the IPv6 /64 (one host or one
//! subnet, as WireGuard keys its rate limiter), except that initiations a root relayed
//! (`hops > 0` from one of this node's roots) are told apart by the node address the root
//! vouches for, so one flooder behind a root does not starve the others behind it.
//!
//! Sans-IO like the rest of the crate: `now` comes in, the secret comes from the caller.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac as _};
use blake2::Blake2sMac;

use crate::identity::Address;
use crate::wire::cookie::COOKIE_LEN;

/// Initiations without a valid cookie answered with crypto per second, on average, before
/// the responder asks for cookies.
pub const LOAD_RATE: u32 = 50;
/// How many of those may come at once.
pub const LOAD_BURST: u32 = 50;
/// A responder stays under load this long after the last initiation that found the
/// budget of [`LOAD_RATE`] spent.
pub const LOAD_HOLD: Duration = Duration::from_secs(1);
/// Initiations with a valid cookie admitted per second from one source.
pub const SOURCE_RATE: u32 = 10;
/// How many of those may come at once.
pub const SOURCE_BURST: u32 = 10;
/// The cookie secret is replaced this often.
pub const SECRET_LIFETIME: Duration = Duration::from_secs(120);
/// Sources whose bucket is remembered at once; beyond it, full buckets are forgotten
/// (they are equivalent to no entry), then the table is cleared.
const MAX_SOURCES: usize = 4096;

/// What to do with an initiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Spend the crypto on it.
    Admit,
    /// Answer with this cookie and nothing else.
    Cookie([u8; COOKIE_LEN]),
    /// Drop it (its source is over its budget).
    Drop,
}

/// Who an initiation comes from, for the per-source budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Directly from this IPv4 address or IPv6 /64.
    Direct(IpAddr),
    /// Relayed by the root at this IP address, for this node.
    Relayed(IpAddr, Address),
}

impl Source {
    /// The source of an initiation that came from `from`; `relayed_for` is the claimed
    /// sender when a root of this node relayed it.
    pub fn new(from: SocketAddr, relayed_for: Option<Address>) -> Source {
        let ip = match from.ip() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut o = v6.octets();
                    o[8..].fill(0);
                    IpAddr::V6(o.into())
                }
            },
        };
        match relayed_for {
            Some(a) => Source::Relayed(ip, a),
            None => Source::Direct(ip),
        }
    }
}

/// Counters of what admission did, for tests and `zt status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Initiations that reached admission (well-formed, addressed to this node).
    pub initiations: u64,
    /// Of which admitted: each costs a Noise message 1 read (asymmetric crypto).
    pub admitted: u64,
    /// COOKIE_REPLYs sent (no asymmetric crypto).
    pub cookies_sent: u64,
    /// Initiations with a valid cookie dropped because their source was over its budget.
    pub rate_limited: u64,
    /// Unknown identities verified (one Argon2id run each), counted by the node.
    pub identities_verified: u64,
}

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: u32, burst: u32) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * f64::from(rate)).min(f64::from(burst));
        self.at = self.at.max(now);
    }

    fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        self.refill(now, rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The responder's admission state. See the module documentation.
pub struct Admission {
    secret: [u8; 32],
    previous: Option<[u8; 32]>,
    rotated_at: Instant,
    unproven: Bucket,
    loaded_until: Option<Instant>,
    sources: HashMap<Source, Bucket>,
    stats: AdmissionStats,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("loaded_until", &self.loaded_until)
            .field("sources", &self.sources.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// A fresh state with a random `secret`.
    pub fn new(secret: [u8; 32], now: Instant) -> Admission {
        Admission {
            secret,
            previous: None,
            rotated_at: now,
            unproven: Bucket::full(LOAD_BURST, now),
            loaded_until: None,
            sources: HashMap::new(),
            stats: AdmissionStats::default(),
        }
    }

    /// Whether the secret is due to be replaced (then call [`Admission::rotate`]).
    pub fn needs_secret(&self, now: Instant) -> bool {
        now >= self.rotated_at + SECRET_LIFETIME
    }

    /// Replaces the secret; cookies made under the one before stay valid until the next
    /// rotation.
    pub fn rotate(&mut self, secret: [u8; 32], now: Instant) {
        self.previous = Some(std::mem::replace(&mut self.secret, secret));
        self.rotated_at = now;
    }

    /// Whether initiations without a cookie are answered with one right now.
    pub fn under_load(&self, now: Instant) -> bool {
        self.loaded_until.is_some_and(|t| now < t)
    }

    /// What admission did so far.
    pub fn stats(&self) -> AdmissionStats {
        self.stats
    }

    /// Counts an identity verification (the node does it after admission).
    pub fn count_verification(&mut self) {
        self.stats.identities_verified += 1;
    }

    /// The cookie for an initiation from `from` claiming node address `claimed`.
    pub fn cookie(&self, from: SocketAddr, claimed: Address) -> [u8; COOKIE_LEN] {
        mac(&self.secret, from, claimed)
            .finalize()
            .into_bytes()
            .into()
    }

    fn cookie_valid(&self, from: SocketAddr, claimed: Address, cookie: &[u8; COOKIE_LEN]) -> bool {
        // `verify_slice` compares in constant time.
        mac(&self.secret, from, claimed)
            .verify_slice(cookie)
            .is_ok()
            || self
                .previous
                .is_some_and(|p| mac(&p, from, claimed).verify_slice(cookie).is_ok())
    }

    /// Decides about an initiation from `from` (source `source`, see [`Source::new`])
    /// claiming node address `claimed`, carrying `cookie` if it was a
    /// HANDSHAKE_INIT_COOKIE.
    pub fn check(
        &mut self,
        now: Instant,
        from: SocketAddr,
        source: Source,
        claimed: Address,
        cookie: Option<&[u8; COOKIE_LEN]>,
    ) -> Verdict {
        self.stats.initiations += 1;
        let proven = cookie.is_some_and(|c| self.cookie_valid(from, claimed, c));
        if !proven {
            if self.under_load(now) || !self.unproven.take(now, LOAD_RATE, LOAD_BURST) {
                self.loaded_until = Some(now + LOAD_HOLD);
                self.stats.cookies_sent += 1;
                return Verdict::Cookie(self.cookie(from, claimed));
            }
            self.stats.admitted += 1;
            return Verdict::Admit;
        }
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&source) {
            self.sources.retain(|_, b| {
                b.refill(now, SOURCE_RATE, SOURCE_BURST);
                b.tokens < f64::from(SOURCE_BURST)
            });
            if self.sources.len() >= MAX_SOURCES {
                self.sources.clear();
            }
        }
        let bucket = self
            .sources
            .entry(source)
            .or_insert_with(|| Bucket::full(SOURCE_BURST, now));
        if bucket.take(now, SOURCE_RATE, SOURCE_BURST) {
            self.stats.admitted += 1;
            Verdict::Admit
        } else {
            self.stats.rate_limited += 1;
            Verdict::Drop
        }
    }
}

fn mac(key: &[u8; 32], from: SocketAddr, claimed: Address) -> Blake2sMac<U16> {
    let mut m = <Blake2sMac<U16> as KeyInit>::new(key.into());
    match from.ip() {
        IpAddr::V4(v4) => m.update(&v4.octets()),
        IpAddr::V6(v6) => m.update(&v6.octets()),
    }
    m.update(&from.port().to_be_bytes());
    m.update(&claimed.to_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u64) -> Address {
        Address::new(0x10_0000_0000 + n).unwrap()
    }

    fn ep(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cookie_is_bound_to_source_address_port_and_node_and_survives_one_rotation() {
        let now = Instant::now();
        let mut a = Admission::new([1; 32], now);
        let from = ep("192.0.2.1:9993");
        let c = a.cookie(from, addr(1));
        assert!(a.cookie_valid(from, addr(1), &c));
        assert!(!a.cookie_valid(ep("192.0.2.2:9993"), addr(1), &c));
        assert!(!a.cookie_valid(ep("192.0.2.1:9994"), addr(1), &c));
        assert!(!a.cookie_valid(from, addr(2), &c));
        let mut flipped = c;
        flipped[0] ^= 1;
        assert!(!a.cookie_valid(from, addr(1), &flipped));
        assert!(!a.needs_secret(now + SECRET_LIFETIME / 2));
        assert!(a.needs_secret(now + SECRET_LIFETIME));
        a.rotate([2; 32], now + SECRET_LIFETIME);
        assert!(
            a.cookie_valid(from, addr(1), &c),
            "previous secret still valid"
        );
        assert_ne!(a.cookie(from, addr(1)), c);
        a.rotate([3; 32], now + SECRET_LIFETIME * 2);
        assert!(!a.cookie_valid(from, addr(1), &c), "two rotations later");
    }

    #[test]
    fn a_flood_without_cookies_turns_on_load_and_costs_no_crypto_beyond_the_burst() {
        let t0 = Instant::now();
        let mut a = Admission::new([9; 32], t0);
        let junk = ep("198.18.0.66:5555");
        let mut admitted = 0;
        // 10,000 initiations per second for 3 s.
        for i in 0..30_000u32 {
            let now = t0 + Duration::from_micros(100 * u64::from(i));
            if a.check(now, junk, Source::new(junk, None), addr(7), None) == Verdict::Admit {
                admitted += 1;
            }
        }
        assert_eq!(admitted, LOAD_BURST, "only the first burst costs crypto");
        assert!(a.under_load(t0 + Duration::from_secs(3)));
        assert!(!a.under_load(t0 + Duration::from_secs(3) + LOAD_HOLD));
        assert_eq!(a.stats().cookies_sent, 30_000 - u64::from(LOAD_BURST));
        // Another source that echoes its cookie is admitted during the flood.
        let now = t0 + Duration::from_millis(2500);
        let good = ep("198.18.0.7:9993");
        let src = Source::new(good, None);
        let Verdict::Cookie(c) = a.check(now, good, src, addr(8), None) else {
            panic!("no cookie under load");
        };
        assert_eq!(a.check(now, good, src, addr(8), Some(&c)), Verdict::Admit);
        // The flooder's cookie does not help another node or port.
        let forged = a.cookie(junk, addr(7));
        assert!(matches!(
            a.check(now, good, src, addr(8), Some(&forged)),
            Verdict::Cookie(_)
        ));
    }

    #[test]
    fn a_flooder_that_echoes_cookies_gets_its_own_budget_only() {
        let t0 = Instant::now();
        let mut a = Admission::new([5; 32], t0);
        let bad = ep("198.18.0.66:5555");
        let bad_src = Source::new(bad, None);
        let c = a.cookie(bad, addr(7));
        let mut admitted = 0u32;
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_micros(100 * u64::from(i));
            if a.check(now, bad, bad_src, addr(7), Some(&c)) == Verdict::Admit {
                admitted += 1;
            }
        }
        // One second: the burst plus one second of refill.
        assert!(admitted <= SOURCE_BURST + SOURCE_RATE, "{admitted}");
        assert!(admitted >= SOURCE_BURST, "{admitted}");
        // Another address of the same /64 shares the budget; another /64 does not.
        let now = t0 + Duration::from_secs(1);
        let v6 = ep("[2001:db8:1:2::1]:1");
        let c6 = a.cookie(v6, addr(1));
        for _ in 0..SOURCE_BURST {
            assert_eq!(
                a.check(now, v6, Source::new(v6, None), addr(1), Some(&c6)),
                Verdict::Admit
            );
        }
        let v6b = ep("[2001:db8:1:2::99]:1");
        let c6b = a.cookie(v6b, addr(2));
        assert_eq!(
            a.check(now, v6b, Source::new(v6b, None), addr(2), Some(&c6b)),
            Verdict::Drop
        );
        let other = ep("[2001:db8:1:3::1]:1");
        let co = a.cookie(other, addr(3));
        assert_eq!(
            a.check(now, other, Source::new(other, None), addr(3), Some(&co)),
            Verdict::Admit
        );
        // Relayed initiations are told apart by the node the root vouches for.
        let root = ep("198.18.0.1:9993");
        let r1 = a.cookie(root, addr(1));
        let r2 = a.cookie(root, addr(2));
        for _ in 0..SOURCE_BURST {
            a.check(
                now,
                root,
                Source::new(root, Some(addr(1))),
                addr(1),
                Some(&r1),
            );
        }
        assert_eq!(
            a.check(
                now,
                root,
                Source::new(root, Some(addr(1))),
                addr(1),
                Some(&r1)
            ),
            Verdict::Drop
        );
        assert_eq!(
            a.check(
                now,
                root,
                Source::new(root, Some(addr(2))),
                addr(2),
                Some(&r2)
            ),
            Verdict::Admit
        );
    }

    #[test]
    fn the_source_table_is_bounded() {
        let t0 = Instant::now();
        let mut a = Admission::new([5; 32], t0);
        for i in 0..(MAX_SOURCES as u32 * 3) {
            let from = SocketAddr::new(IpAddr::V4(i.into()), 1);
            let c = a.cookie(from, addr(1));
            a.check(t0, from, Source::new(from, None), addr(1), Some(&c));
            assert!(a.sources.len() <= MAX_SOURCES);
        }
    }
}
