//! ipam: an I/O-free IPv4 address allocator, one [`Pool`] per network subnet.
//!
//! A pool hands out host addresses of its subnet: never the network address, the broadcast
//! address or the gateway. Allocation is serial: it continues after the last address handed out,
//! so a freed address is not reused at once (a restarted container's peers may still cache the
//! old MAC for it). Nothing here reads a clock or touches the system.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Why an allocation or a reservation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("{addr} is outside subnet {subnet}")]
    OutOfRange { addr: IpAddr, subnet: IpNet },
    #[error("{addr} is the {what} address of {subnet} and cannot be assigned")]
    Reserved { addr: IpAddr, what: &'static str, subnet: IpNet },
    #[error("{addr} is already in use")]
    Taken { addr: IpAddr },
    #[error("subnet {subnet} has no free address left ({used} in use)")]
    Exhausted { subnet: IpNet, used: u64 },
    #[error("subnet {subnet} is too small: it needs room for a gateway and at least one host (IPv4 /30, IPv6 /120 or larger)")]
    TooSmall { subnet: IpNet },
    #[error("gateway {gateway} is not a host address of {subnet}")]
    BadGateway { gateway: IpAddr, subnet: IpNet },
}

/// Serial allocation over a range of host numbers, shared by the IPv4 and IPv6 pools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Serial {
    lo: u128,
    hi: u128,
    gateway: u128,
    used: BTreeSet<u128>,
    /// Where the next serial search starts.
    cursor: u128,
}

impl Serial {
    fn new(lo: u128, hi: u128, gateway: u128) -> Serial {
        Serial { lo, hi, gateway, used: BTreeSet::new(), cursor: lo }
    }

    fn capacity(&self) -> u128 {
        self.hi - self.lo + 1 - u128::from((self.lo..=self.hi).contains(&self.gateway))
    }

    /// The next free host after the last one handed out, wrapping around once. A huge free
    /// range (IPv6) is found without walking it: the search only skips used entries.
    fn allocate(&mut self) -> Option<u128> {
        let start = self.cursor.clamp(self.lo, self.hi);
        let found = self.first_free(start, self.hi).or_else(|| self.first_free(self.lo, start))?;
        self.used.insert(found);
        self.cursor = if found == self.hi { self.lo } else { found + 1 };
        Some(found)
    }

    fn first_free(&self, from: u128, to: u128) -> Option<u128> {
        let mut a = from;
        while a <= to {
            if a != self.gateway && !self.used.contains(&a) {
                return Some(a);
            }
            if a == u128::MAX {
                break;
            }
            a += 1;
        }
        None
    }

    fn reserve(&mut self, a: u128) -> bool {
        self.used.insert(a)
    }

    fn release(&mut self, a: u128) -> bool {
        self.used.remove(&a)
    }
}

/// The IPv4 addresses of one subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    hosts: Serial,
}

impl Pool {
    /// A pool for `subnet` (host bits are cleared) whose gateway is `gateway`, or the first host.
    ///
    /// # Errors
    /// [`IpamError::TooSmall`] below a /30; [`IpamError::BadGateway`] when the gateway is not a
    /// host address of the subnet.
    pub fn new(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Result<Pool, IpamError> {
        let subnet = subnet.trunc();
        if subnet.prefix_len() > 30 {
            return Err(IpamError::TooSmall { subnet: subnet.into() });
        }
        let (lo, hi) = (u32::from(subnet.network()) + 1, u32::from(subnet.broadcast()) - 1);
        let gateway = gateway.unwrap_or(Ipv4Addr::from(lo));
        let g = u32::from(gateway);
        if !(lo..=hi).contains(&g) {
            return Err(IpamError::BadGateway { gateway: gateway.into(), subnet: subnet.into() });
        }
        Ok(Pool { subnet, gateway, hosts: Serial::new(lo.into(), hi.into(), g.into()) })
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Host addresses that can be handed out (network, broadcast and gateway excluded).
    pub fn capacity(&self) -> u64 {
        self.hosts.capacity() as u64
    }

    pub fn in_use(&self) -> u64 {
        self.hosts.used.len() as u64
    }

    pub fn available(&self) -> u64 {
        self.capacity() - self.in_use()
    }

    pub fn is_used(&self, addr: Ipv4Addr) -> bool {
        self.hosts.used.contains(&u128::from(u32::from(addr)))
    }

    /// Takes the next free address after the last one handed out, wrapping around once.
    ///
    /// # Errors
    /// [`IpamError::Exhausted`] when every host address is in use.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        match self.hosts.allocate() {
            Some(a) => Ok(Ipv4Addr::from(a as u32)),
            None => Err(IpamError::Exhausted { subnet: self.subnet.into(), used: self.in_use() }),
        }
    }

