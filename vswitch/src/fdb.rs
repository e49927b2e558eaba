//! The forwarding database (MAC table): on which port a (network, MAC) pair was last seen.
//!
//! I/O-free and clock-free: every time-dependent call takes `now`, a monotonic [`Duration`] with
//! an arbitrary origin. Aging is lazy: [`Fdb::lookup`] treats entries older than
//! [`FdbConfig::aging`] as absent, and [`Fdb::expire`] sweeps them out. The owner should call
//! `expire` periodically (e.g. every `aging / 10`): aged entries that were not swept yet still
//! occupy their port's quota ([`FdbConfig::per_port_max`]) and their table slot (though they are
//! the first choice for eviction).
//!
//! Layout: entries live in a slab (`Vec<Option<Entry>>` plus a free list), indexed by an
//! `FxHashMap` from (network, MAC) to the slab slot. Both are preallocated on [`Fdb::new`], so
//! [`Fdb::lookup`] and a refreshing [`Fdb::learn`] never allocate. When the table is full, a
//! CLOCK hand over the slab picks the learned entry to evict: entries already aged out are taken
//! at once, entries refreshed since the hand last passed get a second chance, static entries are
//! skipped.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::types::{Mac, NetworkId, PortId};

/// Largest table [`Fdb::new`] preallocates; a larger `max_entries` grows on demand.
const PREALLOC_MAX: usize = 1 << 20;
/// Ports whose quota table is preallocated.
const PREALLOC_PORTS: usize = 256;

/// Limits of the MAC table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// Most entries, learned and static together.
    pub max_entries: usize,
    /// Most learned entries per port (static entries do not count).
    pub per_port_max: usize,
    /// A learned entry not refreshed for longer than this is gone.
    pub aging: Duration,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig { max_entries: 8192, per_port_max: 1024, aging: Duration::from_secs(300) }
    }
}

/// What [`Fdb::learn`] did with a source MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Multicast, broadcast or all-zero source, or the MAC is held by a static entry.
    Ignored,
    /// Known on this port: its age restarts.
    Refreshed,
    /// A new entry.
    Learned,
    /// A new entry; the table was full and `victim` (a learned entry) made room.
    LearnedEvicting { victim: (NetworkId, Mac) },
    /// Known on port `from`, now on this port.
    Moved { from: PortId },
    /// Not learned: the port already has `per_port_max` learned entries. If the MAC was known
    /// on another port, that (now stale) entry is removed.
    PortLimit,
    /// Not learned: the table is full and every entry is static.
    TableFull,
}

/// Which entries [`Fdb::flush`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    All,
    Network(NetworkId),
    Port(PortId),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    #[error("the MAC table is full and holds only static entries; remove some first")]
    Full,
    #[error("{0} is not a unicast MAC address; a static entry needs a unicast, non-zero MAC")]
    InvalidMac(Mac),
}

/// Lifetime totals; they only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdbCounters {
    /// New learned entries (including those that replaced an aged-out entry for the same MAC).
    pub learned: u64,
    /// Learned entries removed because they aged out (by [`Fdb::expire`], or when the MAC was
    /// seen again after aging out).
    pub aged: u64,
    /// Entries evicted to make room in a full table.
    pub evicted: u64,
    /// Learned entries that moved to another port.
    pub moved: u64,
    /// New source MACs not learned because their port was at its cap.
    pub port_limit: u64,
}

/// One entry, as [`Fdb::iter`] yields it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntryRef {
    pub network: NetworkId,
    pub mac: Mac,
    pub port: PortId,
    /// When it was learned or last refreshed; zero for static entries.
    pub last_seen: Duration,
    pub is_static: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    net: NetworkId,
    mac: Mac,
}

impl Hash for Key {
    // Two integer writes instead of the derived length-prefixed byte slice: cheaper with FxHash.
    fn hash<H: Hasher>(&self, h: &mut H) {
        let m = self.mac.0;
        h.write_u64(u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]));
        h.write_u32(self.net.0);
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    net: NetworkId,
    mac: Mac,
    port: PortId,
    last_seen: Duration,
    is_static: bool,
    /// CLOCK's second-chance bit: set on refresh, cleared when the hand passes.
    referenced: bool,
}

impl Entry {
    fn key(&self) -> Key {
        Key { net: self.net, mac: self.mac }
    }

    fn is_aged(&self, now: Duration, aging: Duration) -> bool {
        !self.is_static && now.saturating_sub(self.last_seen) > aging
    }
}

/// The MAC table. See the [module docs](self).
#[derive(Clone)]
pub struct Fdb {
    cfg: FdbConfig,
    /// `max_entries`, capped to what a `u32` slot index reaches.
    max: usize,
    map: FxHashMap<Key, u32>,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// CLOCK hand: the next slot the eviction sweep looks at.
    hand: usize,
    /// Learned entries per port; ports with none are absent.
    port_counts: FxHashMap<PortId, u32>,
    /// Learned (non-static) entries in the table.
    learned_len: usize,
    /// Latest `now` seen, for eviction choices in calls that take no time (`add_static`).
    clock: Duration,
    counters: FdbCounters,
    /// Bumped whenever an entry is removed or changes port (never by a new entry or a
    /// refresh): whoever caches lookups (the datapath's workers) drops its cache when it moves.
    generation: u64,
}

