//! The family-neutral bookkeeping behind [`crate::Pool`] and [`crate::Pool6`]: host numbers
//! (IPv4 addresses are numbers below 2^32), the allocation range, auxiliary addresses, the
//! addresses in use with their owners, and the serial cursor.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::{addr_of, num, span, IpamError, SetupError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hosts {
    subnet: IpNet,
    /// The host numbers that may be assigned at all: the subnet without its network address
    /// (and, for IPv4, without its broadcast address).
    lo: u128,
    hi: u128,
    gateway: u128,
    /// The `ip_range` as given (truncated); `alo..=ahi` is where `allocate` looks, inside
    /// `lo..=hi` (all of it without a range).
    range: Option<IpNet>,
    alo: u128,
    ahi: u128,
    /// Never handed out nor reservable. Inside `lo..=hi`, never the gateway.
    aux: BTreeSet<u128>,
    /// Addresses in use, with their owner when leased. Always assignable addresses.
    used: BTreeMap<u128, Option<String>>,
    /// Where the next serial search starts; inside `alo..=ahi`.
    cursor: u128,
    /// Addresses of `alo..=ahi` that `allocate` may hand out (gateway and aux excluded), and how
    /// many of those are in use: derived, kept so exhaustion is known without a walk.
    range_cap: u128,
    range_used: u128,
}

impl Hosts {
    /// A pool for `subnet` (host bits cleared); the gateway defaults to the first host.
    pub(crate) fn new(subnet: IpNet, gateway: Option<IpAddr>) -> Result<Hosts, IpamError> {
        let subnet = subnet.trunc();
        let v6 = matches!(subnet, IpNet::V6(_));
        if subnet.prefix_len() > if v6 { 120 } else { 30 } {
            return Err(IpamError::TooSmall { subnet });
        }
        let (net, bcast) = span(subnet);
        let (lo, hi) = (net + 1, if v6 { bcast } else { bcast - 1 });
        let gateway = match gateway {
            None => lo,
            Some(g) if g.is_ipv6() == v6 && (lo..=hi).contains(&num(g)) => num(g),
            Some(g) => return Err(IpamError::BadGateway { gateway: g, subnet }),
        };
        let mut h = Hosts {
            subnet,
            lo,
            hi,
            gateway,
            range: None,
            alo: lo,
            ahi: hi,
            aux: BTreeSet::new(),
            used: BTreeMap::new(),
            cursor: lo,
            range_cap: 0,
            range_used: 0,
        };
        h.range_cap = h.count_range_cap();
        Ok(h)
    }

    /// Applies an allocation range and auxiliary addresses to a fresh pool. `strict` (restoring
    /// a snapshot) also refuses an auxiliary address listed twice.
    pub(crate) fn set_options(
        &mut self,
        range: Option<IpNet>,
        aux: impl IntoIterator<Item = IpAddr>,
        strict: bool,
    ) -> Result<(), SetupError> {
        debug_assert!(self.used.is_empty(), "options are set before any address is used");
        let subnet = self.subnet;
        if let Some(r) = range {
            let r = r.trunc();
            let bad = |reason: String| SetupError::BadRange { range: r, subnet, reason };
            if !subnet.contains(&r) {
                return Err(bad("it is not inside the subnet".into()));
            }
            let (rn, rb) = span(r);
            let (alo, ahi) = (rn.max(self.lo), rb.min(self.hi));
            if alo > ahi {
                return Err(bad("it holds no host address".into()));
            }
            (self.range, self.alo, self.ahi, self.cursor) = (Some(r), alo, ahi, alo);
        }
        for a in aux {
            let bad = |reason: String| SetupError::BadAux { addr: a, subnet, reason };
            if !subnet.contains(&a) {
                return Err(bad("it is outside the subnet".into()));
            }
            let n = num(a);
            if self.aux.contains(&n) {
                if strict {
                    return Err(bad("it is listed twice".into()));
                }
                continue;
            }
            if let Some(what) = self.reserved(n) {
                return Err(bad(format!("it is the {what} address")));
            }
            self.aux.insert(n);
        }
        self.range_cap = self.count_range_cap();
        if self.range_cap == 0 {
            return Err(SetupError::BadRange {
                range: self.range.unwrap_or(subnet),
                subnet,
                reason: "it leaves no address to hand out (only the gateway and auxiliary addresses)".into(),
            });
        }
        Ok(())
    }