    /// Takes a specific address.
    ///
    /// # Errors
    /// Outside the subnet, the network/broadcast/gateway address, or already in use.
    pub fn reserve(&mut self, addr: Ipv4Addr) -> Result<(), IpamError> {
        self.check_assignable(addr)?;
        if !self.hosts.reserve(u32::from(addr).into()) {
            return Err(IpamError::Taken { addr: addr.into() });
        }
        Ok(())
    }

    /// Gives an address back; returns false when it was not in use.
    pub fn release(&mut self, addr: Ipv4Addr) -> bool {
        self.hosts.release(u32::from(addr).into())
    }

    /// Checks that `addr` could be assigned to an endpoint, ignoring whether it is in use.
    ///
    /// # Errors
    /// [`IpamError::OutOfRange`] or [`IpamError::Reserved`].
    pub fn check_assignable(&self, addr: Ipv4Addr) -> Result<(), IpamError> {
        let subnet = self.subnet;
        if !subnet.contains(&addr) {
            return Err(IpamError::OutOfRange { addr: addr.into(), subnet: subnet.into() });
        }
        let what = if addr == subnet.network() {
            "network"
        } else if addr == subnet.broadcast() {
            "broadcast"
        } else if addr == self.gateway {
            "gateway"
        } else {
            return Ok(());
        };
        Err(IpamError::Reserved { addr: addr.into(), what, subnet: subnet.into() })
    }
}

/// The IPv6 addresses of one subnet (a /64 is usual; /120 is the smallest accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool6 {
    subnet: Ipv6Net,
    gateway: Ipv6Addr,
    hosts: Serial,
}

impl Pool6 {
    /// A pool for `subnet` whose gateway is `gateway`, or `::1` of the subnet. The subnet-router
    /// anycast address (host part 0) is never handed out.
    ///
    /// # Errors
    /// [`IpamError::TooSmall`] beyond a /120; [`IpamError::BadGateway`] outside the subnet.
    pub fn new(subnet: Ipv6Net, gateway: Option<Ipv6Addr>) -> Result<Pool6, IpamError> {
        let subnet = subnet.trunc();
        if subnet.prefix_len() > 120 {
            return Err(IpamError::TooSmall { subnet: subnet.into() });
        }
        let (lo, hi) = (u128::from(subnet.network()) + 1, u128::from(subnet.broadcast()));
        let gateway = gateway.unwrap_or(Ipv6Addr::from(lo));
        let g = u128::from(gateway);
        if !(lo..=hi).contains(&g) {
            return Err(IpamError::BadGateway { gateway: gateway.into(), subnet: subnet.into() });
        }
        Ok(Pool6 { subnet, gateway, hosts: Serial::new(lo, hi, g) })
    }

    pub fn subnet(&self) -> Ipv6Net {
        self.subnet
    }

    pub fn gateway(&self) -> Ipv6Addr {
        self.gateway
    }

    pub fn in_use(&self) -> u64 {
        self.hosts.used.len() as u64
    }

    /// # Errors
    /// [`IpamError::Exhausted`] when every host address is in use.
    pub fn allocate(&mut self) -> Result<Ipv6Addr, IpamError> {
        match self.hosts.allocate() {
            Some(a) => Ok(Ipv6Addr::from(a)),
            None => Err(IpamError::Exhausted { subnet: self.subnet.into(), used: self.in_use() }),
        }
    }

    /// # Errors
    /// Outside the subnet, the subnet-router or gateway address, or already in use.
    pub fn reserve(&mut self, addr: Ipv6Addr) -> Result<(), IpamError> {
        let subnet = self.subnet;
        if !subnet.contains(&addr) {
            return Err(IpamError::OutOfRange { addr: addr.into(), subnet: subnet.into() });
        }
        let what = if addr == subnet.network() {
            "subnet-router"
        } else if addr == self.gateway {
            "gateway"
        } else {
            ""
        };
        if !what.is_empty() {
            return Err(IpamError::Reserved { addr: addr.into(), what, subnet: subnet.into() });
        }
        if !self.hosts.reserve(addr.into()) {
            return Err(IpamError::Taken { addr: addr.into() });
        }
        Ok(())
    }

    pub fn release(&mut self, addr: Ipv6Addr) -> bool {
        self.hosts.release(addr.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(cidr: &str) -> Pool {
        Pool::new(cidr.parse().unwrap(), None).unwrap()
    }

    #[test]
    fn allocates_hosts_skipping_gateway() {
        let mut p = pool("10.0.0.0/29"); // hosts .1-.6, gateway .1
        let got: Vec<_> = (0..5).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 0, 0, 6));
        assert_eq!(p.allocate(), Err(IpamError::Exhausted { subnet: p.subnet().into(), used: 5 }));
        assert_eq!(p.capacity(), 5);
        assert_eq!(p.available(), 0);
    }