impl fmt::Debug for Fdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fdb")
            .field("cfg", &self.cfg)
            .field("len", &self.map.len())
            .field("learned", &self.learned_len)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Fdb {
    pub fn new(cfg: FdbConfig) -> Self {
        let max = cfg.max_entries.min(u32::MAX as usize);
        let cap = max.min(PREALLOC_MAX);
        let mut map = FxHashMap::default();
        map.reserve(cap);
        Fdb {
            cfg,
            max,
            map,
            slots: Vec::with_capacity(cap),
            free: Vec::with_capacity(cap),
            hand: 0,
            port_counts: {
                let mut m = FxHashMap::default();
                m.reserve(PREALLOC_PORTS);
                m
            },
            learned_len: 0,
            clock: Duration::ZERO,
            counters: FdbCounters::default(),
            generation: 0,
        }
    }

    pub fn config(&self) -> &FdbConfig {
        &self.cfg
    }

    /// Records that `mac` was seen as a source on `port` of network `net`.
    pub fn learn(&mut self, now: Duration, net: NetworkId, mac: Mac, port: PortId) -> Learn {
        if mac.is_multicast() || mac.is_zero() {
            return Learn::Ignored;
        }
        self.clock = self.clock.max(now);
        let key = Key { net, mac };
        if let Some(&idx) = self.map.get(&key) {
            let aging = self.cfg.aging;
            let Some(e) = self.slots.get_mut(idx as usize).and_then(Option::as_mut) else {
                // The map and the slab disagree; cannot happen. Forget the key and relearn.
                debug_assert!(false, "fdb map points at an empty slot");
                self.map.remove(&key);
                return self.learn_new(now, key, port);
            };
            if e.is_static {
                return Learn::Ignored;
            }
            let aged = e.is_aged(now, aging);
            if !aged && e.port == port {
                e.last_seen = now;
                e.referenced = true;
                return Learn::Refreshed;
            }
            let from = e.port;
            if !aged {
                if self.port_len(port) >= self.cfg.per_port_max {
                    self.remove_slot(idx as usize);
                    self.counters.port_limit += 1;
                    return Learn::PortLimit;
                }
                if let Some(e) = self.slots.get_mut(idx as usize).and_then(Option::as_mut) {
                    e.port = port;
                    e.last_seen = now;
                    e.referenced = true;
                }
                self.dec_port(from);
                self.inc_port(port);
                self.counters.moved += 1;
                self.generation += 1;
                return Learn::Moved { from };
            }
            // Aged out but not swept yet: drop it and learn afresh.
            self.remove_slot(idx as usize);
            self.counters.aged += 1;
        }
        self.learn_new(now, key, port)
    }

    /// What [`Fdb::learn`] would answer for the same arguments, changing nothing (for
    /// `vswitchctl trace`). A test checks the two agree on every path.
    pub fn preview_learn(&self, now: Duration, net: NetworkId, mac: Mac, port: PortId) -> Learn {
        if mac.is_multicast() || mac.is_zero() {
            return Learn::Ignored;
        }
        let key = Key { net, mac };
        let mut full = self.map.len() >= self.max;
        if let Some(e) = self.map.get(&key).and_then(|&idx| self.slots.get(idx as usize)?.as_ref()) {
            if e.is_static {
                return Learn::Ignored;
            }
            if !e.is_aged(now, self.cfg.aging) {
                if e.port == port {
                    return Learn::Refreshed;
                }
                if self.port_len(port) >= self.cfg.per_port_max {
                    return Learn::PortLimit;
                }
                return Learn::Moved { from: e.port };
            }
            // Aged out: removed, then learned afresh.
            full = self.map.len() > self.max;
        }
        if self.port_len(port) >= self.cfg.per_port_max {
            return Learn::PortLimit;
        }
        if !full {
            return Learn::Learned;
        }
        match self.clock_victim(now) {
            Some(victim) => Learn::LearnedEvicting { victim },
            None => Learn::TableFull,
        }
    }

    /// The entry [`Fdb::evict`] would take now: from the hand on, the first learned entry not
    /// referenced (or aged); failing that (a first turn clears every bit), the first learned one.
    fn clock_victim(&self, now: Duration) -> Option<(NetworkId, Mac)> {
        let n = self.slots.len();
        let from_hand = (0..n).filter_map(|k| self.slots[(self.hand + k) % n].as_ref()).filter(|e| !e.is_static);
        let mut first = None;
        for e in from_hand {
            first.get_or_insert((e.net, e.mac));
            if !e.referenced || e.is_aged(now, self.cfg.aging) {
                return Some((e.net, e.mac));
            }
        }
        first
    }

    fn learn_new(&mut self, now: Duration, key: Key, port: PortId) -> Learn {
        if self.port_len(port) >= self.cfg.per_port_max {
            self.counters.port_limit += 1;
            return Learn::PortLimit;
        }
        let mut victim = None;
        if self.map.len() >= self.max {
            match self.evict(now) {
                Some(v) => victim = Some(v),
                None => return Learn::TableFull,
            }
        }
        self.insert(Entry { net: key.net, mac: key.mac, port, last_seen: now, is_static: false, referenced: false });
        self.counters.learned += 1;
        match victim {
            Some(victim) => Learn::LearnedEvicting { victim },
            None => Learn::Learned,
        }
    }

    /// The port `mac` was last seen on in `net`, unless that was longer than `aging` ago.
    pub fn lookup(&self, now: Duration, net: NetworkId, mac: Mac) -> Option<PortId> {
        let idx = *self.map.get(&Key { net, mac })?;
        let e = self.slots.get(idx as usize)?.as_ref()?;
        if e.is_aged(now, self.cfg.aging) {
            None
        } else {
            Some(e.port)
        }
    }

    /// Pins `mac` in `net` to `port`, replacing any entry for it. Static entries never age and
    /// are never evicted; they count toward `max_entries` but not toward `per_port_max`. A full
    /// table evicts a learned entry to make room.
    pub fn add_static(&mut self, net: NetworkId, mac: Mac, port: PortId) -> Result<(), FdbError> {
        if mac.is_multicast() || mac.is_zero() {
            return Err(FdbError::InvalidMac(mac));
        }
        let key = Key { net, mac };
        if let Some(&idx) = self.map.get(&key) {
            if let Some(e) = self.slots.get_mut(idx as usize).and_then(Option::as_mut) {
                let was_learned = (!e.is_static).then_some(e.port);
                e.port = port;
                e.is_static = true;
                self.generation += 1;
                e.last_seen = Duration::ZERO;
                e.referenced = false;
                if let Some(old) = was_learned {
                    self.dec_port(old);
                    self.learned_len -= 1;
                }
                return Ok(());
            }
            debug_assert!(false, "fdb map points at an empty slot");
            self.map.remove(&key);
        }
        if self.map.len() >= self.max && self.evict(self.clock).is_none() {
            return Err(FdbError::Full);
        }
        self.insert(Entry { net, mac, port, last_seen: Duration::ZERO, is_static: true, referenced: false });
        Ok(())
    }

    /// Removes the entry for `mac` in `net`, learned or static (aged-out ones too). True if
    /// there was one.
    pub fn remove(&mut self, net: NetworkId, mac: Mac) -> bool {
        match self.map.get(&Key { net, mac }) {
            Some(&idx) => self.remove_slot(idx as usize).is_some(),
            None => false,
        }
    }

    /// Removes the learned entries `what` selects, and the static ones too if `include_static`.
    /// Returns how many were removed.
    pub fn flush(&mut self, what: Flush, include_static: bool) -> usize {
        if matches!(what, Flush::All) && include_static {
            let n = self.map.len();
            self.map.clear();
            self.slots.clear();
            self.free.clear();
            self.port_counts.clear();
            self.learned_len = 0;
            self.hand = 0;
            self.generation += 1;
            return n;
        }
        self.remove_where(|e| {
            (include_static || !e.is_static)
                && match what {
                    Flush::All => true,
                    Flush::Network(n) => e.net == n,
                    Flush::Port(p) => e.port == p,
                }
        })
    }

    /// Removes the learned entries older than `aging`; returns how many.
    pub fn expire(&mut self, now: Duration) -> usize {
        self.clock = self.clock.max(now);
        let aging = self.cfg.aging;
        let n = self.remove_where(|e| e.is_aged(now, aging));
        self.counters.aged += n as u64;
        n
    }

    /// Changes whenever an entry is removed or moves to another port; stays put while entries
    /// are only added or refreshed. A lookup cached at one generation holds while it lasts.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Entries in the table, learned and static, aged-out ones not yet swept included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Learned entries on `port` (static ones are not counted).
    pub fn port_len(&self, port: PortId) -> usize {
        self.port_counts.get(&port).map_or(0, |&c| c as usize)
    }

    pub fn counters(&self) -> FdbCounters {
        self.counters
    }

    /// Every entry, in no particular order; aged-out entries not yet swept included.
    pub fn iter(&self) -> impl Iterator<Item = FdbEntryRef> + '_ {
        self.slots.iter().flatten().map(|e| FdbEntryRef {
            network: e.net,
            mac: e.mac,
            port: e.port,
            last_seen: e.last_seen,
            is_static: e.is_static,
        })
    }

    // ---- internals ----

    fn inc_port(&mut self, port: PortId) {
        *self.port_counts.entry(port).or_insert(0) += 1;
    }

    fn dec_port(&mut self, port: PortId) {
        if let Some(c) = self.port_counts.get_mut(&port) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.port_counts.remove(&port);
            }
        }
    }

    fn insert(&mut self, e: Entry) {
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(e);
                i
            }
            None => {
                // `len <= max <= u32::MAX`, and a full slab has no free slot only when
                // `slots.len() == len < max`, so this fits.
                let i = self.slots.len() as u32;
                self.slots.push(Some(e));
                i
            }
        };
        self.map.insert(e.key(), idx);
        if !e.is_static {
            self.inc_port(e.port);
            self.learned_len += 1;
        }
    }

    fn remove_slot(&mut self, idx: usize) -> Option<Entry> {
        let e = self.slots.get_mut(idx)?.take()?;
        self.generation += 1;
        self.map.remove(&e.key());
        if !e.is_static {
            self.dec_port(e.port);
            self.learned_len -= 1;
        }
        self.free.push(idx as u32);
        Some(e)
    }

    fn remove_where(&mut self, mut pred: impl FnMut(&Entry) -> bool) -> usize {
        let mut n = 0;
        for idx in 0..self.slots.len() {
            if self.slots[idx].as_ref().is_some_and(&mut pred) {
                self.remove_slot(idx);
                n += 1;
            }
        }
        n
    }

    /// Evicts one learned entry (CLOCK): returns its key, or `None` if every entry is static.
    fn evict(&mut self, now: Duration) -> Option<(NetworkId, Mac)> {
        if self.learned_len == 0 || self.slots.is_empty() {
            return None;
        }
        let aging = self.cfg.aging;
        let n = self.slots.len();
        // Two full turns always suffice: the first clears every referenced bit.
        for _ in 0..=2 * n {
            let idx = self.hand;
            self.hand = if idx + 1 >= n { 0 } else { idx + 1 };
            let Some(e) = self.slots[idx].as_mut() else {
                continue;
            };
            if e.is_static {
                continue;
            }
            if e.referenced && !e.is_aged(now, aging) {
                e.referenced = false;
                continue;
            }
            let victim = (e.net, e.mac);
            self.remove_slot(idx);
            self.counters.evicted += 1;
            return Some(victim);
        }
        debug_assert!(false, "CLOCK found no victim among {} learned entries", self.learned_len);
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;

    use super::*;

    const N1: NetworkId = NetworkId(1);
    const N2: NetworkId = NetworkId(2);
    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);
    const P3: PortId = PortId(3);

    fn mac(i: u32) -> Mac {
        let b = i.to_be_bytes();
        Mac([0x02, 0, b[0], b[1], b[2], b[3]])
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn small(max: usize, per_port: usize) -> Fdb {
        Fdb::new(FdbConfig { max_entries: max, per_port_max: per_port, aging: secs(10) })
    }

    #[test]
    fn defaults() {
        let c = FdbConfig::default();
        assert_eq!((c.max_entries, c.per_port_max, c.aging), (8192, 1024, secs(300)));
        let f = Fdb::new(c);
        assert!(f.is_empty());
        assert_eq!(f.config(), &c);
    }

    /// The generation moves exactly when a cached lookup could have gone wrong: an entry
    /// removed (by hand, flush, expiry, eviction, the port cap) or moved, never on a new
    /// entry or a refresh.
    #[test]
    fn generation_moves_on_removal_and_move_only() {
        let mut f = small(2, 8);
        let g = |f: &Fdb| f.generation();
        f.learn(secs(0), N1, mac(1), P1);
        f.learn(secs(0), N1, mac(2), P2);
        f.learn(secs(1), N1, mac(1), P1);
        assert_eq!(g(&f), 0, "new entries and refreshes keep the generation");
        let mut last = g(&f);
        let mut moved = |f: &Fdb, what: &str| {
            assert!(g(f) > last, "{what} must move the generation");
            last = g(f);
        };
        f.learn(secs(2), N1, mac(1), P3);
        moved(&f, "a move");
        f.learn(secs(3), N1, mac(3), P1);
        moved(&f, "an eviction");
        assert!(f.remove(N1, mac(3)));
        moved(&f, "a removal");
        assert_eq!(f.expire(secs(60)), 1);
        moved(&f, "an expiry");
        f.flush(Flush::All, true);
        moved(&f, "a flush");
        let mut capped = small(16, 1);
        capped.learn(secs(0), N1, mac(1), P1);
        capped.learn(secs(0), N1, mac(2), P2);
        let before = g(&capped);
        assert_eq!(capped.learn(secs(1), N1, mac(2), P1), Learn::PortLimit);
        assert!(g(&capped) > before, "a stale entry dropped at the port cap moves the generation");
        let mut pinned = small(16, 8);
        pinned.learn(secs(0), N1, mac(2), P2);
        pinned.add_static(N1, mac(7), P1).unwrap();
        assert_eq!(g(&pinned), 0, "a new static entry keeps the generation");
        pinned.add_static(N1, mac(2), P1).unwrap();
        assert!(g(&pinned) > 0, "a learned entry made static elsewhere moves the generation");
    }

    #[test]
    fn group_and_zero_sources_are_ignored() {
        let mut f = small(16, 5);
        assert_eq!(f.learn(secs(0), N1, Mac::BROADCAST, P1), Learn::Ignored);
        assert_eq!(f.learn(secs(0), N1, Mac([0x01, 0, 0x5e, 0, 0, 1]), P1), Learn::Ignored);
        assert_eq!(f.learn(secs(0), N1, Mac([0x33, 0x33, 0, 0, 0, 1]), P1), Learn::Ignored);
        assert_eq!(f.learn(secs(0), N1, Mac::default(), P1), Learn::Ignored);
        assert!(f.is_empty());
        assert_eq!(f.counters(), FdbCounters::default());
    }

    #[test]
    fn learn_lookup_refresh() {
        let mut f = small(16, 5);
        assert_eq!(f.lookup(secs(0), N1, mac(1)), None);
        assert_eq!(f.learn(secs(0), N1, mac(1), P1), Learn::Learned);
        assert_eq!(f.lookup(secs(0), N1, mac(1)), Some(P1));
        assert_eq!(f.learn(secs(8), N1, mac(1), P1), Learn::Refreshed);
        // Refreshed at 8: still there at 18, gone after.
        assert_eq!(f.lookup(secs(18), N1, mac(1)), Some(P1));
        assert_eq!(f.lookup(secs(18) + Duration::from_nanos(1), N1, mac(1)), None);
        assert_eq!(f.counters().learned, 1);
        assert_eq!(f.len(), 1);
        assert_eq!(f.port_len(P1), 1);
    }

    #[test]
    fn networks_are_separate() {
        let mut f = small(16, 5);
        assert_eq!(f.learn(secs(0), N1, mac(1), P1), Learn::Learned);
        assert_eq!(f.learn(secs(0), N2, mac(1), P2), Learn::Learned);
        assert_eq!(f.lookup(secs(0), N1, mac(1)), Some(P1));
        assert_eq!(f.lookup(secs(0), N2, mac(1)), Some(P2));
        assert_eq!(f.lookup(secs(0), NetworkId(3), mac(1)), None);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn move_to_another_port() {
        let mut f = small(16, 5);
        f.learn(secs(0), N1, mac(1), P1);
        assert_eq!(f.learn(secs(1), N1, mac(1), P2), Learn::Moved { from: P1 });
        assert_eq!(f.lookup(secs(1), N1, mac(1)), Some(P2));
        assert_eq!((f.port_len(P1), f.port_len(P2)), (0, 1));
        assert_eq!(f.counters().moved, 1);
        assert_eq!(f.counters().learned, 1);
    }

    #[test]
    fn move_to_a_full_port_drops_the_stale_entry() {
        let mut f = small(16, 2);
        f.learn(secs(0), N1, mac(1), P1);
        f.learn(secs(0), N1, mac(2), P2);
        f.learn(secs(0), N1, mac(3), P2);
        assert_eq!(f.learn(secs(1), N1, mac(1), P2), Learn::PortLimit);
        assert_eq!(f.lookup(secs(1), N1, mac(1)), None);
        assert_eq!((f.port_len(P1), f.port_len(P2)), (0, 2));
        assert_eq!(f.counters().port_limit, 1);
        assert_eq!(f.counters().moved, 0);
    }

    #[test]
    fn per_port_limit() {
        let mut f = small(16, 2);
        assert_eq!(f.learn(secs(0), N1, mac(1), P1), Learn::Learned);
        assert_eq!(f.learn(secs(0), N2, mac(2), P1), Learn::Learned);
        assert_eq!(f.learn(secs(0), N1, mac(3), P1), Learn::PortLimit);
        assert_eq!(f.lookup(secs(0), N1, mac(3)), None);
        // Refreshing known MACs on a full port still works.
        assert_eq!(f.learn(secs(1), N1, mac(1), P1), Learn::Refreshed);
        // Other ports are unaffected.
        assert_eq!(f.learn(secs(0), N1, mac(3), P2), Learn::Learned);
        assert_eq!(f.counters().port_limit, 1);
        // Static entries do not count toward the cap.
        f.add_static(N1, mac(9), P2).unwrap();
        assert_eq!(f.learn(secs(0), N1, mac(4), P2), Learn::Learned);
        assert_eq!(f.port_len(P2), 2);
        // Removing one frees a place.
        assert!(f.remove(N1, mac(1)));
        assert_eq!(f.learn(secs(0), N1, mac(3), P1), Learn::Moved { from: P2 });
    }

    #[test]
    fn aged_entries_are_relearned_as_new() {
        let mut f = small(16, 1);
        f.learn(secs(0), N1, mac(1), P1);
        // Aged out, even on another port: new entry, not a move.
        assert_eq!(f.learn(secs(11), N1, mac(1), P2), Learn::Learned);
        assert_eq!(f.counters().aged, 1);
        assert_eq!(f.counters().moved, 0);
        assert_eq!(f.counters().learned, 2);
        assert_eq!((f.port_len(P1), f.port_len(P2)), (0, 1));
        // Same port, aged: learned again (the old one freed the port's only place).
        assert_eq!(f.learn(secs(30), N1, mac(1), P2), Learn::Learned);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn aged_entries_keep_their_port_quota_until_swept() {
        let mut f = small(16, 1);
        f.learn(secs(0), N1, mac(1), P1);
        assert_eq!(f.learn(secs(20), N1, mac(2), P1), Learn::PortLimit);
        assert_eq!(f.expire(secs(20)), 1);
        assert_eq!(f.learn(secs(20), N1, mac(2), P1), Learn::Learned);
    }

    #[test]
    fn full_table_evicts_a_learned_entry() {
        let mut f = small(4, 10);
        for i in 0..4 {
            assert_eq!(f.learn(secs(0), N1, mac(i), P1), Learn::Learned);
        }
        f.learn(secs(1), N1, mac(0), P1); // refreshed: second chance
        match f.learn(secs(1), N1, mac(10), P2) {
            Learn::LearnedEvicting { victim } => {
                assert_eq!(victim.0, N1);
                assert_ne!(victim.1, mac(0), "the refreshed entry is not the first choice");
                assert_eq!(f.lookup(secs(1), N1, victim.1), None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.len(), 4);
        assert_eq!(f.counters().evicted, 1);
        assert_eq!(f.counters().learned, 5);
        assert_eq!(f.lookup(secs(1), N1, mac(10)), Some(P2));
        assert_eq!(f.lookup(secs(1), N1, mac(0)), Some(P1));
    }

    #[test]
    fn preview_learn_agrees_with_learn() {
        let mut f = small(4, 3);
        let mut x: u64 = 0xfeed_f00d_1234_5678;
        for i in 0..4_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (m, p, now) = (mac((x % 9) as u32), PortId(1 + ((x >> 8) % 3) as u32), secs(i / 40));
            if x.is_multiple_of(97) {
                let _ = f.add_static(N1, m, p);
                continue;
            }
            let preview = f.preview_learn(now, N1, m, p);
            let before = f.counters();
            assert_eq!(preview, f.clone().learn(now, N1, m, p), "step {i}");
            assert_eq!(f.counters(), before, "preview changed nothing");
            f.learn(now, N1, m, p);
        }
    }

    #[test]
    fn eviction_prefers_aged_entries() {
        let mut f = small(4, 10);
        for i in 0..3 {
            f.learn(secs(5), N1, mac(i), P1);
        }
        f.learn(secs(0), N1, mac(3), P1);
        f.learn(secs(1), N1, mac(3), P1); // referenced, but aged out at 11
        for i in 0..3 {
            f.learn(secs(12), N1, mac(i), P1); // referenced and fresh
        }
        // The hand passes the three fresh entries (clearing their bits) and takes the aged one,
        // although its referenced bit is set too.
        assert_eq!(f.learn(secs(12), N1, mac(10), P1), Learn::LearnedEvicting { victim: (N1, mac(3)) });
    }

    #[test]
    fn eviction_walks_the_table() {
        // Filling a full table with new MACs evicts each old one once, not the same slot.
        let mut f = small(8, 100);
        for i in 0..8 {
            f.learn(secs(0), N1, mac(i), P1);
        }
        let mut victims = std::collections::HashSet::new();
        for i in 100..108 {
            match f.learn(secs(0), N1, mac(i), P1) {
                Learn::LearnedEvicting { victim } => assert!(victims.insert(victim)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(victims, (0..8).map(|i| (N1, mac(i))).collect());
    }

    #[test]
    fn table_full_of_static_entries() {
        let mut f = small(2, 10);
        f.add_static(N1, mac(1), P1).unwrap();
        f.add_static(N1, mac(2), P1).unwrap();
        assert_eq!(f.learn(secs(0), N1, mac(3), P1), Learn::TableFull);
        assert!(matches!(f.add_static(N1, mac(3), P1), Err(FdbError::Full)));
        // Replacing an existing one needs no room.
        f.add_static(N1, mac(2), P2).unwrap();
        assert_eq!(f.lookup(secs(0), N1, mac(2)), Some(P2));
        assert_eq!(f.counters(), FdbCounters::default());
        // Zero capacity: nothing fits.
        let mut z = small(0, 10);
        assert_eq!(z.learn(secs(0), N1, mac(3), P1), Learn::TableFull);
        assert!(matches!(z.add_static(N1, mac(3), P1), Err(FdbError::Full)));
    }

    #[test]
    fn static_entries() {
        let mut f = small(2, 1);
        f.learn(secs(0), N1, mac(1), P1);
        // Replaces the learned entry, frees the port's learned place.
        f.add_static(N1, mac(1), P2).unwrap();
        assert_eq!(f.port_len(P1), 0);
        assert_eq!(f.port_len(P2), 0);
        assert_eq!(f.len(), 1);
        // Learning never overrides it, and it never ages.
        assert_eq!(f.learn(secs(1), N1, mac(1), P1), Learn::Ignored);
        assert_eq!(f.lookup(secs(1_000_000), N1, mac(1)), Some(P2));
        assert_eq!(f.expire(secs(1_000_000)), 0);
        // A full table evicts a learned entry for a static one.
        f.learn(secs(0), N1, mac(2), P1);
        f.add_static(N1, mac(3), P1).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f.lookup(secs(0), N1, mac(2)), None);
        assert_eq!(f.counters().evicted, 1);
        // And learned entries never evict static ones.
        assert_eq!(f.learn(secs(0), N1, mac(4), P1), Learn::TableFull);
        let e: Vec<_> = f.iter().collect();
        assert!(e.iter().all(|e| e.is_static && e.last_seen == Duration::ZERO));
        // Group and zero MACs are refused.
        assert_eq!(f.add_static(N1, Mac::BROADCAST, P1), Err(FdbError::InvalidMac(Mac::BROADCAST)));
        assert!(f.add_static(N1, Mac::default(), P1).is_err());
    }

    #[test]
    fn remove_and_flush() {
        let mut f = small(16, 5);
        f.learn(secs(0), N1, mac(1), P1);
        f.learn(secs(0), N1, mac(2), P2);
        f.learn(secs(0), N2, mac(3), P3);
        f.add_static(N1, mac(4), P1).unwrap();
        f.add_static(N2, mac(5), P3).unwrap();
        assert!(f.remove(N1, mac(2)));
        assert!(!f.remove(N1, mac(2)));
        assert_eq!(f.port_len(P2), 0);
        assert_eq!(f.flush(Flush::Port(P1), false), 1);
        assert_eq!(f.lookup(secs(0), N1, mac(4)), Some(P1));
        assert_eq!(f.flush(Flush::Port(P1), true), 1);
        assert_eq!(f.flush(Flush::Network(N2), false), 1);
        assert_eq!(f.len(), 1);
        f.learn(secs(0), N1, mac(1), P1);
        assert_eq!(f.flush(Flush::All, false), 1);
        assert_eq!(f.len(), 1);
        f.learn(secs(0), N1, mac(1), P1);
        assert_eq!(f.flush(Flush::All, true), 2);
        assert!(f.is_empty());
        assert_eq!(f.port_len(P1), 0);
        // Usable again after a full flush.
        assert_eq!(f.learn(secs(0), N1, mac(1), P1), Learn::Learned);
        assert_eq!(f.lookup(secs(0), N1, mac(1)), Some(P1));
    }

    #[test]
    fn expire_sweeps_and_counts() {
        let mut f = small(16, 5);
        f.learn(secs(0), N1, mac(1), P1);
        f.learn(secs(5), N1, mac(2), P1);
        f.add_static(N1, mac(3), P1).unwrap();
        assert_eq!(f.expire(secs(10)), 0);
        assert_eq!(f.expire(secs(11)), 1);
        assert_eq!(f.len(), 2);
        assert_eq!(f.port_len(P1), 1);
        assert_eq!(f.counters().aged, 1);
        assert_eq!(f.expire(secs(100)), 1);
        assert_eq!(f.counters().aged, 2);
    }

    #[test]
    fn time_going_backwards_does_not_panic() {
        let mut f = small(16, 5);
        f.learn(secs(100), N1, mac(1), P1);
        assert_eq!(f.lookup(secs(0), N1, mac(1)), Some(P1));
        assert_eq!(f.expire(secs(0)), 0);
        assert_eq!(f.learn(secs(0), N1, mac(1), P1), Learn::Refreshed);
    }

    #[test]
    fn huge_limits_do_not_overallocate() {
        let mut f = Fdb::new(FdbConfig { max_entries: usize::MAX, per_port_max: usize::MAX, aging: Duration::MAX });
        assert_eq!(f.learn(Duration::MAX, N1, mac(1), P1), Learn::Learned);
        assert_eq!(f.lookup(Duration::ZERO, N1, mac(1)), Some(P1));
    }

    // ---- model-based property test ----

    /// The table size is drawn per case (mostly 16); the other limits are fixed.
    const PER_PORT: usize = 5;
    const AGING: Duration = Duration::from_secs(10);

    #[derive(Debug, Clone)]
    enum Op {
        Learn(u32, usize, u32),
        Lookup(u32, usize),
        Advance(u64),
        AddStatic(u32, usize, u32),
        Remove(u32, usize),
        Flush(u8, u32, bool),
        Expire,
    }

    /// A small MAC space with group and zero addresses in it.
    fn pmac(i: usize) -> Mac {
        match i {
            0 => Mac::default(),
            1 => Mac::BROADCAST,
            2 => Mac([0x01, 0x00, 0x5e, 0, 0, 1]),
            _ => Mac([0x02, 0, 0, 0, 0, i as u8]),
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        let net = 0u32..2;
        let m = 0usize..28;
        let port = 0u32..5;
        prop_oneof![
            8 => (net.clone(), m.clone(), port.clone()).prop_map(|(n, m, p)| Op::Learn(n, m, p)),
            3 => (net.clone(), m.clone()).prop_map(|(n, m)| Op::Lookup(n, m)),
            3 => (0u64..6000).prop_map(Op::Advance),
            1 => (net.clone(), m.clone(), port.clone()).prop_map(|(n, m, p)| Op::AddStatic(n, m, p)),
            1 => (net.clone(), m).prop_map(|(n, m)| Op::Remove(n, m)),
            1 => (0u8..3, 0u32..5, any::<bool>()).prop_map(|(k, x, s)| Op::Flush(k, x, s)),
            1 => Just(Op::Expire),
        ]
    }

    #[derive(Default)]
    struct Model {
        max: usize,
        now: Duration,
        map: HashMap<(NetworkId, Mac), (PortId, Duration, bool)>,
        c: FdbCounters,
    }

    impl Model {
        fn aged(&self, seen: Duration, is_static: bool) -> bool {
            !is_static && self.now.saturating_sub(seen) > AGING
        }
        fn port_len(&self, port: PortId) -> usize {
            self.map.values().filter(|(p, _, s)| *p == port && !*s).count()
        }
        fn learned(&self) -> usize {
            self.map.values().filter(|(_, _, s)| !*s).count()
        }

        /// Applies the rules; `actual` supplies only the eviction victim.
        fn learn(&mut self, net: NetworkId, mac: Mac, port: PortId, actual: Learn) -> Learn {
            if mac.is_multicast() || mac.is_zero() {
                return Learn::Ignored;
            }
            let k = (net, mac);
            if let Some(&(p, seen, st)) = self.map.get(&k) {
                if st {
                    return Learn::Ignored;
                }
                if !self.aged(seen, st) {
                    if p == port {
                        self.map.insert(k, (p, self.now, false));
                        return Learn::Refreshed;
                    }
                    if self.port_len(port) >= PER_PORT {
                        self.map.remove(&k);
                        self.c.port_limit += 1;
                        return Learn::PortLimit;
                    }
                    self.map.insert(k, (port, self.now, false));
                    self.c.moved += 1;
                    return Learn::Moved { from: p };
                }
                self.map.remove(&k);
                self.c.aged += 1;
            }
            if self.port_len(port) >= PER_PORT {
                self.c.port_limit += 1;
                return Learn::PortLimit;
            }
            let mut out = Learn::Learned;
            if self.map.len() >= self.max {
                if self.learned() == 0 {
                    return Learn::TableFull;
                }
                let Learn::LearnedEvicting { victim } = actual else {
                    return Learn::LearnedEvicting { victim: (NetworkId(u32::MAX), Mac::default()) };
                };
                let v = self.map.remove(&victim);
                assert!(matches!(v, Some((_, _, false))), "victim {victim:?} was {v:?}");
                self.c.evicted += 1;
                out = actual;
            }
            self.map.insert(k, (port, self.now, false));
            self.c.learned += 1;
            out
        }
    }

    fn check(f: &Fdb, m: &Model) {
        assert!(f.len() <= m.max);
        assert_eq!(f.len(), m.map.len());
        assert_eq!(f.is_empty(), m.map.is_empty());
        for p in 0..5 {
            let p = PortId(p);
            assert!(f.port_len(p) <= PER_PORT);
            assert_eq!(f.port_len(p), m.port_len(p), "port_len({p})");
        }
        let got: BTreeMap<_, _> = f.iter().map(|e| ((e.network, e.mac), (e.port, e.last_seen, e.is_static))).collect();
        assert_eq!(got.len(), f.len());
        assert!(got.keys().all(|(_, mac)| !mac.is_multicast() && !mac.is_zero()));
        let want: BTreeMap<_, _> = m.map.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, want);
        assert_eq!(f.counters(), m.c);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn matches_model(
            max in prop_oneof![Just(16usize), Just(4), 0usize..24],
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let mut f = Fdb::new(FdbConfig { max_entries: max, per_port_max: PER_PORT, aging: AGING });
            let mut m = Model { max, ..Model::default() };
            for op in ops {
                match op {
                    Op::Learn(n, i, p) => {
                        let (n, mac, p) = (NetworkId(n), pmac(i), PortId(p));
                        let got = f.learn(m.now, n, mac, p);
                        let want = m.learn(n, mac, p, got);
                        prop_assert_eq!(got, want);
                    }
                    Op::Lookup(n, i) => {
                        let k = (NetworkId(n), pmac(i));
                        let want = m.map.get(&k).filter(|(_, seen, st)| !m.aged(*seen, *st)).map(|e| e.0);
                        prop_assert_eq!(f.lookup(m.now, k.0, k.1), want);
                    }
                    Op::Advance(ms) => m.now += Duration::from_millis(ms),
                    Op::AddStatic(n, i, p) => {
                        let k = (NetworkId(n), pmac(i));
                        let got = f.add_static(k.0, k.1, PortId(p));
                        if k.1.is_multicast() || k.1.is_zero() {
                            prop_assert_eq!(got, Err(FdbError::InvalidMac(k.1)));
                        } else if m.map.contains_key(&k) {
                            prop_assert_eq!(got, Ok(()));
                            m.map.insert(k, (PortId(p), Duration::ZERO, true));
                        } else if m.map.len() >= m.max {
                            if m.learned() == 0 {
                                prop_assert_eq!(got, Err(FdbError::Full));
                            } else {
                                prop_assert_eq!(got, Ok(()));
                                let present: std::collections::HashSet<_> =
                                    f.iter().map(|e| (e.network, e.mac)).collect();
                                let gone: Vec<_> =
                                    m.map.keys().filter(|k| !present.contains(k)).copied().collect();
                                prop_assert_eq!(gone.len(), 1);
                                let v = m.map.remove(&gone[0]);
                                prop_assert!(matches!(v, Some((_, _, false))));
                                m.c.evicted += 1;
                                m.map.insert(k, (PortId(p), Duration::ZERO, true));
                            }
                        } else {
                            prop_assert_eq!(got, Ok(()));
                            m.map.insert(k, (PortId(p), Duration::ZERO, true));
                        }
                    }
                    Op::Remove(n, i) => {
                        let k = (NetworkId(n), pmac(i));
                        prop_assert_eq!(f.remove(k.0, k.1), m.map.remove(&k).is_some());
                    }
                    Op::Flush(kind, x, st) => {
                        let what = match kind {
                            0 => Flush::All,
                            1 => Flush::Network(NetworkId(x % 2)),
                            _ => Flush::Port(PortId(x)),
                        };
                        let before = m.map.len();
                        m.map.retain(|(n, _), (p, _, s)| {
                            let sel = match what {
                                Flush::All => true,
                                Flush::Network(w) => *n == w,
                                Flush::Port(w) => *p == w,
                            };
                            !(sel && (st || !*s))
                        });
                        prop_assert_eq!(f.flush(what, st), before - m.map.len());
                    }
                    Op::Expire => {
                        let before = m.map.len();
                        let now = m.now;
                        m.map.retain(|_, (_, seen, s)| *s || now.saturating_sub(*seen) <= AGING);
                        let n = before - m.map.len();
                        m.c.aged += n as u64;
                        prop_assert_eq!(f.expire(now), n);
                    }
                }
                check(&f, &m);
            }
        }
    }
}