    fn count_range_cap(&self) -> u128 {
        let (alo, ahi) = (self.alo, self.ahi);
        (ahi - alo + 1) - u128::from((alo..=ahi).contains(&self.gateway)) - self.aux.range(alo..=ahi).count() as u128
    }

    fn v6(&self) -> bool {
        matches!(self.subnet, IpNet::V6(_))
    }

    fn ip(&self, n: u128) -> IpAddr {
        addr_of(self.v6(), n)
    }

    /// What makes host number `n` of the subnet unassignable, if anything.
    fn reserved(&self, n: u128) -> Option<&'static str> {
        let (net, bcast) = span(self.subnet);
        if n == net {
            Some(if self.v6() { "subnet-router" } else { "network" })
        } else if n == bcast && !self.v6() {
            Some("broadcast")
        } else if n == self.gateway {
            Some("gateway")
        } else if self.aux.contains(&n) {
            Some("auxiliary")
        } else {
            None
        }
    }

    /// Whether `addr` could be assigned, ignoring whether it is in use; its host number if so.
    pub(crate) fn check(&self, addr: IpAddr) -> Result<u128, IpamError> {
        let subnet = self.subnet;
        if !subnet.contains(&addr) {
            return Err(IpamError::OutOfRange { addr, subnet });
        }
        let n = num(addr);
        match self.reserved(n) {
            Some(what) => Err(IpamError::Reserved { addr, what, subnet }),
            None => Ok(n),
        }
    }

    pub(crate) fn range(&self) -> Option<IpNet> {
        self.range
    }

    pub(crate) fn gateway(&self) -> u128 {
        self.gateway
    }

    pub(crate) fn cursor(&self) -> u128 {
        self.cursor
    }

    pub(crate) fn aux(&self) -> impl Iterator<Item = u128> + '_ {
        self.aux.iter().copied()
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = (u128, Option<&str>)> + '_ {
        self.used.iter().map(|(a, o)| (*a, o.as_deref()))
    }

    pub(crate) fn used(&self) -> impl Iterator<Item = u128> + '_ {
        self.used.keys().copied()
    }

    pub(crate) fn leases(&self) -> impl Iterator<Item = (u128, &str)> + '_ {
        self.used.iter().filter_map(|(a, o)| o.as_deref().map(|o| (*a, o)))
    }

    pub(crate) fn is_used(&self, n: u128) -> bool {
        self.used.contains_key(&n)
    }

    pub(crate) fn owner(&self, n: u128) -> Option<&str> {
        self.used.get(&n)?.as_deref()
    }

    /// Assignable addresses of the whole subnet (network, broadcast, gateway, aux excluded).
    pub(crate) fn capacity(&self) -> u128 {
        (self.hi - self.lo + 1) - 1 - self.aux.len() as u128
    }

    pub(crate) fn in_use(&self) -> u128 {
        self.used.len() as u128
    }

    pub(crate) fn available(&self) -> u128 {
        self.capacity() - self.in_use()
    }

    pub(crate) fn range_capacity(&self) -> u128 {
        self.range_cap
    }

    pub(crate) fn range_available(&self) -> u128 {
        self.range_cap - self.range_used
    }

    /// The next free address of the allocation range after the last one handed out, wrapping
    /// around once. A huge free range (IPv6) is found without walking it.
    pub(crate) fn allocate(&mut self, owner: Option<&str>) -> Result<u128, IpamError> {
        let (alo, ahi) = (self.alo, self.ahi);
        let start = self.cursor.clamp(alo, ahi);
        let found = if self.range_available() == 0 { None } else { self.first_free(start, ahi).or_else(|| self.first_free(alo, start)) };
        let Some(found) = found else {
            // With an ip_range, "no free address left" is about the range.
            let (subnet, used) = match self.range {
                Some(r) => (r, self.range_used),
                None => (self.subnet, self.in_use()),
            };
            return Err(IpamError::Exhausted { subnet, used: sat(used) });
        };
        self.insert(found, owner.map(str::to_owned));
        self.cursor = if found == ahi { alo } else { found + 1 };
        Ok(found)
    }

    fn first_free(&self, from: u128, to: u128) -> Option<u128> {
        let mut a = from;
        while a <= to {
            if a != self.gateway && !self.aux.contains(&a) && !self.used.contains_key(&a) {
                return Some(a);
            }
            a = a.checked_add(1)?;
        }
        None
    }

    /// Takes a specific assignable address, inside the allocation range or not.
    pub(crate) fn reserve(&mut self, addr: IpAddr, owner: Option<&str>) -> Result<(), IpamError> {
        let n = self.check(addr)?;
        if self.used.contains_key(&n) {
            return Err(IpamError::Taken { addr });
        }
        self.insert(n, owner.map(str::to_owned));
        Ok(())
    }

    fn insert(&mut self, n: u128, owner: Option<String>) {
        let fresh = self.used.insert(n, owner).is_none();
        if fresh && (self.alo..=self.ahi).contains(&n) {
            self.range_used += 1;
        }
    }

    pub(crate) fn release(&mut self, n: u128) -> bool {
        let was = self.used.remove(&n).is_some();
        if was && (self.alo..=self.ahi).contains(&n) {
            self.range_used -= 1;
        }
        was
    }

    /// Releases every lease whose owner matches; the addresses released, in order.
    pub(crate) fn release_where(&mut self, pred: impl Fn(&str) -> bool) -> Vec<u128> {
        let gone: Vec<u128> = self.used.iter().filter(|(_, o)| o.as_deref().is_some_and(&pred)).map(|(a, _)| *a).collect();
        for &a in &gone {
            self.release(a);
        }
        gone
    }

    /// Rebuilds a pool from the parts of a snapshot, checking every one of them.
    pub(crate) fn restore(
        subnet: IpNet,
        gateway: IpAddr,
        range: Option<IpNet>,
        aux: impl IntoIterator<Item = IpAddr>,
        cursor: IpAddr,
        used: impl IntoIterator<Item = (IpAddr, Option<String>)>,
    ) -> Result<Hosts, SetupError> {
        let bad = |reason: String| SetupError::BadSnapshot { subnet, reason };
        if subnet.trunc() != subnet {
            return Err(bad("the subnet has host bits set".into()));
        }
        let mut h = Hosts::new(subnet, Some(gateway)).map_err(|e| bad(e.to_string()))?;
        if let Some(r) = range.filter(|r| r.trunc() != *r) {
            return Err(bad(format!("the allocation range {r} has host bits set")));
        }
        h.set_options(range, aux, true).map_err(|e| bad(e.to_string()))?;
        if !subnet.contains(&cursor) || !(h.alo..=h.ahi).contains(&num(cursor)) {
            return Err(bad(format!("the allocation cursor {cursor} is outside the allocation range {}-{}", h.ip(h.alo), h.ip(h.ahi))));
        }
        h.cursor = num(cursor);
        for (addr, owner) in used {
            let n = h.check(addr).map_err(|e| bad(format!("address in use: {e}")))?;
            if h.used.contains_key(&n) {
                return Err(bad(format!("address {addr} is listed twice")));
            }
            h.insert(n, owner);
        }
        Ok(h)
    }
}

/// A count as u64, saturating (a /64 has 2^64 - 1 hosts; bigger subnets have more).
pub(crate) fn sat(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