    #[test]
    fn freed_address_is_not_reused_at_once() {
        let mut p = pool("10.0.0.0/24");
        let a = p.allocate().unwrap();
        assert!(p.release(a));
        let b = p.allocate().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn reserve_checks() {
        let mut p = pool("10.0.0.0/24");
        assert!(matches!(p.reserve("10.0.1.5".parse().unwrap()), Err(IpamError::OutOfRange { .. })));
        assert!(matches!(p.reserve("10.0.0.0".parse().unwrap()), Err(IpamError::Reserved { what: "network", .. })));
        assert!(matches!(p.reserve("10.0.0.255".parse().unwrap()), Err(IpamError::Reserved { what: "broadcast", .. })));
        assert!(matches!(p.reserve("10.0.0.1".parse().unwrap()), Err(IpamError::Reserved { what: "gateway", .. })));
        p.reserve("10.0.0.9".parse().unwrap()).unwrap();
        assert!(matches!(p.reserve("10.0.0.9".parse().unwrap()), Err(IpamError::Taken { .. })));
    }

    #[test]
    fn bad_pools() {
        assert!(matches!(Pool::new("10.0.0.0/31".parse().unwrap(), None), Err(IpamError::TooSmall { .. })));
        let gw = Some("10.0.1.1".parse().unwrap());
        assert!(matches!(Pool::new("10.0.0.0/24".parse().unwrap(), gw), Err(IpamError::BadGateway { .. })));
        let p = Pool::new("10.0.0.77/24".parse().unwrap(), None).unwrap();
        assert_eq!(p.subnet().to_string(), "10.0.0.0/24");
    }

    #[test]
    fn ipv6_pool() {
        let mut p = Pool6::new("fd00:89::/64".parse().unwrap(), None).unwrap();
        assert_eq!(p.gateway(), "fd00:89::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.allocate().unwrap(), "fd00:89::2".parse::<Ipv6Addr>().unwrap());
        let a: Ipv6Addr = "fd00:89::2:5".parse().unwrap();
        p.reserve(a).unwrap();
        assert!(matches!(p.reserve(a), Err(IpamError::Taken { .. })));
        assert!(matches!(p.reserve("fd00:89::".parse().unwrap()), Err(IpamError::Reserved { .. })));
        assert!(matches!(p.reserve("fd00:89::1".parse().unwrap()), Err(IpamError::Reserved { .. })));
        assert!(matches!(p.reserve("fd00:90::5".parse().unwrap()), Err(IpamError::OutOfRange { .. })));
        assert!(p.release(a));
        assert_eq!(p.in_use(), 1);
        assert!(matches!(Pool6::new("fd00::/121".parse().unwrap(), None), Err(IpamError::TooSmall { .. })));
        // A /120: 255 hosts minus the gateway, then exhausted.
        let mut small = Pool6::new("fd00:1::/120".parse().unwrap(), None).unwrap();
        for _ in 0..254 {
            small.allocate().unwrap();
        }
        assert!(matches!(small.allocate(), Err(IpamError::Exhausted { .. })));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        Reserve(u8),
        Release(u8),
    }

    proptest! {
        /// The pool agrees with a BTreeSet model: no address twice, never a reserved one.
        #[test]
        fn matches_model(ops in prop::collection::vec(prop_oneof![
            Just(Op::Allocate),
            any::<u8>().prop_map(|b| Op::Reserve(b % 16)),
            any::<u8>().prop_map(|b| Op::Release(b % 16)),
        ], 1..200)) {
            let mut p = pool("10.9.0.0/28");
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Allocate => match p.allocate() {
                        Ok(a) => {
                            prop_assert!(p.check_assignable(a).is_ok());
                            prop_assert!(model.insert(a));
                        }
                        Err(IpamError::Exhausted { .. }) => prop_assert_eq!(model.len() as u64, p.capacity()),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    },
                    Op::Reserve(h) => {
                        let a = Ipv4Addr::new(10, 9, 0, h);
                        let ok = p.reserve(a).is_ok();
                        let expect = p.check_assignable(a).is_ok() && !model.contains(&a);
                        prop_assert_eq!(ok, expect);
                        if ok { model.insert(a); }
                    }
                    Op::Release(h) => {
                        let a = Ipv4Addr::new(10, 9, 0, h);
                        prop_assert_eq!(p.release(a), model.remove(&a));
                    }
                }
                prop_assert_eq!(p.in_use(), model.len() as u64);
            }
        }
    }
}
