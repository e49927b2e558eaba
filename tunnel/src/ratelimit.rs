//! Handshake rate limits: token buckets (in their GCRA form: one "theoretical arrival time" per
//! bucket instead of a token count, integer arithmetic on `Duration`s), one per source address
//! and one overall.

use std::net::IpAddr;
use std::time::Duration;

use rustc_hash::FxHashMap;

/// How many handshake messages (initiations and responses) the tunnel works on. Each costs
/// four X25519 operations (about 0.2 ms), so these bound the CPU a flood can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeRate {
    /// Sustained rate per source address (IPv6: per /64), per second.
    pub per_source: u32,
    /// Messages a quiet source may send at once.
    pub per_source_burst: u32,
    /// Sustained rate over all sources, per second. Beyond it the tunnel is "under load":
    /// messages without a valid `mac2` get a cookie reply instead of an answer
    /// ([`crate::DropReason::CookieRequired`]); messages with one still pass the per-source limit.
    pub global: u32,
    /// Messages the tunnel takes at once after a quiet time.
    pub global_burst: u32,
    /// Most source addresses tracked at once; a new source beyond it is rate limited until idle
    /// entries are swept (every second, from [`crate::Tunnel::handle_timeout`]).
    pub max_sources: usize,
}

impl Default for HandshakeRate {
    /// WireGuard's per-source figures (20/s, burst 5) and 1 000/s overall, about a fifth of
    /// one core.
    fn default() -> Self {
        HandshakeRate { per_source: 20, per_source_burst: 5, global: 1000, global_burst: 100, max_sources: 4096 }
    }
}

/// A GCRA bucket: allowed while `tat` is at most `burst` intervals ahead of now.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    interval: Duration,
    tolerance: Duration,
}

impl Gcra {
    fn new(per_second: u32, burst: u32) -> Gcra {
        let interval = Duration::from_secs(1) / per_second.max(1);
        Gcra { interval, tolerance: interval.saturating_mul(burst.max(1)) }
    }

    /// The bucket's next `tat` if one more message is allowed now.
    fn allows(&self, tat: Duration, now: Duration) -> Option<Duration> {
        let next = tat.max(now).saturating_add(self.interval);
        (next <= now.saturating_add(self.tolerance)).then_some(next)
    }
}

/// The source key: the address, IPv6 cut to its /64 (one host usually owns a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
    }
}

const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_source: Gcra,
    global: Gcra,
    global_tat: Duration,
    sources: FxHashMap<IpAddr, Duration>,
    max_sources: usize,
    last_sweep: Duration,
}

impl RateLimiter {
    pub(crate) fn new(rate: &HandshakeRate) -> RateLimiter {
        RateLimiter {
            per_source: Gcra::new(rate.per_source, rate.per_source_burst),
            global: Gcra::new(rate.global, rate.global_burst),
            global_tat: Duration::ZERO,
            sources: FxHashMap::default(),
            max_sources: rate.max_sources,
            last_sweep: Duration::ZERO,
        }
    }

    /// Whether the global bucket has room (does not take from it).
    pub(crate) fn under_load(&self, now: Duration) -> bool {
        self.global.allows(self.global_tat, now).is_none()
    }

    /// Takes from the global bucket (the caller checked [`RateLimiter::under_load`]).
    pub(crate) fn take_global(&mut self, now: Duration) {
        if let Some(tat) = self.global.allows(self.global_tat, now) {
            self.global_tat = tat;
        }
    }

    /// Takes from the bucket of `ip`; false if it is empty (or a new source finds the table
    /// full of busy sources).
    pub(crate) fn take_source(&mut self, now: Duration, ip: IpAddr) -> bool {
        let key = source_key(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= self.max_sources {
            self.sweep(now);
            if self.sources.len() >= self.max_sources {
                return false;
            }
        }
        let tat = self.sources.entry(key).or_insert(Duration::ZERO);
        match self.per_source.allows(*tat, now) {
            Some(next) => {
                *tat = next;
                true
            }
            None => false,
        }
    }

    /// Forgets sources whose bucket is full again (they behave as new).
    fn sweep(&mut self, now: Duration) {
        self.sources.retain(|_, tat| *tat > now);
        self.last_sweep = now;
    }

    pub(crate) fn deadline(&self) -> Option<Duration> {
        (!self.sources.is_empty()).then(|| self.last_sweep.saturating_add(SWEEP_EVERY))
    }

    pub(crate) fn handle_timeout(&mut self, now: Duration) {
        if self.deadline().is_some_and(|d| d <= now) {
            self.sweep(now);
        }
    }

    #[cfg(test)]
    pub(crate) fn sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_rate() {
        let rate = HandshakeRate { per_source: 10, per_source_burst: 3, ..Default::default() };
        let mut r = RateLimiter::new(&rate);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Duration::from_secs(100);
        assert!(r.take_source(t, ip));
        assert!(r.take_source(t, ip));
        assert!(r.take_source(t, ip));
        assert!(!r.take_source(t, ip));
        assert!(!r.take_source(t + ms(99), ip));
        assert!(r.take_source(t + ms(100), ip));
        assert!(!r.take_source(t + ms(150), ip));
        // Another source is independent; the same /64 is not.
        assert!(r.take_source(t, "192.0.2.2".parse().unwrap()));
        assert!(r.take_source(t, "2001:db8::1".parse().unwrap()));
        for _ in 0..2 {
            assert!(r.take_source(t, "2001:db8::2".parse().unwrap()));
        }
        assert!(!r.take_source(t, "2001:db8::ffff".parse().unwrap()));
    }

    #[test]
    fn global_load_and_sweep() {
        let rate = HandshakeRate { global: 100, global_burst: 2, max_sources: 2, ..Default::default() };
        let mut r = RateLimiter::new(&rate);
        let t = Duration::from_secs(5);
        assert!(!r.under_load(t));
        r.take_global(t);
        r.take_global(t);
        assert!(r.under_load(t));
        assert!(!r.under_load(t + ms(10)));

        assert!(r.take_source(t, "192.0.2.1".parse().unwrap()));
        assert!(r.take_source(t, "192.0.2.2".parse().unwrap()));
        // Table full of sources that are still "owed": a third is refused.
        assert!(!r.take_source(t, "192.0.2.3".parse().unwrap()));
        // Once they are idle, a sweep makes room.
        assert!(r.take_source(t + Duration::from_secs(1), "192.0.2.3".parse().unwrap()));
        assert_eq!(r.sources(), 1);
        assert_eq!(r.deadline(), Some(t + Duration::from_secs(2)));
        r.handle_timeout(t + Duration::from_secs(2));
        assert_eq!(r.sources(), 0);
        assert_eq!(r.deadline(), None);
    }
}
